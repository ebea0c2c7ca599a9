"""DDPM-inspired supervision for DIP early stopping (Example 2).

One module per concern:

``targets``              progressive targets ``y_k = y + sigma_k * n_k`` along a schedule
``rules``                the online progressive stopping rule (estimated error of the noisy stages)
``progressive``          the progressive-target DIP fit that drives that rule
``progressive_variant``  that fit registered as the ``progressive`` training variant
``baselines``            post-hoc rules on a plain fit: fixed budgets, discrepancy, ES-WMV,
                         oracle
``registry``             the two interfaces (post-hoc rule, training variant), their
                         registries and parameter checks
``table``                the early-stopping table: rows scored against the clean image
``past_peak``            the plain fit run to every image's PSNR peak + a patience, capped
``run``                  the experiment cell (``run_earlystop_cell``), or its two fits apart
                         (``run_plain_fit``, ``run_training_variant``, ``assemble_cell``)

A new post-hoc rule or training variant is one registered class in a new module here (see
``registry``); importing the package imports every module in it, which registers it.
"""

from __future__ import annotations

import importlib
import pkgutil

from .baselines import (
    discrepancy_stop,
    es_wmv_decision,
    es_wmv_stop,
    fixed_budget_stop,
    oracle_stop,
)
from .past_peak import PEAK_COLUMNS, PastPeak, PastPeakFit, fit_past_peak, peak_summary
from .progressive import CURVE_COLUMNS, ProgressiveRun, fit_progressive
from .progressive_variant import RULE_DEFAULTS, ProgressiveTargets, evaluate_progressive
from .registry import (
    POSTHOC_RULES,
    RULE_COLUMNS,
    TRAINING_VARIANTS,
    PosthocRule,
    Problem,
    TrainingVariant,
    VariantRun,
    register_rule,
    register_variant,
)
from .rules import STOP_VARIANTS, ProgressiveSureRule
from .run import (
    SNAPSHOT_BUDGET_BYTES,
    EarlyStopResult,
    PlainFitResult,
    assemble_cell,
    run_earlystop_cell,
    run_plain_fit,
    run_training_variant,
)
from .table import (
    PLAIN_FIT_DEFAULTS,
    TABLE_COLUMNS,
    baseline_defaults,
    baseline_stops,
    evaluate_baselines,
    ssim_of,
)
from .targets import NOISE_MODES, SCHEDULES, progressive_targets, stage_sigmas, stage_targets_for


def _import_every_module() -> None:
    # Registration happens on import: a rule in a new module of this package must be
    # imported for the cell to see it, without an edit to any other module.
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_every_module()

__all__ = [
    "CURVE_COLUMNS",
    "NOISE_MODES",
    "PEAK_COLUMNS",
    "PLAIN_FIT_DEFAULTS",
    "POSTHOC_RULES",
    "RULE_COLUMNS",
    "RULE_DEFAULTS",
    "SCHEDULES",
    "SNAPSHOT_BUDGET_BYTES",
    "STOP_VARIANTS",
    "TABLE_COLUMNS",
    "TRAINING_VARIANTS",
    "EarlyStopResult",
    "PastPeak",
    "PastPeakFit",
    "PlainFitResult",
    "PosthocRule",
    "Problem",
    "ProgressiveSureRule",
    "ProgressiveRun",
    "ProgressiveTargets",
    "TrainingVariant",
    "VariantRun",
    "assemble_cell",
    "baseline_defaults",
    "baseline_stops",
    "discrepancy_stop",
    "es_wmv_decision",
    "es_wmv_stop",
    "evaluate_baselines",
    "evaluate_progressive",
    "fit_past_peak",
    "fit_progressive",
    "fixed_budget_stop",
    "oracle_stop",
    "peak_summary",
    "progressive_targets",
    "register_rule",
    "register_variant",
    "run_earlystop_cell",
    "run_plain_fit",
    "run_training_variant",
    "ssim_of",
    "stage_sigmas",
    "stage_targets_for",
]
