"""The progressive stopping rule: a discrepancy principle whose tau is calibrated online.

The discrepancy principle stops at the first iteration where the residual
``||A(x) - y||^2`` falls below ``tau * sigma^2``; its weak point is tau, which depends on
the image and the network. The noisy stages of the progressive fit let us *measure* tau
without the clean image, because we know the noise we injected: in stage k the output's
correlation with the injected noise ``n_k`` tells how much noise the network has absorbed.
The injected and the task noise are i.i.d. Gaussian and indistinguishable to the network,
so (SURE-like) the error of ``A(x_t)`` against the noise-free observation is estimated by

    err_k(t) = r_k(t) - s_k^2 + 2 * (s_k^2 / sigma_k) * mean((A(x_t) - A(x_start)) * n_k)

with ``r_k(t)`` the residual to ``y_k`` and ``s_k^2 = sigma_task^2 + sigma_k^2`` the known
total noise variance of the target (``x_start`` is the output when the stage began; it does
not depend on fresh ``n_k`` and subtracting it only removes variance). The iteration
minimising ``err_k`` is where stage k should have stopped; the residual there, relative to
``s_k^2``, is that stage's ``tau_k`` (a stage whose minimum is its last iteration ended
before its optimum and does not vote). The rule carries the calibrated tau (mean of the
``tau_k`` weighted by ``sigma_k^2 / s_k^2``, the share of the target's noise that is known,
so near-noise-free stages with a noisy estimate count little) into the final stage and
stops at the first final-stage iteration where ``r(t) <= tau * sigma_task^2``; if it never
does, at the last iteration. Parameters: ``tau_default`` (used when no stage could
calibrate: K = 1) and ``tau_bounds`` (the calibrated tau is clipped into them). Everything
the rule reads is available at that iteration; it never sees the clean image. Limits: it
needs a noisy observation (``sigma_task > 0``; with a noise-free inpainting/SR observation
the threshold is 0 and the rule runs to the end), and with ``noise="fixed"`` the
exchangeability argument is only approximate (earlier stages already fitted part of the
same noise).

Stop variants (``stop_stage``; all are computed on the same run): ``final`` (default) the
calibrated discrepancy above; ``extrapolated`` the same with tau from a least-squares line
of ``tau_k`` against ``f_k = sigma_k^2 / s_k^2`` read at ``f = 0`` (the final stage);
``stage_length`` stops the final stage after as many iterations as the last noisy stage
took to reach its ``err`` minimum; ``last_noisy`` returns the output at the ``err`` minimum
of the last noisy stage (committed when that stage ends).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..operators import Operator

STOP_VARIANTS = ("final", "extrapolated", "stage_length", "last_noisy")


@dataclass
class ProgressiveDiscrepancyRule:
    """Online stopping rule for a batch of images (see the module docstring).

    Each image moves through the stages on its own (``begin_stage`` with ``images``): feed
    the stage's sigma and unit noise when the image enters a stage, then ``update`` with
    the current output's projection ``A(x)`` at every iteration. ``update`` returns the
    images whose stop under ``stop_stage`` is *now*; ``now_by_variant`` holds the same for
    every variant of ``STOP_VARIANTS`` (all are computed on the same run, for comparison).
    In ``last_noisy`` every new minimum of ``err`` in that stage is a provisional stop,
    committed when the image leaves the stage. ``stage_done(patience)`` tells which
    images have passed their noisy stage's ``err`` minimum by ``patience`` iterations.
    """

    sigma_task: float
    tau_default: float = 1.0
    tau_bounds: tuple[float, float] = (0.5, 2.0)
    stop_stage: str = "final"
    taus: list[np.ndarray] = field(default_factory=list)  # per stage position, (N,)
    weights: list[float] = field(default_factory=list)  # per stage position: sigma_k^2/s_k^2
    best_stage_iters: list[np.ndarray] = field(default_factory=list)  # per position, (N,)
    stopped: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma_task) and self.sigma_task >= 0):
            raise ValueError(f"sigma_task must be a finite number >= 0; got {self.sigma_task}")
        lo, hi = self.tau_bounds
        if not 0 < lo <= hi:
            raise ValueError(f"tau_bounds must satisfy 0 < low <= high; got {self.tau_bounds}")
        if self.stop_stage not in STOP_VARIANTS:
            raise ValueError(f"stop_stage must be one of {STOP_VARIANTS}; got {self.stop_stage!r}")
        if self.tau_default <= 0:
            raise ValueError(f"tau_default must be > 0; got {self.tau_default}")

    def _allocate(self, target: torch.Tensor) -> None:
        n = target.shape[0]
        self.n = n
        self.stopped = np.zeros(n, dtype=bool)
        self.variant_stopped = {v: np.zeros(n, dtype=bool) for v in STOP_VARIANTS}
        self.sigma = np.zeros(n)
        self.total_var = np.full(n, self.sigma_task**2)
        self.final = np.zeros(n, dtype=bool)
        self.in_last_noisy = np.zeros(n, dtype=bool)
        self.position = np.full(n, -1)
        self.stage_iter = np.zeros(n, dtype=int)
        self.best_err = np.full(n, np.inf)
        self.best_at = np.zeros(n, dtype=int)
        self.resid_at_best = np.full(n, np.nan)
        self.target = target.clone()
        self.unit_noise = torch.zeros_like(target)
        self.start = torch.zeros_like(target)

    def begin_stage(
        self,
        sigma_k: float,
        target: torch.Tensor,
        unit_noise: torch.Tensor,
        projected_start: torch.Tensor,
        operator: Operator,
        final: bool,
        last_noisy: bool = False,
        images: np.ndarray | None = None,
    ) -> None:
        """Move ``images`` (bool mask; default all) into a stage. Tensors are for the whole
        batch; only the rows of ``images`` are read. ``projected_start`` is A(x) of the
        output the stage starts from (computed before any step on this stage's target)."""
        if self.stopped is None:
            self._allocate(target)
        sel = np.ones(self.n, dtype=bool) if images is None else np.asarray(images, dtype=bool)
        if not sel.any():
            return
        self._close_stage(sel)
        self.operator = operator
        rows = torch.as_tensor(sel, device=target.device).view(-1, *[1] * (target.ndim - 1))
        self.target = torch.where(rows, target, self.target.to(target.device))
        self.unit_noise = torch.where(rows, unit_noise, self.unit_noise.to(target.device))
        self.start = torch.where(rows, projected_start, self.start.to(target.device))
        self.sigma[sel] = float(sigma_k)
        self.total_var[sel] = self.sigma_task**2 + float(sigma_k) ** 2
        self.final[sel] = final
        self.in_last_noisy[sel] = last_noisy and sigma_k > 0 and not final
        self.position[sel] += 1
        self.stage_iter[sel] = 0
        self.best_err[sel] = np.inf
        self.best_at[sel] = 0
        self.resid_at_best[sel] = np.nan

    def residual(self, projected: torch.Tensor) -> np.ndarray:
        """Per-image mean squared residual to the stage target over observed entries."""
        return _masked_mean((projected - self.target) ** 2, self.operator).cpu().numpy()

    def estimated_error(self, projected: torch.Tensor, residual: np.ndarray) -> np.ndarray:
        """SURE-like estimate of the error to the noise-free observation (NaN at sigma_k=0)."""
        probe = _masked_mean((projected - self.start) * self.unit_noise, self.operator)
        noisy = self.sigma > 0
        scale = np.where(noisy, self.total_var / np.where(noisy, self.sigma, 1.0), np.nan)
        return residual - self.total_var + 2.0 * scale * probe.cpu().numpy()

    def update(self, projected: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Observe A(x) at one iteration: (stop_now mask of ``stop_stage``, residual,
        estimated error). ``now_by_variant`` gets every variant's mask."""
        resid = self.residual(projected)
        err = self.estimated_error(projected, resid)
        self.stage_iter += 1
        noisy = ~self.final
        better = noisy & (err < self.best_err)
        self.best_err = np.where(better, err, self.best_err)
        self.resid_at_best = np.where(better, resid, self.resid_at_best)
        self.best_at = np.where(better, self.stage_iter, self.best_at)
        now = {v: np.zeros(self.n, dtype=bool) for v in STOP_VARIANTS}
        now["last_noisy"] = better & self.in_last_noisy
        if self.final.any():
            sigma2 = self.sigma_task**2
            length = self.final_stage_length()
            now["final"] = resid <= self.tau() * sigma2
            now["extrapolated"] = resid <= self.tau_extrapolated() * sigma2
            now["stage_length"] = self.stage_iter >= length
            for v in ("final", "extrapolated", "stage_length"):
                now[v] &= self.final & ~self.variant_stopped[v]
        for v in STOP_VARIANTS:
            self.variant_stopped[v] |= now[v]
        self.now_by_variant = now
        self.stopped = self.variant_stopped[self.stop_stage]
        return now[self.stop_stage], resid, err

    def stage_done(self, patience: int) -> np.ndarray:
        """Images in a noisy stage whose ``err`` has not improved for ``patience``
        iterations: the stage has passed its estimated optimum."""
        return ~self.final & (self.stage_iter - self.best_at >= patience)

    def _close_stage(self, sel: np.ndarray) -> None:
        closing = sel & (self.position >= 0) & ~self.final & (self.sigma > 0)
        for j in np.unique(self.position[closing]):
            while len(self.taus) <= j:
                self.taus.append(np.full(self.n, np.nan))
                self.best_stage_iters.append(np.full(self.n, np.nan))
                self.weights.append(math.nan)
            rows = closing & (self.position == j)
            # A minimum on the stage's last iteration means the stage ended before its
            # optimum: its residual ratio is only an upper bound on tau; it does not vote.
            valid = rows & (self.best_at < self.stage_iter)
            self.taus[j][valid] = (self.resid_at_best / self.total_var)[valid]
            self.best_stage_iters[j][rows] = self.best_at[rows]
            self.weights[j] = float(np.mean(self.sigma[rows] ** 2 / self.total_var[rows]))

    def _calibration(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        taus = np.stack(self.taus)
        f = np.asarray(self.weights)[:, None] * np.ones_like(taus)
        return taus, f, np.isfinite(taus)

    def tau(self) -> np.ndarray | float:
        """The calibrated threshold factor per image: the mean of the stage ``tau_k``
        weighted by ``f_k = sigma_k^2 / s_k^2``; ``tau_default`` before calibration or for
        an image whose noisy stages all ended before their optimum."""
        if not self.taus:
            return self.tau_default
        taus, w, valid = self._calibration()
        w_sum = (w * valid).sum(0)
        mean = (w * np.where(valid, taus, 0.0)).sum(0) / np.where(w_sum > 0, w_sum, 1.0)
        return np.clip(np.where(w_sum > 0, mean, self.tau_default), *self.tau_bounds)

    def tau_extrapolated(self) -> np.ndarray | float:
        """``tau_k`` fitted by least squares as a line in ``f_k`` and read at ``f = 0`` (no
        injected noise: the final stage); the weighted mean when fewer than two stages
        (or a single ``f``) voted, clipped to ``tau_bounds``."""
        if not self.taus:
            return self.tau_default
        taus, f, valid = self._calibration()
        out = np.asarray(self.tau(), dtype=np.float64) * np.ones(taus.shape[1])
        for i in range(taus.shape[1]):
            fi, ti = f[valid[:, i], i], taus[valid[:, i], i]
            if len(fi) >= 2 and np.ptp(fi) > 1e-9:
                slope, intercept = np.polyfit(fi, ti, 1)
                out[i] = intercept
        return np.clip(out, *self.tau_bounds)

    def final_stage_length(self) -> np.ndarray:
        """Iterations the last noisy stage took to its ``err`` minimum (per image): the
        ``stage_length`` stop in the final stage; no noisy stage: never (the run's end)."""
        if not self.best_stage_iters:
            return np.full(self.n, np.iinfo(np.int64).max)
        last = self.best_stage_iters[-1]
        return np.where(np.isfinite(last), last, np.iinfo(np.int64).max)


def _masked_mean(values: torch.Tensor, operator: Operator) -> torch.Tensor:
    """Per-image mean over observed entries (the known pixels when inpainting)."""
    if operator.kind == "inpaint":
        mask = operator.mask.expand_as(values)
        return (values * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1.0)
    return values.mean(dim=(1, 2, 3))
