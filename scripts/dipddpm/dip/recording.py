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
    to their mean, per image and averaged over pixels.

    Computed from running float64 sums (the window's sum of outputs and each output's
    squared norm) as ``(sum_t |x_t|^2 - |sum_t x_t|^2 / window) / (window * pixels)``: a
    step costs a pass over one output instead of a variance over all ``window`` stored
    outputs, which took a sixth of a 32x32 step. Outputs lie in (0, 1), so float64 keeps
    the cancellation harmless (more accurate than a float32 ``var`` of the buffer); the sum
    is rebuilt from the buffer once per window so rounding cannot accumulate over a fit.
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"wmv_window must be >= 1; got {window}")
        self.window = window
        # The stored outputs are needed to take the oldest one back out of the sum.
        self._buffer: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._norms: torch.Tensor | None = None
        self._count = 0

    def push(self, output: torch.Tensor) -> None:
        if self._buffer is None:
            self._buffer = output.new_empty((self.window, *output.shape))
            self._sum = torch.zeros(output.shape, dtype=torch.float64, device=output.device)
            self._norms = self._sum.new_zeros((self.window, output.shape[0]))
        slot = self._count % self.window
        wide = output.double()
        if self._count >= self.window:
            self._sum -= self._buffer[slot]
        self._sum += wide
        self._norms[slot] = wide.square().flatten(1).sum(1)
        self._buffer[slot] = output
        self._count += 1
        if slot == self.window - 1:
            torch.sum(self._buffer, dim=0, dtype=torch.float64, out=self._sum)

    def value_tensor(self, num_images: int) -> torch.Tensor:
        """The values (K,) in float64 where the outputs are (NaN until the window is full)."""
        if self._buffer is None or self._count < self.window:
            device = None if self._sum is None else self._sum.device
            return torch.full((num_images,), math.nan, dtype=torch.float64, device=device)
        pixels = self._sum[0].numel()
        spread = self._norms.sum(0) - self._sum.square().flatten(1).sum(1) / self.window
        return spread.clamp_min(0.0) / (self.window * pixels)

    def value(self, num_images: int) -> torch.Tensor:
        return self.value_tensor(num_images).cpu()


@dataclass
class ChunkRecord:
    """What one chunk of images recorded; its trajectory numbers images fit-wide."""

    snapshots: dict[int, np.ndarray]
    snapshots_raw: dict[int, np.ndarray]
    trajectory: pd.DataFrame
    seconds: float


# Per logged step and image, in this order; cast to float64 in the trajectory.
_VALUE_COLUMNS = ("loss", "psnr_obs", "psnr_clean", "psnr_clean_ema", "wmv")


class ChunkRecorder:
    """Snapshots at the ``wanted`` iterations and a trajectory row per image every
    ``log_every`` iterations (and at ``iters``); ``elapsed_s`` counts from construction.

    Logged values are written into preallocated tensors on the fit's device and become a
    DataFrame once, in ``finish``: building one per step cost more than the step's loss,
    and keeping them on the device spares a GPU fit a host copy per step.
    """

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
        self._capacity = iters // log_every + 1
        self._values: torch.Tensor | None = None  # (rows, columns, K) float64
        self._backtracked: torch.Tensor | None = None  # (rows, K) bool
        self._iterations: list[int] = []
        self._elapsed: list[float] = []
        self.start = time.perf_counter()

    def record(self, fitter: DIPFitter, output: torch.Tensor, loss: torch.Tensor) -> None:
        """Take in the step ``fitter`` has just made (its ``step`` return values)."""
        self.window.push(output)
        t = fitter.iteration
        if t in self.wanted:
            self.snapshots[t] = fitter.output_ema.float().cpu().numpy()
            self.snapshots_raw[t] = output.float().cpu().numpy()
        if t % self.log_every == 0 or t == self.iters:
            self._log(fitter, output, loss)

    def finish(self) -> ChunkRecord:
        rows = len(self._iterations)
        k = 0 if self._values is None else self._values.shape[-1]
        values = np.zeros((rows, len(_VALUE_COLUMNS), k))
        backtracked = np.zeros((rows, k), dtype=bool)
        if rows:
            values = self._values[:rows].cpu().numpy()
            backtracked = self._backtracked[:rows].cpu().numpy()
        # Step-major, image-minor: the row order of one frame per logged step concatenated.
        columns = {
            "image": np.tile(np.arange(k), rows) + self.first,
            "iteration": np.repeat(np.asarray(self._iterations, dtype=np.int64), k),
        }
        columns |= {name: values[:, i].reshape(-1) for i, name in enumerate(_VALUE_COLUMNS)}
        columns["elapsed_s"] = np.repeat(np.asarray(self._elapsed, dtype=np.float64), k)
        columns["backtracked"] = backtracked.reshape(-1)
        seconds = time.perf_counter() - self.start
        return ChunkRecord(self.snapshots, self.snapshots_raw, pd.DataFrame(columns), seconds)

    def _log(self, fitter: DIPFitter, output: torch.Tensor, loss: torch.Tensor) -> None:
        k = fitter.num_images
        row = len(self._iterations)
        if self._values is None or row == self._values.shape[0]:
            self._grow(k, loss.device)
        psnr_clean, psnr_clean_ema = self._clean_psnrs(fitter, output)
        values = self._values[row]
        values[0] = loss
        values[1] = fitter.last_psnr_obs
        values[2] = psnr_clean
        values[3] = psnr_clean_ema
        values[4] = self.window.value_tensor(k)
        self._backtracked[row] = fitter.last_backtracked
        self._iterations.append(fitter.iteration)
        self._elapsed.append(time.perf_counter() - self.start)

    def _grow(self, k: int, device: torch.device) -> None:
        """Room for the expected rows, doubled if a caller logs more than planned."""
        rows = self._capacity if self._values is None else 2 * self._values.shape[0]
        values = torch.full((rows, len(_VALUE_COLUMNS), k), math.nan, dtype=torch.float64)
        values = values.to(device)
        backtracked = torch.zeros((rows, k), dtype=torch.bool, device=device)
        if self._values is not None:
            values[: self._values.shape[0]] = self._values
            backtracked[: self._values.shape[0]] = self._backtracked
        self._values, self._backtracked = values, backtracked

    def _clean_psnrs(
        self, fitter: DIPFitter, output: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PSNR to the clean images of the raw output and of the EMA (NaN without them)."""
        if self.clean is None:
            nan = torch.full((fitter.num_images,), math.nan)
            return nan, nan
        raw = psnr_from_mse(((output - self.clean) ** 2).flatten(1).mean(1))
        ema_mse = ((fitter.output_ema - self.clean) ** 2).flatten(1).mean(1)
        return raw, psnr_from_mse(ema_mse)


def merge_chunks(records: Sequence[ChunkRecord], iters: int) -> FitResult:
    """One ``FitResult`` of all images, in image order, from their chunks' records."""
    wanted = sorted(records[0].snapshots)
    snaps = {t: np.concatenate([r.snapshots[t] for r in records]) for t in wanted}
    snaps_raw = {t: np.concatenate([r.snapshots_raw[t] for r in records]) for t in wanted}
    trajectory = pd.concat([r.trajectory for r in records], ignore_index=True)
    trajectory = trajectory.sort_values(["image", "iteration"], ignore_index=True)
    return FitResult(snaps, snaps_raw, trajectory, sum(r.seconds for r in records), iters)
