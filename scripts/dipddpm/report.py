"""Generate ``report.md`` from the aggregated tables: every number in it comes from them.

Sections: setup (from the config actually used), findings (sentences computed from the
tables, including where the DIP+DDPM combination does not help), the comparison tables,
the ablations, and the figures with captions. Missing tables or unavailable FID are
stated as such; the report never contains placeholder text or ``nan``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from dipddpm.aggregate import to_markdown
from dipddpm.io import atomic_path

SCALE_NAMES = {
    "cpu": "CPU default",
    "default": "CPU default",
    "cpu-default": "CPU default",
    "small": "CPU default",
    "full": "full grid",
    "full-grid": "full grid",
    "grid": "full grid",
}

TABLE_TITLES = {
    "method_comparison": "Method comparison (PSNR / SSIM per method and reverse steps)",
    "steps_to_quality": "Steps to quality (fewest reverse steps reaching the target PSNR)",
    "fid": "Sample quality: FID and KID by method and steps",
    "training_convergence": "DDPM training: full vs truncated diffusion",
    "dip_by_architecture": "DIP PSNR by architecture and duration",
    "earlystop": "Early-stopping rules against the oracle stop",
}
# Identity columns a row's label spells out; the report's tables show the label instead.
LABELLED = (
    "purpose",
    "method",
    "start",
    "t0",
    "lam",
    "train_dataset",
    "preset",
    "schedule",
    "mode",
    "t_max",
    "train_steps",
    "ckpt",
    "sampler",
    "eta",
)
MAIN_TABLES = ("method_comparison", "steps_to_quality", "fid")
ABLATION_TABLES = ("training_convergence", "dip_by_architecture", "earlystop")

FIGURE_CAPTIONS = {
    "quality_vs_steps": "PSNR and SSIM of the restored images against the number of reverse "
    "steps, one line per method (band: +-1 std over images and seeds).",
    "dip_trajectories": "PSNR to the clean image along DIP optimisation, mean over images "
    "with a +-1 std band, per architecture.",
    "dip_t0_heatmap": "Mean PSNR of DIP+DDPM over the prior's DIP duration (rows) and the "
    "diffusion start step t0 (columns).",
    "fid_vs_steps": "FID of DDPM samples against reverse steps, per method.",
    "training_curves": "DDPM training loss and evaluation PSNR, full vs truncated diffusion.",
    "qualitative": "The same images restored by each method (clean, observed, DIP, DDPM, "
    "DIP+DDPM).",
    "earlystop_curves": "DIP PSNR curves with each rule's detected stop (dashed) and the oracle "
    "stop (red).",
    "gap_distribution": "PSNR below the plain-DIP oracle on the same image, observation and "
    "seed, per rule (dB; 0 is the oracle, higher is worse).",
}


# ----------------------------------------------------------------------- formatting


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _db(value: float) -> str:
    return f"{float(value):.2f} dB"


def _num(value: Any) -> str:
    value = float(value)
    return f"{int(value)}" if value.is_integer() else f"{value:g}"


def scale_name(config: Mapping[str, Any]) -> str:
    """'CPU default' or 'full grid' from the config's ``scale`` key."""
    scale = str(config.get("scale", "")).strip().lower()
    if not scale:
        return "unspecified (no `scale` key in the config)"
    return SCALE_NAMES.get(scale, scale)


def compact(table: pd.DataFrame) -> pd.DataFrame:
    """Merge ``<v>_mean/_ci_low/_ci_high/_n`` columns into one 'mean [low, high]' column."""
    if table.empty:
        return table
    out = table.copy()
    stems = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    n_column = None
    for stem in stems:
        parts = [f"{stem}_{s}" for s in ("mean", "std", "n", "ci_low", "ci_high")]
        if not all(p in out.columns for p in parts):
            continue
        mean, low, high = out[parts[0]], out[parts[3]], out[parts[4]]
        out[stem] = [_mean_ci(m, lo, hi) for m, lo, hi in zip(mean, low, high, strict=True)]
        n_column = n_column or parts[2]
        out = out.drop(columns=[p for p in parts if p != n_column])
    if n_column is not None:
        out = out.rename(columns={n_column: "n"})
        out = out[[c for c in out.columns if c != "n"] + ["n"]]
    return out


def _mean_ci(mean: Any, low: Any, high: Any) -> str:
    if not _finite(mean):
        return "—"
    spec = ".2f" if abs(mean) >= 10 else ".3g"

    def fmt(value: float) -> str:
        return _num(value) if float(value).is_integer() else f"{value:{spec}}"

    if _finite(low) and _finite(high):
        return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"
    return fmt(mean)


# ------------------------------------------------------------------------- findings


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
    if "steps" in row.index and _finite(row["steps"]):
        parts.append(f"{_num(row['steps'])} reverse steps")
    is_dip = str(row.get("method", "dip")) == "dip"  # a DDPM row's iters are its prior's
    if is_dip and "iters" in row.index and _finite(row["iters"]):
        parts.append(f"{_num(row['iters'])} DIP iterations")
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
                    f"{_db(rivals.loc[top, 'psnr_mean'])}{_steps_text(rivals.loc[top])}."
                )
            continue
        label = combos["psnr_mean"].idxmax()
        row = combos.loc[label]
        comparisons = [
            f"{_db(r['psnr_mean'])} for {name}{_steps_text(r)}" for name, r in rivals.iterrows()
        ]
        sentence = f"{prefix}the best DIP+DDPM setting, {label}, reached "
        sentence += f"{_db(row['psnr_mean'])}{_steps_text(row)}"
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
    if not all(_finite(v) for v in bounds):
        return False
    return bounds[0] <= bounds[3] and bounds[2] <= bounds[1]


def steps_findings(table: pd.DataFrame) -> list[str]:
    if table.empty or "steps_to_target" not in table.columns:
        return []
    sentences = []
    for where, group in _groups(table):
        target = _db(group["target_psnr"].iloc[0])
        reached = group.dropna(subset=["steps_to_target"]).sort_values("steps_to_target")
        missed = group[group["steps_to_target"].isna()]
        prefix = f"On {where}, " if where else ""
        if reached.empty:
            best = group.loc[group["best_psnr"].idxmax()]
            sentences.append(
                f"{prefix}no method reached {target}; the closest was {best['label']} "
                f"with {_db(best['best_psnr'])}."
            )
            continue
        parts = [
            f"{r['label']} at {_num(r['steps_to_target'])} steps{_nfe_text(r)}"
            for _, r in reached.iterrows()
        ]
        text = f"{prefix}{target} was first reached by " + "; ".join(parts)
        if not missed.empty:
            best = missed.loc[missed["best_psnr"].idxmax()]
            text += f"; never by {', '.join(missed['label'].astype(str))}"
            text += f" (best of those: {best['label']} with {_db(best['best_psnr'])})"
        sentences.append(text + ".")
    return sentences


def _nfe_text(row: pd.Series) -> str:
    nfe = row.get("nfe_to_target")
    if not _finite(nfe) or (_finite(row["steps_to_target"]) and nfe == row["steps_to_target"]):
        return ""
    return f" ({_num(nfe)} network evaluations)" if nfe != 1 else " (1 network evaluation)"


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
    steps = f" at {_num(best['steps'])} steps" if _finite(best.get("steps")) else ""
    text = f"The lowest FID was {best['fid']:.2f} for {best['label']}{steps}"
    if worst.name != best.name:
        wsteps = f" at {_num(worst['steps'])} steps" if _finite(worst.get("steps")) else ""
        text += f"; the highest was {worst['fid']:.2f} for {worst['label']}{wsteps}"
    size = available["n_samples"].min() if "n_samples" in available.columns else None
    if _finite(size):
        text += f" (from {_num(size)} samples, so absolute values are biased upwards)"
    return [text + "."]


def training_findings(table: pd.DataFrame) -> list[str]:
    if table.empty or "steps_to_target" not in table.columns:
        return []
    parts = []
    for _, row in table.iterrows():
        name = f"{row['mode']} training (t_max={_num(row['t_max'])})"
        if _finite(row["steps_to_target"]):
            parts.append(f"{name} needed {_num(row['steps_to_target'])} steps")
        else:
            final = row.get("final_eval_psnr")
            last = f", ending at {_db(final)}" if _finite(final) else ""
            parts.append(f"{name} never reached it{last}")
    target = _db(table["target_psnr"].iloc[0])
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
        text += _db(best["psnr_mean"])
        if _finite(best.get("peak_psnr_mean")) and _finite(best.get("peak_iter_mean")):
            text += (
                f"; the mean per-image peak along those runs was {_db(best['peak_psnr_mean'])}"
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
    text += f"(mean gap {_db(best[gap])}"
    if _finite(best.get("within_1db_mean")):
        text += f", within 1 dB for {100 * best['within_1db_mean']:.0f} % of images"
    text += ")"
    worst = rules.loc[rules[gap].abs().idxmax()]
    if worst.name != best.name:
        text += f"; {worst['rule']} was furthest ({_db(worst[gap])})"
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


# --------------------------------------------------------------------------- sections


def _versions_text(versions: pd.DataFrame | None) -> str:
    if versions is None or versions.empty:
        return "no cell recorded its code version"
    parts = [
        f"`{r['code_commit']}` (sources `{r['code_hash']}`, {r['cells']} cells)"
        for _, r in versions.iterrows()
    ]
    warning = " — **the cells were computed by different code**" if len(parts) > 1 else ""
    return "; ".join(parts) + warning


def _setup_section(
    config: Mapping[str, Any], commit: str, versions: pd.DataFrame | None = None
) -> list[str]:
    dumped = yaml.safe_dump(_plain(config), sort_keys=True, default_flow_style=None).strip()
    return [
        "## Setup",
        "",
        f"- Scale: **{scale_name(config)}**",
        f"- Report generated at commit `{commit}`",
        f"- Cells computed by: {_versions_text(versions)}",
        "- Every table row averages exactly the cells its columns name (the label spells out "
        "method, t0, prior, model, checkpoint and sampler); it averages over the seeds listed "
        "in its `*_seeds` columns, and its n is images x seeds.",
        "",
        "Configuration used for this run:",
        "",
        "```yaml",
        dumped or "{}",
        "```",
        "",
    ]


def _plain(value: Any) -> Any:
    """Config as plain YAML-safe types (paths and numpy scalars become str/float)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _table_section(name: str, table: pd.DataFrame | None) -> list[str]:
    title = TABLE_TITLES.get(name, name.replace("_", " ").capitalize())
    lines = [f"### {title}", ""]
    if table is None or table.empty:
        return lines + ["No results for this table in this run.", ""]
    shown = compact(table)
    if "label" in shown.columns:  # these are spelled out in the label
        shown = shown.drop(columns=[c for c in LABELLED if c in shown.columns])
    if name == "fid" and "reason" in shown.columns:
        note = _fid_note(shown)
        shown = shown.drop(columns=["reason"])
        if note:
            lines += [note, ""]
    return lines + [to_markdown(shown), ""]


def _fid_note(table: pd.DataFrame) -> str:
    if "available" not in table.columns or table["available"].astype(bool).all():
        return ""
    reasons = sorted({str(r) for r in table["reason"].dropna() if str(r)})
    return "FID/KID unavailable for some cells: " + ("; ".join(reasons) or "no reason recorded")


def _figure_section(figures: Mapping[str, str], out_path: Path) -> list[str]:
    lines = ["## Figures", ""]
    if not figures:
        return lines + ["No figures were produced in this run.", ""]
    for number, (name, path) in enumerate(figures.items(), start=1):
        target = Path(path)
        if target.is_absolute() or target.exists():
            target = Path(os.path.relpath(target, out_path.parent))
        caption = FIGURE_CAPTIONS.get(name, name.replace("_", " ").capitalize() + ".")
        lines += [f"![{name}]({target.as_posix()})", "", f"*Figure {number}: {caption}*", ""]
    return lines


def render_report(
    tables: Mapping[str, pd.DataFrame],
    figures: Mapping[str, str],
    config: Mapping[str, Any],
    commit: str,
    out_path: str | os.PathLike = "report.md",
    versions: pd.DataFrame | None = None,
) -> str:
    """The report as Markdown text (see write_report)."""
    out_path = Path(out_path)
    lines = [
        f"# DIP + DDPM: results ({scale_name(config)})"
        if config.get("scale")
        else "# DIP + DDPM: results",
        "",
        "Generated from the aggregated result tables; every number below is computed from them.",
        "",
        *_setup_section(config, commit, versions),
        "## Findings",
        "",
        *[f"- {sentence}" for sentence in findings(tables)],
        "",
        "## Comparisons",
        "",
    ]
    for name in MAIN_TABLES:
        lines += _table_section(name, tables.get(name))
    lines += ["## Ablations", ""]
    for name in ABLATION_TABLES:
        lines += _table_section(name, tables.get(name))
    extra = [name for name in tables if name not in MAIN_TABLES + ABLATION_TABLES]
    for name in extra:
        lines += _table_section(name, tables[name])
    lines += _figure_section(figures, out_path)
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    tables: Mapping[str, pd.DataFrame],
    figures: Mapping[str, str],
    config: Mapping[str, Any],
    commit: str,
    out_path: str | os.PathLike,
    versions: pd.DataFrame | None = None,
) -> Path:
    """Write ``report.md`` atomically from the tables, figure paths and the config used.

    ``tables`` uses the names of aggregate.build_tables; ``figures`` maps a figure name
    (see FIGURE_CAPTIONS) to its image path, linked relative to the report.
    """
    out_path = Path(out_path)
    text = render_report(tables, figures, config, commit, out_path, versions)
    with atomic_path(out_path) as tmp:
        tmp.write_text(text)
    return out_path
