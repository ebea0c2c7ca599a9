"""Example 1 summary stage: the study's answer tables and figures from its cells.

Reads every restoration sample cell's per-image metrics and the DIP-alone metrics (from
the prior store when the study keeps one), adds DIP alone's calibrated cost, and writes
the tables of :mod:`dipddpm.example1` (settings chosen on the tuning images; everything
else on the evaluation images) with the Pareto and t0 figures.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import pandas as pd
import torch

from .. import (
    aggregate,
    cost,
    example1,
    example1_ablations,
    example1_auto_t0,
    example1_figures,
    example1_report,
    example1_steps,
    grid,
)
from .. import example1_qualitative as qualitative
from ..io import load_json, load_npz, save_csv, save_text
from ..operators import Operator
from .dip import load_prior

log = logging.getLogger("dipddpm")

TABLES = (
    "settings",
    "primary_comparisons",
    "quality_targets",
    "quality_ladder",
    "steps_to_target",
    "nfe_to_target",
    "diversity",
    "cost_curves",
    "t0_curves",
    "auto_t0",
    "auto_t0_cases",
    "ablations",
)


def summarise_example1(
    metrics,
    calibration_json,
    tuning: int,
    out_dir,
    observations=(),
    priors=(),
    T: int = 1000,
    schedule: str = "linear",
    model_verdicts=None,
    prior_headline=None,
) -> dict[str, Path]:
    """Write ``<out_dir>/<table>.csv`` for each of :data:`TABLES` and the two figures.

    ``observations`` (degraded-data npz files, each beside its ``params.json``) and ``priors``
    (the DIP outputs the DIP-started cells read) feed the auto-t0 evaluation; ``T`` and
    ``schedule`` are the models' diffusion. The report section ``example1.md`` quotes the
    models part's ``model_verdicts`` CSV and the prior-training part's ``prior_headline``
    CSV when those files exist (committed summaries, read but not required, so a fresh
    checkout never retrains to rebuild them)."""
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
        "nfe_to_target": example1_steps.nfe_to_target_comparisons(frame, tuning, targets),
        "diversity": example1.restoration_diversity(frame, tuning),
        "cost_curves": example1.cost_curves(frame, tuning, settings),
        "t0_curves": example1.t0_curves(frame, tuning, settings),
        "ablations": example1_ablations.ablation_table(frame, tuning),
    }
    tables["auto_t0"], tables["auto_t0_cases"] = example1_auto_t0.auto_t0_tables(
        frame, tuning, load_observations(observations), prior_lookup(priors), T
    )
    out = Path(out_dir)
    written = {}
    for name, table in tables.items():
        written[name] = out / f"{name}.csv"
        save_csv(written[name], table)
    verdicts, headline = (
        pd.read_csv(path) if path and Path(path).exists() else None
        for path in (model_verdicts, prior_headline)
    )
    section = example1_report.example1_section(tables, tuning, T, schedule, verdicts, headline)
    written["section"] = out / "example1.md"
    save_text(written["section"], section)
    example1_figures.pareto_figure(tables["cost_curves"], out / "pareto")
    example1_figures.t0_figure(tables["t0_curves"], out / "psnr_vs_t0")
    log.info("Example 1: %d rows from %d cells, tables in %s", len(frame), len(metrics), out)
    return written


def load_observations(npz_files) -> dict[tuple[str, str, str], example1_auto_t0.Observation]:
    """Each degraded copy keyed by (dataset, task, obs_seed), from its cell path."""
    observations = {}
    for npz in npz_files:
        cell = grid.parse(npz)
        arrays, task = load_npz(npz), load_json(Path(npz).with_name("params.json"))
        observations[(cell["dataset"], cell["task"], cell["obs_seed"])] = (
            example1_auto_t0.Observation(
                clean=arrays["clean"],
                observed=arrays["observed"],
                operator=Operator.from_arrays(arrays, task),
                sigma01=float(task.get("sigma", 0.0)) / 255.0,
            )
        )
    return observations


def prior_lookup(npz_files) -> example1_auto_t0.PriorLookup:
    """The DIP output of a prior identity, read from whichever of ``npz_files`` is its cell
    (a run's folder or the prior store: both carry the cell's identity in their path)."""
    columns = ("dataset", "task", "obs_seed", "arch", "dip_seed")
    by_cell = {tuple(grid.parse(npz)[c] for c in columns): npz for npz in npz_files}

    @cache
    def load(key: tuple[str, ...], iters: str):
        if key not in by_cell:
            missing = dict(zip(columns, key, strict=True))
            raise example1.NotComputable(f"no DIP prior {missing} among the inputs")
        return load_prior(by_cell[key], int(iters))

    return lambda identity: load(tuple(identity[c] for c in columns), identity["iters"])


def draw_qualitative(
    observations,
    priors,
    models,
    plan,
    tuning: int,
    stem,
    device: str = "auto",
    threads: int = 1,
    count: int = qualitative.COUNT,
) -> list[Path]:
    """Example 1's qualitative figure (:mod:`dipddpm.example1_qualitative`) from the
    observations (``degraded.npz``, each beside its ``params.json``), the stored DIP priors
    and the stored model weights that a ``plan`` (:func:`qualitative.qualitative_plan`)
    names. Each DDPM column is its sampling cell run again as
    :func:`dipddpm.stages.ddpm.run_sample_cell` runs it (the whole image set, the cell's
    seed), so the images and PSNRs shown are the cell's own; ``count`` evaluation images
    per task are shown (never a tuning image, every ``tuning``-th)."""
    from .ddpm import load_for_sampling, load_observation

    loaded = {}
    blocks = []
    for block in plan:
        npz = qualitative.find_input(observations, block["observation"], "observation")
        data, task, operator = load_observation(npz, Path(npz).with_name("params.json"))
        prior_npz = qualitative.find_input(priors, block["prior"], "DIP prior")
        names = data.get("names")
        stored = load_npz(prior_npz).get("names")
        if names is not None and stored is not None and list(stored) != list(names):
            raise ValueError(f"{prior_npz} holds other images than {npz}")
        clean, observed = data["clean"], data["observed"]
        title = qualitative.observation_title(task["kind"], observed.shape)
        upsampled = operator.pinv(torch.as_tensor(observed)).numpy()
        columns = [qualitative.Column(title, observed, scored=upsampled)]
        columns += [
            qualitative.Column(f"DIP {iters} it", load_prior(prior_npz, iters))
            for iters in block["dip_iters"]
        ]
        for column in block["samples"]:
            cell = column["cell"]
            ckpt = qualitative.find_checkpoint(models, cell)
            if ckpt not in loaded:
                loaded[ckpt] = load_for_sampling(ckpt, device, threads)
            restored = _restore_cell(cell, ckpt, loaded[ckpt], data, task, operator, prior_npz)
            columns.append(qualitative.Column(column["title"], restored))
        columns.append(qualitative.Column("clean", clean, reference=True))
        indices = qualitative.evaluation_images(len(clean), tuning, count)
        panels = qualitative.build_panels(columns, clean, indices)
        for panel in panels:
            if panel.psnr is not None:
                shown = ", ".join(f"{v:.2f}" for v in panel.psnr)
                label = panel.title.replace("\n", " ")
                log.info("%s, %s: PSNR %s dB (images %s)", block["task"], label, shown, indices)
        labels = [
            qualitative.image_label(i, None if names is None else str(names[i])) for i in indices
        ]
        heading = f"{block['task']} ({block['observation']['dataset']}, observation seed "
        heading += f"{block['observation']['obs_seed']}): PSNR (dB) on each image"
        blocks.append(qualitative.Block(heading, labels, panels))
    return qualitative.qualitative_figure(blocks, stem)


def _restore_cell(cell: dict, ckpt, loaded, data: dict, task: dict, operator, prior_npz):
    """The restored images (N, 3, H, W) of one sampling cell, sampled exactly as
    run_sample_cell samples them (``stages.ddpm.restore``)."""
    from .ddpm import restore

    model, diffusion, meta, _ = loaded
    prior = load_prior(prior_npz, int(cell["iters"])) if cell["start"] == "dip" else None
    _, result = restore(cell, (model, diffusion, meta), ckpt, data, task, operator, prior, False)
    return result.mean
