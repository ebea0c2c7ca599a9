"""Example 1 summary stage: the study's answer tables and figures from its cells.

Reads every restoration sample cell's per-image metrics and the DIP-alone metrics (from
the prior store when the study keeps one), adds DIP alone's calibrated cost, and writes
the tables of :mod:`dipddpm.example1` (settings chosen on the tuning images; everything
else on the evaluation images) with the Pareto and t0 figures.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import aggregate, cost, example1, example1_figures
from ..io import save_csv

log = logging.getLogger("dipddpm")

TABLES = (
    "settings",
    "primary_comparisons",
    "quality_targets",
    "quality_ladder",
    "steps_to_target",
    "diversity",
    "cost_curves",
    "t0_curves",
)


def summarise_example1(metrics, calibration_json, tuning: int, out_dir) -> dict[str, Path]:
    """Write ``<out_dir>/<table>.csv`` for each of :data:`TABLES` and the two figures."""
    frame = aggregate.collect(metrics)
    calibration = cost.merge([cost.load(path) for path in calibration_json])
    frame = aggregate.with_dip_cost(frame, calibration)
    settings = example1.chosen_settings(frame, tuning)
    targets = example1.quality_targets(frame, tuning, settings)
    ladder = example1.quality_ladder(frame, tuning, settings, targets)
    tables = {
        "settings": settings,
        "primary_comparisons": example1.primary_comparisons(frame, tuning, settings),
        "quality_targets": targets,
        "quality_ladder": ladder,
        "steps_to_target": example1.steps_to_target(ladder),
        "diversity": example1.restoration_diversity(frame, tuning),
        "cost_curves": example1.cost_curves(frame, tuning, settings),
        "t0_curves": example1.t0_curves(frame, tuning, settings),
    }
    out = Path(out_dir)
    written = {}
    for name, table in tables.items():
        written[name] = out / f"{name}.csv"
        save_csv(written[name], table)
    example1_figures.pareto_figure(tables["cost_curves"], out / "pareto")
    example1_figures.t0_figure(tables["t0_curves"], out / "psnr_vs_t0")
    log.info("Example 1: %d rows from %d cells, tables in %s", len(frame), len(metrics), out)
    return written
