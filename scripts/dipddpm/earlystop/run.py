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
    fit's ``budgets`` (snapshots), ``wmv_window``, ``iters`` (default: the variant's total
    iterations, or the largest budget) and ``ssim_every``, and each registered rule's keys
    (``budgets``, ``tau``, ``patience``). Unknown keys in either are refused.

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
    device = torch.device(device)
    problem = Problem(
        clean=np.asarray(clean, dtype=np.float32),
        observed=torch.as_tensor(np.asarray(observed, dtype=np.float32), device=device),
        operator=operator.to(device),
        sigma_task=sigma_task,
        kind=kind,
        arch_params=arch_params,
        seeds=seeds,
        fitter_args=dict(
            lr=lr, reg_noise_std=reg_noise_std, exp_weight=exp_weight, backtrack=backtrack
        ),
        device=device,
        progress=progress,
        log_every=log_every,
    )
    _check_batch(problem)
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
    return EarlyStopResult(
        table, fitted.curves, fitted.stops, fitted.outputs_at_stop, plain.trajectory, info
    )


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
    """The plain DIP fit the post-hoc rules read, its length and its SSIM snapshot spacing."""
    budgets = [int(b) for b in params["budgets"]]
    iters = int(params["iters"] or max([default_iters, *budgets]))
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
        **problem.fitter_args,
    )
    return plain, iters, every


def _snapshot_spacing(clean: np.ndarray, iters: int) -> int:
    return max(1, math.ceil(iters * clean.nbytes / SNAPSHOT_BUDGET_BYTES))
