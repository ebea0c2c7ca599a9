"""Baseline stopping rules on one image's plain-DIP trajectory, and their registrations.

Each function takes a trajectory and returns the stop iteration: ``fixed_budget_stop``,
``discrepancy_stop``, ``es_wmv_stop`` (Wang et al.) and ``oracle_stop`` (peak PSNR to the
clean image; an upper bound, not a rule). The classes below register them as post-hoc
rules with the columns each may read and the ``baseline_params`` keys each takes.

Which output: every stop, the oracle's included, is scored on the EMA output (the
trajectory's ``psnr_clean_ema`` and the EMA snapshots), and the oracle's peak is the EMA
output's, so all rules are compared on one output. What a rule watches to decide is its
own signal, from the raw outputs of the steps: the discrepancy principle their residual
(``loss``), ES-WMV their windowed moving variance (``wmv``, ``wmv_<W>``; as in the paper,
see ``dip.recording.WindowVariance``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .registry import PosthocRule, register_rule


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


@register_rule("fixed")
class FixedBudgets(PosthocRule):
    """One row ``fixed_<budget>`` per entry of ``budgets``."""

    columns = ("iteration",)
    defaults = {"budgets": ()}

    def labelled_stops(self, traj: pd.DataFrame) -> dict[str, tuple[int, int]]:
        out = {}
        for budget in self.params["budgets"]:
            stop = fixed_budget_stop(traj, int(budget))
            out[f"fixed_{int(budget)}"] = (stop, stop)
        return out


@register_rule("discrepancy")
class Discrepancy(PosthocRule):
    """The discrepancy principle at ``tau`` times the task's noise variance."""

    columns = ("iteration", "loss")
    defaults = {"tau": 1.0}

    def stop(self, traj: pd.DataFrame) -> int:
        return discrepancy_stop(traj, self.sigma_task, tau=float(self.params["tau"]))


@register_rule("es_wmv")
class EsWmv(PosthocRule):
    """ES-WMV; it commits ``patience`` iterations after its stop."""

    columns = ("iteration", "wmv")
    defaults = {"patience": 1000}

    def stop(self, traj: pd.DataFrame) -> int:
        return es_wmv_stop(traj, patience=int(self.params["patience"]))

    def decision(self, traj: pd.DataFrame, stop: int) -> int:
        return es_wmv_decision(traj, stop, int(self.params["patience"]))


@register_rule("oracle")
class Oracle(PosthocRule):
    """The plain run's PSNR peak, known only once the run has ended."""

    columns = ("iteration", "psnr_clean_ema")

    def stop(self, traj: pd.DataFrame) -> int:
        return oracle_stop(traj)

    def decision(self, traj: pd.DataFrame, stop: int) -> int:
        return int(traj["iteration"].max())
