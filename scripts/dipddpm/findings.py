"""The report's findings: sentences computed from the summary tables.

Each function reads one table and returns sentences; every number in them comes from the
table. Comparisons are made only between rows of the same dataset and task.
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


def method_findings(table: pd.DataFrame) -> list[str]:
    """Does DIP+DDPM beat DIP alone and DDPM alone? Sentences from the comparison table."""
    if table.empty or "psnr_mean" not in table.columns or "label" not in table.columns:
        return ["No restoration results were available for the method comparison."]
    sentences = []
    for where, group in _groups(table):
        best = _best_per_label(group)
        prefix = f"On {where}, " if where else ""
        combos = best[best.index.str.startswith("DIP+DDPM")]
        rivals = best[~best.index.str.startswith("DIP+DDPM")]
        if combos.empty:
            if not rivals.empty:
                top = rivals["psnr_mean"].idxmax()
                sentences.append(
                    f"{prefix}no DIP+DDPM cell was evaluated; the best method was {top} at "
                    f"{db_text(rivals.loc[top, 'psnr_mean'])}{_steps_text(rivals.loc[top])}."
                )
            continue
        label = combos["psnr_mean"].idxmax()
        row = combos.loc[label]
        comparisons = [
            f"{db_text(r['psnr_mean'])} for {name}{_steps_text(r)}" for name, r in rivals.iterrows()
        ]
        sentence = f"{prefix}the best DIP+DDPM setting, {label}, reached "
        sentence += f"{db_text(row['psnr_mean'])}{_steps_text(row)}"
        sentences.append(sentence + (f" versus {'; '.join(comparisons)}." if comparisons else "."))
        sentences += _verdicts(prefix, label, row, rivals)
    return sentences


def _verdicts(prefix: str, label: str, row: pd.Series, rivals: pd.DataFrame) -> list[str]:
    """One sentence per baseline family: does the combination beat it, and by how much?"""
    families = {
        "DIP alone": rivals[rivals.index == "DIP alone"],
        "DDPM alone": rivals[rivals.index.str.startswith("DDPM")],
        "DIP-guided sampling": rivals[rivals.index.str.startswith("DIP-guided")],
    }
    out = []
    for family, members in families.items():
        if members.empty:
            continue
        rival = members["psnr_mean"].idxmax()
        margin = row["psnr_mean"] - members.loc[rival, "psnr_mean"]
        which = f" ({rival})" if rival != family else ""
        if margin > 0:
            overlap = _intervals_overlap(row, members.loc[rival])
            out.append(
                f"{prefix}{label} beats {family}{which} by {margin:.2f} dB"
                + (", but the 95 % intervals overlap." if overlap else ".")
            )
        else:
            out.append(
                f"{prefix}the combination does NOT help over {family}: {label} is "
                f"{-margin:.2f} dB below {rival}."
            )
    return out


def _intervals_overlap(a: pd.Series, b: pd.Series) -> bool:
    bounds = [
        a.get("psnr_ci_low"),
        a.get("psnr_ci_high"),
        b.get("psnr_ci_low"),
        b.get("psnr_ci_high"),
    ]
    if not all(is_finite(v) for v in bounds):
        return False
    return bounds[0] <= bounds[3] and bounds[2] <= bounds[1]


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


def earlystop_findings(table: pd.DataFrame) -> list[str]:
    """Best and worst stopping rule by gap to the oracle; the oracle itself is the bound."""
    gap = "gap_plain_db_mean" if "gap_plain_db_mean" in table.columns else "gap_db_mean"
    if table.empty or gap not in table.columns:
        return []
    rows = table.dropna(subset=[gap])
    rules = rows[~rows["rule"].astype(str).str.contains("oracle")]
    if rules.empty:
        return []
    best = rules.loc[rules[gap].abs().idxmin()]
    text = "Among early-stopping rules (the oracle excluded: it reads the clean image), "
    text += f"{best['rule']} came closest to the plain-DIP oracle stop "
    text += f"(mean gap {db_text(best[gap])}"
    if is_finite(best.get("within_1db_mean")):
        text += f", within 1 dB for {100 * best['within_1db_mean']:.0f} % of images"
    text += ")"
    worst = rules.loc[rules[gap].abs().idxmax()]
    if worst.name != best.name:
        text += f"; {worst['rule']} was furthest ({db_text(worst[gap])})"
    return [text + "."]


def findings(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """All findings sentences, in report order."""
    empty = pd.DataFrame()
    return [
        *method_findings(tables.get("method_comparison", empty)),
        *steps_findings(tables.get("steps_to_quality", empty)),
        *fid_findings(tables.get("fid", empty)),
        *training_findings(tables.get("training_convergence", empty)),
        *dip_findings(tables.get("dip_by_architecture", empty)),
        *earlystop_findings(tables.get("earlystop", empty)),
    ]
