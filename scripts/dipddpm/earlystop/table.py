"""The early-stopping table: one row per image x stop, scored against the clean image."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import metrics
from .baselines import oracle_stop
from .registry import POSTHOC_RULES, RULE_COLUMNS, merge_params, rule_defaults

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
# What the plain fit reads from baseline_params; the rules add their own keys.
PLAIN_FIT_DEFAULTS = {
    "budgets": (),  # snapshots at each budget keep the fixed rows' SSIM exact
    "wmv_window": 100,
    "wmv_windows": (),  # extra ES-WMV windows, recorded as wmv_<W> columns (loo's grid)
    "iters": None,
    "ssim_every": None,
    "run_past_peak": None,  # iterations past the PSNR peak (past_peak); None: fixed length
    "max_iters": None,  # the hard cap of a run past the peak
}


def baseline_defaults() -> dict[str, object]:
    """Every key ``baseline_params`` accepts, with its default."""
    return rule_defaults(PLAIN_FIT_DEFAULTS)


def ssim_of(x: np.ndarray, ref: np.ndarray) -> float:
    """``metrics.ssim``, NaN when either image is not finite (a withheld clean image)."""
    if not (np.isfinite(x).all() and np.isfinite(ref).all()):
        return math.nan
    return metrics.ssim(x, ref)


def table_row(run, rule, image, stop, decision, value, ssim_value, oracle_iter, oracle_psnr):
    """One TABLE_COLUMNS row; ``extra_compute`` is what the rule runs past its stop."""
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


def baseline_stops(traj: pd.DataFrame, sigma_task: float, params: dict) -> dict[str, tuple]:
    """Each registered rule's (stop, decision iteration) on one image's plain trajectory,
    labelled as in the table. Every rule is handed only its ``RULE_COLUMNS``."""
    params = merge_params("baseline_params", params, baseline_defaults())
    traj = traj.sort_values("iteration")
    out = {}
    for name, cls in POSTHOC_RULES.items():
        rule = cls(sigma_task, params)
        out.update(rule.labelled_stops(traj[list(RULE_COLUMNS[name])]))
    return out


def evaluate_baselines(
    trajectory: pd.DataFrame,
    snapshots: dict[int, np.ndarray],
    clean: np.ndarray,
    sigma_task: float,
    params: dict,
) -> pd.DataFrame:
    """Rows for every registered post-hoc rule on the plain run (``run`` = ``plain``).

    PSNR at a stop is exact (the trajectory's ``psnr_clean_ema``); SSIM is that of the last
    snapshot at or before the stop. ``extra_compute`` is the iterations a rule must run
    past its stop before it can commit (ES-WMV: its patience; the oracle: the rest of the
    run)."""
    params = merge_params("baseline_params", params, baseline_defaults())
    snap_iters = np.array(sorted(snapshots))
    rows = []
    for i in range(len(clean)):
        traj = trajectory[trajectory["image"] == i].sort_values("iteration")
        psnr_at = dict(zip(traj["iteration"], traj["psnr_clean_ema"], strict=True))
        oracle_iter = oracle_stop(traj)
        for rule, (stop, decision) in baseline_stops(traj, sigma_task, params).items():
            before = snap_iters[snap_iters <= stop]
            ssim_value = (
                ssim_of(snapshots[int(before[-1])][i], clean[i]) if len(before) else math.nan
            )
            rows.append(
                table_row(
                    "plain",
                    rule,
                    i,
                    stop,
                    decision,
                    float(psnr_at[stop]),
                    ssim_value,
                    oracle_iter,
                    float(psnr_at[oracle_iter]),
                )
            )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def add_plain_gap(table: pd.DataFrame) -> None:
    """Add ``gap_plain_db``: each row's PSNR below the plain run's peak for its image, the
    common yardstick of rules on different runs."""
    plain_peak = table[table["rule"] == "oracle"].set_index("image")["psnr"]
    table["gap_plain_db"] = plain_peak.reindex(table["image"]).to_numpy() - table["psnr"]
