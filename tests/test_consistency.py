"""x_t-space data consistency (RePaint replacement, ILVR) and K-sample posterior means."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dipddpm.ddpm.diffusion import Diffusion, to_model_space, to_unit
from dipddpm.ddpm.sample import (
    Consistency,
    Guide,
    diffuse_prior,
    noise_start,
    sample,
    sample_k,
)
from dipddpm.ddpm.unet import build_unet
from dipddpm.operators import Operator, _axis_pinv, downsample, upsample_pinv

SHAPE = (2, 3, 8, 8)


def micro_unet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_unet("tiny", ch=8, ch_mult=(1, 2), attn=(4,), image_size=8, norm_groups=4)
    nn.init.normal_(model.conv_out.weight, std=0.05)
    return model.eval()


def images(shape=SHAPE, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape, dtype=np.float32))


def inpaint_operator(n: int = 2, size: int = 8, seed: int = 5) -> Operator:
    mask = (np.random.default_rng(seed).random((n, 1, size, size)) > 0.5).astype(np.float32)
    return Operator("inpaint", mask=torch.from_numpy(mask))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def diffusion() -> Diffusion:
    return Diffusion("linear", 100)


# -- the operator's pseudo-inverse -----------------------------------------------------


@pytest.mark.parametrize("kernel", ["bicubic", "area"])
@pytest.mark.parametrize("factor", [2, 4])
def test_downsampling_is_separable_with_the_extracted_axis_filters(kernel, factor):
    x = images((2, 3, 16, 24), seed=1).double()
    rows = torch.linalg.pinv(_axis_pinv(16 // factor, factor, kernel))
    cols = torch.linalg.pinv(_axis_pinv(24 // factor, factor, kernel))
    torch.testing.assert_close(rows @ x @ cols.T, downsample(x, factor, kernel))


@pytest.mark.parametrize("kernel", ["bicubic", "area"])
def test_upsample_pinv_is_a_right_inverse_and_makes_an_exact_projection(kernel):
    operator = Operator("sr", factor=2, kernel=kernel)
    y = images((2, 3, 6, 8), seed=2)
    torch.testing.assert_close(operator(upsample_pinv(y, 2, kernel)), y)
    x = images((2, 3, 12, 16), seed=3)
    phi = operator.project(x)
    torch.testing.assert_close(operator.project(phi), phi)
    if kernel == "area":
        replicated = y.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        torch.testing.assert_close(upsample_pinv(y, 2, kernel), replicated)


# -- inpainting: RePaint-style replacement -----------------------------------------------


def test_inpainting_replaces_known_pixels_by_the_diffused_observation(diffusion):
    operator, y = inpaint_operator(), images(seed=4)
    hook = Consistency.for_task(operator, y * operator.mask).hook(diffusion, 2, "cpu")
    x = torch.randn(SHAPE, generator=gen(9))
    known = operator.mask.expand(SHAPE) == 1
    out = hook(x, 30, gen(1))
    expected = diffusion.q_sample(to_model_space(y), 30, torch.randn(SHAPE, generator=gen(1)))
    assert torch.equal(out[known], expected[known])
    assert torch.equal(out[~known], x[~known])
    last = hook(x, 0, gen(1))
    assert torch.equal(last[known], to_model_space(y)[known])
    assert torch.equal(last[~known], x[~known])


def test_inpainting_noise_is_fresh_per_step_and_follows_the_generator(diffusion):
    operator, y = inpaint_operator(), images(seed=4)
    hook = Consistency.for_task(operator, y).hook(diffusion, 2, "cpu")
    x = torch.zeros(SHAPE)
    shared = gen(3)
    first, second = hook(x, 30, shared), hook(x, 30, shared)
    assert not torch.equal(first, second)
    assert torch.equal(first, hook(x, 30, gen(3)))


# -- super-resolution: ILVR --------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["bicubic", "area"])
def test_ilvr_swaps_the_low_pass_part_and_keeps_the_high_frequencies(diffusion, kernel):
    operator = Operator("sr", factor=2, kernel=kernel)
    y = operator(images((2, 3, 16, 16), seed=6))
    hook = Consistency.for_task(operator, y).hook(diffusion, 2, "cpu")
    x = torch.randn(2, 3, 16, 16, generator=gen(9))
    out = hook(x, 30, gen(1))
    y_hr = upsample_pinv(to_model_space(y), 2, kernel)
    y_s = diffusion.q_sample(y_hr, 30, torch.randn(x.shape, generator=gen(1)))
    torch.testing.assert_close(operator.project(out), operator.project(y_s))
    torch.testing.assert_close(out - operator.project(out), x - operator.project(x))
    last = hook(x, 0, gen(1))
    torch.testing.assert_close(operator(last), to_model_space(y))
    torch.testing.assert_close(operator((last + 1) / 2), y)


def test_ilvr_with_dip_guidance_ends_on_the_observation(diffusion):
    """The two hooks together in one chain, on the real UNet: down(x_0) is y."""
    operator = Operator("sr", factor=2, kernel="bicubic")
    y = operator(images(seed=6))
    guide = Guide.for_task(operator, y, x_dip=images(seed=7), lam=0.5)
    g = gen(0)
    x_start = diffuse_prior(diffusion, images(seed=7), 40, g)
    x0, nfe = diffusion.sample_loop(
        micro_unet(),
        x_start,
        40,
        5,
        generator=g,
        x0_hook=guide.hook(2, "cpu"),
        progress=False,
        xt_hook=Consistency.for_task(operator, y).hook(diffusion, 2, "cpu"),
    )
    assert nfe == 5
    torch.testing.assert_close(operator(x0), to_model_space(y))


# -- sample(): the consistency parameter --------------------------------------------------


def reference_sample(model, diffusion, x_start, t_start, steps, sampler, eta, hook, generator):
    """sample_loop as it was before the x_t hook existed."""
    chain = [t for t in np.floor(np.linspace(t_start, 1, steps) + 0.5).astype(int)]
    x = x_start
    with torch.no_grad():
        for i, t in enumerate(chain):
            s = int(chain[i + 1]) if i + 1 < len(chain) else 0
            x0 = diffusion._x0_estimate(model, x, int(t))
            x0 = hook(x0, int(t)) if hook is not None else x0
            x = diffusion._step(x, x0, int(t), s, sampler, eta, generator)
    return to_unit(x).numpy()


@pytest.mark.parametrize(("sampler", "eta"), [("ddpm", 0.0), ("ddim", 0.5)])
def test_sample_without_consistency_is_unchanged(diffusion, sampler, eta):
    guide = Guide(x_dip=images(seed=7).numpy(), lam=0.3)
    x_T = noise_start(SHAPE, gen(2))
    model = micro_unet()
    got = sample(
        model, diffusion, x_T, 100, 6, sampler, eta, guide, gen(0), False, consistency=None
    )
    want = reference_sample(
        model, diffusion, x_T, 100, 6, sampler, eta, guide.hook(2, "cpu"), gen(0)
    )
    np.testing.assert_array_equal(got.images, want)


def test_sample_combines_consistency_with_dip_guidance(diffusion):
    operator, y = inpaint_operator(), images(seed=4)
    observed = y * operator.mask
    guide = Guide(x_dip=images(seed=7), lam=0.5, t_min=1, t_max=40)
    x_start = diffuse_prior(diffusion, images(seed=7), 40, gen(0))
    both = sample(
        micro_unet(),
        diffusion,
        x_start,
        40,
        5,
        guide=guide,
        generator=gen(1),
        progress=False,
        consistency=Consistency.for_task(operator, observed),
    )
    guided = sample(
        micro_unet(), diffusion, x_start, 40, 5, guide=guide, generator=gen(1), progress=False
    )
    known = operator.mask.expand(SHAPE).numpy() == 1
    np.testing.assert_allclose(both.images[known], y.numpy()[known], atol=1e-6, rtol=0)
    assert np.abs(guided.images[known] - y.numpy()[known]).max() > 0.05
    assert both.nfe == guided.nfe == 5


def test_denoising_has_no_consistency_step():
    operator = Operator("denoise")
    assert Consistency.for_task(operator, images()) is None
    with pytest.raises(ValueError, match="inpainting and super-resolution"):
        Consistency(operator, images())


def test_consistency_batch_mismatch_is_a_clear_error(diffusion):
    consistency = Consistency(inpaint_operator(n=3), images((3, 3, 8, 8)))
    with pytest.raises(ValueError, match="observation has 3 images"):
        consistency.hook(diffusion, 2, "cpu")


# -- sample_k: K chains, mean and spread -------------------------------------------------


def test_sample_k_with_one_chain_is_a_plain_sample(diffusion):
    model = micro_unet()
    result = sample_k(
        model,
        diffusion,
        lambda g: noise_start(SHAPE, g),
        100,
        4,
        k=1,
        generator=gen(0),
        progress=False,
    )
    g = gen(0)
    plain = sample(model, diffusion, noise_start(SHAPE, g), 100, 4, generator=g, progress=False)
    np.testing.assert_array_equal(result.mean, plain.images)
    np.testing.assert_array_equal(result.samples[0], plain.images)
    np.testing.assert_array_equal(result.spread, np.zeros(2))
    assert result.nfe == plain.nfe == 4


def test_sample_k_spread_is_zero_for_deterministic_ddim_from_a_fixed_start(diffusion):
    x_fixed = noise_start(SHAPE, gen(2))
    result = sample_k(
        micro_unet(),
        diffusion,
        lambda g: x_fixed,
        100,
        4,
        k=3,
        sampler="ddim",
        eta=0.0,
        generator=gen(0),
        progress=False,
    )
    assert result.samples.shape == (3, *SHAPE) and result.mean.shape == SHAPE
    np.testing.assert_array_equal(result.samples[0], result.samples[2])
    assert result.spread.shape == (2,) and float(result.spread.max()) < 1e-12
    assert result.nfe == 3 * 4


def test_sample_k_stochastic_chains_spread_and_are_deterministic_for_a_seed(diffusion):
    x_fixed = noise_start(SHAPE, gen(2))

    def run(seed: int):
        return sample_k(
            micro_unet(),
            diffusion,
            lambda g: x_fixed,
            100,
            4,
            k=3,
            generator=gen(seed),
            progress=False,
        )

    result, again = run(0), run(0)
    assert (result.spread > 0).all()
    np.testing.assert_allclose(result.mean, result.samples.mean(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        result.spread, result.samples.std(axis=0).mean(axis=(1, 2, 3)), rtol=1e-5
    )
    np.testing.assert_array_equal(result.samples, again.samples)
    assert result.nfe == 3 * 4 and result.seconds > 0


def test_sample_k_draws_each_dip_start_from_the_generator(diffusion):
    prior = images(seed=7)
    result = sample_k(
        micro_unet(),
        diffusion,
        lambda g: diffuse_prior(diffusion, prior, 30, g),
        30,
        3,
        k=2,
        sampler="ddim",
        generator=gen(0),
        progress=False,
    )
    assert (result.spread > 0).all()
    assert result.nfe == 2 * 3
    with pytest.raises(ValueError, match="K must be >= 1"):
        sample_k(micro_unet(), diffusion, lambda g: prior, 0, 1, k=0)
