"""Evaluation and reporting stage: FID cells, aggregation, figures and the report."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pandas as pd

from .. import aggregate, figures
from ..fid import fid_kid, reference_stats
from ..io import load_json, load_npz, save_json
from ..report import write_report

log = logging.getLogger("dipddpm")

FIGURE_NAMES = (
    "quality_vs_steps",
    "dip_trajectories",
    "dip_t0_heatmap",
    "fid_vs_steps",
    "training_curves",
    "qualitative",
    "earlystop_curves",
    "gap_distribution",
)


def run_fid_reference(clean_npz, weights, device: str, out_npz) -> None:
    """Inception statistics of a reference set, computed once and cached."""
    images = load_npz(clean_npz)["images"]
    stats = reference_stats(images, out_npz, weights=weights, device=device)
    log.info(
        "reference of %d images: available=%s %s",
        len(images),
        stats.get("available"),
        stats.get("reason", ""),
    )


def run_fid_cell(samples_npz, cell_json, reference_npz, weights, device: str, out_json) -> None:
    """FID/KID of one sample set; records 'unavailable' with the reason instead of failing."""
    samples = load_npz(samples_npz)["samples"]
    cell = load_json(cell_json)
    result = fid_kid(samples, reference_npz, weights=weights, device=device)
    keep = (
        "method",
        "steps",
        "t0",
        "start",
        "lam",
        "mode",
        "tmax",
        "ckpt",
        "seed",
        "nfe",
        "dataset",
        "task",
    )
    record = {key: cell[key] for key in keep if key in cell}
    save_json(out_json, {**record, **result, "stage": "fid"})


def _curve_params(path: Path) -> dict:
    found = aggregate.params_from_path(path.parent)
    return {"t_max": int(found["tmax"])} if "tmax" in found else {}


def run_aggregate(
    metrics, curves, fids, earlystops, target_psnr: float, target_eval_psnr, out_all_cells, out_dir
) -> None:
    """The tidy table of every cell x image and the summary tables (CSV + Markdown)."""
    cells = aggregate.collect(metrics)
    tables = aggregate.build_tables(
        cells,
        curves=aggregate.load_curves(curves, _curve_params) if curves else None,
        fid=aggregate.collect_json(fids) if fids else None,
        earlystop=aggregate.collect(earlystops) if earlystops else None,
        target_psnr=target_psnr,
        target_eval_psnr=target_eval_psnr,
    )
    aggregate.write_all_cells(cells, out_all_cells)
    aggregate.write_tables(tables, out_dir)
    log.info(
        "aggregated %d rows from %d cells into %d tables", len(cells), len(metrics), len(tables)
    )


def read_tables(table_dir) -> dict[str, pd.DataFrame]:
    tables = {}
    for path in sorted(Path(table_dir).glob("*.csv")):
        if path.stem != "all_cells":
            tables[path.stem] = pd.read_csv(path) if path.stat().st_size > 1 else pd.DataFrame()
    return tables


def run_figures(
    all_cells, trajectories, curves, fids, earlystops, stage_curves, qualitative: dict, out_dir
) -> None:
    """Every figure of the report as PNG and PDF under ``out_dir``."""
    out = Path(out_dir)
    cells = pd.read_csv(all_cells)
    sampled = cells[cells.get("stage") == "ddpm"] if "stage" in cells else cells.iloc[0:0]
    trajectory = aggregate.collect(trajectories) if trajectories else pd.DataFrame()
    figures.quality_vs_steps(sampled, out / "quality_vs_steps")
    figures.dip_trajectories(trajectory, out / "dip_trajectories")
    figures.dip_t0_heatmap(sampled, out / "dip_t0_heatmap")
    figures.fid_vs_steps(
        aggregate.collect_json(fids) if fids else pd.DataFrame(), out / "fid_vs_steps"
    )
    curve = aggregate.load_curves(curves, _curve_params) if curves else pd.DataFrame()
    figures.training_curves(curve, out / "training_curves")
    figures.qualitative_grid(load_panels(qualitative), out / "qualitative")
    stops = aggregate.collect(earlystops) if earlystops else pd.DataFrame()
    stage = aggregate.collect(stage_curves) if stage_curves else pd.DataFrame()
    figures.earlystop_curves(plain_fit_curves(stage), stops, out / "earlystop_curves")
    figures.gap_distribution(stops, out / "gap_distribution")


def plain_fit_curves(stage: pd.DataFrame) -> pd.DataFrame:
    """The trajectory of the first early-stopping cell, as the curves figure expects."""
    if stage.empty or "cell" not in stage:
        return stage
    return stage[stage["cell"] == stage["cell"].iloc[0]]


def load_panels(qualitative: dict) -> dict:
    """Arrays for the qualitative grid: ``{title: (npz path, array key)}`` -> arrays."""
    panels = {}
    for title, (path, key) in qualitative.items():
        panels[title] = load_npz(path)[key] if path else None
    return panels


def git_commit(repo: str | Path = ".") -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            text=True,
            capture_output=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            text=True,
            capture_output=True,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def run_report(table_dir, figure_dir, config: dict, out_md, out_config, repo=".") -> None:
    """The generated report: every number read from the tables, figures linked."""
    figure_paths = {name: str(Path(figure_dir) / f"{name}.png") for name in FIGURE_NAMES}
    commit = git_commit(repo)
    write_report(read_tables(table_dir), figure_paths, config, commit, out_md)
    save_json(out_config, {"commit": commit, "config": config})
