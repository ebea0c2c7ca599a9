"""Example 2 figures (matplotlib, Agg backend), each written as ``<stem>.png`` and ``.pdf``.

Each function takes the frames :mod:`dipddpm.stages.example2_report` builds from the
leave-one-image-out cases, the cells' curves and the refitted outputs, and an output stem.
An empty frame never raises: the figure says which data is missing, as in
:mod:`dipddpm.figures`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dipddpm.earlystop.loo import ORACLE  # noqa: E402
from dipddpm.figures import no_data_figure, save_figure  # noqa: E402

PANELS_PER_ROW = 3
MARKERS = "os^vD<>Pp*hX"


def _grid(n: int, width: float = 4.2, height: float = 3.2):
    cols = min(n, PANELS_PER_ROW)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _rules(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["rule"].astype(str)))


def curves_figure(
    plain: pd.DataFrame,
    progressive: pd.DataFrame,
    stops: pd.DataFrame,
    stem: str | os.PathLike,
) -> list[Path]:
    """One panel per example image: the plain fit's EMA PSNR against the iteration (solid),
    each progressive run's PSNR (dashed), and every rule's stop as a marker on its run's
    curve. ``plain``: example, iteration, psnr; ``progressive``: example, rule, iteration,
    psnr; ``stops``: example, rule, run (``plain`` or ``progressive``), stop_iter, psnr."""
    if plain is None or plain.empty:
        return no_data_figure(stem, "Example 2 PSNR curves")
    examples = list(dict.fromkeys(plain["example"]))
    rules = _rules(stops) if not stops.empty else []
    colours = dict(zip(rules, plt.cm.tab10.colors * 2, strict=False))
    fig, axes = _grid(len(examples))
    for ax, example in zip(axes, examples, strict=True):
        curve = plain[plain["example"] == example].sort_values("iteration")
        ax.plot(curve["iteration"], curve["psnr"], color="k", lw=1, label="plain DIP (EMA)")
        mine = progressive[progressive["example"] == example]
        for rule, run in mine.groupby("rule", sort=False):
            run = run.sort_values("iteration")
            ax.plot(run["iteration"], run["psnr"], ls="--", lw=1, color=colours.get(rule, "0.4"))
        here = stops[stops["example"] == example]
        for i, (_, row) in enumerate(here.iterrows()):
            ax.plot(
                row["stop_iter"],
                row["psnr"],
                marker=MARKERS[i % len(MARKERS)],
                ls="none",
                markersize=6,
                markerfacecolor="none" if row["run"] == "plain" else colours.get(row["rule"]),
                color=colours.get(row["rule"], "0.4"),
                label=f"{row['rule']} ({int(row['stop_iter'])})",
            )
        ax.set_title(str(example), fontsize=8)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=5, loc="lower right")
    axes[0].set_ylabel("PSNR to clean (dB)")
    fig.tight_layout()
    return save_figure(fig, stem)


def gaps_figure(cases: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """The gap to the plain-DIP oracle of every case, one box and its dots per rule (the
    oracle left out: its gaps are 0), dotted lines at 0.5 and 1 dB."""
    if cases is None or cases.empty or "gap_plain_db" not in cases:
        return no_data_figure(stem, "Example 2 gaps to the oracle")
    cases = cases[cases["rule"].astype(str) != ORACLE]
    rules = _rules(cases)
    if not rules:
        return no_data_figure(stem, "Example 2 gaps to the oracle")
    gaps = [cases.loc[cases["rule"] == r, "gap_plain_db"].astype(float).to_numpy() for r in rules]
    fig, ax = plt.subplots(figsize=(1.3 * len(rules) + 2, 3.8))
    ax.boxplot(gaps, showfliers=False, widths=0.5)
    jitter = np.random.default_rng(0)  # fixed: the figure is the same on every run
    for i, values in enumerate(gaps, start=1):
        x = i + jitter.uniform(-0.15, 0.15, len(values))
        ax.plot(x, values, "o", markersize=2.5, alpha=0.6, color="C0")
    for level in (0.5, 1.0):
        ax.axhline(level, color="0.5", ls=":", lw=0.8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(1, len(rules) + 1), rules, rotation=25, ha="right", fontsize=7)
    ax.set_ylabel("gap to the plain-DIP oracle (dB)")
    fig.tight_layout()
    return save_figure(fig, stem)


def crops_figure(
    rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]], stem: str | os.PathLike
) -> list[Path]:
    """One row per example image: ``(label, [(title, (C, H, W) image in [0, 1]), ...])``."""
    if not rows:
        return no_data_figure(stem, "Example 2 crops")
    cols = max(len(panels) for _, panels in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(1.25 * cols, 1.45 * len(rows)), squeeze=False
    )
    for r, (label, panels) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(panels):
                continue
            title, image = panels[c]
            array = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
            array = array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))
            # Nearest: each crop pixel a block, as it is (no smoothing that hides noise),
            # and a PNG that compresses.
            cmap = "gray" if array.ndim == 2 else None
            ax.imshow(array, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=4.5)
        axes[r][0].set_ylabel(label, fontsize=4.5)
        axes[r][0].axis("on")
        axes[r][0].set_xticks([])
        axes[r][0].set_yticks([])
    fig.tight_layout(pad=0.3)
    return save_figure(fig, stem)
