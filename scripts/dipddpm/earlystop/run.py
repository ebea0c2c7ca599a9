"""The experiment cell: a training variant's fit, a plain DIP fit for the post-hoc rules, and
every stop scored against the clean images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..dip.defaults import DIP_DEFAULTS
from ..dip.fit import FitResult, fit_dip
from ..operators import Operator
from .past_peak import PastPeak, is_count, peak_summary
from .registry import TRAINING_VARIANTS, Problem, TrainingVariant, merge_params
from .table import add_plain_gap, baseline_defaults, evaluate_baselines

# Plain-DIP EMA snapshots kept for SSIM at the post-hoc stops are capped to this size.
SNAPSHOT_BUDGET_BYTES = 256 * 2**20


@dataclass
class EarlyStopResult:
    """``table``: TABLE_COLUMNS and ``gap_plain_db``, one row per image x stop.
    ``stage_curves``: the training variant's curves (CURVE_COLUMNS for ``progressive``).
    ``stops``: (N,) the variant's primary stop (global, 1-based); ``outputs_at_stop``:
    (N, C, H, W) its outputs. ``trajectory``: the plain DIP run's.
    ``info``: the variant's description, the plain run's iterations and seconds."""

    table: pd.DataFrame
    stage_curves: pd.DataFrame
    stops: np.ndarray
    outputs_at_stop: np.ndarray
    trajectory: pd.DataFrame
    info: dict


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
    lr: float = DIP_DEFAULTS.lr,
    reg_noise_std: float = DIP_DEFAULTS.reg_noise_std,
    exp_weight: float = DIP_DEFAULTS.exp_weight,
    backtrack: bool = DIP_DEFAULTS.backtrack,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log_every: int = 1,
    variant: str = "progressive",
) -> EarlyStopResult:
    """Fit the training ``variant`` (its stops decided while it trains) and a plain DIP
    (``fit_dip``, same seeds) for the registered post-hoc rules; score every stop.

    ``clean`` (N, C, H, W) is only used for the after-the-fact metrics: NaN images give NaN
    metrics and identical stops. ``sigma_task`` is the observation's noise std (range 1).
    ``schedule`` ... ``final_iters`` are the variant's settings. ``rule_params``: the
    variant's keys (``progressive``: ``RULE_DEFAULTS``). ``baseline_params``: the plain
    fit's ``budgets`` (snapshots), ``wmv_window``, ``wmv_windows`` (extra ES-WMV windows,
    recorded as ``wmv_<W>`` trajectory columns for ``loo``), ``iters`` (default: the
    variant's total iterations, or the largest budget), ``ssim_every``, ``run_past_peak``
    and ``max_iters`` (below), and each registered rule's keys (``budgets``, ``tau``,
    ``patience``). Unknown keys in either are refused.

    ``run_past_peak`` (opt-in; default None, a fixed length): the plain fit runs at least
    the default length and on until every image is ``run_past_peak`` iterations past its
    ``psnr_clean_ema`` peak, under the hard cap ``max_iters`` (``past_peak``); ``iters``
    must then be left unset. ``info["plain_past_peak"]`` holds each image's peak, the
    iteration it ran to and whether the cap came first (``hit_cap``).

    PSNR at a post-hoc stop is exact (the trajectory's ``psnr_clean_ema``). SSIM needs the
    image, so the plain fit keeps EMA snapshots every ``ssim_every`` iterations (and at each
    budget); the SSIM reported is that of the last snapshot at or before the stop. The
    default spacing is 1 (exact) unless the snapshots would exceed 256 MiB.
    """
    settings = dict(
        schedule=schedule,
        K=K,
        sigma_max=sigma_max,
        noise=noise,
        iters_per_stage=iters_per_stage,
        final_iters=final_iters,
    )
    training = training_variant(variant, settings, rule_params)
    bp = merge_params("baseline_params", baseline_params, baseline_defaults())
    check_plain_settings(bp)  # before any fit: a bad key must not cost the variant's fit
    fitter_args = dict(
        lr=lr, reg_noise_std=reg_noise_std, exp_weight=exp_weight, backtrack=backtrack
    )
    problem = make_problem(
        clean,
        observed,
        operator,
        sigma_task,
        kind,
        arch_params,
        seeds,
        fitter_args,
        device,
        progress,
        log_every,
    )
    fitted = training.fit(problem)
    plain, plain_iters, every = plain_fit(problem, bp, fitted.total_iters)
    baselines = evaluate_baselines(plain.trajectory, plain.snapshots, problem.clean, sigma_task, bp)
    table = pd.concat([fitted.table, baselines], ignore_index=True)
    add_plain_gap(table)
    info = {
        **fitted.info,
        "plain_iters": plain_iters,
        "plain_seconds": plain.seconds,
        "ssim_every": every,
    }
    if bp["run_past_peak"] is not None:
        info["plain_past_peak"] = past_peak_info(plain.trajectory, bp)
    return EarlyStopResult(
        table, fitted.curves, fitted.stops, fitted.outputs_at_stop, plain.trajectory, info
    )


def make_problem(
    clean: np.ndarray,
    observed: np.ndarray,
    operator: Operator,
    sigma_task: float,
    kind: str,
    arch_params: dict | None,
    seeds: Sequence[int],
    fitter_args: dict,
    device: torch.device | str,
    progress: bool,
    log_every: int,
) -> Problem:
    """The images of one cell as every training variant reads them, on ``device``, with
    the batch checked (one seed per image, matching shapes)."""
    device = torch.device(device)
    problem = Problem(
        clean=np.asarray(clean, dtype=np.float32),
        observed=torch.as_tensor(np.asarray(observed, dtype=np.float32), device=device),
        operator=operator.to(device),
        sigma_task=sigma_task,
        kind=kind,
        arch_params=arch_params,
        seeds=seeds,
        fitter_args=fitter_args,
        device=device,
        progress=progress,
        log_every=log_every,
    )
    _check_batch(problem)
    return problem


def training_variant(name: str, settings: dict, rule_params: dict | None) -> TrainingVariant:
    """The registered variant ``name`` with ``rule_params`` merged over its defaults."""
    if name not in TRAINING_VARIANTS:
        raise ValueError(
            f"unknown training variant {name!r}; registered: {list(TRAINING_VARIANTS)}"
        )
    cls = TRAINING_VARIANTS[name]
    return cls(settings, merge_params("rule_params", rule_params, cls.defaults))


def _check_batch(problem: Problem) -> None:
    clean, observed = problem.clean, problem.observed
    if clean.ndim != 4 or observed.ndim != 4 or len(clean) != len(observed):
        raise ValueError(
            f"clean and observed must be (N, C, H, W) batches of the same N; got "
            f"{clean.shape} and {tuple(observed.shape)}"
        )
    if len(problem.seeds) != len(clean):
        raise ValueError(f"got {len(problem.seeds)} seeds for {len(clean)} images")


def plain_fit(problem: Problem, params: dict, default_iters: int) -> tuple[FitResult, int, int]:
    """The plain DIP fit the post-hoc rules read, its length (the longest image's) and its
    SSIM snapshot spacing. With ``run_past_peak`` the fit runs from the fixed length on
    past every image's peak, under ``max_iters`` (``run_earlystop_cell``)."""
    budgets = [int(b) for b in params["budgets"]]
    min_iters = max([default_iters, *budgets])
    past_peak = _past_peak_until(params, min_iters)
    # Past the peak the length is known only at the end: snapshots are spaced for the cap.
    iters = int(params["iters"] or min_iters) if past_peak is None else int(params["max_iters"])
    every = params["ssim_every"] or _snapshot_spacing(problem.clean, iters)
    wanted = sorted({*range(every, iters + 1, every), *[b for b in budgets if b <= iters]})
    plain = fit_dip(
        problem.observed,
        problem.operator,
        problem.kind,
        problem.arch_params,
        problem.seeds,
        iters,
        snapshots=wanted,
        clean=problem.clean,
        device=problem.device,
        progress=problem.progress,
        wmv_window=int(params["wmv_window"]),
        wmv_windows=_wmv_windows(params),
        until=past_peak,
        **problem.fitter_args,
    )
    return plain, plain.iterations, every


def past_peak_info(trajectory: pd.DataFrame, params: dict) -> dict:
    """JSON-ready: the run-past-peak settings and, per image, ``peak_summary``'s row."""
    patience = int(params["run_past_peak"])
    peaks = peak_summary(trajectory, patience)
    images = [
        {
            "image": int(row.image),
            "peak_iter": int(row.peak_iter),
            "peak_psnr": float(row.peak_psnr),
            "ran_to": int(row.ran_to),
            "hit_cap": bool(row.hit_cap),
            "peak_known": bool(row.peak_known),
        }
        for row in peaks.itertuples()
    ]
    return {"patience": patience, "max_iters": int(params["max_iters"]), "images": images}


def check_plain_settings(params: dict) -> None:
    """The plain fit's ``wmv_windows``, ``run_past_peak``, ``max_iters`` and ``iters``,
    checked together; each error names its key."""
    _wmv_windows(params)
    patience, cap = params["run_past_peak"], params["max_iters"]
    if patience is None:
        if cap is not None:
            raise ValueError(
                f"baseline_params 'max_iters' ({cap!r}) caps a run past the peak; it needs "
                "'run_past_peak' (iterations past the PSNR peak), which is None"
            )
        return
    if not is_count(patience, 0):
        raise ValueError(
            f"baseline_params 'run_past_peak' must be an integer >= 0 (iterations past the "
            f"PSNR peak) or None; got {patience!r}"
        )
    if not is_count(cap, 1):
        raise ValueError(
            f"baseline_params 'max_iters' must be an integer >= 1 (the hard cap) when "
            f"'run_past_peak' is set; got {cap!r}"
        )
    if params["iters"] is not None:
        raise ValueError(
            f"baseline_params 'iters' ({params['iters']!r}) fixes the plain fit's length; "
            "with 'run_past_peak' the peak decides it under 'max_iters': set one of them"
        )


def _past_peak_until(params: dict, min_iters: int) -> PastPeak | None:
    """``fit_dip``'s ``until`` for ``run_past_peak`` (None: a fixed length), which runs at
    least ``min_iters``, the fixed length."""
    check_plain_settings(params)
    patience, cap = params["run_past_peak"], params["max_iters"]
    if patience is None:
        return None
    if cap < min_iters:
        raise ValueError(
            f"baseline_params 'max_iters' ({cap}) is below the plain fit's least length "
            f"{min_iters} (the training variant's iterations and the largest budget)"
        )
    return PastPeak(patience=int(patience), min_iters=min_iters)


def _wmv_windows(params: dict) -> tuple[int, ...]:
    windows = params["wmv_windows"]
    if isinstance(windows, str | bytes) or not isinstance(windows, Sequence):
        raise ValueError(
            f"baseline_params 'wmv_windows' must be a list of windows; got {windows!r}"
        )
    if not all(is_count(w, 1) for w in windows):
        raise ValueError(
            f"baseline_params 'wmv_windows' must hold integers >= 1; got {list(windows)!r}"
        )
    return tuple(int(w) for w in windows)


def _snapshot_spacing(clean: np.ndarray, iters: int) -> int:
    return max(1, math.ceil(iters * clean.nbytes / SNAPSHOT_BUDGET_BYTES))
