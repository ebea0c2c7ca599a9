"""Start points, DIP guidance and inpainting consistency of the samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dipddpm.ddpm.diffusion import Diffusion
from dipddpm.ddpm.sample import (
    Guide,
    diffuse_prior,
    generate,
    noise_start,
    observation_start,
    sample,
    t_for_sigma,
)
from dipddpm.ddpm.unet import build_unet
from dipddpm.operators import Operator


def micro_unet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_unet("tiny", ch=8, ch_mult=(1, 2), attn=(4,), image_size=8, norm_groups=4)
    nn.init.normal_(model.conv_out.weight, std=0.05)
    return model.eval()


def images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 8, 8), dtype=np.float32)


@pytest.fixture(scope="module")
def diffusion() -> Diffusion:
    return Diffusion("linear", 100)


def test_sampling_from_t0_zero_returns_the_prior_unchanged(diffusion):
    prior = images()
    x_start = diffuse_prior(diffusion, prior, 0)
    result = sample(micro_unet(), diffusion, x_start, 0, 1, progress=False)
    assert result.nfe == 0
    assert result.images.dtype == np.float32 and result.images.shape == prior.shape
    np.testing.assert_allclose(result.images, prior, atol=1e-6, rtol=0)


def test_diffuse_prior_follows_the_forward_marginal(diffusion):
    prior = np.full((4000, 3, 1, 1), 0.8, dtype=np.float32)
    x = diffuse_prior(diffusion, prior, 30, torch.Generator().manual_seed(0))
    abar = float(diffusion.alphas_cumprod[30])
    assert abs(float(x.mean()) - math.sqrt(abar) * 0.6) < 0.02
    assert abs(float(x.var()) - (1 - abar)) < 0.02
    again = diffuse_prior(diffusion, prior, 30, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_t_for_sigma_matches_the_noise_level_and_scales_the_observation():
    diffusion = Diffusion("linear", 1000)
    sigma = 25 / 255
    t = t_for_sigma(diffusion, sigma)
    abar = diffusion.alphas_cumprod
    ratio = lambda k: math.sqrt((1 - abar[k]) / abar[k])
    assert ratio(t - 1) <= 2 * sigma <= ratio(t + 1)
    assert t_for_sigma(diffusion, 0.0) == 0
    y = images()
    x_start, t_start = observation_start(diffusion, y, sigma)
    assert t_start == t
    torch.testing.assert_close(x_start, math.sqrt(abar[t]) * (2 * torch.from_numpy(y) - 1))
    with pytest.raises(ValueError, match="sigma"):
        t_for_sigma(diffusion, 500.0)


def test_denoising_start_has_the_marginal_of_x_t(diffusion):
    """sqrt(abar_t) (2y - 1) with y = x + sigma n is distributed like q(x_t | x)."""
    sigma = 0.1
    t = t_for_sigma(diffusion, sigma)
    rng = np.random.default_rng(0)
    clean = np.full((20000, 3, 1, 1), 0.5, dtype=np.float32)
    y = clean + sigma * rng.standard_normal(clean.shape).astype(np.float32)
    x_start, _ = observation_start(diffusion, y, sigma)
    abar = float(diffusion.alphas_cumprod[t])
    assert abs(float(x_start.var()) - (1 - abar)) < 0.1 * (1 - abar)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_guidance_with_lam_one_at_the_last_step_returns_the_dip_prior(diffusion, sampler):
    x_dip = images(seed=3)
    guide = Guide(x_dip=x_dip, lam=1.0, t_min=1, t_max=1)
    gen = torch.Generator().manual_seed(0)
    x_T = noise_start((2, 3, 8, 8), gen)
    result = sample(
        micro_unet(), diffusion, x_T, 100, 10, sampler, guide=guide, generator=gen, progress=False
    )
    assert result.nfe == 10 and result.seconds > 0
    np.testing.assert_allclose(result.images, x_dip, atol=1e-5, rtol=0)


def test_guidance_with_lam_zero_changes_nothing(diffusion):
    gen_a, gen_b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    plain = sample(micro_unet(), diffusion, x_T, 100, 5, generator=gen_a, progress=False)
    guided = sample(
        micro_unet(),
        diffusion,
        x_T,
        100,
        5,
        guide=Guide(images(), lam=0.0),
        generator=gen_b,
        progress=False,
    )
    np.testing.assert_array_equal(plain.images, guided.images)


def test_inpainting_consistency_keeps_known_pixels(diffusion):
    y = images(seed=4)
    mask = (np.random.default_rng(5).random((2, 1, 8, 8)) > 0.5).astype(np.float32)
    operator = Operator("inpaint", mask=torch.from_numpy(mask))
    guide = Guide.for_task(operator, y * mask, x_dip=images(seed=6), lam=0.5, t_min=1, t_max=50)
    gen = torch.Generator().manual_seed(0)
    x_start = diffuse_prior(diffusion, images(seed=6), 50, gen)
    result = sample(
        micro_unet(), diffusion, x_start, 50, 10, guide=guide, generator=gen, progress=False
    )
    known = np.broadcast_to(mask, y.shape) == 1
    np.testing.assert_allclose(result.images[known], y[known], atol=1e-5, rtol=0)
    assert np.abs(result.images[~known] - y[~known]).max() > 0.05


def test_guide_batch_mismatch_is_a_clear_error(diffusion):
    guide = Guide(x_dip=images(n=3), lam=0.5)
    with pytest.raises(ValueError, match="x_dip has 3 images"):
        sample(micro_unet(), diffusion, torch.zeros(2, 3, 8, 8), 10, 2, guide=guide, progress=False)
    with pytest.raises(ValueError, match="lam"):
        Guide(x_dip=images(), lam=1.5)


def test_generate_returns_n_images_in_unit_range_with_nfe(diffusion):
    result = generate(
        micro_unet(),
        diffusion,
        5,
        steps=4,
        image_shape=(3, 8, 8),
        batch_size=2,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert result.images.shape == (5, 3, 8, 8)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert result.nfe == 3 * 4
    again = generate(
        micro_unet(),
        diffusion,
        5,
        steps=4,
        image_shape=(3, 8, 8),
        batch_size=2,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    np.testing.assert_array_equal(result.images, again.images)
