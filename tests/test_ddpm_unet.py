"""UNet presets: parameter counts, shapes and errors."""

from __future__ import annotations

import pytest
import torch

from dipddpm.ddpm.unet import PRESETS, build_unet, count_parameters


def test_tiny_preset_is_under_one_million_parameters():
    n = count_parameters(build_unet("tiny"))
    assert 300_000 < n < 1_000_000


def test_ddpm_cifar10_preset_matches_the_paper_count():
    # Ho et al. report 35.7M parameters for the CIFAR-10 model.
    assert count_parameters(build_unet("ddpm-cifar10")) == 35_746_307


def test_forward_keeps_shape_and_starts_at_zero_output():
    torch.manual_seed(0)
    model = build_unet("tiny", ch=8, ch_mult=(1, 2), attn=(4,), image_size=8, norm_groups=4)
    x = torch.randn(2, 3, 8, 8)
    out = model(x, torch.tensor([1, 40]))
    assert out.shape == x.shape
    # The output conv is zero-initialised, as in the paper.
    assert torch.count_nonzero(out) == 0


def test_unknown_preset_names_the_allowed_ones():
    with pytest.raises(ValueError, match="ddpm-cifar10") as err:
        build_unet("huge")
    assert "tiny" in str(err.value)


def test_unknown_override_is_rejected():
    with pytest.raises(ValueError, match="chanels"):
        build_unet("tiny", chanels=3)


def test_bad_input_size_gives_a_clear_error():
    model = build_unet("tiny")
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.zeros(1, 3, 30, 30), torch.tensor([1]))


def test_presets_are_documented_configurations():
    assert PRESETS["ddpm-cifar10"]["ch_mult"] == (1, 2, 2, 2)
    assert PRESETS["ddpm-cifar10"]["attn"] == (16,)
