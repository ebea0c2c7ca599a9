"""Prior-training summary stage: issue 19's tables, figure and section from the part's cells.

Reads the comparison's sampling cells (per-image metrics), its models' training curves and
the training priors' DIP cells (fit seconds and quality), and writes
:mod:`dipddpm.prior_comparison`'s tables, the convergence figure and a Markdown section
whose first paragraph is the answer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from .. import aggregate, prior_comparison
from ..example1_report import interval
from ..figures import no_data_figure, save_figure
from ..io import load_json, save_csv, save_text

log = logging.getLogger("dipddpm")

TABLES = ("convergence", "restoration", "steps_to_quality", "headline", "training_priors")


def summarise_prior_training(
    metrics: list[str],
    curves: list[str],
    training_priors: Mapping[str, Mapping[str, str]],
    *,
    batch_size: int,
    final_ckpt: int,
    t0: int,
    steps: int,
    out_dir: str | os.PathLike,
) -> dict[str, pd.DataFrame]:
    """Write ``<out_dir>/{convergence,restoration,steps_to_quality,headline,
    training_priors}.csv``, ``convergence.png`` and ``prior_training.md``.

    ``training_priors`` maps each prior-trained mode to its DIP cell's ``params`` (fit
    seconds) and ``metrics`` (per-image PSNR of the priors it learns from). ``t0`` and
    ``steps`` are the headline setting: the convergence rows and the answer use it."""
    samples = aggregate.collect(metrics)
    curve_frame = aggregate.load_curves(curves)
    priors = training_prior_table(training_priors)
    seconds = dict(zip(priors["mode"], priors["fit_seconds"], strict=True))
    restoration = prior_comparison.restoration_table(samples, final_ckpt)
    tables = {
        "convergence": prior_comparison.convergence_table(
            samples, curve_frame, seconds, batch_size, t0, steps
        ),
        "restoration": restoration,
        "steps_to_quality": prior_comparison.steps_to_quality(restoration, t0),
        "headline": prior_comparison.headline(
            samples, {"ckpt": final_ckpt, "t0": t0, "steps": steps}
        ),
        "training_priors": priors,
    }
    out = Path(out_dir)
    for name, table in tables.items():
        save_csv(out / f"{name}.csv", table)
    convergence_figure(tables["convergence"], out / "convergence")
    save_text(out / "prior_training.md", section(tables))
    log.info("prior training: %s", prior_comparison.answer(tables["headline"]))
    return tables


def training_prior_table(training_priors: Mapping[str, Mapping[str, str]]) -> pd.DataFrame:
    """Per prior-trained mode: its priors' count, DIP iterations, mean PSNR and fit time."""
    rows = []
    for mode, files in training_priors.items():
        params = load_json(files["params"])
        metrics = aggregate.collect([files["metrics"]])
        iters = int(params["fit"]["iters"])
        final = metrics[pd.to_numeric(metrics["iters"]) == iters]
        rows.append(
            {
                "mode": mode,
                "dataset": params["dataset"],
                "task": params["task"],
                "arch": params["arch"],
                "iters": iters,
                "n_images": int(final["image"].nunique()),
                "prior_psnr": float(pd.to_numeric(final["psnr"]).mean()),
                "observation_psnr": float(pd.to_numeric(final["psnr_input"]).mean()),
                "fit_seconds": float(params["seconds"]),
            }
        )
    return pd.DataFrame(rows)


MODE_STYLES = {"truncated": "k-", "full": "C7--"}


def convergence_figure(table: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Mean PSNR of the held-out restorations against training images seen and against
    total seconds (training plus the training priors' DIP fit), one line per model."""
    if table.empty:
        return no_data_figure(stem, "the prior-training comparison")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for mode in prior_comparison.modes_in(table):
        line = table[table["mode"] == mode].sort_values("ckpt")
        style = MODE_STYLES.get(mode, "-")
        for ax, x in zip(axes, ("images_seen", "total_seconds"), strict=True):
            ax.plot(line[x], line["psnr"], style, marker="o", markersize=3, label=mode)
    t0, steps = table["t0"].iloc[0], table["steps"].iloc[0]
    axes[0].set_xlabel("training images seen")
    axes[1].set_xlabel("seconds: training + the training priors' DIP fit")
    for ax in axes:
        ax.set_xscale("log")
    axes[0].set_ylabel(f"mean PSNR (dB), DIP prior at t0={t0}, {steps} steps")
    axes[1].legend(fontsize=7)
    return save_figure(fig, stem)


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if pd.isna(value) else f"{value:.{digits}f}"


def _ci(row: pd.Series, value: str, digits: int = 2) -> str:
    diff = row.get(f"{value}_diff")
    if diff is None or pd.isna(diff):
        return "reference"
    return f"{diff:+.{digits}f} {interval(row[f'{value}_ci_low'], row[f'{value}_ci_high'], digits)}"


def section(tables: Mapping[str, pd.DataFrame]) -> str:
    """The study's prior-training section: answer, training priors, then the tables."""
    conv, rest = tables["convergence"], tables["restoration"]
    priors, steps_table = tables["training_priors"], tables["steps_to_quality"]
    t0, steps = int(conv["t0"].iloc[0]), int(conv["steps"].iloc[0])
    final = int(conv["ckpt"].max())
    lines = [
        "## DDPM training that sees the DIP prior (issue 19)",
        "",
        f"**Answer** (final checkpoint, after {final} training steps; DIP prior at "
        f"t0 = {t0}, {steps} reverse steps): {prior_comparison.answer(tables['headline'])}",
        "",
        "Training priors: "
        + "; ".join(
            f"{r['mode']}: {r['n_images']} {r['dataset']} images, {r['task']}, {r['arch']} "
            f"at {r['iters']} iterations, mean PSNR {_fmt(r['prior_psnr'])} dB (observation "
            f"{_fmt(r['observation_psnr'])} dB), fitted in {_fmt(r['fit_seconds'], 0)} s"
            for _, r in priors.iterrows()
        )
        + ".",
        "",
        "### Quality against training (held-out images restored from their DIP priors)",
        "",
        "Differences are per image against the truncated model at the same checkpoint "
        "(95 % bootstrap CI, unadjusted; n = images, observation seeds averaged).",
        "",
        "| mode | training steps | images seen | seconds (train + priors) | PSNR "
        "| vs truncated (dB) "
        "| SSIM | probe PSNR t57 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in conv.iterrows():
        lines.append(
            f"| {r['mode']} | {r['ckpt']} | {r['images_seen']:,} | "
            f"{_fmt(r['train_seconds'], 0)} + {_fmt(r['prior_seconds'], 0)} | "
            f"{_fmt(r['psnr'])} | {_ci(r, 'psnr')} | {_fmt(r['ssim'], 3)} | "
            f"{_fmt(r.get('probe_psnr_t57', float('nan')))} |"
        )
    lines += [
        "",
        f"### Final checkpoint: every start step and step count (n = {int(rest['n_images'].max())}"
        " images)",
        "",
        "| mode | t0 | reverse steps | PSNR | vs truncated (dB) | SSIM | vs truncated (SSIM) |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in rest.iterrows():
        lines.append(
            f"| {r['mode']} | {r['t0']} | {r['steps']} | {_fmt(r['psnr'])} | "
            f"{_ci(r, 'psnr')} | {_fmt(r['ssim'], 3)} | {_ci(r, 'ssim', 3)} |"
        )
    target = steps_table["target_psnr"].iloc[0]
    lines += [
        "",
        f"### Steps to quality (t0 = {int(steps_table['t0'].iloc[0])}; target: the truncated "
        f"model's best mean PSNR less {prior_comparison.STEP_TOLERANCE_DB} dB = {target:.2f} dB)",
        "",
        "| mode | reverse steps to target | best PSNR | steps to own best |",
        "|---|---|---|---|",
    ]
    for _, r in steps_table.iterrows():
        reached = "not reached" if pd.isna(r["steps_to_target"]) else int(r["steps_to_target"])
        lines.append(
            f"| {r['mode']} | {reached} | {_fmt(r['best_psnr'])} | {int(r['steps_to_own_best'])} |"
        )
    return "\n".join(lines) + "\n"
