"""Generate ``report.md`` from the aggregated tables: every number in it comes from them.

Sections: setup (from the config actually used), findings (sentences computed from the
tables, including where the DIP+DDPM combination does not help), the comparison tables,
the ablations, and the figures with captions. Missing tables or unavailable FID are
stated as such; the report never contains placeholder text or ``nan``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from dipddpm.aggregate import to_markdown
from dipddpm.findings import findings, is_finite, number_text
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
    if not is_finite(mean):
        return "—"
    spec = ".2f" if abs(mean) >= 10 else ".3g"

    def fmt(value: float) -> str:
        return number_text(value) if float(value).is_integer() else f"{value:{spec}}"

    if is_finite(low) and is_finite(high):
        return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"
    return fmt(mean)


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
