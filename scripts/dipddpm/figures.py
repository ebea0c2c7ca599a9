"""Report figures (matplotlib, Agg backend), each written as ``<stem>.png`` and ``<stem>.pdf``.

Every function takes the frame (or arrays) it plots and an output path stem. An empty
frame or missing optional columns never raise: the function writes a figure that says
which data was missing, so the report's figure targets always exist.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dipddpm.aggregate import with_labels  # noqa: E402
from dipddpm.io import atomic_path  # noqa: E402

FORMATS = ("png", "pdf")


def save_figure(fig, stem: str | os.PathLike) -> list[Path]:
    """Save ``fig`` as PNG and PDF next to ``stem`` atomically, close it, return the paths."""
    stem = Path(stem)
    paths = []
    for ext in FORMATS:
        path = stem.with_name(f"{stem.name}.{ext}")
        with atomic_path(path, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def no_data_figure(stem: str | os.PathLike, what: str) -> list[Path]:
    """A placeholder figure that states plainly which data is missing."""
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"no data for {what}", ha="center", va="center", fontsize=12)
    return save_figure(fig, stem)


def _missing(frame: pd.DataFrame | None, columns: Sequence[str]) -> bool:
    if frame is None or frame.empty:
        return True
    return any(c not in frame.columns or frame[c].isna().all() for c in columns)


def _band(ax, x, mean, std, label: str) -> None:
    line = ax.plot(x, mean, label=label)[0]
    ax.fill_between(
        x, mean - std.fillna(0), mean + std.fillna(0), color=line.get_color(), alpha=0.2
    )


def _numeric(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Identity columns are canonical strings; plots need their numbers."""
    return frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c in columns})


def quality_vs_steps(frame: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """PSNR and SSIM of DDPM samples against reverse steps, one line per cell family (the
    label names everything but steps and seeds); DIP alone at each prior the lines use."""
    stage = frame["stage"] if "stage" in frame.columns else pd.Series(dtype=str)
    rows = frame[stage == "ddpm"] if len(stage) else frame.iloc[0:0]
    if _missing(rows, ["steps", "psnr", "method"]):
        return no_data_figure(stem, "PSNR/SSIM vs reverse steps")
    rows = _numeric(with_labels(rows), "steps")
    dip_alone = frame[stage == "dip"]
    priors = rows.loc[rows["start"] == "dip", ["dataset", "task", "arch", "iters"]]
    metrics = [m for m in ("psnr", "ssim") if not _missing(rows, [m])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for label, group in rows.groupby("label", sort=True):
            curve = group.groupby("steps")[metric].agg(["mean", "std"])
            _band(ax, curve.index.to_numpy(float), curve["mean"], curve["std"], label)
        # DIP alone has no reverse steps: a horizontal line per prior the chains start from.
        for prior in priors.drop_duplicates().to_dict("records"):
            same = dip_alone[(dip_alone[list(prior)] == pd.Series(prior)).all(axis=1)]
            if not _missing(same, [metric]):
                name = f"DIP alone ({prior['arch']}, {prior['iters']} it)"
                ax.axhline(same[metric].mean(), color="k", ls="--", lw=1, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("reverse steps")
        ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM")
    axes[0][0].legend(fontsize=5)
    return save_figure(fig, stem)


def dip_trajectories(trajectory: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Mean DIP PSNR (to the clean image) against iterations with a +-1 std band, one line
    per task and architecture."""
    if _missing(trajectory, ["iteration", "psnr_clean"]):
        return no_data_figure(stem, "PSNR vs DIP iterations")
    trajectory = trajectory.copy()
    for column in ("task", "arch"):
        if column not in trajectory.columns:
            trajectory[column] = "dip"
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (task, arch), group in trajectory.groupby(["task", "arch"], sort=True):
        curve = group.groupby("iteration")["psnr_clean"].agg(["mean", "std"])
        _band(ax, curve.index.to_numpy(float), curve["mean"], curve["std"], f"{task}, {arch}")
    ax.set_xlabel("DIP iteration")
    ax.set_ylabel("PSNR to clean (dB)")
    ax.legend(fontsize=7)
    return save_figure(fig, stem)


def dip_t0_heatmap(frame: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Mean PSNR of DIP+DDPM over the prior's DIP duration x start step t0, for one model
    family (the truncated model when there is one), its final checkpoint and most steps."""
    rows = frame[frame["method"] == "dip+ddpm"] if "method" in frame.columns else frame.iloc[0:0]
    if _missing(rows, ["iters", "t0", "psnr"]):
        return no_data_figure(stem, "PSNR over DIP duration x t0")
    rows = _numeric(rows, "iters", "t0", "steps", "ckpt", "train_steps")
    rows = rows[(rows["ckpt"] == rows["train_steps"]) & (rows["steps"] == rows["steps"].max())]
    modes = sorted(rows["mode"].unique(), key=lambda m: m != "truncated")
    rows = rows[rows["mode"] == modes[0]]
    rows = rows[rows["t_max"] == rows["t_max"].iloc[0]]
    grid = rows.pivot_table(index="iters", columns="t0", values="psnr", aggfunc="mean")
    fig, ax = plt.subplots(figsize=(1.2 * grid.shape[1] + 2.5, 0.6 * grid.shape[0] + 2))
    image = ax.imshow(grid.to_numpy(float), cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(grid.shape[1]), [f"{t:g}" for t in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{int(i)}" for i in grid.index])
    for (r, c), value in np.ndenumerate(grid.to_numpy(float)):
        if np.isfinite(value):
            ax.text(c, r, f"{value:.1f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xlabel("diffusion start step t0")
    ax.set_ylabel("prior DIP iterations")
    first = rows.iloc[0]
    ax.set_title(f"{first['mode']}-t{first['t_max']}, {first['steps']:g} steps", fontsize=8)
    fig.colorbar(image, ax=ax, label="PSNR (dB)")
    return save_figure(fig, stem)


def fid_vs_steps(fid_frame: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """FID against reverse steps per method; unavailable FID cells are stated, not drawn."""
    rows = fid_frame
    if not _missing(rows, ["available"]):
        rows = rows[rows["available"].astype(bool)]
    if _missing(rows, ["fid", "steps", "method"]):
        reason = ""
        if not _missing(fid_frame, ["reason"]):
            reason = f"\n({str(fid_frame['reason'].dropna().iloc[0])[:80]})"
        return no_data_figure(stem, f"FID vs steps{reason}")
    rows = _numeric(with_labels(rows), "steps")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, group in rows.groupby("label", sort=True):
        curve = group.groupby("steps")["fid"].mean()
        ax.plot(curve.index.to_numpy(float), curve.to_numpy(), marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("reverse steps")
    ax.set_ylabel("FID")
    ax.legend(fontsize=7)
    return save_figure(fig, stem)


def training_curves(curves: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Training loss and eval PSNR against steps, full vs truncated (one line per t_max)."""
    if _missing(curves, ["step", "loss"]):
        return no_data_figure(stem, "DDPM training curves")
    curves = curves.copy()
    for column in ("mode", "t_max"):
        if column not in curves.columns:
            curves[column] = "?"
    has_eval = not _missing(curves, ["eval_psnr"])
    fig, axes = plt.subplots(1, 2 if has_eval else 1, figsize=(10 if has_eval else 5, 3.5))
    axes = np.atleast_1d(axes)
    for (mode, t_max), group in curves.groupby(["mode", "t_max"], sort=True):
        label = f"{mode} (t_max={t_max})"
        loss = group.groupby("step")["loss"].mean()
        axes[0].plot(loss.index, loss.to_numpy(), label=label)
        if has_eval:
            psnr = group.dropna(subset=["eval_psnr"]).groupby("step")["eval_psnr"].mean()
            axes[1].plot(psnr.index, psnr.to_numpy(), marker="o", label=label)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=7)
    if has_eval:
        axes[1].set_xlabel("training step")
        axes[1].set_ylabel("eval PSNR (dB)")
    return save_figure(fig, stem)


def model_convergence(
    table: pd.DataFrame, model_keys: Sequence[str], stem: str | os.PathLike
) -> list[Path]:
    """Held-out x0 PSNR (mean over the evaluation steps) of each model against images seen
    and against training seconds: modes compared at equal data and at equal compute."""
    if _missing(table, ["images_seen", "train_seconds", "psnr_mean"]):
        return no_data_figure(stem, "DDPM training convergence")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for key, group in table.groupby(list(model_keys), sort=True):
        values = dict(zip(model_keys, key if isinstance(key, tuple) else (key,), strict=True))
        label = f"{values.get('mode', '?')} (t_max={values.get('t_max', '?')})"
        group = group.sort_values("step")
        for ax, x in zip(axes, ("images_seen", "train_seconds"), strict=True):
            ax.plot(group[x], group["psnr_mean"], marker="o", markersize=3, label=label)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("training images seen")
    axes[1].set_xlabel("training seconds (job's own clock, evaluation excluded)")
    axes[0].set_ylabel("held-out one-shot x0 PSNR (dB)")
    axes[0].legend(fontsize=7)
    return save_figure(fig, stem)


def qualitative_grid(
    panels: Mapping[str, np.ndarray | None],
    stem: str | os.PathLike,
    indices: Sequence[int] | None = None,
) -> list[Path]:
    """Images side by side: one column per panel (clean, observed, DIP, ...), one row per image.

    ``panels`` maps a column title to an (N, C, H, W) array in [0, 1]; panels that are
    None or empty are left out. ``indices`` picks the fixed set of images to show.
    """
    present = {k: np.asarray(v) for k, v in panels.items() if v is not None and np.size(v)}
    if not present:
        return no_data_figure(stem, "qualitative comparison")
    n = min(len(v) for v in present.values())
    indices = [i for i in (indices if indices is not None else range(min(n, 4))) if i < n]
    if not indices:
        return no_data_figure(stem, "qualitative comparison (no valid image index)")
    fig, axes = plt.subplots(
        len(indices), len(present), figsize=(1.6 * len(present), 1.6 * len(indices)), squeeze=False
    )
    for col, (title, images) in enumerate(present.items()):
        axes[0][col].set_title(title, fontsize=8)
        for row, index in enumerate(indices):
            image = np.clip(images[index], 0, 1)
            shown = image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))
            axes[row][col].imshow(shown, cmap="gray" if image.shape[0] == 1 else None)
            axes[row][col].axis("off")
    return save_figure(fig, stem)


def earlystop_curves(
    trajectory: pd.DataFrame,
    earlystop: pd.DataFrame,
    stem: str | os.PathLike,
    max_images: int = 4,
) -> list[Path]:
    """Per-image DIP PSNR curves with each rule's detected stop and the oracle stop marked."""
    if _missing(trajectory, ["iteration", "psnr_clean", "image"]):
        return no_data_figure(stem, "early-stopping curves")
    images = list(pd.unique(trajectory["image"]))[:max_images]
    fig, axes = plt.subplots(1, len(images), figsize=(4.5 * len(images), 3.2), squeeze=False)
    rules = earlystop if not _missing(earlystop, ["image", "rule", "stop_iter"]) else None
    for ax, image in zip(axes[0], images, strict=True):
        curve = trajectory[trajectory["image"] == image].groupby("iteration")["psnr_clean"].mean()
        ax.plot(curve.index, curve.to_numpy(), color="k", lw=1, label="PSNR to clean")
        if "wmv" in trajectory.columns and trajectory["wmv"].notna().any():
            signal = trajectory[trajectory["image"] == image].groupby("iteration")["wmv"].mean()
            twin = ax.twinx()
            twin.plot(signal.index, signal.to_numpy(), color="0.6", lw=0.8, ls=":")
            twin.set_yscale("log")
            twin.set_ylabel("windowed variance", fontsize=7)
        if rules is not None:
            here = rules[rules["image"].astype(str) == str(image)]
            for color, (rule, row) in zip(plt.cm.tab10.colors, here.groupby("rule"), strict=False):
                ax.axvline(row["stop_iter"].iloc[0], color=color, ls="--", label=f"stop: {rule}")
            if "oracle_iter" in here.columns and here["oracle_iter"].notna().any():
                ax.axvline(here["oracle_iter"].iloc[0], color="r", lw=2, alpha=0.5, label="oracle")
        ax.set_title(f"image {image}", fontsize=9)
        ax.set_xlabel("DIP iteration")
    axes[0][0].set_ylabel("PSNR (dB)")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, stem)


def _one_box_per_fit(earlystop: pd.DataFrame) -> pd.DataFrame:
    """Rows labelled by rule and ablation setting (schedule, stages, sigma_max, stage
    patience) where the frame holds several: each cell fits its own plain DIP, whose length
    follows the progressive run's, so even a plain-fit rule such as ES-WMV can stop
    elsewhere."""
    rows = earlystop.copy()
    settings = ("es_schedule", "stages", "sigma_max", "stage_patience")
    ablation = [c for c in settings if c in rows.columns]
    setting = rows[ablation].astype(str).agg(" ".join, axis=1) if ablation else None
    several = setting is not None and setting.nunique() > 1
    rows["box"] = rows["rule"].astype(str) + ("\n" + setting if several else "")
    return rows


def gap_distribution(earlystop: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """PSNR below the plain-DIP oracle on the same image, observation and seed (dB), one
    box per rule: the bound every rule is held to (a run's own peak would flatter the
    progressive rule, whose run peaks lower)."""
    if _missing(earlystop, ["rule", "gap_plain_db"]):
        return no_data_figure(stem, "early-stopping gap distribution")
    earlystop = earlystop[~earlystop["rule"].astype(str).str.contains("oracle")]
    groups = [
        (rule, g["gap_plain_db"].dropna().to_numpy())
        for rule, g in _one_box_per_fit(earlystop).groupby("box", sort=False)
    ]
    groups = [(rule, gaps) for rule, gaps in groups if len(gaps)]
    if not groups:
        return no_data_figure(stem, "early-stopping gap distribution")
    fig, ax = plt.subplots(figsize=(1.5 * len(groups) + 2, 3.5))
    ax.boxplot([gaps for _, gaps in groups], showmeans=True)
    ax.set_xticks(range(1, len(groups) + 1), [rule for rule, _ in groups], rotation=20)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("PSNR below plain-DIP oracle (dB)")
    return save_figure(fig, stem)
