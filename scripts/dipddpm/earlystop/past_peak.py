"""The plain DIP fit run past its PSNR peak: to at least the peak + a patience, under a cap.

A plain fit of a fixed length can end before an image's PSNR peak, or before ES-WMV's
patience (1,000 iterations in the paper) has run out after it; the oracle and ES-WMV are
then cut short on that image. ``fit_past_peak`` runs ``fit_dip`` in segments (its
``until``) until every image is at least ``patience`` iterations past its running peak, or
up to a hard cap ``max_iters``; ``peak_summary`` flags each image whose run reached the cap
first.

Which output: the peak is that of ``psnr_clean_ema``, the EMA output's PSNR to the clean
image, the column the oracle (``baselines.oracle_stop``) and the scores of every rule read.
An image's ``peak_iter`` is therefore its oracle stop on the returned trajectory.

Images fitted together stop together: a chunk of images (``fit_dip``'s ``chunk_size``)
runs until its last image is done, so an image may run past its own peak + patience, and
images of different chunks may end at different iterations (``ran_to``).

A withheld (NaN) clean image has no PSNR, so no peak can show it has been passed: its chunk
runs to the cap, and it is reported with ``peak_known`` False, ``hit_cap`` True and the last
iteration as ``peak_iter`` (what the oracle returns without a PSNR). The run length then
depends on the clean images of the others only, never on the withheld one.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..dip.fit import FitResult, fit_dip
from ..dip.recording import ChunkRecorder
from ..operators import Operator
from .baselines import oracle_stop

# The column the oracle and every rule's score read: the EMA output's PSNR.
PEAK_COLUMN = "psnr_clean_ema"
PEAK_PATIENCE = 1000  # ES-WMV's patience in the paper
PEAK_COLUMNS = ["image", "peak_iter", "peak_psnr", "ran_to", "hit_cap", "peak_known"]


def running_peaks(iterations: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per image (a column of ``values``, rows at ``iterations``): the iteration of its
    highest value so far, the first on ties as ``oracle_stop`` picks it; -1 for an image
    without a finite value (a withheld clean image)."""
    known = np.isfinite(values).any(axis=0)
    peaks = np.full(values.shape[1], -1, dtype=np.int64)
    if known.any():
        peaks[known] = iterations[np.nanargmax(values[:, known], axis=0)]
    return peaks


@dataclass(frozen=True)
class PastPeak:
    """``fit_dip``'s ``until``: the iteration by which every image of a chunk is
    ``patience`` iterations past its running peak of ``column``, and at least
    ``min_iters``; the cap (``recorder.iters``) for a chunk with an image without a peak.

    The running peak only moves later, so no iteration before that answer can satisfy the
    condition: stepping straight to it and asking again stops at the first iteration that
    does, as checking after every step would.
    """

    patience: int = PEAK_PATIENCE
    min_iters: int = 1
    column: str = PEAK_COLUMN

    def __call__(self, recorder: ChunkRecorder) -> int:
        iterations, values = recorder.logged(self.column)
        if not len(iterations):
            return max(self.min_iters, 1 + self.patience)  # a peak at 1 at the earliest
        peaks = running_peaks(iterations, values)
        needed = np.where(peaks >= 0, peaks + self.patience, recorder.iters)
        return max(self.min_iters, int(needed.max()))


@dataclass
class PastPeakFit:
    """``result``: the plain fit (``fit_dip``'s); ``peaks``: ``PEAK_COLUMNS``, one row per
    image (``peak_summary``)."""

    result: FitResult
    peaks: pd.DataFrame


def fit_past_peak(
    observed: torch.Tensor | np.ndarray,
    operator: Operator,
    kind: str,
    arch_params: dict | None,
    seeds: Sequence[int],
    *,
    max_iters: int,
    patience_after_peak: int = PEAK_PATIENCE,
    min_iters: int = 1,
    clean: torch.Tensor | np.ndarray | None = None,
    **fit_args,
) -> PastPeakFit:
    """``fit_dip`` until every image has run ``patience_after_peak`` iterations past its
    ``psnr_clean_ema`` peak (and at least ``min_iters``), or to ``max_iters``.

    ``fit_args``: ``fit_dip``'s other keywords (snapshots, lr, ..., wmv_windows, chunk_size);
    snapshots may lie anywhere in 1..max_iters (NaN past an image's end). The same seeds give
    the same result, bit for bit on the CPU: the stops are decided on the recorded values.
    Without ``clean`` no image has a peak and every image runs to ``max_iters``.
    """
    _check_count("max_iters", max_iters, 1)
    _check_count("patience_after_peak", patience_after_peak, 0)
    _check_count("min_iters", min_iters, 1)
    if min_iters > max_iters:
        raise ValueError(f"min_iters ({min_iters}) must not exceed max_iters ({max_iters})")
    until = PastPeak(int(patience_after_peak), int(min_iters))
    result = fit_dip(
        observed,
        operator,
        kind,
        arch_params,
        seeds,
        int(max_iters),
        clean=clean,
        until=until,
        **fit_args,
    )
    return PastPeakFit(result, peak_summary(result.trajectory, int(patience_after_peak)))


def peak_summary(
    trajectory: pd.DataFrame, patience: int, column: str = PEAK_COLUMN
) -> pd.DataFrame:
    """Per image: ``peak_iter`` (its oracle stop on ``column``) and ``peak_psnr``, the
    iteration it ran to (``ran_to``), ``hit_cap`` (it ended before ``peak_iter +
    patience``: the cap came first, or it has no peak) and ``peak_known``."""
    rows = []
    for image, traj in trajectory.groupby("image", sort=True):
        traj = traj.sort_values("iteration")
        known = bool(np.isfinite(traj[column].to_numpy(dtype=np.float64)).any())
        peak = oracle_stop(traj, column)
        ran_to = int(traj["iteration"].iloc[-1])
        rows.append(
            {
                "image": int(image),
                "peak_iter": peak,
                "peak_psnr": float(traj.loc[traj["iteration"] == peak, column].iloc[0]),
                "ran_to": ran_to,
                "hit_cap": not known or ran_to < peak + patience,
                "peak_known": known,
            }
        )
    return pd.DataFrame(rows, columns=PEAK_COLUMNS)


def is_count(value: object, least: int) -> bool:
    """An integer (not a bool, which Python counts as one) of at least ``least``."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= least


def _check_count(name: str, value: object, least: int) -> None:
    if not is_count(value, least):
        raise ValueError(f"{name} must be an integer >= {least}; got {value!r}")
