"""The report's findings: sentences computed from the summary tables.

Each function reads one table and returns sentences; every number in them comes from the
table. They describe (best settings, steps to a target, FID availability); comparisons
between methods are claims with paired CIs (``claims.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd


def is_finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def db_text(value: float) -> str:
    return f"{float(value):.2f} dB"


def number_text(value: Any) -> str:
    value = float(value)
    return f"{int(value)}" if value.is_integer() else f"{value:g}"


def _groups(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    keys = [k for k in ("dataset", "task") if k in table.columns]
    if not keys:
        return [("", table)]
    out = []
    for key, group in table.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        out.append((", ".join(str(k) for k in key if not pd.isna(k)), group))
    return out


def _best_per_label(group: pd.DataFrame) -> pd.DataFrame:
    rows = group.dropna(subset=["psnr_mean"])
    return rows.loc[rows.groupby("label")["psnr_mean"].idxmax()].set_index("label")


def _steps_text(row: pd.Series) -> str:
    parts = []
    if "steps" in row.index and is_finite(row["steps"]):
        parts.append(f"{number_text(row['steps'])} reverse steps")
    is_dip = str(row.get("method", "dip")) == "dip"  # a DDPM row's iters are its prior's
    if is_dip and "iters" in row.index and is_finite(row["iters"]):
        parts.append(f"{number_text(row['iters'])} DIP iterations")
    return f" with {' and '.join(parts)}" if parts else ""


def steps_findings(table: pd.DataFrame) -> list[str]:
    if table.empty or "steps_to_target" not in table.columns:
        return []
    sentences = []
    for where, group in _groups(table):
        target = db_text(group["target_psnr"].iloc[0])
        reached = group.dropna(subset=["steps_to_target"]).sort_values("steps_to_target")
        missed = group[group["steps_to_target"].isna()]
        prefix = f"On {where}, " if where else ""
        if reached.empty:
            best = group.loc[group["best_psnr"].idxmax()]
            sentences.append(
                f"{prefix}no method reached {target}; the closest was {best['label']} "
                f"with {db_text(best['best_psnr'])}."
            )
            continue
        parts = [
            f"{r['label']} at {number_text(r['steps_to_target'])} steps{_nfe_text(r)}"
            for _, r in reached.iterrows()
        ]
        text = f"{prefix}{target} was first reached by " + "; ".join(parts)
        if not missed.empty:
            best = missed.loc[missed["best_psnr"].idxmax()]
            text += f"; never by {', '.join(missed['label'].astype(str))}"
            text += f" (best of those: {best['label']} with {db_text(best['best_psnr'])})"
        sentences.append(text + ".")
    return sentences


def _nfe_text(row: pd.Series) -> str:
    nfe = row.get("nfe_to_target")
    if not is_finite(nfe) or (is_finite(row["steps_to_target"]) and nfe == row["steps_to_target"]):
        return ""
    return f" ({number_text(nfe)} network evaluations)" if nfe != 1 else " (1 network evaluation)"


def fid_findings(table: pd.DataFrame) -> list[str]:
    if table.empty:
        return ["FID was not computed in this run (no FID cells)."]
    available = table[table["available"].astype(bool)] if "available" in table.columns else table
    available = available.dropna(subset=["fid"]) if "fid" in available.columns else available
    if available.empty:
        reasons = sorted({str(r) for r in table.get("reason", pd.Series()).dropna() if str(r)})
        why = reasons[0] if reasons else "no reason was recorded"
        return [f"FID/KID unavailable: {why}"]
    best = available.loc[available["fid"].idxmin()]
    worst = available.loc[available["fid"].idxmax()]
    steps = f" at {number_text(best['steps'])} steps" if is_finite(best.get("steps")) else ""
    text = f"The lowest FID was {best['fid']:.2f} for {best['label']}{steps}"
    if worst.name != best.name:
        wsteps = f" at {number_text(worst['steps'])} steps" if is_finite(worst.get("steps")) else ""
        text += f"; the highest was {worst['fid']:.2f} for {worst['label']}{wsteps}"
    size = available["n_samples"].min() if "n_samples" in available.columns else None
    if is_finite(size):
        text += f" (from {number_text(size)} samples, so absolute values are biased upwards)"
    return [text + "."]


def training_findings(table: pd.DataFrame) -> list[str]:
    if table.empty or "steps_to_target" not in table.columns:
        return []
    parts = []
    for _, row in table.iterrows():
        name = f"{row['mode']} training (t_max={number_text(row['t_max'])})"
        if is_finite(row["steps_to_target"]):
            parts.append(f"{name} needed {number_text(row['steps_to_target'])} steps")
        else:
            final = row.get("final_eval_psnr")
            last = f", ending at {db_text(final)}" if is_finite(final) else ""
            parts.append(f"{name} never reached it{last}")
    target = db_text(table["target_psnr"].iloc[0])
    return [f"To reach an evaluation PSNR of {target}, " + "; ".join(parts) + "."]


def dip_findings(table: pd.DataFrame) -> list[str]:
    """Per dataset and task: the best architecture and duration, and what its peak was."""
    if table.empty or "psnr_mean" not in table.columns:
        return []
    rows = table.dropna(subset=["psnr_mean"])
    keys = [k for k in ("dataset", "task") if k in rows.columns]
    groups = rows.groupby(keys, sort=True) if keys else [((), rows)]
    sentences = []
    for key, group in groups:
        where = ", ".join(map(str, key if isinstance(key, tuple) else (key,)))
        best = group.loc[group["psnr_mean"].idxmax()]
        arch = best.get("arch", "DIP")
        text = f"On {where}, the best DIP setting was {arch}{_steps_text(best)} at "
        text += db_text(best["psnr_mean"])
        if is_finite(best.get("peak_psnr_mean")) and is_finite(best.get("peak_iter_mean")):
            text += (
                f"; the mean per-image peak along those runs was {db_text(best['peak_psnr_mean'])}"
                f" (mean peak iteration {best['peak_iter_mean']:.0f})"
            )
        sentences.append(text + ".")
    return sentences


def ablation_findings(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """The ablations' sentences: DDPM training (full vs truncated), DIP by architecture."""
    empty = pd.DataFrame()
    return [
        *training_findings(tables.get("training_convergence", empty)),
        *dip_findings(tables.get("dip_by_architecture", empty)),
    ]
