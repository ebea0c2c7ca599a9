"""Per-image image-quality metrics (PSNR, SSIM) and simple curve summaries.

All images are float arrays in [0, 1], one image (C, H, W) or a batch (N, C, H, W);
torch tensors are accepted and moved to the CPU. ``data_range`` is fixed to 1 so the
numbers are comparable between every stage of the pipeline.

``psnr_from_mse`` is the same PSNR for torch tensors that stay where they are: the DIP
engine logs it every step, on the fit's device, from errors it has already computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from skimage.metrics import structural_similarity

if TYPE_CHECKING:  # only tensor methods are used, so importing metrics needs no torch
    import torch

# PSNR of an exact reconstruction is infinite; a finite cap keeps means and plots usable.
PSNR_CAP_DB = 100.0


def _as_numpy(image) -> np.ndarray:
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    return np.asarray(image, dtype=np.float64)


def _check_pair(x, ref, name: str) -> tuple[np.ndarray, np.ndarray]:
    x, ref = _as_numpy(x), _as_numpy(ref)
    if x.shape != ref.shape:
        raise ValueError(f"{name}: image shape {x.shape} differs from reference shape {ref.shape}")
    if x.ndim != 3:
        raise ValueError(f"{name}: expected one image of shape (C, H, W); got shape {x.shape}")
    return x, ref


def psnr(x, ref) -> float:
    """Peak signal-to-noise ratio in dB of one (C, H, W) image against ``ref`` (range 1)."""
    x, ref = _check_pair(x, ref, "psnr")
    mse = float(np.mean((x - ref) ** 2))
    if math.isnan(mse):  # an unknown reference (NaN) has no PSNR, not the cap
        return math.nan
    if mse == 0.0:
        return PSNR_CAP_DB
    # skimage's peak_signal_noise_ratio computes exactly this, but importing it loads
    # scipy.stats (~1 s per job, and every cell is a job).
    return float(min(PSNR_CAP_DB, 10 * np.log10(1.0 / mse)))


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] from their mean squared error (a tensor, any shape).

    Unlike ``psnr`` it does not cap: an error below 1e-20 counts as 1e-20 (200 dB), so the
    log stays finite.
    """
    return -10.0 * mse.clamp_min(1e-20).log10()


def ssim(x, ref) -> float:
    """Structural similarity of one (C, H, W) image against ``ref`` (range 1).

    Grayscale (1, H, W) is compared as a 2-D image. The Gaussian-free 7x7 default window
    shrinks to the largest odd size that fits, so tiny test images still work.
    """
    x, ref = _check_pair(x, ref, "ssim")
    side = min(x.shape[-2:])
    if side < 3:
        raise ValueError(f"ssim: images must be at least 3x3 pixels; got {x.shape[-2:]}")
    win_size = min(7, side if side % 2 == 1 else side - 1)
    if x.shape[0] == 1:
        return float(structural_similarity(ref[0], x[0], data_range=1.0, win_size=win_size))
    return float(structural_similarity(ref, x, data_range=1.0, channel_axis=0, win_size=win_size))


def per_image_metrics(images, clean, names: Sequence[str | int] | None = None) -> pd.DataFrame:
    """One row per image: ``image`` (index or given name), ``psnr``, ``ssim``."""
    images, clean = _as_numpy(images), _as_numpy(clean)
    if images.ndim != 4 or images.shape != clean.shape:
        raise ValueError(
            f"per_image_metrics: expected two (N, C, H, W) batches of equal shape; "
            f"got {images.shape} and {clean.shape}"
        )
    if names is not None and len(names) != len(images):
        raise ValueError(f"per_image_metrics: {len(names)} names for {len(images)} images")
    labels = list(names) if names is not None else list(range(len(images)))
    rows = [
        {"image": label, "psnr": psnr(x, ref), "ssim": ssim(x, ref)}
        for label, x, ref in zip(labels, images, clean, strict=True)
    ]
    return pd.DataFrame(rows, columns=["image", "psnr", "ssim"])


def steps_to_quality(
    frame: pd.DataFrame, target: float, x: str = "steps", y: str = "psnr"
) -> float:
    """Smallest ``x`` whose ``y`` reaches ``target`` (NaN when it never does).

    Several rows with the same ``x`` (images, seeds) are averaged first, so the answer
    is about the mean curve, not about the luckiest image.
    """
    for column in (x, y):
        if column not in frame.columns:
            raise ValueError(f"steps_to_quality: column {column!r} missing; have {list(frame)}")
    curve = frame[[x, y]].dropna().groupby(x, sort=True)[y].mean()
    reached = curve[curve >= target]
    return float(reached.index[0]) if len(reached) else math.nan


def peak(
    trajectory: pd.DataFrame, x: str = "iteration", y: str = "psnr_clean"
) -> tuple[int, float]:
    """(iteration, PSNR) of the best point of a trajectory (mean over images per iteration)."""
    for column in (x, y):
        if column not in trajectory.columns:
            raise ValueError(f"peak: column {column!r} missing; have {list(trajectory)}")
    curve = trajectory[[x, y]].dropna().groupby(x, sort=True)[y].mean()
    if curve.empty:
        raise ValueError(f"peak: trajectory has no finite {y!r} values")
    best = curve.idxmax()
    return int(best), float(curve.loc[best])
