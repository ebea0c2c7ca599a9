"""Auto-t0 evaluated against a dense t0 grid on a synthetic study whose answer is known:
each prior's error is drawn independently of the observation noise, and each case's PSNR
peaks at the step matching its true error, so the noise-matching rule is right by
construction and the estimate is what is being scored."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dipddpm import example1_auto_t0 as auto
from dipddpm import grid
from dipddpm.ddpm import auto_t0
from dipddpm.ddpm.diffusion import Diffusion
from dipddpm.operators import Operator

TASK, DATASET = "denoise-s25", "cifar10-study"
SIGMA01 = 25 / 255
N_IMAGES, TUNING = 16, 4
T0_GRID = [0, 10, 20, 33, 57, 80, 115, 150]
BASE = {
    "purpose": "restoration",
    "dataset": DATASET,
    "task": TASK,
    "arch": "skip",
    "iters": 400,
    "train_dataset": "cifar10-train50k",
    "preset": "tiny",
    "schedule": "linear",
    "mode": "full",
    "t_max": 1000,
    "train_steps": 5000,
    "ckpt": 5000,
    "start": "dip",
    "sampler": "ddim",
    "eta": 0.0,
    "steps": 25,
    "lam": 0,
    "k": 1,
}
SEEDS = {"dip_seed": 0, "train_seed": 0, "sample_seed": 0}
DIFFUSION = Diffusion("linear", 1000)


def _errors() -> np.ndarray:
    """Per-image prior error RMS spread over the grid's range (0.02 .. 0.25)."""
    return np.linspace(0.02, 0.25, N_IMAGES)


def _study(obs_seeds=(0,)):
    """(observations, prior lookup, frame): PSNR of each case peaks at its true-error step."""
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.2, 0.8, (N_IMAGES, 3, 32, 32)).astype(np.float32)
    errors = _errors()
    observations, priors, rows = {}, {}, []
    for obs in obs_seeds:
        noise = rng.standard_normal(clean.shape).astype(np.float32) * SIGMA01
        unit = rng.standard_normal(clean.shape)
        unit /= np.sqrt((unit**2).mean(axis=(1, 2, 3), keepdims=True))
        priors[str(obs)] = (clean + errors[:, None, None, None] * unit).astype(np.float32)
        observations[(DATASET, TASK, str(obs))] = auto.Observation(
            clean=clean,
            observed=clean + noise,
            operator=Operator("denoise"),
            sigma01=SIGMA01,
        )
        true = auto_t0.prior_error(priors[str(obs)], clean)
        best = auto_t0.t_for_error(DIFFUSION, true, choices=T0_GRID)
        for t0 in T0_GRID:
            psnr = 30.0 - np.abs(t0 - best) / 10.0
            rows.append(_rows({**BASE, "t0": t0, "obs_seed": obs}, psnr))
        # A K=4 setting sampled at only four t0 values is not a dense base.
        for t0 in (33, 57, 115, 150):
            rows.append(_rows({**BASE, "k": 4, "t0": t0, "obs_seed": obs}, 31.0))

    def prior(identity):
        assert identity["iters"] == "400" and identity["arch"] == "skip"
        return priors[identity["obs_seed"]]

    return observations, prior, pd.concat(rows, ignore_index=True)


def _rows(identity, psnr):
    frame = pd.DataFrame({"image": range(N_IMAGES), "psnr": psnr})
    for column, value in grid.full_identity({**identity, **SEEDS}, "dip+ddpm").items():
        frame[column] = value
    return frame


def test_estimated_error_maps_each_case_to_its_best_grid_t0():
    observations, prior, frame = _study()
    summary, cases = auto.auto_t0_tables(frame, TUNING, observations, prior, T=1000)
    assert list(summary["error"]) == ["estimated", "true-error"]
    assert summary["headline"].all()
    assert summary["t0_grid"].iloc[0] == " ".join(map(str, T0_GRID))
    true_row = summary.set_index("error").loc["true-error"]
    assert true_row["share_within_tolerance"] == 1.0 and true_row["mean_regret_db"] == 0.0
    estimated = summary.set_index("error").loc["estimated"]
    # A prior independent of the noise makes the residual estimate consistent.
    assert estimated["pearson"] > 0.99
    assert estimated["share_within_tolerance"] >= 0.8 and estimated["aim_met"]
    assert 0.9 < estimated["slope"] < 1.1 and abs(estimated["intercept"]) < 0.01
    n_eval = N_IMAGES - len(range(0, N_IMAGES, TUNING))
    assert estimated["n_cases"] == n_eval and estimated["n_images"] == n_eval
    assert set(cases["split"]) == {"tuning", "evaluation"} and len(cases) == N_IMAGES


def test_auto_beats_the_best_fixed_t0_when_images_need_different_t0():
    observations, prior, frame = _study()
    summary, _ = auto.auto_t0_tables(frame, TUNING, observations, prior, T=1000)
    true_row = summary.set_index("error").loc["true-error"]
    assert true_row["tuned_fixed_regret_db"] > 1.0
    assert true_row["auto_minus_fixed_db"] > 1.0 and true_row["verdict"] == "helps"


def test_the_tuned_fixed_t0_is_chosen_on_tuning_cases_only():
    observations, prior, frame = _study()
    evaluation = frame["image"] % TUNING != 0
    # Evaluation cases that would all prefer t0 = 0 must not move the fixed t0.
    frame.loc[evaluation & (frame["t0"] == "0"), "psnr"] = 99.0
    summary, _ = auto.auto_t0_tables(frame, TUNING, observations, prior, T=1000)
    assert summary["tuned_fixed_t0"].iloc[0] != 0


def test_seeds_of_one_image_are_cases_averaged_into_one_paired_image():
    observations, prior, frame = _study(obs_seeds=(0, 1))
    summary, cases = auto.auto_t0_tables(frame, TUNING, observations, prior, T=1000)
    row = summary.iloc[0]
    n_eval = N_IMAGES - len(range(0, N_IMAGES, TUNING))
    assert row["n_cases"] == 2 * n_eval and row["n_images"] == n_eval
    assert len(cases) == 2 * N_IMAGES


def test_a_missing_observation_leaves_the_base_out_with_a_reason(caplog):
    _, prior, frame = _study()
    summary, cases = auto.auto_t0_tables(frame, TUNING, {}, prior, T=1000)
    assert summary.empty and cases.empty
    assert "no observation" in caplog.text


def test_truncated_models_never_get_a_t0_above_t_max():
    observations, prior, frame = _study()
    # A truncated model's cells stop at its t_max, so its grid is 0..57 here.
    frame = frame[frame["t0"].astype(int) <= 57].copy()
    frame["mode"], frame["t_max"] = "truncated", "57"
    summary, cases = auto.auto_t0_tables(frame, TUNING, observations, prior, T=1000)
    assert cases["auto_t0"].max() <= 57 and cases["true_error_t0"].max() <= 57


def test_a_prior_that_fitted_the_noise_reduces_auto_to_one_tuned_t0():
    observations, prior, frame = _study()
    # The prior equals the observation: its residual is 0 and says nothing per image.
    seen = observations[(DATASET, TASK, "0")]
    summary, cases = auto.auto_t0_tables(frame, TUNING, observations, lambda _: seen.observed, 1000)
    estimated = summary.set_index("error").loc["estimated"]
    assert estimated["slope"] == 0.0 and "fitted the noise" in estimated["note"]
    assert cases["auto_t0"].nunique() == 1


def test_affine_calibration_keeps_a_nonnegative_slope():
    intercept, slope = auto_t0.fit_error_affine([0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    assert slope == 0.0 and intercept == pytest.approx(0.2)
    intercept, slope = auto_t0.fit_error_affine([0.0, 0.1, 0.2], [0.05, 0.15, 0.25])
    assert slope == pytest.approx(1.0) and intercept == pytest.approx(0.05)


@pytest.mark.parametrize("kind", ["inpaint", "sr"])
def test_noise_free_observations_use_a_zero_sigma(kind):
    clean = torch.rand(2, 3, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float() if kind == "inpaint" else None
    operator = Operator(kind, mask=mask, factor=2)
    observed = operator(clean)
    estimate = auto_t0.estimate_prior_error(clean, observed, operator, 0.0)
    np.testing.assert_allclose(estimate, 0.0, atol=1e-7)
