"""One set of DIP fitting defaults: the schema's ``dip.*`` defaults and the library's."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import yaml

from dipddpm.dip import DIP_DEFAULTS, DIPFitter, fit_dip


@pytest.fixture(scope="module")
def schema_dip_defaults(root) -> dict:
    schema = yaml.safe_load((root / "workflow" / "schemas" / "config.schema.yaml").read_text())
    properties = schema["properties"]["dip"]["properties"]
    # Where the pipeline keeps fitted priors is not a fitting setting.
    pipeline_only = {"prior_store"}
    return {
        key: spec["default"]
        for key, spec in properties.items()
        if "default" in spec and key not in pipeline_only
    }


def test_schema_dip_defaults_equal_the_library_defaults(schema_dip_defaults):
    library = dataclasses.asdict(DIP_DEFAULTS)
    as_yaml = {k: list(v) if isinstance(v, tuple) else v for k, v in library.items()}
    assert schema_dip_defaults == as_yaml


@pytest.mark.parametrize("function", [fit_dip, DIPFitter])
def test_keyword_defaults_come_from_dip_defaults(function):
    parameters = inspect.signature(function).parameters
    for field in dataclasses.fields(DIP_DEFAULTS):
        if field.name in parameters and field.name not in {"iters", "snapshots", "seeds"}:
            assert parameters[field.name].default == getattr(DIP_DEFAULTS, field.name), field.name
