"""The experiment cell: a training variant's fit, a plain DIP fit for the post-hoc rules, and
every stop scored against the clean images.

The two fits are independent (each image's streams come from its seed), so they also run
apart: ``run_plain_fit`` and ``run_training_variant`` on one ``make_problem``, joined by
``assemble_cell``; ``run_earlystop_cell`` composes the three. The pipeline runs the plain
fit as a cell of its own, shared by the cells that differ only in the variant's settings.
"""

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
from .registry import TRAINING_VARIANTS, Problem, TrainingVariant, VariantRun, merge_params
from .table import add_plain_gap, baseline_defaults, evaluate_baselines

# Plain-DIP EMA snapshots kept for SSIM at the post-hoc stops are capped to this size.
SNAPSHOT_BUDGET_BYTES = 256 * 2**20


@dataclass
class PlainFitResult:
    """The plain DIP fit, scored. ``table``: every registered post-hoc rule's rows
    (``evaluate_baselines``). ``trajectory``: the fit's. ``info``: ``plain_iters`` (its
    length, the longest image's), ``plain_seconds``, ``ssim_every`` and, with
    ``run_past_peak``, ``plain_past_peak``."""

    table: pd.DataFrame
    trajectory: pd.DataFrame
    info: dict


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
    plain_default_iters: int | None = None,
) -> EarlyStopResult:
    """Fit the training ``variant`` (its stops decided while it trains) and a plain DIP
    (``fit_dip``, same seeds) for the registered post-hoc rules; score every stop.

    ``clean`` (N, C, H, W) is only used for the after-the-fact metrics: NaN images give NaN
    metrics and identical stops. ``sigma_task`` is the observation's noise std (range 1).
    ``schedule`` ... ``final_iters`` are the variant's settings. ``rule_params``: the
    variant's keys (``progressive``: ``RULE_DEFAULTS``). ``baseline_params``: the plain
    fit's ``budgets`` (snapshots), ``wmv_window``, ``wmv_windows`` (extra ES-WMV windows,
    recorded as ``wmv_<W>`` trajectory columns for ``loo``), ``iters`` (default:
    ``plain_default_iters``, or the largest budget), ``ssim_every``, ``run_past_peak``
    and ``max_iters`` (below), and each registered rule's keys (``budgets``, ``tau``,
    ``patience``). Unknown keys in either are refused. ``plain_default_iters``: the plain
    fit's default length (None: the variant's total iterations, which ties the plain fit
    to the variant's run; the pipeline gives a length from the config, ``run_plain_fit``).

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
    settings = variant_settings(schedule, K, sigma_max, noise, iters_per_stage, final_iters)
    training = training_variant(variant, settings, rule_params)
    # Before any fit: a bad key or length must not cost the variant's fit.
    bp = plain_params(baseline_params)
    if plain_default_iters is not None:
        check_default_iters(plain_default_iters)
    problem = make_problem(
        clean,
        observed,
        operator,
        sigma_task,
        kind,
        arch_params,
        seeds,
        fitter_arguments(lr, reg_noise_std, exp_weight, backtrack),
        device,
        progress,
        log_every,
    )
    fitted = training.fit(problem)
    default_iters = fitted.total_iters if plain_default_iters is None else plain_default_iters
    return assemble_cell(fitted, scored_plain_fit(problem, bp, default_iters))


def run_plain_fit(
    problem: Problem, default_iters: int, baseline_params: dict | None = None
) -> PlainFitResult:
    """The plain DIP fit (``fit_dip``, the problem's seeds) for the registered post-hoc
    rules, scored: ``run_earlystop_cell``'s plain half. ``default_iters``: its default
    length (its least length with ``run_past_peak``), given by the caller so that it does
    not depend on any training variant's run; ``baseline_params`` as there."""
    bp = plain_params(baseline_params)
    check_default_iters(default_iters)
    return scored_plain_fit(problem, bp, default_iters)


def run_training_variant(
    problem: Problem,
    settings: dict,
    rule_params: dict | None = None,
    variant: str = "progressive",
) -> VariantRun:
    """The training ``variant``'s fit, its stops scored: ``run_earlystop_cell``'s other
    half. ``settings``: ``variant_settings``'s keys."""
    return training_variant(variant, settings, rule_params).fit(problem)


def assemble_cell(fitted: VariantRun, plain: PlainFitResult) -> EarlyStopResult:
    """The cell's result from its two halves: the variant's rows then the post-hoc rules',
    each row's gap to the plain peak (``add_plain_gap``), the variant's info then the
    plain fit's."""
    table = pd.concat([fitted.table, plain.table], ignore_index=True)
    add_plain_gap(table)
    info = {**fitted.info, **plain.info}
    return EarlyStopResult(
        table, fitted.curves, fitted.stops, fitted.outputs_at_stop, plain.trajectory, info
    )


def variant_settings(
    schedule: str, K: int, sigma_max: float, noise: str, iters_per_stage: int, final_iters: int
) -> dict:
    """A training variant's ``settings`` (``TrainingVariant``)."""
    return dict(
        schedule=schedule,
        K=K,
        sigma_max=sigma_max,
        noise=noise,
        iters_per_stage=iters_per_stage,
        final_iters=final_iters,
    )


def fitter_arguments(lr: float, reg_noise_std: float, exp_weight: float, backtrack: bool) -> dict:
    """``Problem.fitter_args``: what every DIP fit of a cell is fitted with."""
    return dict(lr=lr, reg_noise_std=reg_noise_std, exp_weight=exp_weight, backtrack=backtrack)


def plain_params(baseline_params: dict | None) -> dict:
    """``baseline_params`` over their defaults, checked (each error names its key)."""
    bp = merge_params("baseline_params", baseline_params, baseline_defaults())
    check_plain_settings(bp)
    return bp


def check_default_iters(default_iters) -> None:
    if not is_count(default_iters, 1):
        raise ValueError(
            f"the plain fit's default length (plain_default_iters) must be an integer >= 1; "
            f"got {default_iters!r}"
        )


def scored_plain_fit(problem: Problem, bp: dict, default_iters: int) -> PlainFitResult:
    """``plain_fit`` with every post-hoc rule scored on it; ``bp`` merged and checked."""
    plain, plain_iters, every = plain_fit(problem, bp, default_iters)
    table = evaluate_baselines(
        plain.trajectory, plain.snapshots, problem.clean, problem.sigma_task, bp
    )
    info = {"plain_iters": plain_iters, "plain_seconds": plain.seconds, "ssim_every": every}
    if bp["run_past_peak"] is not None:
        info["plain_past_peak"] = past_peak_info(plain.trajectory, bp)
    return PlainFitResult(table, plain.trajectory, info)


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
            f"{min_iters} (its default length and the largest budget)"
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
