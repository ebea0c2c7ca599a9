"""What a DIP fit records while it runs: snapshots, the trajectory and ES-WMV.

A ``ChunkRecorder`` follows one ``DIPFitter`` (a chunk of images) step by step;
``merge_chunks`` joins the chunks of a ``fit_dip`` call into its ``FitResult``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..metrics import psnr_from_mse

if TYPE_CHECKING:
    from .fit import DIPFitter


@dataclass
class FitResult:
    """What ``fit_dip`` returns.

    ``snapshots[t]`` is the EMA output (K, C, H, W) after t steps and ``snapshots_raw[t]``
    the raw output of step t, exactly what a fit stopped at t would return. ``trajectory``
    has one row per (image, logged iteration) with columns image, iteration, loss,
    psnr_obs (A(x) vs y), psnr_clean, psnr_clean_ema (NaN without ``clean``), wmv
    (windowed moving variance of the raw outputs, ES-WMV; NaN until the window is full),
    elapsed_s and backtracked.
    """

    snapshots: dict[int, np.ndarray]
    snapshots_raw: dict[int, np.ndarray]
    trajectory: pd.DataFrame
    seconds: float
    iterations: int


def check_snapshots(snapshots: Sequence[int], iters: int) -> list[int]:
    """The sorted snapshot iterations, ``iters`` included; each must lie in 1..iters."""
    wanted = sorted({int(t) for t in snapshots} | {iters})
    bad = [t for t in wanted if not 1 <= t <= iters]
    if bad:
        raise ValueError(f"snapshot iterations {bad} are outside 1..iters={iters}")
    return wanted


class WindowVariance:
    """ES-WMV (Wang et al.): mean over the last ``window`` outputs of the squared distance
    to their mean, per image and averaged over pixels."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"wmv_window must be >= 1; got {window}")
        self.window = window
        self._buffer: torch.Tensor | None = None
        self._count = 0

    def push(self, output: torch.Tensor) -> None:
        if self._buffer is None:
            self._buffer = output.new_empty((self.window, *output.shape))
        self._buffer[self._count % self.window] = output
        self._count += 1

    def value(self, num_images: int) -> torch.Tensor:
        if self._buffer is None or self._count < self.window:
            return torch.full((num_images,), math.nan)
        variance = self._buffer.var(dim=0, unbiased=False)
        return variance.flatten(1).mean(dim=1).cpu()


@dataclass
class ChunkRecord:
    """What one chunk of images recorded; its trajectory numbers images fit-wide."""

    snapshots: dict[int, np.ndarray]
    snapshots_raw: dict[int, np.ndarray]
    trajectory: pd.DataFrame
    seconds: float


class ChunkRecorder:
    """Snapshots at the ``wanted`` iterations and a trajectory row per image every
    ``log_every`` iterations (and at ``iters``); ``elapsed_s`` counts from construction."""

    def __init__(
        self,
        first: int,
        iters: int,
        wanted: set[int],
        wmv_window: int,
        log_every: int,
        clean: torch.Tensor | None,
    ) -> None:
        self.first = first
        self.iters = iters
        self.wanted = wanted
        self.log_every = log_every
        self.clean = clean
        self.window = WindowVariance(wmv_window)
        self.snapshots: dict[int, np.ndarray] = {}
        self.snapshots_raw: dict[int, np.ndarray] = {}
        self.rows: list[pd.DataFrame] = []
        self.start = time.perf_counter()

    def record(self, fitter: DIPFitter, output: torch.Tensor, loss: torch.Tensor) -> None:
        """Take in the step ``fitter`` has just made (its ``step`` return values)."""
        self.window.push(output)
        t = fitter.iteration
        if t in self.wanted:
            self.snapshots[t] = fitter.output_ema.float().cpu().numpy()
            self.snapshots_raw[t] = output.float().cpu().numpy()
        if t % self.log_every == 0 or t == self.iters:
            self.rows.append(self._log_rows(fitter, output, loss))

    def finish(self) -> ChunkRecord:
        trajectory = pd.concat(self.rows, ignore_index=True)
        trajectory["image"] += self.first
        seconds = time.perf_counter() - self.start
        return ChunkRecord(self.snapshots, self.snapshots_raw, trajectory, seconds)

    def _log_rows(
        self, fitter: DIPFitter, output: torch.Tensor, loss: torch.Tensor
    ) -> pd.DataFrame:
        k = fitter.num_images
        psnr_clean, psnr_clean_ema = self._clean_psnrs(fitter, output)
        return pd.DataFrame(
            {
                "image": np.arange(k),
                "iteration": np.full(k, fitter.iteration),
                "loss": loss.cpu().double().numpy(),
                "psnr_obs": fitter.last_psnr_obs.double().numpy(),
                "psnr_clean": psnr_clean.double().numpy(),
                "psnr_clean_ema": psnr_clean_ema.double().numpy(),
                "wmv": self.window.value(k).double().numpy(),
                "elapsed_s": np.full(k, time.perf_counter() - self.start),
                "backtracked": fitter.last_backtracked.numpy(),
            }
        )

    def _clean_psnrs(
        self, fitter: DIPFitter, output: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PSNR to the clean images of the raw output and of the EMA (NaN without them)."""
        if self.clean is None:
            nan = torch.full((fitter.num_images,), math.nan)
            return nan, nan
        raw = psnr_from_mse(((output - self.clean) ** 2).flatten(1).mean(1)).cpu()
        ema_mse = ((fitter.output_ema - self.clean) ** 2).flatten(1).mean(1)
        return raw, psnr_from_mse(ema_mse).cpu()


def merge_chunks(records: Sequence[ChunkRecord], iters: int) -> FitResult:
    """One ``FitResult`` of all images, in image order, from their chunks' records."""
    wanted = sorted(records[0].snapshots)
    snaps = {t: np.concatenate([r.snapshots[t] for r in records]) for t in wanted}
    snaps_raw = {t: np.concatenate([r.snapshots_raw[t] for r in records]) for t in wanted}
    trajectory = pd.concat([r.trajectory for r in records], ignore_index=True)
    trajectory = trajectory.sort_values(["image", "iteration"], ignore_index=True)
    return FitResult(snaps, snaps_raw, trajectory, sum(r.seconds for r in records), iters)
