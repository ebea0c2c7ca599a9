"""The progressive-target training variant: stage targets, their fit and its stopping rule.

Its rows (``run`` = ``progressive``): ``progressive`` (the rule's ``stop_stage``),
``progressive_<variant>`` for the other stop variants, computed on the same run, and
``progressive_oracle`` (that run's own PSNR peak).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import metrics
from ..dip.fit import DIPFitter
from ..grid import DEFAULT_STAGE_PATIENCE
from .progressive import ProgressiveRun, fit_progressive
from .registry import Problem, TrainingVariant, VariantRun, register_variant
from .rules import STOP_VARIANTS, ProgressiveSureRule
from .table import TABLE_COLUMNS, ssim_of, table_row
from .targets import stage_sigmas, stage_targets_for

# The rule_params keys: the rule's stop_stage, the geometric schedule's ratio and the
# adaptive stages' patience (0: fixed-length stages; a pipeline cell's comes from its
# stage_patience axis, whose default this is).
RULE_DEFAULTS = {
    "stop_stage": "stage_end",
    "ratio": 0.5,
    "stage_patience": DEFAULT_STAGE_PATIENCE,
}


@register_variant("progressive")
class ProgressiveTargets(TrainingVariant):
    """DIP trained on decreasingly noisy targets, stopped by ``ProgressiveSureRule``.

    ``settings``: ``schedule``, ``K``, ``sigma_max`` (range 1), ``noise``,
    ``iters_per_stage`` and ``final_iters``."""

    defaults = RULE_DEFAULTS

    def __init__(self, settings, params) -> None:
        super().__init__(settings, params)
        for name in ("iters_per_stage", "final_iters"):
            value = settings[name]
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        patience = params["stage_patience"]
        if isinstance(patience, bool) or int(patience) != patience or patience < 0:
            raise ValueError(f"stage_patience must be an integer >= 0; got {patience!r}")

    def fit(self, problem: Problem) -> VariantRun:
        settings, params = self.settings, self.params
        sigmas = stage_sigmas(
            settings["schedule"], settings["K"], settings["sigma_max"], ratio=params["ratio"]
        )
        targets, noises = stage_targets_for(
            problem.observed, problem.operator, problem.seeds, sigmas, settings["noise"]
        )
        fitter = DIPFitter(
            problem.kind,
            problem.arch_params,
            problem.clean.shape[1:],
            problem.seeds,
            device=problem.device,
            **problem.fitter_args,
        )
        rule = ProgressiveSureRule(float(problem.sigma_task), params["stop_stage"])
        run = fit_progressive(
            fitter,
            problem.observed,
            problem.operator,
            targets,
            noises,
            sigmas,
            rule,
            int(settings["iters_per_stage"]),
            int(settings["final_iters"]),
            clean=problem.clean,
            log_every=problem.log_every,
            progress=problem.progress,
            on_stage=reset_backtracking,
            stage_patience=int(params["stage_patience"]),
        )
        return VariantRun(
            table=evaluate_progressive(run, problem.clean, params["stop_stage"]),
            curves=run.curves,
            stops=run.stops,
            outputs_at_stop=run.outputs_at_stop,
            total_iters=run.total_iters,
            info=progressive_info(sigmas, run),
        )


def reset_backtracking(fitter) -> None:
    """Called when an image starts a stage. The new target makes the previous stage's
    PSNR-to-target no reference for divergence: without the reset, a well-fitted noisier
    stage could make every step of the next one look divergent and freeze the network."""
    fitter.reset_backtracking()


def progressive_info(sigmas: np.ndarray, run: ProgressiveRun) -> dict:
    """JSON-ready: stage sigmas, stage ends, iterations and seconds."""
    return {
        "sigmas": sigmas.tolist(),
        "stage_ends": run.stage_ends.tolist(),
        "progressive_iters": run.total_iters,
        "progressive_seconds": run.elapsed_s,
    }


def evaluate_progressive(run: ProgressiveRun, clean: np.ndarray, primary: str) -> pd.DataFrame:
    """The variant's rows, ``primary`` being the rule's ``stop_stage``. Their oracle columns
    refer to the progressive run's own peak; the stage iterations before the final stage
    are part of ``stop_iter`` (global iteration count); ``extra_compute`` is what a rule
    runs past its stop before committing (``last_noisy``: the rest of that stage)."""
    named = [("progressive", primary)]
    named += [(f"progressive_{v}", v) for v in STOP_VARIANTS if v != primary]
    rows = []
    for i in range(len(clean)):
        peak_psnr = metrics.psnr(run.best_outputs[i], clean[i])
        best = int(run.best_iters[i])
        for name, variant in named:
            stops, decisions, outputs = run.variants[variant]
            out = outputs[i]
            rows.append(
                table_row(
                    "progressive",
                    name,
                    i,
                    int(stops[i]),
                    int(decisions[i]),
                    metrics.psnr(out, clean[i]),
                    ssim_of(out, clean[i]),
                    best,
                    peak_psnr,
                )
            )
        peak_ssim = ssim_of(run.best_outputs[i], clean[i])
        rows.append(
            table_row(
                "progressive",
                "progressive_oracle",
                i,
                best,
                run.total_iters,
                peak_psnr,
                peak_ssim,
                best,
                peak_psnr,
            )
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
