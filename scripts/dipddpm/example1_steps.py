"""Example 1: does a DIP prior reduce the network evaluations needed to reach the target?

:func:`dipddpm.example1.steps_to_target` reports each method's median steps. This module
pairs the methods per image: each evaluation image's NFE-to-target is the NFE of the first
ladder rung (fewest steps) at which its PSNR reaches the task's target, for DIP+DDPM and for
DDPM alone, each at its setting that reaches the target fastest on the tuning images
(:func:`fastest_setting`; ``rungs_a``/``_b`` list the NFE of the rungs that setting ran);
the per-image difference of log2 NFE goes through
:func:`dipddpm.stats.paired_comparison` (lower is better), with Holm's correction over the
tasks. An image that never reaches the target is censored at twice the NFE of the method's
largest rung, a lower bound of its true cost: censoring then shrinks differences towards 0,
so it can hide a gain but never invent one. ``n_censored_a``/``_b`` say how many.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from . import example1, stats

COLUMNS = (
    "dataset",
    "task",
    "name",
    "n",
    "n_reached_a",
    "n_reached_b",
    "n_censored_a",
    "n_censored_b",
    "rungs_a",
    "rungs_b",
    "median_nfe_a",
    "median_nfe_b",
    "mean_log2_ratio",
    "ci_low",
    "ci_high",
    "level",
    "p",
    "p_holm",
    "verdict",
    "target_psnr",
    "setting_a",
    "setting_b",
    "seeds",
    "reason",
)


def nfe_to_target_comparisons(
    frame: pd.DataFrame,
    tuning: int,
    targets: pd.DataFrame,
    ladder: Sequence[int] = example1.LADDER,
    n_boot: int = 10000,
) -> pd.DataFrame:
    """DIP+DDPM vs DDPM alone in log2 NFE to the target, per task (see the module)."""
    rows = example1._prepare(frame, tuning)
    evaluation = example1._split(rows, example1.EVALUATION)
    tuning_rows = example1._split(rows, example1.TUNING)
    target_of = example1._target_map(targets)
    planned = []
    for task in example1._ordered_tasks(rows, None):
        in_task = evaluation[evaluation["task"] == task]
        target = target_of.get(task, (math.nan, "no target"))[0]
        for method in example1.DDPM_ALONE:
            if not (in_task["method"] == method).any():
                continue
            in_tuning = tuning_rows[tuning_rows["task"] == task]
            planned.append(_compare(in_tuning, in_task, task, method, target, ladder))
    records = stats.holm_records(planned, n_boot, higher_is_better=False, diff="mean_log2_ratio")
    return pd.DataFrame(records, columns=list(COLUMNS))


def _compare(
    tuning_rows: pd.DataFrame,
    rows: pd.DataFrame,
    task: str,
    method: str,
    target: float,
    ladder: Sequence[int],
) -> dict:
    name = f"{example1.COMBINED} vs {method} (NFE to target)"
    record = {"task": task, "name": name, "target_psnr": target}
    try:
        if not math.isfinite(target):
            raise example1.NotComputable(f"{task} has no PSNR target")
        sides = [
            fastest_setting(tuning_rows, rows, task, m, target, ladder)
            for m in (example1.COMBINED, method)
        ]
    except example1.NotComputable as missing:
        return {**record, "reason": str(missing)}
    (a, setting_a, seeds), (b, setting_b, _) = sides
    images = a.index.intersection(b.index)
    a, b = a.loc[images], b.loc[images]
    return {
        **record,
        "dataset": setting_a["dataset"],
        "n": len(images),
        "n_reached_a": int(a["reached"].sum()),
        "n_reached_b": int(b["reached"].sum()),
        "n_censored_a": int((~a["reached"]).sum()),
        "n_censored_b": int((~b["reached"]).sum()),
        "rungs_a": " ".join(str(int(v)) for v in sorted(a.attrs["rungs"])),
        "rungs_b": " ".join(str(int(v)) for v in sorted(b.attrs["rungs"])),
        "median_nfe_a": float(a["nfe"].median()),
        "median_nfe_b": float(b["nfe"].median()),
        "setting_a": example1._setting_text(setting_a),
        "setting_b": example1._setting_text(setting_b),
        "seeds": seeds,
        "differences": np.log2(a["nfe"].to_numpy()) - np.log2(b["nfe"].to_numpy()),
        "reason": "",
    }


def per_image_nfe(
    rows: pd.DataFrame, setting: Mapping[str, str], target: float, ladder: Sequence[int]
) -> tuple[pd.DataFrame, dict[str, str], str]:
    """Per image (seeds averaged): the NFE of the first rung reaching ``target`` and whether
    any did (else the censoring value), for ``setting`` with only ``steps`` varying."""
    base = {c: v for c, v in setting.items() if c != "steps"}
    cells = example1._matching(rows, base)
    start = example1._start_step(cells)
    served = [c for _, c, _ in example1._rungs(cells, start, ladder) if c is not None]
    if not served:
        raise example1.NotComputable(f"no ladder rung of {example1._setting_text(base)} was run")
    measured = [example1._cell(cells, {**base, "steps": steps}) for steps in served]
    images = sorted(set.intersection(*(set(c.values.index) for c in measured)))
    nfe = pd.Series(np.nan, index=images)
    for cell in measured:  # rungs in increasing steps: the first reach wins
        reached = cell.values.loc[images] >= target
        nfe[reached & nfe.isna()] = cell.nfe
    censored = 2 * measured[-1].nfe
    table = pd.DataFrame({"reached": nfe.notna(), "nfe": nfe.fillna(censored)})
    table.attrs["rungs"] = [cell.nfe for cell in measured]
    return table, {**setting}, example1._seeds_text(cells)


def fastest_setting(
    tuning_rows: pd.DataFrame,
    rows: pd.DataFrame,
    task: str,
    method: str,
    target: float,
    ladder: Sequence[int],
) -> tuple[pd.DataFrame, dict[str, str], str]:
    """:func:`per_image_nfe` on ``rows`` (the evaluation images) of the setting of ``method``
    that reaches ``target`` with the fewest evaluations on the tuning images (mean log2
    NFE, censored as above; ties to the setting with more rungs, then the first): the
    question is how fast a method can get there, so the choice is made for that, and made
    on other images."""
    scope = {"task": task, "method": method}
    candidates = example1._matching(tuning_rows, scope)
    if candidates.empty:
        raise example1.NotComputable(f"{method} has no tuning rows on {task}")
    columns = [c for c in example1.SETTING_COLUMNS if c in candidates.columns and c != "steps"]
    scored = []
    for values, _ in candidates.groupby(columns, sort=False):
        setting = dict(zip(columns, values, strict=True))
        try:
            table, _, _ = per_image_nfe(tuning_rows, setting, target, ladder)
        except (example1.NotComputable, ValueError):
            continue
        if min(table.attrs["rungs"]) <= 0:  # t0 = 0 is the prior itself, not a chain
            continue
        score = float(np.log2(table["nfe"]).mean())
        scored.append((score, -len(table.attrs["rungs"]), len(scored), setting))
    if not scored:
        raise example1.NotComputable(f"no {method} setting on {task} has a ladder rung")
    best = min(scored, key=lambda item: item[:3])[3]
    return per_image_nfe(rows, best, target, ladder)
