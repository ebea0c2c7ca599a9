"""Prior-trained DDPM training: bounded targets, the truncated special cases, the share
schedule, exact resume, and clear errors for bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from dipddpm.ddpm.auto_t0 import noise_level, prior_error
from dipddpm.ddpm.diffusion import Diffusion, to_model_space
from dipddpm.ddpm.prior_training import (
    align_priors,
    choose_prior_samples,
    excess_target_bound,
    pool_index,
    pool_members,
    prepare_priors,
    prior_share_at,
    prior_targets,
    prior_trained_loss,
    t_floors,
)
from dipddpm.ddpm.train import train
from dipddpm.grid import checkpoint_name

MICRO = {"ch": 8, "ch_mult": (1, 2), "attn": (4,), "norm_groups": 4}
PRIOR_COLUMNS = ["prior_p", "prior_drawn", "prior_target_rms"]


def images(n: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 8, 8), dtype=np.float32)


def blurred(clean: np.ndarray) -> np.ndarray:
    """A DIP-like prior: the image smoothed towards its 4-neighbour mean (in [0, 1])."""
    padded = np.pad(clean, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    vertical = padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1]
    neighbours = vertical + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]
    return (0.5 * clean + 0.125 * neighbours).astype(np.float32)


def fit(out_dir, clean=None, **kwargs) -> pd.DataFrame:
    settings = dict(
        preset="tiny",
        unet_overrides=MICRO,
        schedule="linear",
        T=50,
        mode="truncated",
        t_max=20,
        steps=4,
        batch_size=5,
        lr=1e-3,
        ema_decay=0.99,
        grad_clip=1.0,
        checkpoint_steps=[4],
        seed=7,
        device="cpu",
        warmup=2,
        resume_every=2,
        progress=False,
    )
    settings.update(kwargs)
    return train(images() if clean is None else clean, out_dir, **settings)


def final_state(out_dir, step: int = 4) -> dict:
    return torch.load(out_dir / checkpoint_name(step), weights_only=True)


def assert_same_weights(got: dict, want: dict) -> None:
    for key in ("model", "ema"):
        assert got[key].keys() == want[key].keys()
        for name, value in want[key].items():
            assert torch.equal(got[key][name], value), f"{key}.{name} differs"
    for a, b in zip(
        got["optimizer"]["state"].values(), want["optimizer"]["state"].values(), strict=True
    ):
        for name in b:
            assert torch.equal(a[name], b[name]), f"optimizer {name} differs"


@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
    out = tmp_path_factory.mktemp("truncated")
    curve = fit(out)
    return final_state(out), curve


# ------------------------------------------------------------------------ bounded targets


def test_prior_sample_targets_stay_below_the_bound():
    """Error RMS r from 0.005 to 0.25 (T = 1000, t_max = 150, where s(t_max) = 0.26): every
    prior sample's excess ||eps* - eps||_rms is r / s(t) <= 1.22, its target RMS < 2.5."""
    diffusion, t_max, n = Diffusion("linear", 1000), 150, 400
    gen = torch.Generator().manual_seed(0)
    clean01 = torch.rand(n, 3, 8, 8, generator=gen, dtype=torch.float64)
    error = torch.randn(clean01.shape, generator=gen, dtype=torch.float64)
    error /= error.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    rms = torch.linspace(0.005, 0.25, n, dtype=torch.float64)
    prior01 = clean01 + rms.view(-1, 1, 1, 1) * error
    measured = prior_error(prior01, clean01)
    np.testing.assert_allclose(measured, rms.numpy(), rtol=1e-12)
    floors = t_floors(diffusion, measured, t_max)

    t = diffusion.sample_t(n, t_max, gen)
    noise = torch.randn(clean01.shape, generator=gen).double()
    is_prior, t = choose_prior_samples(t, floors, 1.0, t_max, torch.Generator().manual_seed(1))
    assert is_prior.all() and (t >= floors).all() and (t <= t_max).all()
    x0, x_dip = to_model_space(clean01), to_model_space(prior01)
    target = prior_targets(diffusion, x0, x_dip, t, noise, is_prior)

    def per_sample_rms(x: torch.Tensor) -> torch.Tensor:
        return x.pow(2).mean(dim=(1, 2, 3)).sqrt()

    excess = per_sample_rms(target - noise)
    levels = torch.tensor([noise_level(diffusion, int(s)) for s in t], dtype=torch.float64)
    torch.testing.assert_close(excess, rms / levels)  # the excess is r / s(t)
    bound = excess_target_bound(diffusion)
    assert bound < 1.25
    assert float(excess.max()) <= bound
    assert float((per_sample_rms(target) - per_sample_rms(noise) - bound).max()) <= 0
    assert float(per_sample_rms(target).max()) < 2.5
    # The target is the noise that turns the CLEAN image into the prior's x_t.
    torch.testing.assert_close(
        diffusion.q_sample(x0, t, target), diffusion.q_sample(x_dip, t, noise)
    )

    # Without the floor, at t = 1 the coefficient sqrt(abar / (1 - abar)) is 100, so an
    # error of r = 0.05 (26 dB) would give a target 10 times the noise RMS.
    coefficient = math.sqrt(float(diffusion.alphas_cumprod[1] / (1 - diffusion.alphas_cumprod[1])))
    assert coefficient == pytest.approx(100, rel=1e-3)
    at_one = torch.ones(n, dtype=torch.long)
    unfloored = per_sample_rms(prior_targets(diffusion, x0, x_dip, at_one, noise, is_prior))
    near = int(torch.argmin((rms - 0.05).abs()))
    assert float(unfloored[near] / per_sample_rms(noise)[near]) > 9
    assert float(unfloored.max()) > 40  # r = 0.25 at t = 1: 50x


def test_the_floor_is_the_step_whose_noise_matches_the_error():
    diffusion = Diffusion("linear", 1000)
    floors = t_floors(diffusion, np.array([0.0, 0.0525, 0.119, 0.9]), t_max=150)
    # Zero error: no restriction; the study's priors (25.6 and 18.5 dB): 29 and 70;
    # an error beyond the noise of t_max: t_max.
    assert floors.tolist() == [1, 29, 70, 150]


def test_floored_prior_samples_have_uniform_timesteps_and_clean_ones_keep_theirs():
    n, t_max, floor = 40000, 20, 6
    t = torch.randint(1, t_max + 1, (n,), generator=torch.Generator().manual_seed(0))
    floors = torch.full((n,), floor)
    is_prior, t_new = choose_prior_samples(t, floors, 0.5, t_max, torch.Generator().manual_seed(1))
    assert abs(float(is_prior.float().mean()) - 0.5) < 0.01
    assert torch.equal(t_new[~is_prior], t[~is_prior])
    counts = torch.bincount(t_new[is_prior], minlength=t_max + 1)[1:].float()
    assert counts[: floor - 1].sum() == 0
    share = counts[floor - 1 :] / counts.sum()
    assert float((share - 1 / (t_max - floor + 1)).abs().max()) < 0.01


# ------------------------------------------------------------- truncated special cases


def test_share_zero_reproduces_truncated_training_bit_for_bit(tmp_path, truncated):
    want, want_curve = truncated
    curve = fit(
        tmp_path, mode="prior-trained", prior_share=0.0, priors01=blurred(images()), t_max=20
    )
    assert_same_weights(final_state(tmp_path), want)
    np.testing.assert_array_equal(curve["loss"].to_numpy(), want_curve["loss"].to_numpy())
    assert (curve["prior_drawn"] == 0).all() and curve["prior_target_rms"].isna().all()


def test_a_prior_equal_to_the_clean_image_gives_plain_ddpm_training(tmp_path, truncated):
    """p = 1 with x_DIP = x_0: the floor of a zero error is 1, so every t, x_t and target
    is the truncated run's, and so are the weights."""
    want, want_curve = truncated
    curve = fit(tmp_path, mode="prior-trained", prior_share=1.0, priors01=images().copy())
    assert_same_weights(final_state(tmp_path), want)
    np.testing.assert_array_equal(curve["loss"].to_numpy(), want_curve["loss"].to_numpy())
    assert (curve["prior_drawn"] == 1).all() and (curve["prior_target_rms"] > 0).all()


def test_a_clean_prior_gives_exactly_the_noise_as_target():
    diffusion, n = Diffusion("linear", 50), 16
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(n, 3, 8, 8, generator=gen) * 2 - 1
    t = diffusion.sample_t(n, 20, gen)
    noise = torch.randn(x0.shape, generator=gen)
    floors = t_floors(diffusion, np.zeros(n), 20)
    is_prior, t_new = choose_prior_samples(t, floors, 1.0, 20, torch.Generator())
    assert is_prior.all() and torch.equal(t_new, t)
    assert torch.equal(prior_targets(diffusion, x0, x0.clone(), t, noise, is_prior), noise)
    x0_model = Diffusion("linear", 50, prediction="x0")
    assert torch.equal(prior_targets(x0_model, x0, x0 + 0.1, t, noise, is_prior), x0)


def test_the_prior_choice_draws_from_its_own_stream_only():
    """The training stream gives t and noise exactly as Diffusion.loss draws them and no
    more, so the prior choice never shifts the draws truncated training makes."""
    diffusion, n = Diffusion("linear", 50), 10
    x0 = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    floors = torch.full((n,), 5)

    def model(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return xt * 0.5

    plain = torch.Generator().manual_seed(3)
    want = diffusion.loss(model, x0, t_max=20, generator=plain)
    for share in (0.0, 0.5):
        mine = torch.Generator().manual_seed(3)
        got, stats = prior_trained_loss(
            diffusion, model, x0, x0, x0 * 0.9, floors, share, 20, mine, torch.Generator()
        )
        assert torch.equal(mine.get_state(), plain.get_state())
        if share == 0.0:
            assert torch.equal(got, want) and stats.share == 0.0


# -------------------------------------------------------------------------- the schedule


def test_share_schedule_values():
    assert [prior_share_at(k, 0.5) for k in (0, 3, 99)] == [0.5, 0.5, 0.5]
    ramp = [prior_share_at(k, 0.5, share_start=0.0, ramp_steps=5) for k in range(7)]
    assert ramp == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.5, 0.5])
    falling = [prior_share_at(k, 0.2, share_start=1.0, ramp_steps=3) for k in range(4)]
    assert falling == pytest.approx([1.0, 0.6, 0.2, 0.2])
    assert prior_share_at(0, 0.4, share_start=0.0, ramp_steps=1) == 0.4


# ------------------------------------------------------------------------------ resume

RAMP = dict(mode="prior-trained", prior_share=0.6, prior_share_start=0.0, t_max=20)


@pytest.fixture(scope="module")
def ramped(tmp_path_factory):
    out = tmp_path_factory.mktemp("ramped")
    curve = fit(out, priors01=blurred(images()), steps=6, checkpoint_steps=[3, 6], **RAMP)
    return out, curve


def test_the_curve_records_the_scheduled_and_drawn_shares(ramped):
    _, curve = ramped
    np.testing.assert_allclose(curve["prior_p"], [0.0, 0.12, 0.24, 0.36, 0.48, 0.6])
    assert curve["prior_drawn"].iloc[0] == 0 and curve["prior_drawn"].iloc[1:].between(0, 1).all()
    drawn = curve["prior_drawn"] > 0
    assert drawn.any() and (curve.loc[drawn, "prior_target_rms"] > 0).all()
    assert curve.loc[~drawn, "prior_target_rms"].isna().all()


@pytest.mark.parametrize("killed_after", [3, 5])
def test_resume_after_a_kill_reaches_the_same_weights(tmp_path, ramped, killed_after):
    """Killed after 3 steps resumes from the step-3 checkpoint, after 5 from resume.pt
    (step 4), with the outputs deleted the way Snakemake deletes a failed job's."""
    full_dir, full_curve = ramped
    settings = dict(priors01=blurred(images()), steps=6, checkpoint_steps=[3, 6], **RAMP)
    fit(tmp_path, stop_after=killed_after, **settings)
    for name in (checkpoint_name(3), checkpoint_name(6), "curve.csv"):
        (tmp_path / name).unlink(missing_ok=True)
    resumed = fit(tmp_path, **settings)
    for step in (3, 6):
        assert_same_weights(final_state(tmp_path, step), final_state(full_dir, step))
    columns = ["step", "loss", *PRIOR_COLUMNS]
    pd.testing.assert_frame_equal(resumed[columns], full_curve[columns])


def test_other_priors_or_shares_start_over_instead_of_resuming(tmp_path):
    """A checkpoint trained with other prior data or another p is not continued."""
    clean = images()
    settings = dict(mode="prior-trained", prior_share=0.5, steps=4, checkpoint_steps=[2, 4])
    fit(tmp_path / "cell", priors01=blurred(clean), stop_after=3, **settings)
    fit(tmp_path / "cell", priors01=np.clip(blurred(clean) + 0.01, 0, 1), **settings)
    fit(tmp_path / "fresh", priors01=np.clip(blurred(clean) + 0.01, 0, 1), **settings)
    assert_same_weights(final_state(tmp_path / "cell"), final_state(tmp_path / "fresh"))
    assert final_state(tmp_path / "cell")["config"]["prior"]["share"] == 0.5


# -------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(prior_share=1.5), r"prior_share must lie in \[0, 1\]; got 1.5"),
        (dict(prior_share=-0.1), r"prior_share must lie in \[0, 1\]; got -0.1"),
        (dict(prior_share=float("nan")), r"prior_share must lie in \[0, 1\]"),
        (dict(prior_share="0.5"), r"prior_share must lie in \[0, 1\]; got '0.5'"),
        (dict(prior_share=None), r"needs prior_share"),
        (dict(prior_share_start=2.0), r"prior_share_start must lie in \[0, 1\]; got 2.0"),
        (dict(prior_share_start=0.0, prior_ramp_steps=0), "prior_ramp_steps must be an integer"),
        (dict(prior_ramp_steps=3), "prior_ramp_steps=3 needs prior_share_start"),
        (dict(t_max=None), r"prior-trained mode needs t_max in 1..T=50; got None"),
        (dict(t_max=51), r"prior-trained mode needs t_max in 1..T=50; got 51"),
        (dict(t_max=0), r"prior-trained mode needs t_max in 1..T=50; got 0"),
    ],
)
def test_bad_prior_settings_are_rejected(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        fit(tmp_path, **{"mode": "prior-trained", "prior_share": 0.5, **settings})


@pytest.mark.parametrize(
    ("priors", "message"),
    [
        (images()[:11], r"one DIP output per training image.*got \(11, 3, 8, 8\)"),
        (images(12)[:, :, :4, :4], r"one DIP output per training image.*got \(12, 3, 4, 4\)"),
        (images()[0], r"one DIP output per training image"),
        (images().tolist(), "priors01 must be a numpy"),
        (images() * 2, r"priors01 must lie in \[0, 1\]"),
        (np.full((12, 3, 8, 8), np.nan, dtype=np.float32), "non-finite"),
        (None, "prior-trained mode needs priors01"),
    ],
)
def test_bad_prior_arrays_are_rejected(tmp_path, priors, message):
    with pytest.raises(ValueError, match=message):
        fit(tmp_path, mode="prior-trained", prior_share=0.5, priors01=priors)


def test_prior_settings_belong_to_prior_trained_mode_only(tmp_path):
    with pytest.raises(ValueError, match=r"\['prior_share'\] are only used in prior-trained"):
        fit(tmp_path, prior_share=0.5)
    with pytest.raises(ValueError, match="priors01 is only used in prior-trained mode"):
        fit(tmp_path, priors01=images())
    with pytest.raises(ValueError, match="t_max=20 is only used in truncated and prior-trained"):
        fit(tmp_path, mode="full")


def test_priors_far_above_the_noise_of_t_max_are_warned_about():
    """A shuffled prior set pairs images with other images' priors: errors of ~0.4."""
    clean = images(12)
    shuffled = blurred(clean)[np.roll(np.arange(12), 1)]
    with pytest.warns(UserWarning, match="aligned with the training images"):
        prepare_priors(shuffled, clean, Diffusion("linear", 1000), t_max=20)


def test_align_priors_orders_by_name_and_refuses_gaps():
    priors = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1)
    aligned = align_priors(priors, ["c", "a", "d", "b"], ["a", "b", "c"])
    assert aligned.ravel().tolist() == [1.0, 3.0, 0.0]
    with pytest.raises(ValueError, match=r"no prior for 1 of 2 training images.*'e'"):
        align_priors(priors, ["c", "a", "d", "b"], ["a", "e"])
    with pytest.raises(ValueError, match="duplicates"):
        align_priors(priors, ["a", "a", "d", "b"], ["a"])
    with pytest.raises(ValueError, match="3 names for 4 priors"):
        align_priors(priors, ["a", "b", "c"], ["a"])


# ----------------------------------------------------------------- a pool of a few priors


def test_a_prior_pool_of_a_subset_trains_prior_samples_on_pool_members(tmp_path):
    clean = images(12)
    index = np.array([1, 4, 7])
    pool = blurred(clean)[index]
    curve = fit(
        tmp_path, clean, mode="prior-trained", prior_share=0.5, priors01=pool, prior_index=index
    )
    assert curve["prior_drawn"].between(0, 1).all() and curve["prior_drawn"].max() > 0
    # p = 0 with a pool is truncated training bit for bit, like p = 0 without one.
    fit(
        tmp_path / "p0",
        clean,
        mode="prior-trained",
        prior_share=0.0,
        priors01=pool,
        prior_index=index,
    )
    fit(tmp_path / "trunc", clean)
    assert_same_weights(final_state(tmp_path / "p0"), final_state(tmp_path / "trunc"))


def test_pool_members_are_drawn_from_the_pool_and_only_from_its_own_stream():
    priors = prepare_priors(
        blurred(images(12))[[2, 5]], images(12), Diffusion("linear", 50), 20, np.array([2, 5])
    )
    gen = torch.Generator().manual_seed(0)
    members = pool_members(priors, torch.arange(6), gen)
    assert set(members.tolist()) <= {0, 1} and priors.index.tolist() == [2, 5]
    aligned = prepare_priors(blurred(images(12)), images(12), Diffusion("linear", 50), 20)
    assert torch.equal(pool_members(aligned, torch.arange(6), gen), torch.arange(6))


def test_pool_index_matches_names_and_refuses_strangers():
    assert pool_index(["b", "d"], ["a", "b", "c", "d"]).tolist() == [1, 3]
    with pytest.raises(ValueError, match="belong to no training image"):
        pool_index(["z"], ["a", "b"])
    with pytest.raises(ValueError, match="prior_index must lie in"):
        prepare_priors(images(2), images(4), Diffusion("linear", 50), 20, np.array([3, 9]))
