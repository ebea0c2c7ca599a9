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
    one ``wmv_<W>`` per extra window W (``wmv_windows``), elapsed_s and backtracked.
    ``iterations`` is the longest image's; a fit run ``until`` a condition may end its
    chunks of images at different iterations, and a snapshot past a chunk's end is NaN for
    its images.
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
    to their mean, per image and averaged over pixels; optionally at ``extra_windows``
    lengths too, from the same history of outputs.

    The outputs are whatever ``push`` is given; a fit pushes the RAW outputs of its steps
    (those the loss is computed on), as the paper does: the EMA averages over about
    ``1 / (1 - exp_weight)`` = 100 steps, a window's length, so its variance would mostly
    measure the EMA's own drift. The stops the rule picks are scored on the EMA output like
    every other rule's (``earlystop.baselines``).

    Computed from running float64 sums (the window's sum of outputs and each output's
    squared norm) as ``(sum_t |x_t|^2 - |sum_t x_t|^2 / window) / (window * pixels)``: a
    step costs a pass over one output instead of a variance over all ``window`` stored
    outputs, which took a sixth of a 32x32 step. Outputs lie in (0, 1), so float64 keeps
    the cancellation harmless (more accurate than a float32 ``var`` of the buffer); the sum
    is rebuilt from the buffer once per window so rounding cannot accumulate over a fit.

    Every window reads one shared history of outputs (an extra window costs its running
    sum, not another copy of the outputs), as long as the longest window rounded up to a
    multiple of ``window``. A window dividing that length (``window`` itself always) is a
    contiguous slice of it whenever its sum is rebuilt, the very tensor a lone window would
    sum, so its values are bit for bit those of ``WindowVariance`` of that window alone;
    another window's rebuild may wrap around the history and round differently in the last
    bits.
    """

    def __init__(self, window: int, extra_windows: Sequence[int] = ()) -> None:
        if window < 1:
            raise ValueError(f"wmv_window must be >= 1; got {window}")
        bad = [w for w in extra_windows if int(w) < 1]
        if bad:
            raise ValueError(f"wmv_windows must all be >= 1; got {list(extra_windows)}")
        self.window = window
        # ``window`` first; a window listed twice is computed once.
        self.windows = tuple(dict.fromkeys([window, *(int(w) for w in extra_windows)]))
        self.history = -(-max(self.windows) // window) * window
        # The stored outputs are needed to take the oldest one back out of each sum.
        self._buffer: torch.Tensor | None = None
        self._sums: dict[int, torch.Tensor] = {}
        self._norms: dict[int, torch.Tensor] = {}  # per window: (window, K) ring
        self._count = 0

    def _allocate(self, output: torch.Tensor) -> None:
        self._buffer = output.new_empty((self.history, *output.shape))
        for w in self.windows:
            self._sums[w] = torch.zeros(output.shape, dtype=torch.float64, device=output.device)
            self._norms[w] = self._sums[w].new_zeros((w, output.shape[0]))

    def push(self, output: torch.Tensor) -> None:
        if self._buffer is None:
            self._allocate(output)
        wide = output.double()
        norms = wide.square().flatten(1).sum(1)
        for w in self.windows:
            if self._count >= w:
                self._sums[w] -= self._buffer[(self._count - w) % self.history]
            self._sums[w] += wide
            self._norms[w][self._count % w] = norms
        self._buffer[self._count % self.history] = output
        self._count += 1
        for w in self.windows:
            if self._count % w == 0:
                self._rebuild_sum(w)

    def _rebuild_sum(self, w: int) -> None:
        """The window's sum afresh from the last ``w`` outputs, oldest first."""
        start = (self._count - w) % self.history
        end = start + w
        total = self._sums[w]
        if end <= self.history:
            torch.sum(self._buffer[start:end], dim=0, dtype=torch.float64, out=total)
            return
        torch.sum(self._buffer[start:], dim=0, dtype=torch.float64, out=total)
        total += torch.sum(self._buffer[: end - self.history], dim=0, dtype=torch.float64)

    def value_tensor(self, num_images: int, window: int | None = None) -> torch.Tensor:
        """The values (K,) of ``window`` (default: the first) in float64 where the outputs
        are (NaN until the window is full)."""
        w = self.window if window is None else window
        if w not in self.windows:
            raise ValueError(f"window {w} is not recorded; recorded: {list(self.windows)}")
        if self._buffer is None or self._count < w:
            device = None if self._buffer is None else self._buffer.device
            return torch.full((num_images,), math.nan, dtype=torch.float64, device=device)
        total = self._sums[w]
        pixels = total[0].numel()
        spread = self._norms[w].sum(0) - total.square().flatten(1).sum(1) / w
        return spread.clamp_min(0.0) / (w * pixels)

    def value(self, num_images: int, window: int | None = None) -> torch.Tensor:
        return self.value_tensor(num_images, window).cpu()


@dataclass
class ChunkRecord:
    """What one chunk of images recorded; its trajectory numbers images fit-wide."""

    snapshots: dict[int, np.ndarray]
    snapshots_raw: dict[int, np.ndarray]
    trajectory: pd.DataFrame
    seconds: float
    last_iteration: int = 0


# Per logged step and image, in this order, then one wmv_<W> per extra window; cast to
# float64 in the trajectory.
_VALUE_COLUMNS = ("loss", "psnr_obs", "psnr_clean", "psnr_clean_ema", "wmv")


def wmv_column(window: int) -> str:
    """The trajectory column of the windowed moving variance over ``window`` outputs."""
    return f"wmv_{int(window)}"


class ChunkRecorder:
    """Snapshots at the ``wanted`` iterations and a trajectory row per image every
    ``log_every`` iterations (and at ``iters``); ``elapsed_s`` counts from construction.

    ``wmv`` is ES-WMV over ``wmv_window`` outputs; each of ``wmv_windows`` adds a column
    ``wmv_<W>`` computed from the same stored outputs (``WindowVariance``).

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
        wmv_windows: Sequence[int] = (),
    ) -> None:
        self.first = first
        self.iters = iters
        self.wanted = wanted
        self.log_every = log_every
        self.clean = clean
        self.window = WindowVariance(wmv_window, wmv_windows)
        self.extra_windows = tuple(dict.fromkeys(int(w) for w in wmv_windows))
        self.columns = (*_VALUE_COLUMNS, *(wmv_column(w) for w in self.extra_windows))
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
            self.snapshot(fitter, output)
        if t % self.log_every == 0 or t == self.iters:
            self._log(fitter, output, loss)

    def snapshot(self, fitter: DIPFitter, output: torch.Tensor) -> None:
        """Keep the EMA and the raw ``output`` of the step ``fitter`` has just made."""
        t = fitter.iteration
        self.snapshots[t] = fitter.output_ema.float().cpu().numpy()
        self.snapshots_raw[t] = output.float().cpu().numpy()

    def logged(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """The logged iterations (rows,) and ``column``'s values (rows, K) so far, e.g. for
        a stopping condition watching the fit."""
        if column not in self.columns:
            raise ValueError(f"no logged column {column!r}; logged: {list(self.columns)}")
        rows = len(self._iterations)
        iterations = np.asarray(self._iterations, dtype=np.int64)
        if not rows:
            return iterations, np.zeros((0, 0))
        index = self.columns.index(column)
        return iterations, self._values[:rows, index].cpu().numpy()

    def finish(self) -> ChunkRecord:
        rows = len(self._iterations)
        k = 0 if self._values is None else self._values.shape[-1]
        values = np.zeros((rows, len(self.columns), k))
        backtracked = np.zeros((rows, k), dtype=bool)
        if rows:
            values = self._values[:rows].cpu().numpy()
            backtracked = self._backtracked[:rows].cpu().numpy()
        # Step-major, image-minor: the row order of one frame per logged step concatenated.
        columns = {
            "image": np.tile(np.arange(k), rows) + self.first,
            "iteration": np.repeat(np.asarray(self._iterations, dtype=np.int64), k),
        }
        columns |= {name: values[:, i].reshape(-1) for i, name in enumerate(self.columns)}
        columns["elapsed_s"] = np.repeat(np.asarray(self._elapsed, dtype=np.float64), k)
        columns["backtracked"] = backtracked.reshape(-1)
        seconds = time.perf_counter() - self.start
        last = self._iterations[-1] if rows else 0
        frame = pd.DataFrame(columns)
        return ChunkRecord(self.snapshots, self.snapshots_raw, frame, seconds, last)

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
        for i, window in enumerate(self.extra_windows, start=len(_VALUE_COLUMNS)):
            values[i] = self.window.value_tensor(k, window)
        self._backtracked[row] = fitter.last_backtracked
        self._iterations.append(fitter.iteration)
        self._elapsed.append(time.perf_counter() - self.start)

    def _grow(self, k: int, device: torch.device) -> None:
        """Room for the expected rows, doubled if a caller logs more than planned."""
        rows = self._capacity if self._values is None else 2 * self._values.shape[0]
        values = torch.full((rows, len(self.columns), k), math.nan, dtype=torch.float64)
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
    """One ``FitResult`` of all images, in image order, from their chunks' records. A chunk
    that ended before a snapshot iteration another reached has NaN images there."""
    wanted = sorted(set().union(*(r.snapshots for r in records)))
    snaps = {t: np.concatenate([_snapshot_or_nan(r.snapshots, t) for r in records]) for t in wanted}
    snaps_raw = {
        t: np.concatenate([_snapshot_or_nan(r.snapshots_raw, t) for r in records]) for t in wanted
    }
    trajectory = pd.concat([r.trajectory for r in records], ignore_index=True)
    trajectory = trajectory.sort_values(["image", "iteration"], ignore_index=True)
    return FitResult(snaps, snaps_raw, trajectory, sum(r.seconds for r in records), iters)


def _snapshot_or_nan(snapshots: dict[int, np.ndarray], t: int) -> np.ndarray:
    if t in snapshots:
        return snapshots[t]
    # Every chunk keeps its last iteration's snapshot: a template of its images' shape.
    return np.full_like(next(iter(snapshots.values())), np.nan)
