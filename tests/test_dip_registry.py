"""The architecture registry: in step with the config schema, and open to new architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from dipddpm.dip import ARCH_DEFAULTS, ARCH_KINDS, Architecture, fit_dip, register_architecture
from dipddpm.dip.models import ARCHITECTURES, resolve_params
from dipddpm.operators import Operator


@pytest.fixture(scope="module")
def schema(root) -> dict:
    return yaml.safe_load((root / "workflow" / "schemas" / "config.schema.yaml").read_text())


def test_schema_arch_kinds_are_the_registry_names(schema):
    assert sorted(schema["$defs"]["arch"]["properties"]["kind"]["enum"]) == sorted(ARCH_KINDS)


def test_every_registry_hyperparameter_is_a_schema_arch_property(schema):
    allowed = set(schema["$defs"]["arch"]["properties"])
    for kind, defaults in ARCH_DEFAULTS.items():
        assert set(defaults) <= allowed, (kind, sorted(set(defaults) - allowed))


def _two_layer_net(out_channels: int, image_size: tuple[int, int], p: dict) -> nn.Module:
    channels = int(p["input_channels"])
    return nn.Sequential(
        nn.ReflectionPad2d(1),
        nn.Conv2d(channels, channels, 3, bias=False),
        nn.BatchNorm2d(channels, track_running_stats=False),
        nn.LeakyReLU(0.2),
        nn.Conv2d(channels, out_channels, 1),
        nn.Sigmoid(),
    )


@pytest.fixture
def throwaway_arch():
    name = "throwaway-two-layer"
    register_architecture(
        Architecture(name, _two_layer_net, {"input_channels": 4, "input_scale": 0.1})
    )
    yield name
    del ARCHITECTURES[name]


def test_a_registered_architecture_fits_with_fit_dip(throwaway_arch):
    assert throwaway_arch in ARCH_KINDS and ARCH_DEFAULTS[throwaway_arch]["input_channels"] == 4
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 8, 8, generator=g)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    args = (noisy, Operator("denoise"), throwaway_arch, {"input_channels": 6}, [0, 1])
    result = fit_dip(*args, iters=4, snapshots=[2], clean=clean, progress=False)
    assert sorted(result.snapshots) == [2, 4]
    assert result.snapshots[4].shape == (2, 3, 8, 8)
    assert np.isfinite(result.snapshots[4]).all()
    assert len(result.trajectory) == 2 * 4 and result.trajectory["loss"].notna().all()
    with pytest.raises(ValueError, match="unknown parameter"):
        resolve_params(throwaway_arch, {"depth": 2})


def test_registration_rejects_a_taken_name_and_missing_input_scale():
    with pytest.raises(ValueError, match="already registered"):
        register_architecture(Architecture("skip", _two_layer_net, {"input_scale": 0.1}))
    with pytest.raises(ValueError, match="input_scale"):
        Architecture("no-scale", _two_layer_net, {"input_channels": 4})


def test_registry_defaults_are_read_only():
    with pytest.raises(TypeError):
        ARCH_DEFAULTS["skip"]["depth"] = 1  # type: ignore[index]
