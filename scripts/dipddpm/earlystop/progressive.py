"""The progressive-target DIP fit: each image's network is trained on its stage targets in turn.

Adaptive stages (``stage_patience``): a noisy stage ends for an image as soon as its ``err``
has not improved for ``stage_patience`` iterations (at most ``iters_per_stage``; the last
noisy stage, whose end is the rule's ``stage_end`` stop and whose minimum the
``last_noisy`` and ``stage_length`` stops need, at most ``final_iters``). A stage carried
far past its optimum overfits its noisy target, which costs PSNR later in the run. Images
advance independently (the batch is stepped on a per-image target). ``stage_patience = 0``
gives fixed-length stages."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import metrics
from ..operators import Operator
from .rules import STOP_VARIANTS, ProgressiveSureRule
from .table import ssim_of

CURVE_COLUMNS = [
    "image",
    "stage",
    "sigma_k",
    "iteration",
    "stage_iter",
    "psnr_target",
    "ssim_target",
    "residual",
    "expected_residual",
    "est_error",
    "psnr_clean",
]


@dataclass
class ProgressiveRun:
    """What one progressive fit produced, per image: curves, stop and outputs."""

    curves: pd.DataFrame  # CURVE_COLUMNS, one row per image x logged iteration
    stops: np.ndarray  # (N,) global iteration (1-based) chosen by the rule
    decisions: np.ndarray  # (N,) iteration at which the rule committed to its stop
    outputs_at_stop: np.ndarray  # (N, C, H, W) EMA output at the stop
    best_iters: np.ndarray  # (N,) iteration of peak PSNR to clean (after the fact)
    best_outputs: np.ndarray  # (N, C, H, W) output at that peak
    total_iters: int
    elapsed_s: float
    # Every STOP_VARIANTS entry: (stops, decisions, outputs) as above, on the same run.
    variants: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    image_iters: np.ndarray | None = None  # (N,) iterations each image ran (its last one)
    stage_ends: np.ndarray | None = None  # (K, N) global iteration each stage ended


class _Stops:
    """Stop, decision and output per image for one variant."""

    def __init__(self, n: int) -> None:
        self.stops, self.decisions = np.full(n, -1), np.full(n, -1)
        self.outputs: list[np.ndarray | None] = [None] * n

    def take(self, mask: np.ndarray, it: int, x_np: np.ndarray, commit: bool) -> None:
        for i in np.flatnonzero(mask):
            self.stops[i], self.outputs[i] = it, x_np[i].copy()
            if commit:
                self.decisions[i] = it

    def finish(self, mask: np.ndarray, it: int, x_np: np.ndarray) -> None:
        """Images at their run's end: never stopped means stopping here."""
        self.take(mask & (self.stops < 0), it, x_np, commit=False)
        self.decisions[mask & (self.decisions < 0)] = it

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.stops, self.decisions, np.stack(self.outputs).astype(np.float32)


def fit_progressive(
    fitter,
    observed: torch.Tensor,
    operator: Operator,
    targets: torch.Tensor,
    unit_noises: torch.Tensor,
    sigmas: Sequence[float],
    rule: ProgressiveSureRule,
    iters_per_stage: int,
    final_iters: int,
    clean: np.ndarray | None = None,
    log_every: int = 1,
    run_to_end: bool = True,
    progress: bool = True,
    on_stage=None,
    stage_patience: int = 0,
) -> ProgressiveRun:
    """Train ``fitter`` (a ``DIPFitter`` over the N images) on the stage targets in turn.

    A noisy stage runs at most ``iters_per_stage`` iterations; with ``stage_patience > 0``
    an image moves on as soon as its ``err`` has not improved for that many iterations
    (each image on its own schedule: the batch is stepped on a per-image target). The
    final stage (target y) runs ``final_iters``; an image that finished it is still
    stepped while others run, but nothing of it is recorded. ``rule`` decides the stop
    online from the EMA output (what gets saved); ``clean`` is used only for the
    after-the-fact ``psnr_clean`` column and the run's own oracle, never handed to the
    rule. ``run_to_end=False`` ends the run once every image's ``stop_stage`` decision is
    taken (production: with ``stage_end`` the final stage is never run); the default
    keeps the full curves, the run's own peak and the ``stage_length`` stop for analysis.
    ``on_stage(fitter)`` is called whenever some image starts a new stage.
    """
    loop = _ProgressiveLoop(
        fitter,
        observed.shape[0],
        operator,
        targets,
        unit_noises,
        sigmas,
        rule,
        clean,
        log_every=log_every,
        on_stage=on_stage,
    )
    total = (loop.K - 1) * iters_per_stage + final_iters
    bar = tqdm(total=total, desc="progressive DIP", disable=not progress)
    start = time.perf_counter()
    while loop.active.any():
        loop.iterate(iters_per_stage, final_iters, stage_patience)
        bar.update(1)
        if not run_to_end and loop.all_decided():
            loop.stop_everywhere()
            break
    bar.close()
    return loop.result(time.perf_counter() - start)


class _ProgressiveLoop:
    """Per-image state of a progressive fit between iterations (stage, counters, stops,
    the run's own PSNR peak) and the steps of one iteration, in their required order."""

    def __init__(
        self,
        fitter,
        n,
        operator,
        targets,
        unit_noises,
        sigmas,
        rule,
        clean,
        *,
        log_every,
        on_stage,
    ) -> None:
        self.fitter, self.operator, self.rule, self.clean = fitter, operator, rule, clean
        self.targets, self.unit_noises = targets, unit_noises
        self.sigmas = [float(s) for s in sigmas]
        self.K = len(self.sigmas)
        self.log_every, self.on_stage = log_every, on_stage
        self.index = torch.arange(n, device=targets.device)
        self.stage, self.stage_it = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
        self.pending, self.active = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
        self.image_iters, self.stage_ends = np.zeros(n, dtype=int), np.zeros((self.K, n), int)
        self.variants = {v: _Stops(n) for v in STOP_VARIANTS}
        self.rows: list[dict] = []
        self.best_psnr, self.best_iters = np.full(n, -np.inf), np.full(n, -1)
        self.best_out: list[np.ndarray | None] = [None] * n
        self.it, self.x_np = 0, None

    def iterate(self, iters_per_stage: int, final_iters: int, stage_patience: int) -> None:
        """One optimiser step of every image on its current stage target."""
        self.it += 1
        x, projected = self._step()
        self._begin_pending_stages(projected)
        self.stage_it += 1
        resid, err = self.rule.update(projected)
        self.x_np = x.detach().cpu().numpy()
        self._take_stops()
        self._track_peak()
        ends = self._ending(iters_per_stage, final_iters, stage_patience)
        logged = self.active & ((self.stage_it % self.log_every == 0) | ends)
        self.rows += self._curve_rows(logged, projected, resid, err)
        self._end_stages(ends)
        self._advance(ends & (self.stage != self.K - 1))

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        stage = torch.as_tensor(self.stage, device=self.targets.device)
        self.fitter.step(self.targets[stage, self.index], self.operator)
        ema = getattr(self.fitter, "output_ema", None)
        if ema is None:
            raise ValueError("the DIP fitter has no output_ema after a step")
        x = ema.detach()
        return x, self.operator(x)

    def _begin_pending_stages(self, projected: torch.Tensor) -> None:
        # A stage's first output was computed before the first update on y_k, so it is
        # independent of fresh stage noise: the probe's reference.
        K = self.K
        for k in np.unique(self.stage[self.pending]):
            self.rule.begin_stage(
                self.sigmas[k],
                self.targets[k],
                self.unit_noises[k],
                projected,
                self.operator,
                final=k == K - 1,
                last_noisy=k == K - 2,
                images=self.pending & (self.stage == k),
            )
        self.pending[:] = False

    def _take_stops(self) -> None:
        # A last_noisy stop is provisional (a later, lower err may replace it) until its
        # stage ends; the other variants commit when they stop.
        for v, stops in self.variants.items():
            now = self.rule.now_by_variant[v] & self.active
            stops.take(now, self.it, self.x_np, commit=v != "last_noisy")

    def _track_peak(self) -> None:
        if self.clean is None:
            return
        for i in np.flatnonzero(self.active):
            value = metrics.psnr(self.x_np[i], self.clean[i])
            if value > self.best_psnr[i]:
                self.best_psnr[i], self.best_iters[i] = value, self.it
                self.best_out[i] = self.x_np[i].copy()

    def _ending(self, iters_per_stage: int, final_iters: int, stage_patience: int) -> np.ndarray:
        """Images whose current stage ends with this iteration."""
        final = self.stage == self.K - 1
        # With adaptive stages the last noisy stage runs to its err minimum and the
        # patience past it (the stops of "stage_end" and "last_noisy" and the length of
        # "stage_length"): capped like the final stage.
        long_stage = final | ((self.stage == self.K - 2) & (stage_patience > 0))
        lengths = np.where(long_stage, final_iters, iters_per_stage)
        ends = self.active & (self.stage_it >= lengths)
        if stage_patience > 0:
            ends |= self.active & ~final & self.rule.stage_done(stage_patience)
        return ends

    def _curve_rows(self, logged, projected, resid, err) -> list[dict]:
        if not logged.any():
            return []
        proj = projected.detach().cpu().numpy()
        target = self.rule.target.detach().cpu().numpy()
        rows = []
        for i in np.flatnonzero(logged):
            rows.append(
                {
                    "image": i,
                    "stage": int(self.stage[i]),
                    "sigma_k": self.sigmas[self.stage[i]],
                    "iteration": self.it,
                    "stage_iter": int(self.stage_it[i]),
                    "psnr_target": metrics.psnr(proj[i], target[i]),
                    "ssim_target": ssim_of(proj[i], target[i]),
                    "residual": float(resid[i]),
                    "expected_residual": float(self.rule.total_var[i]),
                    "est_error": float(err[i]),
                    "psnr_clean": self._clean_psnr(i),
                }
            )
        return rows

    def _clean_psnr(self, i: int) -> float:
        return math.nan if self.clean is None else metrics.psnr(self.x_np[i], self.clean[i])

    def _end_stages(self, ends: np.ndarray) -> None:
        self.stage_ends[self.stage[ends], np.flatnonzero(ends)] = self.it
        last_noisy = self.variants["last_noisy"]
        leaving_last_noisy = ends & (self.stage == self.K - 2)
        last_noisy.decisions[leaving_last_noisy & (last_noisy.stops >= 0)] = self.it
        stage_end = self.rule.end_last_noisy(leaving_last_noisy)
        self.variants["stage_end"].take(stage_end, self.it, self.x_np, commit=True)
        finished = ends & (self.stage == self.K - 1)
        for stops in self.variants.values():
            stops.finish(finished, self.it, self.x_np)
        self.image_iters[finished] = self.it
        self.active &= ~finished

    def _advance(self, advance: np.ndarray) -> None:
        self.stage[advance] += 1
        self.stage_it[advance] = 0
        self.pending |= advance
        if advance.any() and self.on_stage is not None:
            self.on_stage(self.fitter)

    def all_decided(self) -> bool:
        return bool((self.variants[self.rule.stop_stage].decisions >= 0).all())

    def stop_everywhere(self) -> None:
        """End the run now: images still running stop at this iteration."""
        for stops in self.variants.values():
            stops.finish(self.active, self.it, self.x_np)
        self.image_iters[self.active] = self.it

    def result(self, elapsed_s: float) -> ProgressiveRun:
        # An image without a finite PSNR (clean image withheld) has no peak: the last
        # iteration's output stands in.
        for i in np.flatnonzero(self.best_iters < 0):
            self.best_iters[i], self.best_out[i] = self.image_iters[i], self.x_np[i].copy()
        primary = self.variants[self.rule.stop_stage].result()
        return ProgressiveRun(
            curves=pd.DataFrame(self.rows, columns=CURVE_COLUMNS),
            stops=primary[0],
            decisions=primary[1],
            outputs_at_stop=primary[2],
            best_iters=self.best_iters,
            best_outputs=np.stack(self.best_out).astype(np.float32),
            total_iters=self.it,
            elapsed_s=elapsed_s,
            variants={v: s.result() for v, s in self.variants.items()},
            image_iters=self.image_iters,
            stage_ends=self.stage_ends,
        )
