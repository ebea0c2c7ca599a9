"""Example 1 figures (matplotlib, Agg backend), each written as ``<stem>.png`` and ``.pdf``.

Each function takes the table :mod:`dipddpm.example1` builds for it (evaluation images only,
every method at the setting chosen on the tuning images) and an output stem. An empty table
or missing columns never raise: the figure says which data is missing, as in
:mod:`dipddpm.figures`.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from dipddpm.aggregate import METHOD_LABELS, METHOD_ORDER  # noqa: E402
from dipddpm.example1 import DIP_ALONE  # noqa: E402
from dipddpm.figures import no_data_figure, save_figure  # noqa: E402


def _missing(frame: pd.DataFrame | None, columns: list[str]) -> bool:
    if frame is None or frame.empty:
        return True
    return any(c not in frame.columns or frame[c].isna().all() for c in columns)


def _tasks(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["task"].astype(str).unique())


def _methods(frame: pd.DataFrame) -> list[str]:
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(frame["method"].astype(str).unique(), key=lambda m: (rank.get(m, 99), m))


def _panels(n: int):
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.5), squeeze=False)
    return fig, axes[0]


def pareto_figure(curves: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Mean PSNR (evaluation images) against calibrated seconds per image (log x), one panel
    per task and one line per method: the :func:`example1.cost_curves` table."""
    needed = ["task", "method", "seconds_per_image", "psnr_mean"]
    if _missing(curves, needed):
        return no_data_figure(stem, "PSNR vs calibrated seconds per image")
    curves = curves.assign(
        seconds_per_image=pd.to_numeric(curves["seconds_per_image"], errors="coerce"),
        psnr_mean=pd.to_numeric(curves["psnr_mean"], errors="coerce"),
    ).dropna(subset=["seconds_per_image", "psnr_mean"])
    if curves.empty:
        return no_data_figure(stem, "PSNR vs calibrated seconds per image")
    tasks = _tasks(curves)
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        in_task = curves[curves["task"].astype(str) == task]
        for method in _methods(in_task):
            line = in_task[in_task["method"].astype(str) == method].sort_values("seconds_per_image")
            ax.plot(
                line["seconds_per_image"],
                line["psnr_mean"],
                marker="o",
                markersize=3,
                label=METHOD_LABELS.get(method, method),
            )
        ax.set_xscale("log")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("calibrated seconds per image")
        ax.legend(fontsize=6)
    axes[0].set_ylabel("mean PSNR, evaluation images (dB)")
    return save_figure(fig, stem)


def t0_figure(table: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Mean PSNR (evaluation images) against the start step t0, one panel per task and one
    line per DIP-started method, with DIP alone's mean as a dashed horizontal reference: the
    :func:`example1.t0_curves` table."""
    if _missing(table, ["task", "method", "t0", "psnr_mean"]):
        return no_data_figure(stem, "PSNR vs t0")
    table = table.assign(psnr_mean=pd.to_numeric(table["psnr_mean"], errors="coerce"))
    tasks = _tasks(table)
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        in_task = table[table["task"].astype(str) == task]
        for method in _methods(in_task):
            rows = in_task[in_task["method"].astype(str) == method]
            label = METHOD_LABELS.get(method, method)
            if method == DIP_ALONE:
                ax.axhline(rows["psnr_mean"].mean(), color="k", ls="--", lw=1, label=label)
                continue
            rows = rows.assign(t0=pd.to_numeric(rows["t0"], errors="coerce")).dropna(subset=["t0"])
            rows = rows.sort_values("t0")
            ax.plot(rows["t0"], rows["psnr_mean"], marker="o", markersize=3, label=label)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("diffusion start step t0")
        ax.legend(fontsize=6)
    axes[0].set_ylabel("mean PSNR, evaluation images (dB)")
    return save_figure(fig, stem)
