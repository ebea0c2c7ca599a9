"""Evaluation and reporting stage: FID of a sample set, aggregation, figures and the report."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .. import aggregate, cost, figures, grid
from ..io import atomic_path, load_npz, save_csv, save_json
from ..report import write_report
from ..study_report import rebased, render_study_report
from ..version import git_commit

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


def run_aggregate(
    metrics,
    curves,
    fids,
    earlystops,
    target_psnr: float,
    target_eval_psnr,
    out_all_cells,
    out_versions,
    out_dir,
    calibration_json: list | None = None,
) -> None:
    """The tidy table of every cell x image and the summary tables (CSV + Markdown).

    With a cost calibration, DIP rows get the calibrated cost of DIP alone (their
    iterations x the architecture's seconds per iteration), as sample rows already do."""
    cells = aggregate.collect(metrics)
    if calibration_json:
        calibration = cost.merge([cost.load(path) for path in calibration_json])
        cells = aggregate.with_dip_cost(cells, calibration)
    curve = aggregate.load_curves(curves) if curves else pd.DataFrame()
    fid = aggregate.collect_json(fids) if fids else pd.DataFrame()
    stops = aggregate.collect(earlystops) if earlystops else pd.DataFrame()
    tables = aggregate.build_tables(
        cells,
        curves=curve,
        fid=fid,
        earlystop=stops,
        target_psnr=target_psnr,
        target_eval_psnr=target_eval_psnr,
    )
    aggregate.write_all_cells(cells, out_all_cells)
    aggregate.write_tables(tables, out_dir)
    save_csv(out_versions, aggregate.code_versions(cells, curve, fid, stops))
    log.info(
        "aggregated %d rows from %d cells into %d tables", len(cells), len(metrics), len(tables)
    )


def read_tables(table_dir) -> dict[str, pd.DataFrame]:
    tables = {}
    for path in sorted(Path(table_dir).glob("*.csv")):
        if path.stem not in ("all_cells", "code_versions"):
            tables[path.stem] = pd.read_csv(path) if path.stat().st_size > 1 else pd.DataFrame()
    return tables


def run_figures(
    all_cells,
    trajectories,
    curves,
    fids,
    earlystops,
    stage_curves,
    qualitative: dict,
    names,
    out_dir,
) -> None:
    """Every figure of the report (``names``) as PNG and PDF under ``out_dir``."""
    out = Path(out_dir)
    cells = aggregate.collect([all_cells])
    restoration = cells[cells["purpose"] == "restoration"] if len(cells) else cells
    trajectory = aggregate.collect(trajectories) if trajectories else pd.DataFrame()
    if len(trajectory):
        trajectory = trajectory[trajectory["purpose"] == "restoration"]
    figures.quality_vs_steps(restoration, out / "quality_vs_steps")
    figures.dip_trajectories(trajectory, out / "dip_trajectories")
    if "dip_t0_heatmap" in names:
        figures.dip_t0_heatmap(restoration, out / "dip_t0_heatmap")
    figures.fid_vs_steps(
        aggregate.collect_json(fids) if fids else pd.DataFrame(), out / "fid_vs_steps"
    )
    curve = aggregate.load_curves(curves) if curves else pd.DataFrame()
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


def relative_paths(value, repo):
    """The config with every absolute path written relative to the repository, so a
    committed summary names no directory of the machine that ran it."""
    if isinstance(value, dict):
        return {key: relative_paths(item, repo) for key, item in value.items()}
    if isinstance(value, list):
        return [relative_paths(item, repo) for item in value]
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.relpath(value, Path(repo).resolve())
    return value


def benchmark_file(kind: grid.Kind, cell: Mapping) -> str:
    """The benchmark file a cell's rule writes (``Kind.benchmark`` filled in)."""
    return f"{grid.BENCHMARKS}/{kind.path(cell)[len(grid.RESULTS) + 1 :]}.tsv"


def benchmark_files(config: Mapping) -> dict[str, list[str]]:
    """Each kind's benchmark files of the configuration's cells: the report's compute per
    stage."""
    return {
        kind: [benchmark_file(grid.KINDS[kind], cell) for cell in cells]
        for kind, cells in grid.cells(config).items()
    }


def stage_timings(benchmarks: Mapping[str, list[str]]) -> pd.DataFrame:
    """Compute seconds per kind of cell from its rules' benchmark files (cells whose rule
    ran elsewhere, e.g. a stored model, have none and are counted apart)."""
    rows = []
    for kind, paths in benchmarks.items():
        found = [Path(p) for p in paths if Path(p).exists()]
        if not paths:
            continue
        seconds = sum(float(pd.read_csv(p, sep="\t")["s"].sum()) for p in found)
        rows.append(
            {
                "stage": kind,
                "cells": len(paths),
                "with_benchmark": len(found),
                "seconds": round(seconds, 1),
                "minutes": round(seconds / 60, 1),
            }
        )
    return pd.DataFrame(rows)


def environment(cells: pd.DataFrame) -> dict[str, str]:
    """The report machine and the devices the cells record."""
    import torch

    info = {
        "Report machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {_cpu_model()}",
        "OS": platform.platform(),
        "Python / torch": f"{platform.python_version()} / {torch.__version__}",
    }
    if "device" in cells and cells["device"].notna().any():
        devices = ", ".join(sorted(cells["device"].dropna().astype(str).unique()))
        info["Cells ran on"] = devices
    return info


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "CPU model unknown"


def run_report(
    table_dir,
    figure_dir,
    versions_csv,
    config: dict,
    out_md,
    out_config,
    repo=".",
    all_cells=None,
    benchmarks: Mapping[str, list[str]] | None = None,
    generation: Sequence[str] = (),
) -> None:
    """The generated report: every number read from the tables, figures linked; the
    claims from the per-image rows of ``all_cells``, compute per stage from
    ``benchmarks`` (kind -> its cells' benchmark files), the offline generation metrics
    from the generation part's files (``generation``: see :func:`generation_part`)."""
    figure_paths = {
        name: str(Path(figure_dir) / f"{name}.png")
        for name in FIGURE_NAMES
        if (Path(figure_dir) / f"{name}.png").exists()
    }
    commit = git_commit(repo)
    config = relative_paths(config, repo)
    versions = pd.read_csv(versions_csv, dtype=str)
    cells = aggregate.collect([all_cells]) if all_cells else pd.DataFrame()
    write_report(
        read_tables(table_dir),
        figure_paths,
        config,
        commit,
        out_md,
        versions,
        cells=cells,
        environment=environment(cells),
        timings=stage_timings(benchmarks or {}),
        **generation_part(generation, out_md),
    )
    save_json(
        out_config,
        {"commit": commit, "cell_code_versions": versions.to_dict("records"), "config": config},
    )


# The generation part's files the report reads (common.smk's generation_targets()).
GENERATION_SECTION, GENERATION_SUMMARY = "generation.md", "generation.csv"


def generation_part(paths: Sequence[str], out_md) -> dict[str, Any]:
    """render_report's ``generation`` (the part's section, its links made relative to the
    report at ``out_md``) and ``generation_scores`` (every setting's scores) from the
    generation targets among ``paths``; none when the run scored no generation."""
    found = {Path(p).name: Path(p) for p in ([paths] if isinstance(paths, str) else paths)}
    part: dict[str, Any] = {}
    section = found.get(GENERATION_SECTION)
    if section is not None:
        folder = os.path.relpath(section.parent.resolve(), Path(out_md).parent.resolve())
        part["generation"] = rebased(section.read_text(), folder)
    summary = found.get(GENERATION_SUMMARY)
    if summary is not None:
        part["generation_scores"] = pd.read_csv(summary)
    return part


def run_study_report(root, out_md, repo=".") -> None:
    """The study's report from its committed parts under ``root`` (results/study)."""
    text = render_study_report(root, git_commit(repo), environment(pd.DataFrame()))
    with atomic_path(Path(out_md)) as tmp:
        tmp.write_text(text)
    log.info("study report: %s (%d lines)", out_md, text.count("\n"))
