"""PSNR/SSIM against known values and the curve summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from dipddpm.metrics import (
    PSNR_CAP_DB,
    peak,
    per_image_metrics,
    psnr,
    psnr_from_mse,
    ssim,
    steps_to_quality,
)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return (0.2 + 0.6 * rng.random((3, 16, 16))).astype(np.float32)


def test_constant_offset_of_a_tenth_is_20_db(image):
    assert psnr(image + 0.1, image) == pytest.approx(20.0, abs=1e-4)
    assert psnr(image - 0.01, image) == pytest.approx(40.0, abs=1e-3)


def test_identical_images_are_capped_and_ssim_one(image):
    assert psnr(image, image) == PSNR_CAP_DB
    assert ssim(image, image) == pytest.approx(1.0)


def test_ssim_drops_with_noise_and_handles_grayscale(image):
    rng = np.random.default_rng(1)
    noisy = np.clip(image + 0.2 * rng.standard_normal(image.shape), 0, 1)
    assert ssim(noisy, image) < 0.9
    gray = image[:1]
    assert ssim(gray, gray) == pytest.approx(1.0)
    assert ssim(noisy[:1], gray) < ssim(np.clip(gray + 0.02, 0, 1), gray)


def test_tensors_are_accepted(image):
    x = torch.from_numpy(image)
    assert psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-4)


def test_shape_mismatch_is_a_clear_error(image):
    with pytest.raises(ValueError, match="differs from reference"):
        psnr(image[:, :8], image)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ssim(image[None], image[None])


def test_per_image_metrics_rows(image):
    clean = np.stack([image, image])
    restored = np.stack([image + 0.1, image])
    frame = per_image_metrics(restored, clean, names=["a", "b"])
    assert list(frame.columns) == ["image", "psnr", "ssim"]
    assert frame["image"].tolist() == ["a", "b"]
    assert frame["psnr"].iloc[0] == pytest.approx(20.0, abs=1e-4)
    assert frame["ssim"].iloc[1] == pytest.approx(1.0)
    assert per_image_metrics(restored, clean)["image"].tolist() == [0, 1]


def test_steps_to_quality_uses_the_mean_curve():
    frame = pd.DataFrame(
        {
            "steps": [10, 10, 20, 20, 50, 50],
            "psnr": [18.0, 30.0, 22.0, 25.0, 27.0, 28.0],  # means 24, 23.5, 27.5
        }
    )
    assert steps_to_quality(frame, target=24.0) == 10
    assert steps_to_quality(frame, target=25.0) == 50
    assert math.isnan(steps_to_quality(frame, target=40.0))
    with pytest.raises(ValueError, match="nfe"):
        steps_to_quality(frame, target=1.0, x="nfe")


def test_peak_of_a_trajectory():
    trajectory = pd.DataFrame(
        {
            "image": [0, 0, 0, 1, 1, 1],
            "iteration": [0, 100, 200, 0, 100, 200],
            "psnr_clean": [10.0, 26.0, 22.0, 12.0, 24.0, 23.0],
        }
    )
    assert peak(trajectory) == (100, pytest.approx(25.0))


def test_psnr_of_unknown_reference_is_nan():
    x = np.zeros((3, 8, 8))
    assert np.isnan(psnr(x, np.full_like(x, np.nan)))


def test_torch_psnr_from_mse_agrees_with_psnr(image):
    noisy = np.clip(image + 0.05 * np.random.default_rng(1).standard_normal(image.shape), 0, 1)
    mse = torch.from_numpy((noisy - image) ** 2).flatten().mean()
    assert psnr_from_mse(mse).item() == pytest.approx(psnr(noisy, image), rel=1e-9)
    per_image = psnr_from_mse(torch.tensor([0.01, 0.0]))
    assert per_image[0].item() == pytest.approx(20.0) and per_image[1].item() == pytest.approx(
        200.0
    )


def test_psnr_and_ssim_are_computed_only_here(root):
    # One definition each: every other module calls metrics.psnr / ssim / psnr_from_mse.
    for name in ("structural_similarity", "peak_signal_noise_ratio"):
        users = [p for p in (root / "scripts").rglob("*.py") if name in p.read_text()]
        assert users == [root / "scripts" / "dipddpm" / "metrics.py"], name
