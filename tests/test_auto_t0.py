"""Auto-t0 on known answers: error estimates per task, error -> t0, calibration, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from dipddpm.ddpm.auto_t0 import (
    auto_t0_evaluation,
    error_correlation,
    estimate_prior_error,
    fit_error_scale,
    noise_level,
    prior_error,
    t_for_error,
)
from dipddpm.ddpm.diffusion import Diffusion
from dipddpm.ddpm.sample import t_for_sigma
from dipddpm.operators import Operator, downsample

SHAPE = (16, 3, 32, 32)


@pytest.fixture(scope="module")
def diffusion() -> Diffusion:
    return Diffusion("linear", 1000)


def clean_images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 0.9, SHAPE)


def gaussian(seed: int, std: float) -> np.ndarray:
    return std * np.random.default_rng(seed).standard_normal(SHAPE)


# ------------------------------------------------------------------------ error estimates


def test_denoising_estimate_recovers_an_independent_error_of_known_rms():
    r, sigma = 25 / 255, 25 / 255
    clean = clean_images()
    prior = clean + gaussian(1, r)
    observed = clean + gaussian(2, sigma)
    est = estimate_prior_error(prior, observed, Operator("denoise"), sigma)
    assert est.shape == (SHAPE[0],)
    # Per image the relative scatter is about sqrt(2/d) (r^2 + sigma^2) / (2 r^2) = 2.6 %.
    np.testing.assert_allclose(est, r, rtol=0.10)
    assert abs(est.mean() / r - 1) < 0.02
    np.testing.assert_allclose(prior_error(prior, clean), r, rtol=0.05)
    scaled = estimate_prior_error(prior, observed, Operator("denoise"), sigma, scale=2.0)
    np.testing.assert_allclose(scaled, 2 * est)


def test_denoising_estimate_is_biased_low_when_the_prior_fits_the_noise():
    sigma = 25 / 255
    clean = clean_images()
    observed = clean + gaussian(2, sigma)
    # A DIP run to the end reproduces y: the residual is 0, the true error is sigma.
    est = estimate_prior_error(observed, observed, Operator("denoise"), sigma)
    np.testing.assert_array_equal(est, 0.0)
    np.testing.assert_allclose(prior_error(observed, clean), sigma, rtol=0.05)
    # Half of the noise copied into the prior: the cross term pulls the estimate down.
    prior = clean + gaussian(1, sigma) + 0.5 * (observed - clean)
    est = estimate_prior_error(prior, observed, Operator("denoise"), sigma)
    assert np.all(est < prior_error(prior, clean))


def test_inpainting_estimate_sees_only_the_known_pixels():
    r = 10 / 255
    clean = clean_images()
    mask = (np.random.default_rng(3).random((SHAPE[0], 1, 32, 32)) >= 0.5).astype(np.float32)
    operator = Operator("inpaint", mask=torch.from_numpy(mask))
    observed = clean * mask
    prior = clean + gaussian(1, r)
    est = estimate_prior_error(prior, observed, operator)
    np.testing.assert_allclose(est, r, rtol=0.10)
    # Extra error on the missing pixels raises the true error but not the estimate.
    worse = prior + (1 - mask) * gaussian(4, 5 * r)
    np.testing.assert_allclose(estimate_prior_error(worse, observed, operator), est)
    assert np.all(est < prior_error(worse, clean))
    shared = Operator("inpaint", mask=torch.from_numpy(mask[:1]))
    est_shared = estimate_prior_error(prior, clean * mask[:1], shared)
    np.testing.assert_allclose(est_shared, r, rtol=0.15)


@pytest.mark.parametrize("kernel", ["area", "bicubic"])
def test_sr_estimate_measures_a_constant_offset_exactly(kernel):
    clean = clean_images()
    operator = Operator("sr", factor=4, kernel=kernel)
    observed = downsample(torch.from_numpy(clean), 4, kernel).numpy()
    est = estimate_prior_error(clean + 0.05, observed, operator)
    np.testing.assert_allclose(est, 0.05, rtol=1e-6)


def test_sr_area_estimate_is_a_lower_bound_blind_to_high_frequencies():
    clean = clean_images()
    operator = Operator("sr", factor=2, kernel="area")
    observed = downsample(torch.from_numpy(clean), 2, "area").numpy()
    prior = clean + gaussian(1, 0.05)
    est = estimate_prior_error(prior, observed, operator)
    assert np.all(est <= prior_error(prior, clean))
    # A checkerboard averages to zero over every 2x2 block: invisible to the estimate.
    checker = 0.05 * (-1.0) ** (np.arange(32)[:, None] + np.arange(32)[None, :])
    est = estimate_prior_error(clean + checker, observed, operator)
    np.testing.assert_allclose(est, 0.0, atol=1e-9)


def test_estimate_refuses_bad_arguments_by_name():
    clean = clean_images()
    denoise = Operator("denoise")
    with pytest.raises(ValueError, match="sigma01"):
        estimate_prior_error(clean, clean, denoise, -0.1)
    with pytest.raises(ValueError, match="scale"):
        estimate_prior_error(clean, clean, denoise, 0.1, scale=0.0)
    with pytest.raises(ValueError, match="observation01"):
        estimate_prior_error(clean, clean[:, :, :16], denoise, 0.1)
    with pytest.raises(ValueError, match="prior01"):
        estimate_prior_error(clean[0], clean[0], denoise, 0.1)
    with pytest.raises(ValueError, match="observation01"):
        estimate_prior_error(clean, clean, Operator("sr", factor=2), 0.0)
    mask = torch.ones(SHAPE[0], 1, 16, 16)
    with pytest.raises(ValueError, match="operator.mask"):
        estimate_prior_error(clean, clean, Operator("inpaint", mask=mask))
    with pytest.raises(ValueError, match="clean01"):
        prior_error(clean, clean[:2])


# ---------------------------------------------------------------------------- error -> t0


def test_a_known_error_maps_to_the_matched_step(diffusion):
    assert t_for_error(diffusion, 25 / 255) == t_for_sigma(diffusion, 25 / 255) == 57
    assert t_for_error(diffusion, 0.0) == 0
    assert isinstance(t_for_error(diffusion, 25 / 255), int)
    steps = t_for_error(diffusion, np.array([0.0, 25 / 255, 50 / 255, 25 / 255]))
    assert steps.tolist() == [0, 57, t_for_sigma(diffusion, 50 / 255), 57]
    # The matched step's noise level is the error, up to the schedule's step spacing.
    assert noise_level(diffusion, 57) == pytest.approx(25 / 255, rel=0.03)


def test_t_for_error_clips_to_t_max_and_snaps_to_the_grid(diffusion):
    assert t_for_error(diffusion, 1000.0) == diffusion.T
    assert t_for_error(diffusion, 1000.0, t_max=200) == 200
    assert t_for_error(diffusion, 25 / 255, t_max=40) == 40
    grid = (0, 25, 50, 100, 200)
    errors = np.array([0.0, 1e-4, 25 / 255, 1000.0])
    assert t_for_error(diffusion, errors, t_max=200, choices=grid).tolist() == [0, 0, 50, 200]
    # 57 is 7 steps from both 50 and 64: the tie keeps more of the prior.
    assert t_for_error(diffusion, 25 / 255, choices=(64, 50)) == 50
    assert t_for_error(diffusion, 0.0, choices=(25, 100)) == 25


def test_t_for_error_refuses_bad_arguments_by_name(diffusion):
    with pytest.raises(ValueError, match="rms01"):
        t_for_error(diffusion, -0.1)
    with pytest.raises(ValueError, match="rms01"):
        t_for_error(diffusion, np.array([0.1, math.nan]))
    with pytest.raises(ValueError, match="t_max"):
        t_for_error(diffusion, 0.1, t_max=0)
    with pytest.raises(ValueError, match="choices"):
        t_for_error(diffusion, 0.1, t_max=200, choices=(0, 250))
    with pytest.raises(ValueError, match="choices"):
        t_for_error(diffusion, 0.1, choices=())


# ---------------------------------------------------------------------------- calibration


def test_fit_error_scale_recovers_a_known_factor():
    est = np.random.default_rng(0).uniform(0.02, 0.2, 40)
    assert fit_error_scale(est, 1.7 * est) == pytest.approx(1.7)
    assert fit_error_scale(est, 1.7 * est, method="median") == pytest.approx(1.7)
    noisy = 1.7 * est * np.exp(0.05 * np.random.default_rng(1).standard_normal(40))
    assert fit_error_scale(est, noisy) == pytest.approx(1.7, rel=0.03)
    # One image whose estimate collapsed: least squares barely notices, the ratio is huge.
    est_bad = np.append(est, 1e-6)
    true_bad = np.append(1.7 * est, 0.3)
    assert fit_error_scale(est_bad, true_bad, method="median") == pytest.approx(1.7)


def test_fit_error_scale_refuses_bad_arguments_by_name():
    with pytest.raises(ValueError, match="estimated and true"):
        fit_error_scale([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="estimated and true"):
        fit_error_scale([], [])
    with pytest.raises(ValueError, match="estimated"):
        fit_error_scale([-0.1, 0.2], [0.1, 0.2])
    with pytest.raises(ValueError, match="all estimated errors are 0"):
        fit_error_scale([0.0, 0.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="method"):
        fit_error_scale([0.1], [0.1], method="mean")


def test_error_correlation_reports_pearson_and_spearman():
    est = np.linspace(0.01, 0.2, 10)
    out = error_correlation(est, est**3)
    assert out["spearman"] == pytest.approx(1.0)
    assert 0.8 < out["pearson"] < 1.0
    assert out["n"] == 10
    flat = error_correlation(np.full(5, 0.1), np.linspace(0.1, 0.2, 5))
    assert math.isnan(flat["pearson"]) and math.isnan(flat["spearman"])


# ----------------------------------------------------------------------------- evaluation


def psnr_table() -> pd.DataFrame:
    curves = {"a": (20.0, 25.0, 24.0), "b": (30.0, 28.0, 20.0), "c": (18.0, 22.0, 22.2)}
    rows = [
        {"image": image, "t0": t0, "psnr": psnr}
        for image, curve in curves.items()
        for t0, psnr in zip((0, 50, 100), curve, strict=True)
    ]
    return pd.DataFrame(rows)


def test_auto_t0_evaluation_on_a_hand_made_table():
    # Regrets: a 0 (50 is its best), b 2.0 (best is 0), c 0.2 (best is 100).
    out = auto_t0_evaluation(psnr_table(), {"a": 50, "b": 50, "c": 50})
    assert out["n_images"] == 3
    assert out["share_within_tolerance"] == pytest.approx(2 / 3)
    assert out["mean_regret_db"] == pytest.approx(2.2 / 3)
    assert out["max_regret_db"] == pytest.approx(2.0)
    assert out["per_image"]["best_t0"].tolist() == [50, 0, 100]
    # Mean PSNR per t0: 22.67, 25.0, 22.07, so the fixed choice is 50 with the same regret.
    assert out["best_fixed_t0"] == 50
    assert out["best_fixed_regret_db"] == pytest.approx(2.2 / 3)
    strict = auto_t0_evaluation(psnr_table(), {"a": 50, "b": 50, "c": 50}, tolerance_db=0.1)
    assert strict["share_within_tolerance"] == pytest.approx(1 / 3)
    better = auto_t0_evaluation(psnr_table(), pd.Series({"a": 50, "b": 0}))
    assert better["n_images"] == 2
    assert better["share_within_tolerance"] == 1.0
    assert better["mean_regret_db"] == 0.0


def test_auto_t0_evaluation_refuses_bad_arguments_by_name():
    table = psnr_table()
    with pytest.raises(ValueError, match="psnr_by_t0 is empty"):
        auto_t0_evaluation(table.iloc[:0], {"a": 50})
    with pytest.raises(ValueError, match="psnr_by_t0 lacks"):
        auto_t0_evaluation(table.drop(columns="psnr"), {"a": 50})
    with pytest.raises(ValueError, match="average the seeds"):
        auto_t0_evaluation(pd.concat([table, table]), {"a": 50})
    with pytest.raises(ValueError, match="auto_t0 of image 'a' is 57"):
        auto_t0_evaluation(table, {"a": 57})
    with pytest.raises(ValueError, match="auto_t0 names images not in psnr_by_t0"):
        auto_t0_evaluation(table, {"z": 50})
    with pytest.raises(ValueError, match="auto_t0 is empty"):
        auto_t0_evaluation(table, {})
    with pytest.raises(ValueError, match="tolerance_db"):
        auto_t0_evaluation(table, {"a": 50}, tolerance_db=-1.0)
