"""The diffusion process: schedules, forward noising, posterior, loss and samplers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dipddpm.ddpm.diffusion import Diffusion, make_schedule, timesteps
from dipddpm.ddpm.unet import build_unet


def micro_unet(seed: int = 0) -> nn.Module:
    """A few-thousand-parameter UNet with a random (non-zero) output layer."""
    torch.manual_seed(seed)
    model = build_unet("tiny", ch=8, ch_mult=(1, 2), attn=(4,), image_size=8, norm_groups=4)
    nn.init.normal_(model.conv_out.weight, std=0.05)
    return model.eval()


class RecordingModel(nn.Module):
    """Predicts zero noise and records the timesteps it is asked about."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.seen.append(t.clone())
        return torch.zeros_like(x)


def test_linear_schedule_endpoints_and_monotonicity():
    betas = make_schedule("linear", 1000)
    assert betas.shape == (1001,)
    assert betas[0] == 0
    assert math.isclose(float(betas[1]), 1e-4, rel_tol=1e-12)
    assert math.isclose(float(betas[1000]), 0.02, rel_tol=1e-12)
    assert bool((betas[2:] > betas[1:-1]).all())
    abar = Diffusion("linear", 1000).alphas_cumprod
    assert abar[0] == 1.0
    assert bool((abar[1:] < abar[:-1]).all())
    assert float(abar[-1]) < 1e-4


def test_linear_schedule_scales_with_T():
    betas = make_schedule("linear", 100)
    assert math.isclose(float(betas[1]), 1e-3, rel_tol=1e-12)
    assert math.isclose(float(betas[100]), 0.2, rel_tol=1e-12)


def test_cosine_schedule_is_monotonic_and_ends_near_zero():
    diffusion = Diffusion("cosine", 1000)
    abar = diffusion.alphas_cumprod
    assert abar[0] == 1.0
    assert bool((abar[1:] < abar[:-1]).all())
    assert float(abar[-1]) < 1e-6
    assert float(diffusion.betas.max()) <= 0.999
    # Nichol & Dhariwal: abar(t) = f(t) / f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2).
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    assert math.isclose(float(abar[500]), f(500) / f(0), rel_tol=1e-9)


def test_unknown_schedule_and_prediction_are_rejected():
    with pytest.raises(ValueError, match="schedule"):
        make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="prediction"):
        Diffusion("linear", 10, prediction="v")


def test_q_sample_statistics_match_the_marginal():
    diffusion = Diffusion("linear", 1000)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1, 1, 1), 0.6)
    for t in (10, 300, 900):
        xt = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
        abar = float(diffusion.alphas_cumprod[t])
        assert abs(float(xt.mean()) - math.sqrt(abar) * 0.6) < 0.02
        assert abs(float(xt.var()) - (1 - abar)) < 0.03


def test_q_posterior_matches_bayes_rule():
    """Posterior of x_s given x_t, x_0 by completing the square, for s = t-1 and s < t-1."""
    diffusion = Diffusion("linear", 200)
    abar = diffusion.alphas_cumprod
    x0 = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    xt = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    for t, s in [(1, 0), (2, 1), (100, 99), (200, 199), (100, 40), (200, 0)]:
        a = abar[t] / abar[s]  # x_t | x_s ~ N(sqrt(a) x_s, 1 - a)
        precision = 1 / (1 - abar[s]) + a / (1 - a) if s > 0 else None
        mean, var, logvar = diffusion.q_posterior(x0.float(), xt.float(), t, s)
        if s == 0:
            torch.testing.assert_close(mean, x0.float())
            assert float(var.max()) == 0.0 and torch.isfinite(logvar).all()
            continue
        want_var = 1 / precision
        want_mean = want_var * (abar[s].sqrt() * x0 / (1 - abar[s]) + a.sqrt() * xt / (1 - a))
        torch.testing.assert_close(mean.double(), want_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(float(var.flatten()[0]), float(want_var), rtol=1e-5, atol=0)
    # Default s = t - 1 uses the paper's beta_t: var = beta_tilde_t.
    t = 50
    beta = diffusion.betas[t]
    want = beta * (1 - abar[t - 1]) / (1 - abar[t])
    _, var, _ = diffusion.q_posterior(x0.float(), xt.float(), t)
    assert float(var.flatten()[0]) == float(want.float())


def test_predict_x0_inverts_q_sample():
    diffusion = Diffusion("cosine", 100)
    x0 = torch.rand(3, 3, 4, 4) * 2 - 1
    noise = torch.randn(3, 3, 4, 4)
    t = torch.tensor([1, 50, 90])
    xt = diffusion.q_sample(x0, t, noise)
    torch.testing.assert_close(diffusion.predict_x0(noise, xt, t), x0, atol=1e-4, rtol=1e-4)


def test_timesteps_are_evenly_spaced_and_distinct():
    assert timesteps(10, 10) == list(range(10, 0, -1))
    assert timesteps(1, 700) == [700]
    chain = timesteps(50, 1000)
    assert chain[0] == 1000 and chain[-1] == 1 and len(set(chain)) == 50
    assert chain == sorted(chain, reverse=True)
    assert timesteps(5, 0) == []
    with pytest.raises(ValueError, match="steps"):
        timesteps(11, 10)


def test_loss_truncated_never_uses_t_above_t_max():
    diffusion = Diffusion("linear", 1000)
    model = RecordingModel()
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        diffusion.loss(model, torch.zeros(64, 3, 2, 2), t_max=20, generator=gen)
    seen = torch.cat(model.seen)
    assert int(seen.min()) == 1 and int(seen.max()) == 20
    assert set(seen.tolist()) == set(range(1, 21))


def test_loss_of_zero_predictor_is_the_noise_variance():
    diffusion = Diffusion("linear", 1000)
    gen = torch.Generator().manual_seed(0)
    loss = diffusion.loss(RecordingModel(), torch.zeros(256, 3, 8, 8), generator=gen)
    assert abs(float(loss) - 1.0) < 0.02


def _reference_full_chain(model, diffusion, x, generator):
    """The paper's ancestral sampler, one step t -> t-1 at a time, written independently."""
    with torch.no_grad():
        for t in range(diffusion.T, 0, -1):
            t_batch = torch.full((x.shape[0],), t, dtype=torch.long)
            x0 = diffusion.predict_x0(model(x, t_batch), x, t_batch).clamp(-1, 1)
            mean, var, _ = diffusion.q_posterior(x0, x, t_batch)
            x = mean + var.sqrt() * torch.randn(x.shape, generator=generator) if t > 1 else mean
    return x


def test_respaced_chain_with_all_steps_equals_the_full_chain():
    diffusion = Diffusion("linear", 30)
    model = micro_unet()
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    want = _reference_full_chain(model, diffusion, x_T, torch.Generator().manual_seed(2))
    got, nfe = diffusion.sample_loop(
        model, x_T, 30, 30, "ddpm", generator=torch.Generator().manual_seed(2), progress=False
    )
    assert nfe == 30
    assert torch.equal(got, want)
    shorter, nfe = diffusion.sample_loop(
        model, x_T, 30, 10, "ddpm", generator=torch.Generator().manual_seed(2), progress=False
    )
    assert nfe == 10 and not torch.equal(shorter, want)


def test_ddim_with_eta_zero_is_deterministic():
    diffusion = Diffusion("linear", 100)
    model = micro_unet()
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    a, _ = diffusion.sample_loop(
        model, x_T, 100, 10, "ddim", 0.0, torch.Generator().manual_seed(5), progress=False
    )
    b, _ = diffusion.sample_loop(
        model, x_T, 100, 10, "ddim", 0.0, torch.Generator().manual_seed(6), progress=False
    )
    assert torch.equal(a, b)
    c, _ = diffusion.sample_loop(
        model, x_T, 100, 10, "ddim", 1.0, torch.Generator().manual_seed(6), progress=False
    )
    assert not torch.equal(a, c)


def test_unknown_sampler_is_rejected():
    with pytest.raises(ValueError, match="sampler"):
        Diffusion("linear", 10).sample_loop(micro_unet(), torch.zeros(1, 3, 8, 8), 10, 2, "euler")
