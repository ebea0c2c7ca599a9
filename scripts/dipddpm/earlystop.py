"""DDPM-inspired supervision for DIP early stopping (Example 2).

Progressive targets
    From the observation y we build K stage targets ``y_k = y + sigma_k * n_k`` with
    ``sigma_k`` decreasing along a diffusion-like schedule down to ``sigma_{K-1} = 0``
    (the last target is y itself). One DIP network per image is trained stage by stage,
    from the most to the least corrupted target, like a reverse diffusion in noise level.

The stopping rule (``ProgressiveDiscrepancyRule``, "calibrated discrepancy principle")
    The discrepancy principle stops at the first iteration where the residual
    ``||A(x) - y||^2`` falls below ``tau * sigma^2``; its weak point is tau, which depends on
    the image and the network. The noisy stages let us *measure* tau without the clean
    image, because we know the noise we injected: in stage k the output's correlation with
    the injected noise ``n_k`` tells how much noise the network has absorbed. The injected
    and the task noise are i.i.d. Gaussian and indistinguishable to the network, so
    (SURE-like) the error of ``A(x_t)`` against the noise-free observation is estimated by

        err_k(t) = r_k(t) - s_k^2 + 2 * (s_k^2 / sigma_k) * mean((A(x_t) - A(x_start)) * n_k)

    with ``r_k(t)`` the residual to ``y_k`` and ``s_k^2 = sigma_task^2 + sigma_k^2`` the known
    total noise variance of the target (``x_start`` is the output when the stage began; it
    does not depend on fresh ``n_k`` and subtracting it only removes variance). The
    iteration minimising ``err_k`` is where stage k should have stopped; the residual
    there, relative to ``s_k^2``, is that stage's ``tau_k`` (a stage whose minimum is its
    last iteration ended before its optimum and does not vote). The rule carries the
    calibrated tau (mean of the ``tau_k`` weighted by ``sigma_k^2 / s_k^2``, the share of
    the target's noise that is known, so near-noise-free stages with a noisy estimate
    count little) into the final stage and stops at the first final-stage iteration where
    ``r(t) <= tau * sigma_task^2``; if it never does, at the last iteration. Parameters:
    ``tau_default`` (used when no stage could calibrate: K = 1) and ``tau_bounds`` (the
    calibrated tau is clipped into them). Everything the rule reads is available at that
    iteration; it never sees the clean image. Limits: it needs a noisy observation
    (``sigma_task > 0``; with a noise-free inpainting/SR observation the threshold is 0 and
    the rule runs to the end), and with ``noise="fixed"`` the exchangeability argument is
    only approximate (earlier stages already fitted part of the same noise).

    Adaptive stages (``stage_patience``, default 20): a noisy stage ends for an image as
    soon as its ``err_k`` has not improved for ``stage_patience`` iterations (at most
    ``iters_per_stage``; the last noisy stage, whose minimum the variants below need, at
    most ``final_iters``). A stage carried far past its optimum overfits its noisy target,
    which costs PSNR later in the run. Images advance independently (the batch is
    stepped on a per-image target). ``stage_patience = 0`` gives fixed-length stages.

    Stop variants (``stop_stage``; all are computed on the same run, the table has a
    ``progressive_<variant>`` row for each one that is not the default):
    ``final`` (default) the calibrated discrepancy above; ``extrapolated`` the same with
    tau from a least-squares line of ``tau_k`` against ``f_k = sigma_k^2 / s_k^2`` read at
    ``f = 0`` (the final stage); ``stage_length`` stops the final stage after as many
    iterations as the last noisy stage took to reach its ``err`` minimum; ``last_noisy``
    returns the output at the ``err`` minimum of the last noisy stage (committed when that
    stage ends: ``stage_patience`` iterations of extra compute).

    Measured (8 CIFAR-10 test images 32x32, sigma 25/255, skip net depth 3 x 64, lr 0.01,
    K = 5, sigma_max 50/255, adaptive stages; plain-DIP oracle 26.83 dB at iteration ~289,
    fixed 400: 25.51, discrepancy 21.80, ES-WMV 21.17): ``final`` 26.56 (geometric) and
    25.88 dB (cosine) with 40/400 iterations (stage max/final), 26.07 and 25.28 with
    100/600; the run's own peak is 0.2-1.1 dB below plain DIP's. With adaptive stages the
    calibrated tau exceeds the final stage's residual ratio at once, so ``final`` and
    ``extrapolated`` both stop on the final stage's first iteration: in effect the output
    ``stage_patience`` iterations past the last noisy stage's ``err`` minimum, which
    offsets that minimum's bias (it lands ~10-20 iterations before the stage's true PSNR
    peak). ``last_noisy`` is 0.1-0.3 dB below ``final``, ``stage_length`` is erratic
    (-0.9 to +0.3 dB: the final stage's optimum does not follow the last noisy stage's
    length). Fixed-length stages (``stage_patience = 0``) do worse: with 40 iterations no
    stage reaches its ``err`` minimum, nothing calibrates and ``final`` falls back to
    ``tau_default`` (25.65 geometric, 25.79 cosine, though that run peaks at 26.83); with
    100 the stages overfit (geometric 25.28). Cosine's last noisy stage is noisy (sigma
    0.38 sigma_max), which costs it ~0.7 dB against geometric.

Baselines (functions on one image's plain-DIP trajectory, ``rule(traj, **params) -> iter``)
    ``fixed_budget_stop``, ``discrepancy_stop``, ``es_wmv_stop`` (Wang et al.), and
    ``oracle_stop`` (peak PSNR to the clean image; an upper bound, not a rule).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import metrics
from .operators import Operator

SCHEDULES = ("linear", "cosine", "geometric")
NOISE_MODES = ("fresh", "fixed")
# Columns each baseline rule may read from a trajectory; everything else is withheld.
RULE_COLUMNS = {
    "fixed": ("iteration",),
    "discrepancy": ("iteration", "loss"),
    "es_wmv": ("iteration", "wmv"),
    "oracle": ("iteration", "psnr_clean_ema"),
}
TABLE_COLUMNS = [
    "run",
    "rule",
    "image",
    "stop_iter",
    "psnr",
    "ssim",
    "oracle_iter",
    "oracle_psnr",
    "gap_db",
    "iter_gap",
    "within_1db",
    "decision_iter",
    "extra_compute",
]
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


# ---------------------------------------------------------------------------------------
# Progressive targets
# ---------------------------------------------------------------------------------------


def stage_sigmas(schedule: str, K: int, sigma_max: float, ratio: float = 0.5) -> np.ndarray:
    """Noise std of each of the K stage targets, decreasing, the last one exactly 0.

    With ``u_k = 1 - k / (K - 1)`` running from 1 (first stage) to 0 (last):
    ``linear``: ``sigma_max * u_k``; ``cosine``: ``sigma_max * sin(pi/2 * u_k)``, the
    noise std ``sqrt(1 - alpha_bar)`` of the DDPM cosine schedule (slow start, fast end);
    ``geometric``: ``sigma_max * ratio**k`` for the K - 1 noisy stages (constant ratio
    between stages, as in score-based models), then 0. Units are those of the images
    (range 1), like ``sigma_task``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")
    if int(K) != K or K < 1:
        raise ValueError(f"K (number of stages) must be an integer >= 1; got {K!r}")
    K = int(K)
    if K > 1 and not (math.isfinite(sigma_max) and sigma_max > 0):
        raise ValueError(f"sigma_max must be a positive number; got {sigma_max!r}")
    if schedule == "geometric" and not 0 < ratio < 1:
        raise ValueError(f"geometric schedule ratio must be in (0, 1); got {ratio!r}")
    if K == 1:
        return np.zeros(1)
    u = 1.0 - np.arange(K) / (K - 1)
    if schedule == "linear":
        sigmas = sigma_max * u
    elif schedule == "cosine":
        sigmas = sigma_max * np.sin(0.5 * np.pi * u)
    else:
        sigmas = sigma_max * ratio ** np.arange(K, dtype=np.float64)
    sigmas[-1] = 0.0
    return sigmas


def progressive_targets(
    y: torch.Tensor,
    sigmas: Sequence[float],
    noise: str = "fresh",
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage targets ``y_k = y + sigma_k * n_k`` and the unit noises ``n_k``.

    ``y`` is the observation (N, C, h, w). ``noise="fresh"`` draws an independent n_k per
    stage; ``"fixed"`` reuses one draw (a single forward-diffusion path). Targets are not
    clipped, so their noise stays exactly Gaussian with std sigma_k. ``mask`` (inpainting,
    broadcastable to y) zeroes the noise on unknown pixels, where y carries no data.
    A stage with sigma_k = 0 gets y itself, bit for bit. Returns two (K, N, C, h, w)
    tensors: targets and unit noises (the rule needs the noise it can recognise).
    """
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}; got {noise!r}")
    y = torch.as_tensor(y, dtype=torch.float32)
    if y.ndim != 4:
        raise ValueError(f"observation must have shape (N, C, H, W); got {tuple(y.shape)}")
    sigmas = [float(s) for s in sigmas]
    if any(not math.isfinite(s) or s < 0 for s in sigmas):
        raise ValueError(f"stage sigmas must be finite and >= 0; got {sigmas}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    shared = torch.randn(y.shape, generator=generator).to(y.device)
    targets, noises = [], []
    for sigma in sigmas:
        n = shared if noise == "fixed" else torch.randn(y.shape, generator=generator)
        n = n.to(y.device)
        if mask is not None:
            n = n * mask.to(y.device)
        noises.append(n)
        targets.append(y.clone() if sigma == 0 else y + sigma * n)
    return torch.stack(targets), torch.stack(noises)


# ---------------------------------------------------------------------------------------
# Baseline rules on one image's trajectory
# ---------------------------------------------------------------------------------------


def _need(traj: pd.DataFrame, columns: Sequence[str], rule: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in traj.columns]
    if missing:
        raise ValueError(f"{rule}: trajectory lacks column(s) {missing}; has {list(traj)}")
    if traj.empty:
        raise ValueError(f"{rule}: trajectory is empty")
    return traj.sort_values("iteration")


def fixed_budget_stop(traj: pd.DataFrame, budget: int) -> int:
    """Stop after ``budget`` iterations (the last logged iteration <= budget)."""
    traj = _need(traj, ["iteration"], "fixed_budget_stop")
    iters = traj["iteration"].to_numpy()
    if budget < iters[0]:
        raise ValueError(f"fixed_budget_stop: budget {budget} is before the first iteration")
    return int(iters[iters <= budget][-1])


def discrepancy_stop(
    traj: pd.DataFrame, sigma: float, tau: float = 1.0, column: str = "loss"
) -> int:
    """Morozov's discrepancy principle: first iteration with residual <= tau * sigma^2.

    ``column`` holds the per-image mean squared residual to the observation; ``sigma`` is
    the task's noise std (range 1). Never reaching it means stopping at the last iteration.
    """
    traj = _need(traj, ["iteration", column], "discrepancy_stop")
    below = traj[traj[column] <= tau * sigma**2]
    return int((below if len(below) else traj)["iteration"].iloc[0 if len(below) else -1])


def es_wmv_stop(traj: pd.DataFrame, patience: int = 1000, column: str = "wmv") -> int:
    """ES-WMV (Wang et al. 2023): the iteration of minimum windowed moving variance,
    declared once the minimum has not improved for ``patience`` iterations.

    The window (100 in the paper) is applied by whoever computed ``column``; iterations
    with an undefined (NaN) variance, before the first full window, are skipped. When
    patience never runs out, the minimum over the whole run is returned.
    """
    traj = _need(traj, ["iteration", column], "es_wmv_stop")
    best_iter, best = None, math.inf
    for it, value in zip(traj["iteration"], traj[column], strict=True):
        if not math.isfinite(value):
            continue
        if value < best:
            best_iter, best = int(it), float(value)
        elif it - best_iter >= patience:
            return best_iter
    return best_iter if best_iter is not None else int(traj["iteration"].iloc[-1])


def oracle_stop(traj: pd.DataFrame, column: str = "psnr_clean_ema") -> int:
    """The iteration of peak PSNR to the clean image (first one on ties): an upper bound."""
    traj = _need(traj, ["iteration", column], "oracle_stop")
    values = traj[column].to_numpy(dtype=np.float64)
    if not np.isfinite(values).any():
        return int(traj["iteration"].iloc[-1])
    return int(traj["iteration"].iloc[int(np.nanargmax(values))])


def es_wmv_decision(traj: pd.DataFrame, stop: int, patience: int) -> int:
    """Iteration at which ES-WMV commits to ``stop`` (``stop + patience`` or the end)."""
    return int(min(stop + patience, traj["iteration"].max()))


# ---------------------------------------------------------------------------------------
# The online progressive rule
# ---------------------------------------------------------------------------------------


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


def psnr_of(x: np.ndarray, ref: np.ndarray) -> float:
    """``metrics.psnr``, but NaN when either image is not finite (a withheld clean image);
    the capped metric would report its 100 dB cap there."""
    if not (np.isfinite(x).all() and np.isfinite(ref).all()):
        return math.nan
    return metrics.psnr(x, ref)


def ssim_of(x: np.ndarray, ref: np.ndarray) -> float:
    """``metrics.ssim``, NaN when either image is not finite."""
    if not (np.isfinite(x).all() and np.isfinite(ref).all()):
        return math.nan
    return metrics.ssim(x, ref)


def _masked_mean(values: torch.Tensor, operator: Operator) -> torch.Tensor:
    """Per-image mean over observed entries (the known pixels when inpainting)."""
    if operator.kind == "inpaint":
        mask = operator.mask.expand_as(values)
        return (values * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1.0)
    return values.mean(dim=(1, 2, 3))


# ---------------------------------------------------------------------------------------
# The progressive-target DIP fit
# ---------------------------------------------------------------------------------------


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
    rule: ProgressiveDiscrepancyRule,
    iters_per_stage: int,
    final_iters: int,
    clean: torch.Tensor | None = None,
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
    taken (production); the default keeps the full curves for analysis.
    ``on_stage(fitter)`` is called whenever some image starts a new stage.
    """
    K, n = len(sigmas), observed.shape[0]
    sigmas = [float(s) for s in sigmas]
    index = torch.arange(n, device=targets.device)
    stage, stage_it = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    pending, active = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
    image_iters, stage_ends = np.zeros(n, dtype=int), np.zeros((K, n), dtype=int)
    variants = {v: _Stops(n) for v in STOP_VARIANTS}
    rows: list[dict] = []
    best_psnr, best_iters = np.full(n, -np.inf), np.full(n, -1)
    best_out: list[np.ndarray | None] = [None] * n
    total = (K - 1) * iters_per_stage + final_iters
    bar = tqdm(total=total, desc="progressive DIP", disable=not progress)
    start, it = time.perf_counter(), 0
    while active.any():
        it += 1
        stage_t = torch.as_tensor(stage, device=targets.device)
        fitter.step(targets[stage_t, index], operator)
        x = _ema(fitter)
        projected = operator(x)
        # A stage's first output was computed before the first update on y_k, so it is
        # independent of fresh stage noise: the probe's reference.
        for k in np.unique(stage[pending]):
            rule.begin_stage(
                sigmas[k], targets[k], unit_noises[k], projected, operator, final=k == K - 1,
                last_noisy=k == K - 2, images=pending & (stage == k),
            )  # fmt: skip
        pending[:] = False
        stage_it += 1
        _, resid, err = rule.update(projected)
        x_np = x.detach().cpu().numpy()
        for v, stops in variants.items():
            stops.take(rule.now_by_variant[v] & active, it, x_np, commit=v != "last_noisy")
        if clean is not None:
            for i in np.flatnonzero(active):
                value = psnr_of(x_np[i], clean[i])
                if value > best_psnr[i]:
                    best_psnr[i], best_iters[i], best_out[i] = value, it, x_np[i].copy()
        final = stage == K - 1
        # With adaptive stages the last noisy stage runs to its err minimum (the stop of
        # "last_noisy" and the length of "stage_length"): capped like the final stage.
        long_stage = final | ((stage == K - 2) & (stage_patience > 0))
        lengths = np.where(long_stage, final_iters, iters_per_stage)
        ends = active & (stage_it >= lengths)
        if stage_patience > 0:
            ends |= active & ~final & rule.stage_done(stage_patience)
        logged = active & ((stage_it % log_every == 0) | ends)
        rows += _curve_rows(
            logged, stage, sigmas, it, stage_it, projected, rule.target, resid, err, rule,
            x_np, clean,
        )  # fmt: skip
        stage_ends[stage[ends], np.flatnonzero(ends)] = it
        leaving_last_noisy = ends & (stage == K - 2)
        variants["last_noisy"].decisions[
            leaving_last_noisy & (variants["last_noisy"].stops >= 0)
        ] = it
        finished = ends & final
        for stops in variants.values():
            stops.finish(finished, it, x_np)
        image_iters[finished] = it
        active &= ~finished
        advance = ends & ~final
        stage[advance] += 1
        stage_it[advance] = 0
        pending |= advance
        if advance.any() and on_stage is not None:
            on_stage(fitter)
        bar.update(1)
        decided = variants[rule.stop_stage].decisions >= 0
        if not run_to_end and decided.all():
            for stops in variants.values():
                stops.finish(active, it, x_np)
            image_iters[active] = it
            break
    bar.close()
    for i in np.flatnonzero(best_iters < 0):
        best_iters[i], best_out[i] = image_iters[i], x_np[i].copy()
    primary = variants[rule.stop_stage].result()
    return ProgressiveRun(
        curves=pd.DataFrame(rows, columns=CURVE_COLUMNS),
        stops=primary[0],
        decisions=primary[1],
        outputs_at_stop=primary[2],
        best_iters=best_iters,
        best_outputs=np.stack(best_out).astype(np.float32),
        total_iters=it,
        elapsed_s=time.perf_counter() - start,
        variants={v: s.result() for v, s in variants.items()},
        image_iters=image_iters,
        stage_ends=stage_ends,
    )


def _ema(fitter) -> torch.Tensor:
    ema = getattr(fitter, "output_ema", None)
    if ema is None:
        raise ValueError("the DIP fitter has no output_ema after a step")
    return ema.detach()


def _curve_rows(logged, stage, sigmas, it, stage_it, projected, target, resid, err, rule, x_np,
                clean):  # fmt: skip
    if not logged.any():
        return []
    proj, tgt = projected.detach().cpu().numpy(), target.detach().cpu().numpy()
    rows = []
    for i in np.flatnonzero(logged):
        rows.append(
            {
                "image": i,
                "stage": int(stage[i]),
                "sigma_k": sigmas[stage[i]],
                "iteration": it,
                "stage_iter": int(stage_it[i]),
                "psnr_target": psnr_of(proj[i], tgt[i]),
                "ssim_target": ssim_of(proj[i], tgt[i]),
                "residual": float(resid[i]),
                "expected_residual": float(rule.total_var[i]),
                "est_error": float(err[i]),
                "psnr_clean": math.nan if clean is None else psnr_of(x_np[i], clean[i]),
            }
        )
    return rows


def _reset_backtracking(fitter) -> None:
    # A new stage changes the target, so the PSNR-to-target of the previous stage is no
    # reference for divergence: without this, a well-fitted noisier stage could make every
    # step of the next one look divergent and freeze the network.
    fitter.reset_backtracking()


# ---------------------------------------------------------------------------------------
# The experiment cell: progressive fit + plain fit + evaluation
# ---------------------------------------------------------------------------------------

_TARGET_STREAM = 3  # random stream of the stage noise (fit.py uses 0..2 for one image)
RULE_DEFAULTS = {
    "tau_default": 1.0,
    "tau_bounds": (0.5, 2.0),
    "stop_stage": "final",
    "ratio": 0.5,
    "stage_patience": 20,
}
BASELINE_DEFAULTS = {
    "budgets": (),
    "tau": 1.0,
    "wmv_window": 100,
    "patience": 1000,
    "iters": None,
    "ssim_every": None,
}
# Plain-DIP EMA snapshots kept for SSIM at the baselines' stops are capped to this size.
SNAPSHOT_BUDGET_BYTES = 256 * 2**20


@dataclass
class EarlyStopResult:
    """``table``: TABLE_COLUMNS, one row per image x rule. ``stage_curves``: CURVE_COLUMNS.
    ``stops``: (N,) iteration chosen by the progressive rule (global, 1-based).
    ``outputs_at_stop``: (N, C, H, W) its outputs. ``trajectory``: the plain DIP run's.
    ``info``: sigmas, calibrated taus, iteration counts and seconds of both runs."""

    table: pd.DataFrame
    stage_curves: pd.DataFrame
    stops: np.ndarray
    outputs_at_stop: np.ndarray
    trajectory: pd.DataFrame
    info: dict


def _merged(name: str, given: dict | None, defaults: dict) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {name} key(s) {unknown}; allowed: {sorted(defaults)}")
    return {**defaults, **given}


def stage_targets_for(
    observed: torch.Tensor,
    operator: Operator,
    seeds: Sequence[int],
    sigmas: Sequence[float],
    noise: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Progressive targets drawn per image from its own seed, so an image gets the same
    targets whatever batch it is fitted in. Returns (K, N, ...) targets and unit noises."""
    from .dip.fit import derive_seed

    per_image = []
    for i, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(derive_seed(int(seed), _TARGET_STREAM))
        mask = operator.mask
        if mask is not None:  # one mask per image, or one shared (1, 1, H, W)
            mask = (mask[i : i + 1] if len(mask) > 1 else mask).cpu()
        per_image.append(progressive_targets(observed[i : i + 1].cpu(), sigmas, noise, gen, mask))
    targets = torch.cat([t for t, _ in per_image], dim=1)
    noises = torch.cat([n for _, n in per_image], dim=1)
    return targets.to(observed.device), noises.to(observed.device)


def run_earlystop_cell(
    clean: np.ndarray,
    observed: np.ndarray,
    operator: Operator,
    sigma_task: float,
    kind: str,
    arch_params: dict | None,
    seeds: Sequence[int],
    schedule: str = "cosine",
    K: int = 5,
    sigma_max: float = 0.3,
    noise: str = "fresh",
    iters_per_stage: int = 500,
    final_iters: int = 2000,
    rule_params: dict | None = None,
    baseline_params: dict | None = None,
    lr: float = 0.01,
    reg_noise_std: float = 1 / 30,
    exp_weight: float = 0.99,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log_every: int = 1,
) -> EarlyStopResult:
    """Run the progressive-target DIP with its stopping rule and a plain DIP (``fit_dip``,
    same seeds) for the baselines, and evaluate every stop against the clean images.

    ``clean`` (N, C, H, W) is only used for the after-the-fact metrics: NaN images give NaN
    metrics and identical stops. ``sigma_task`` is the observation's noise std (range 1).
    ``rule_params``: ``tau_default``, ``tau_bounds``, ``stop_stage`` (one of
    ``STOP_VARIANTS``; the ``progressive`` row, the others get ``progressive_<variant>``
    rows), ``ratio`` (geometric schedule), ``stage_patience`` (adaptive stages; 0: fixed).
    ``baseline_params``: ``budgets`` (fixed iteration budgets), ``tau`` (discrepancy),
    ``wmv_window``, ``patience`` (ES-WMV), ``iters`` (plain-fit length; default the
    progressive run's total, or the largest budget), ``ssim_every`` (see below).

    PSNR at a baseline's stop is exact (the trajectory's ``psnr_clean_ema``). SSIM needs the
    image, so the plain fit keeps EMA snapshots every ``ssim_every`` iterations (and at each
    budget); the SSIM reported is that of the last snapshot at or before the stop. The
    default spacing is 1 (exact) unless the snapshots would exceed 256 MiB.
    """
    from .dip.fit import DIPFitter, fit_dip

    rp = _merged("rule_params", rule_params, RULE_DEFAULTS)
    bp = _merged("baseline_params", baseline_params, BASELINE_DEFAULTS)
    for name, value in (("iters_per_stage", iters_per_stage), ("final_iters", final_iters)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    device = torch.device(device)
    clean_np = np.asarray(clean, dtype=np.float32)
    observed_t = torch.as_tensor(np.asarray(observed, dtype=np.float32), device=device)
    if clean_np.ndim != 4 or observed_t.ndim != 4 or len(clean_np) != len(observed_t):
        raise ValueError(
            f"clean and observed must be (N, C, H, W) batches of the same N; got "
            f"{clean_np.shape} and {tuple(observed_t.shape)}"
        )
    if len(seeds) != len(clean_np):
        raise ValueError(f"got {len(seeds)} seeds for {len(clean_np)} images")
    operator = operator.to(device)
    sigmas = stage_sigmas(schedule, K, sigma_max, ratio=rp["ratio"])
    targets, noises = stage_targets_for(observed_t, operator, seeds, sigmas, noise)

    fitter_args = {"lr": lr, "reg_noise_std": reg_noise_std, "exp_weight": exp_weight}
    fitter = DIPFitter(kind, arch_params, clean_np.shape[1:], seeds, device=device, **fitter_args)
    rule = ProgressiveDiscrepancyRule(
        float(sigma_task), float(rp["tau_default"]), tuple(rp["tau_bounds"]), rp["stop_stage"]
    )
    run = fit_progressive(
        fitter, observed_t, operator, targets, noises, sigmas, rule, int(iters_per_stage),
        int(final_iters), clean=clean_np, log_every=log_every, progress=progress,
        on_stage=_reset_backtracking, stage_patience=int(rp["stage_patience"]),
    )  # fmt: skip

    budgets = [int(b) for b in bp["budgets"]]
    plain_iters = int(bp["iters"] or max([run.total_iters, *budgets]))
    every = bp["ssim_every"] or _snapshot_spacing(clean_np, plain_iters)
    wanted = sorted(
        {*range(every, plain_iters + 1, every), *[b for b in budgets if b <= plain_iters]}
    )
    plain = fit_dip(
        observed_t, operator, kind, arch_params, seeds, plain_iters, snapshots=wanted,
        clean=clean_np, device=device, progress=progress, wmv_window=int(bp["wmv_window"]),
        **fitter_args,
    )  # fmt: skip

    table = pd.concat(
        [
            evaluate_progressive(run, clean_np, rp["stop_stage"]),
            evaluate_baselines(plain.trajectory, plain.snapshots, clean_np, sigma_task, bp),
        ],
        ignore_index=True,
    )
    plain_peak = table[table["rule"] == "oracle"].set_index("image")["psnr"]
    table["gap_plain_db"] = plain_peak.reindex(table["image"]).to_numpy() - table["psnr"]
    info = {
        "sigmas": sigmas.tolist(),
        "tau": np.broadcast_to(rule.tau(), (len(seeds),)).tolist(),
        "stage_taus": [[v if math.isfinite(v) else None for v in t.tolist()] for t in rule.taus],
        "tau_extrapolated": np.broadcast_to(rule.tau_extrapolated(), (len(seeds),)).tolist(),
        "stage_ends": run.stage_ends.tolist(),
        "progressive_iters": run.total_iters,
        "progressive_seconds": run.elapsed_s,
        "plain_iters": plain_iters,
        "plain_seconds": plain.seconds,
        "ssim_every": every,
    }
    return EarlyStopResult(
        table, run.curves, run.stops, run.outputs_at_stop, plain.trajectory, info
    )


def _snapshot_spacing(clean: np.ndarray, iters: int) -> int:
    return max(1, math.ceil(iters * clean.nbytes / SNAPSHOT_BUDGET_BYTES))


def _row(run, rule, image, stop, decision, value, ssim_value, oracle_iter, oracle_psnr):
    gap = oracle_psnr - value
    return {
        "run": run,
        "rule": rule,
        "image": image,
        "stop_iter": int(stop),
        "psnr": value,
        "ssim": ssim_value,
        "oracle_iter": int(oracle_iter),
        "oracle_psnr": oracle_psnr,
        "gap_db": gap,
        "iter_gap": int(stop) - int(oracle_iter),
        "within_1db": bool(gap <= 1.0),
        "decision_iter": int(decision),
        "extra_compute": int(decision) - int(stop),
    }


def evaluate_progressive(run: ProgressiveRun, clean: np.ndarray, primary: str) -> pd.DataFrame:
    """Rows ``progressive`` (the rule, variant ``primary``), ``progressive_<variant>`` for
    the other variants on the same run, and ``progressive_oracle`` (that run's own PSNR
    peak). Their oracle columns refer to the progressive run's own peak; the stage
    iterations before the final stage are part of ``stop_iter`` (global iteration count);
    ``extra_compute`` is what a rule runs past its stop before committing (``last_noisy``:
    the rest of that stage)."""
    named = [("progressive", primary)]
    named += [(f"progressive_{v}", v) for v in STOP_VARIANTS if v != primary]
    rows = []
    for i in range(len(clean)):
        peak_psnr = psnr_of(run.best_outputs[i], clean[i])
        best = int(run.best_iters[i])
        for name, variant in named:
            stops, decisions, outputs = run.variants[variant]
            out = outputs[i]
            rows.append(
                _row("progressive", name, i, int(stops[i]), int(decisions[i]),
                     psnr_of(out, clean[i]), ssim_of(out, clean[i]), best, peak_psnr)
            )  # fmt: skip
        rows.append(
            _row("progressive", "progressive_oracle", i, best, run.total_iters, peak_psnr,
                 ssim_of(run.best_outputs[i], clean[i]), best, peak_psnr)
        )  # fmt: skip
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def baseline_stops(traj: pd.DataFrame, sigma_task: float, params: dict) -> dict[str, tuple]:
    """Each baseline's (stop, decision iteration) on one image's plain trajectory.

    Every rule is handed only the columns it may read (``RULE_COLUMNS``)."""
    last = int(traj["iteration"].max())
    view = {name: traj[list(cols)] for name, cols in RULE_COLUMNS.items()}
    out = {}
    for budget in params["budgets"]:
        stop = fixed_budget_stop(view["fixed"], int(budget))
        out[f"fixed_{int(budget)}"] = (stop, stop)
    stop = discrepancy_stop(view["discrepancy"], sigma_task, tau=float(params["tau"]))
    out["discrepancy"] = (stop, stop)
    patience = int(params["patience"])
    stop = es_wmv_stop(view["es_wmv"], patience=patience)
    out["es_wmv"] = (stop, es_wmv_decision(traj, stop, patience))
    out["oracle"] = (oracle_stop(view["oracle"]), last)
    return out


def evaluate_baselines(
    trajectory: pd.DataFrame,
    snapshots: dict[int, np.ndarray],
    clean: np.ndarray,
    sigma_task: float,
    params: dict,
) -> pd.DataFrame:
    """Rows for the fixed budgets, discrepancy, ES-WMV and oracle on the plain run.

    ``extra_compute`` is the iterations a rule must run past its stop before it can commit
    (ES-WMV: its patience; the oracle: the rest of the run)."""
    params = _merged("baseline_params", params, BASELINE_DEFAULTS)
    snap_iters = np.array(sorted(snapshots))
    rows = []
    for i in range(len(clean)):
        traj = trajectory[trajectory["image"] == i].sort_values("iteration")
        psnr_at = dict(zip(traj["iteration"], traj["psnr_clean_ema"], strict=True))
        oracle_iter = oracle_stop(traj[list(RULE_COLUMNS["oracle"])])
        for rule, (stop, decision) in baseline_stops(traj, sigma_task, params).items():
            before = snap_iters[snap_iters <= stop]
            ssim_value = (
                ssim_of(snapshots[int(before[-1])][i], clean[i]) if len(before) else math.nan
            )
            rows.append(
                _row("plain", rule, i, stop, decision, float(psnr_at[stop]), ssim_value,
                     oracle_iter, float(psnr_at[oracle_iter]))
            )  # fmt: skip
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
