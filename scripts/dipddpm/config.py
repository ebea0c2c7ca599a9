"""Configuration checks that run before any job starts.

The JSON schema (``workflow/schemas/config.schema.yaml``) catches unknown keys, wrong types
and out-of-range values; :func:`cross_reference_errors` catches what a schema cannot: a grid
naming an architecture that is not defined, a snapshot past the last iteration, a sampling
start beyond what a truncated model was trained for. Every message names the key.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError


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
        return f"'{key}': {error.message}"
    return f"'{key}': {error.message}"


def schema_errors(config: dict, schema: dict) -> list[str]:
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    return [_describe(e) for e in errors]


def _missing(kind: str, key: str, names: Iterable[str], defined: dict) -> list[str]:
    return [
        f"'{key}' names {kind} {name!r}, which is not defined; defined: {', '.join(defined)}"
        for name in names
        if name not in defined
    ]


def cross_reference_errors(config: dict) -> list[str]:
    """Problems a schema cannot express: names that point nowhere, values past their limits."""
    datasets = config["data"]["datasets"]
    tasks, dip, ddpm = config["tasks"], config["dip"], config["ddpm"]
    errors = []
    for name, spec in datasets.items():
        errors += _dataset_errors(name, spec)
    errors += _arch_errors(dip["archs"])
    for i, cell in enumerate(dip["grid"]):
        errors += _missing("dataset", f"dip.grid[{i}].datasets", cell["datasets"], datasets)
        errors += _missing("task", f"dip.grid[{i}].tasks", cell["tasks"], tasks)
        errors += _missing("architecture", f"dip.grid[{i}].archs", cell["archs"], dip["archs"])
    late = [s for s in dip.get("snapshots", []) if s > dip.get("iters", 3000)]
    if late:
        errors.append(f"'dip.snapshots': {late} exceed dip.iters = {dip.get('iters')}")
    errors += _ddpm_errors(ddpm, datasets, tasks, dip)
    if "earlystop" in config:
        errors += _earlystop_errors(config["earlystop"], datasets, tasks, dip)
    reference = config.get("metrics", {}).get("reference")
    if reference is not None:
        errors += _missing("dataset", "metrics.reference", [reference], datasets)
    return errors


def _arch_errors(archs: dict) -> list[str]:
    """Hyperparameters an architecture does not take (each kind has its own set)."""
    from .dip.models import ARCH_DEFAULTS

    errors = []
    for name, spec in archs.items():
        allowed = ARCH_DEFAULTS[spec["kind"]]
        unknown = sorted(set(spec) - {"kind"} - set(allowed))
        if unknown:
            errors.append(
                f"'dip.archs.{name}': {unknown} are not parameters of a {spec['kind']!r} "
                f"network; allowed: {', '.join(sorted(allowed))}"
            )
    return errors


def _dataset_errors(name: str, spec: dict) -> list[str]:
    key = f"data.datasets.{name}"
    needs = {"cifar10": ("split", "n"), "skimage": ("names",), "folder": ("path",)}
    return [
        f"'{key}.{field}' is required for source {spec['source']!r}"
        for field in needs[spec["source"]]
        if field not in spec
    ]


def _ddpm_errors(ddpm: dict, datasets: dict, tasks: dict, dip: dict) -> list[str]:
    errors = _missing("dataset", "ddpm.dataset", [ddpm["dataset"]], datasets)
    T, steps = ddpm.get("T", 1000), ddpm.get("steps", 800000)
    late = [c for c in ddpm.get("checkpoints", []) if c > steps]
    if late:
        errors.append(f"'ddpm.checkpoints': {late} exceed ddpm.steps = {steps}")
    sample = ddpm["sample"]
    for i, mode in enumerate(ddpm["modes"]):
        if mode["mode"] == "truncated":
            t_max = mode.get("t_max")
            if t_max is None or not 1 <= t_max <= T:
                errors.append(f"'ddpm.modes[{i}].t_max' must be in 1..T={T}; got {t_max!r}")
            elif max(sample["t0"]) > t_max:
                errors.append(
                    f"'ddpm.sample.t0' {max(sample['t0'])} exceeds ddpm.modes[{i}].t_max = "
                    f"{t_max}: a truncated model cannot start there"
                )
    errors += _missing("dataset", "ddpm.sample.dataset", [sample["dataset"]], datasets)
    errors += _missing("task", "ddpm.sample.task", [sample["task"]], tasks)
    errors += _missing(
        "architecture", "ddpm.sample.prior_arch", [sample.get("prior_arch", "skip")], dip["archs"]
    )
    prior_iters = sample.get("prior_iters", 1000)
    snapshots = set(dip.get("snapshots", [])) | {dip.get("iters", 3000)}
    for iters in prior_iters if isinstance(prior_iters, list) else [prior_iters]:
        if iters not in snapshots:
            errors.append(
                f"'ddpm.sample.prior_iters' {iters} must be one of dip.snapshots "
                f"{dip.get('snapshots')} or dip.iters"
            )
    generation = ddpm.get("generation")
    if generation:
        errors += _missing("dataset", "ddpm.generation.dataset", [generation["dataset"]], datasets)
        errors += _missing("task", "ddpm.generation.task", [generation["task"]], tasks)
        late = [t for t in generation["t0"] if t > T]
        if late:
            errors.append(f"'ddpm.generation.t0': {late} exceed ddpm.T = {T}")
    late_eval = [t for t in ddpm.get("eval_t", []) if t > T]
    if late_eval:
        errors.append(f"'ddpm.eval_t': {late_eval} exceed ddpm.T = {T}")
    late_t0 = [t for t in sample["t0"] if t > T]
    if late_t0:
        errors.append(f"'ddpm.sample.t0': {late_t0} exceed ddpm.T = {T}")
    return errors


def _earlystop_errors(es: dict, datasets: dict, tasks: dict, dip: dict) -> list[str]:
    errors = _missing("dataset", "earlystop.dataset", [es.get("dataset")], datasets)
    for i, cell in enumerate(es.get("grid", [])):
        errors += _missing("task", f"earlystop.grid[{i}].tasks", cell["tasks"], tasks)
        errors += _missing(
            "architecture", f"earlystop.grid[{i}].archs", cell["archs"], dip["archs"]
        )
        not_denoise = [t for t in cell["tasks"] if t in tasks and tasks[t]["kind"] != "denoise"]
        if not_denoise:
            errors.append(
                f"'earlystop.grid[{i}].tasks': {not_denoise} are not denoising tasks; "
                "the stopping rules need a known noise level"
            )
    return errors


def validate_config(config: dict, schema: dict) -> None:
    """Raise :class:`ConfigError` listing every problem; return quietly when valid."""
    problems = schema_errors(config, schema)
    if not problems:
        problems = cross_reference_errors(config)
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
