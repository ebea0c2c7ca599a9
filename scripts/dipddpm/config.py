"""Configuration checks that run before any job starts.

The JSON schema (``workflow/schemas/config.schema.yaml``) catches unknown keys, wrong types
and out-of-range values; :func:`cross_reference_errors` catches what a schema cannot: a grid
naming an architecture that is not defined, a network too deep for the images it is fitted
to, a snapshot past the last iteration, a sampling start beyond what a truncated model was
trained for, two values that name one grid cell. Every message names the key.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .config_checks import CHECKS

# A schema violation with no better place to pin it: every check is skipped.
WHOLE_CONFIG = "<whole config>"


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem found."""


def load_schema(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _key(path: Iterable) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else str(p) for p in path]
    return ".".join(parts).replace(".[", "[") or "<top level>"


def _describe(error: ValidationError) -> str:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"under '{key}'" if error.absolute_path else "at the top level"
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"unknown key(s) {', '.join(map(repr, extra))} {where}{hint}"
    if error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        return f"'{key}': {error.instance!r} is not allowed; allowed values: {allowed}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = {
            "minimum": ">=",
            "maximum": "<=",
            "exclusiveMinimum": ">",
            "exclusiveMaximum": "<",
        }[error.validator]
        limit = f"{bound} {error.validator_value}"
        return f"'{key}': {error.instance!r} is out of range; it must be {limit}"
    if error.validator == "type":
        return f"'{key}': {error.instance!r} has the wrong type; expected {error.validator_value}"
    if error.validator == "required":
        return _describe_required(error, key)
    if error.validator == "dependentRequired":
        return _describe_dependent(error, key)
    return f"'{key}': {error.message}"


def _describe_required(error: ValidationError, key: str) -> str:
    missing = [name for name in error.validator_value if name not in error.instance]
    prefix = f"{key}." if error.absolute_path else ""
    # Kind-specific requirements (a task's sigma, factor, ...) say which kind needs them.
    kind = error.instance.get("kind")
    needed_by = f" for kind {kind!r}" if kind else ""
    return "; ".join(f"'{prefix}{name}' is required{needed_by}" for name in missing)


def _describe_dependent(error: ValidationError, key: str) -> str:
    return "; ".join(
        f"'{key}.{needed}' is required when '{key}.{present}' is set"
        for present, dependencies in error.validator_value.items()
        if present in error.instance
        for needed in dependencies
        if needed not in error.instance
    )


def _violations(config: dict, schema: dict) -> list[ValidationError]:
    validator = Draft202012Validator(schema)
    return sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))


def schema_errors(config: dict, schema: dict) -> list[str]:
    return [_describe(e) for e in _violations(config, schema)]


# Violations after which every key the cross-reference checks read is still there with
# its expected type: those checks still run, so that one run reports every problem.
_STRUCTURE_INTACT = {"additionalProperties", "dependentRequired", "pattern"}


def _leaves_structure_intact(error: ValidationError) -> bool:
    # A kind's own parameter (a task's sigma, factor, drop) is required by an if/then rule;
    # the checks read those with a fallback.
    kind_specific = error.validator == "required" and "then" in error.schema_path
    return error.validator in _STRUCTURE_INTACT or kind_specific


def _broken_sections(violations: list[ValidationError]) -> set[str]:
    """The top-level sections the schema rejected: a cross-reference check reading one of
    them would only describe, less clearly, a structure the schema has already reported."""
    broken = set()
    for error in violations:
        if _leaves_structure_intact(error):
            continue
        if error.absolute_path:
            broken.add(str(error.absolute_path[0]))
        elif error.validator == "required":
            broken |= {name for name in error.validator_value if name not in error.instance}
        else:
            broken.add(WHOLE_CONFIG)
    return broken


# ----------------------------------------------------------------------------- entry


def cross_reference_errors(config: dict, broken: Collection[str] = ()) -> list[str]:
    """Problems a schema cannot express: names that point nowhere, values past their limits,
    networks and tasks that do not fit their images, values that name one cell twice.
    ``broken``: top-level sections the schema rejected, whose checks are skipped."""
    if WHOLE_CONFIG in broken:
        return []
    errors = []
    for sections, check in CHECKS:
        if not sections & set(broken):
            errors += check(config)
    return errors


def validate_config(config: dict, schema: dict) -> None:
    """Raise :class:`ConfigError` listing every problem; return quietly when valid."""
    violations = _violations(config, schema)
    problems = [_describe(e) for e in violations]
    problems += cross_reference_errors(config, _broken_sections(violations))
    if problems:
        bullet = "\n  - "
        raise ConfigError(f"invalid configuration:{bullet}{bullet.join(problems)}")


def load_config(path: str | Path, schema_path: str | Path) -> dict:
    """A config file checked as the workflow checks it, with the schema's defaults filled in
    (for tools and tests that expand the grid outside Snakemake)."""
    from snakemake.utils import validate

    config = yaml.safe_load(Path(path).read_text())
    validate_config(config, load_schema(schema_path))
    validate(config, str(schema_path))
    return config
