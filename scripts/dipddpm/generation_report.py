"""The generation part's answer: quality and diversity against NFE and seconds.

:func:`curves_table` joins every scored generation setting (one row of
:func:`dipddpm.stages.generation_metrics.score_generation` each: samples from noise and
from forward-diffused DIP priors) with what its cells measured: the chain's NFE and
seconds per image (each cell's ``params.json``) and, for a DIP start, the prior's fit
seconds per image at its snapshot (the DIP cell's ``metrics.csv``).
:func:`equal_nfe_comparisons` pairs each DIP-started setting with the setting from noise
of the same training run at the same NFE. :func:`curves_figure` draws the curves and
:func:`generation_section` fills ``templates/generation.md``.

Every claim compares generation settings with generation settings: none is scored
against a clean image.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import grid, templates  # noqa: E402
from .example1_report import interval  # noqa: E402
from .figures import no_data_figure, save_figure  # noqa: E402
from .io import atomic_path  # noqa: E402

NOISE, DIP = "noise", "dip"
# A setting's identity: every identity column but the pooled sample seed.
SETTING_COLUMNS = [c for c in grid.IDENTITY_COLUMNS if c != grid.POOLED_AXIS]
MODEL_COLUMNS = ["train_dataset", "preset", "schedule", "train_steps", "train_seed", "ckpt"]
Z95 = 1.959963984540054
CURVE_COLUMNS = [
    "arm",
    "method",
    "mode",
    "t_max",
    "obs_seed",
    "prior_iters",
    "t0",
    "steps",
    "nfe",
    "n_seeds",
    "n_samples",
    "kid_cifarnet",
    "kid_cifarnet_ci_low",
    "kid_cifarnet_ci_high",
    "kid_cifarnet_std",
    "diversity_all_feature",
    "diversity_all_feature_ci_low",
    "diversity_all_feature_ci_high",
    "diversity_within_prior_feature",
    "coverage_entropy_normalised",
    "coverage_classes_present",
    "dist_source_pixel_rms",
    "dist_prior_pixel_rms",
    "memo_pixel_baseline_median",
    "memo_pixel_median_ratio",
    "memo_pixel_share_below_baseline_p5",
    "memo_feature_median_ratio",
    "sample_seconds_per_image",
    "dip_seconds_per_image",
    "seconds_per_image_with_prior",
    "dip_seconds_per_sample",
]


# ----------------------------------------------------------------------------- table


def _as_identity(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in SETTING_COLUMNS:
        if column not in frame.columns:
            raise ValueError(f"generation rows lack the identity column {column!r}")
        frame[column] = frame[column].map(grid.canonical)
    return frame


def cell_timings(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per setting: NFE, the mean wall seconds of its cells and how many cells, from the
    cells' ``params.json`` records (DIP-started: ``chain_nfe``/``wall_seconds``; from
    noise: ``nfe``/``seconds``)."""
    rows = []
    for record in records:
        identity = record["identity"]
        seconds = record.get("wall_seconds", record.get("seconds"))
        nfe = record.get("chain_nfe", record.get("nfe"))
        if seconds is None or nfe is None:
            raise ValueError(f"cell record {identity} has no seconds or NFE")
        rows.append({**{c: identity[c] for c in SETTING_COLUMNS}, "nfe": nfe, "s": seconds})
    if not rows:
        return pd.DataFrame(columns=[*SETTING_COLUMNS, "nfe", "cell_seconds", "n_cells"])
    frame = _as_identity(pd.DataFrame(rows))
    grouped = frame.groupby(SETTING_COLUMNS, sort=False)
    out = grouped.agg(nfe=("nfe", "max"), cell_seconds=("s", "mean"), n_cells=("s", "size"))
    if (grouped["nfe"].nunique() > 1).any():
        raise ValueError("the cells of one generation setting report different NFE")
    return out.reset_index()


PRIOR_KEYS = ["purpose", "dataset", "task", "obs_seed", "arch", "dip_seed", "iters"]


def prior_timings(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per DIP prior and snapshot: the fit's seconds up to that snapshot divided by the
    images fitted together (the DIP cells' ``metrics.csv``: one row per image and
    snapshot, ``seconds`` the fit's elapsed time at it)."""
    if metrics is None or metrics.empty:
        return pd.DataFrame(columns=[*PRIOR_KEYS, "dip_seconds_per_image"])
    frame = metrics.copy()
    for column in PRIOR_KEYS:
        frame[column] = frame[column].map(grid.canonical)
    grouped = frame.groupby(PRIOR_KEYS, sort=False)
    out = grouped.agg(seconds=("seconds", "max"), images=("image", "nunique")).reset_index()
    out["dip_seconds_per_image"] = out["seconds"] / out["images"]
    return out[[*PRIOR_KEYS, "dip_seconds_per_image"]]


def curves_table(
    scores: pd.DataFrame, records: Sequence[Mapping[str, Any]], prior_metrics: pd.DataFrame
) -> pd.DataFrame:
    """One row per scored setting (:data:`CURVE_COLUMNS`), from noise first, then by
    model, t0, prior duration and NFE. Seconds per image: the sampling cells' measured
    wall seconds divided by the images each sampled; DIP-started rows add the prior's
    fit seconds per image (``seconds_per_image_with_prior``) and that share spread over
    the seeds that reuse each prior (``dip_seconds_per_sample``)."""
    if scores is None or scores.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    table = _as_identity(scores)
    timings = cell_timings(records)
    table = table.merge(timings, on=SETTING_COLUMNS, how="left", validate="one_to_one")
    missing = table[table["nfe"].isna()]
    if not missing.empty:
        names = missing[["method", "t0", "steps"]].to_dict("records")
        raise ValueError(f"no cell records (params.json) for the settings {names}")
    table["arm"] = np.where(table["start"] == "noise", NOISE, DIP)
    table["prior_iters"] = table["iters"]
    table["n_samples"] = table["n_seeds"] * table["n_per_seed"]
    table["sample_seconds_per_image"] = table["cell_seconds"] / table["n_per_seed"]
    priors = prior_timings(prior_metrics)
    table = table.merge(priors, on=PRIOR_KEYS, how="left")
    dip_rows = table["arm"] == DIP
    if table.loc[dip_rows, "dip_seconds_per_image"].isna().any():
        raise ValueError("a DIP-started setting has no prior timing (its DIP metrics.csv)")
    table["seconds_per_image_with_prior"] = table["sample_seconds_per_image"] + table[
        "dip_seconds_per_image"
    ].where(dip_rows)
    table["dip_seconds_per_sample"] = table["dip_seconds_per_image"] / table["n_seeds"]
    for column in CURVE_COLUMNS:
        if column not in table.columns:
            table[column] = math.nan
    order = table.assign(
        _arm=(table["arm"] == DIP).astype(int),
        _t0=pd.to_numeric(table["t0"], errors="coerce"),
        _it=pd.to_numeric(table["prior_iters"], errors="coerce"),
    ).sort_values(["_arm", "mode", "t_max", "obs_seed", "_t0", "_it", "nfe"], kind="stable")
    return order[CURVE_COLUMNS].reset_index(drop=True)


def curve_label(row: Mapping[str, Any], with_obs: bool = False) -> str:
    """A curve's name: from noise, or the model, t0 and prior duration of a DIP start
    (and its observation seed, ``with_obs``, where the priors come from several)."""
    if row["arm"] == NOISE:
        return f"noise ({row['mode']})"
    obs = f", obs {row['obs_seed']}" if with_obs else ""
    return f"DIP {row['prior_iters']} it, t0={row['t0']} ({row['mode']}{obs})"


# ---------------------------------------------------------------------- comparisons


def equal_nfe_comparisons(curves: pd.DataFrame) -> pd.DataFrame:
    """Each DIP-started setting against the setting from noise at the same NFE (the full
    model of the same training run): KID and mean pairwise feature distance, DIP minus
    noise. The KID difference's interval is the normal one from the two half-sample
    standard deviations, treating the two estimates as independent (conservative: both
    use the same reference subsets, so they are positively correlated)."""
    columns = [
        "mode",
        "obs_seed",
        "t0",
        "prior_iters",
        "nfe",
        "kid_dip",
        "kid_noise",
        "kid_diff",
        "kid_diff_ci_low",
        "kid_diff_ci_high",
        "kid_verdict",
        "diversity_dip",
        "diversity_noise",
        "diversity_diff",
        "diversity_verdict",
    ]
    if curves is None or curves.empty:
        return pd.DataFrame(columns=columns)
    noise = curves[curves["arm"] == NOISE]
    rows = []
    for _, dip in curves[curves["arm"] == DIP].iterrows():
        match = noise[noise["nfe"] == dip["nfe"]]
        if match.empty:
            continue
        ref = match.iloc[0]
        diff = dip["kid_cifarnet"] - ref["kid_cifarnet"]
        half = Z95 * math.hypot(dip["kid_cifarnet_std"], ref["kid_cifarnet_std"])
        rows.append(
            {
                "mode": dip["mode"],
                "obs_seed": dip["obs_seed"],
                "t0": dip["t0"],
                "prior_iters": dip["prior_iters"],
                "nfe": int(dip["nfe"]),
                "kid_dip": dip["kid_cifarnet"],
                "kid_noise": ref["kid_cifarnet"],
                "kid_diff": diff,
                "kid_diff_ci_low": diff - half,
                "kid_diff_ci_high": diff + half,
                "kid_verdict": _verdict(diff - half, diff + half, "lower", "higher"),
                "diversity_dip": dip["diversity_all_feature"],
                "diversity_noise": ref["diversity_all_feature"],
                "diversity_diff": dip["diversity_all_feature"] - ref["diversity_all_feature"],
                "diversity_verdict": _interval_verdict(
                    (dip["diversity_all_feature_ci_low"], dip["diversity_all_feature_ci_high"]),
                    (ref["diversity_all_feature_ci_low"], ref["diversity_all_feature_ci_high"]),
                ),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _verdict(low: float, high: float, below: str, above: str) -> str:
    if high < 0:
        return below
    if low > 0:
        return above
    return "not resolved"


def _interval_verdict(dip: tuple[float, float], noise: tuple[float, float]) -> str:
    """Whether the two settings' diversity intervals are disjoint, and which is higher."""
    if any(math.isnan(v) for v in (*dip, *noise)):
        return "no interval"
    if dip[1] < noise[0]:
        return "lower"
    if dip[0] > noise[1]:
        return "higher"
    return "intervals overlap"


# --------------------------------------------------------------------------- figure


def curves_figure(curves: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Four panels: KID (with its interval) and mean pairwise feature distance against
    NFE (top) and against seconds per sample (bottom). In the bottom panels DIP-started
    curves appear twice: sampling seconds only (solid) and with the prior's DIP fit
    seconds per image added (dotted, open markers)."""
    if curves is None or curves.empty:
        return no_data_figure(stem, "the generation curves")
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    with_obs = curves.loc[curves["arm"] == DIP, "obs_seed"].nunique() > 1
    names = [curve_label(r, with_obs) for _, r in curves.iterrows()]
    labels = list(dict.fromkeys(names))
    colours = dict(zip(labels, plt.cm.tab20.colors * 3, strict=False))
    for label in labels:
        rows = curves[[name == label for name in names]]
        rows = rows.sort_values("nfe")
        colour, noise = colours[label], rows["arm"].iloc[0] == NOISE
        style = {"color": colour, "marker": "s" if noise else "o", "lw": 2.2 if noise else 1.2}
        for ax, x in ((axes[0][0], "nfe"), (axes[1][0], "sample_seconds_per_image")):
            _kid_curve(ax, rows, x, label, style)
        axes[0][1].plot(rows["nfe"], rows["diversity_all_feature"], label=label, **style)
        axes[1][1].plot(rows["sample_seconds_per_image"], rows["diversity_all_feature"], **style)
        if not noise:
            dotted = {**style, "ls": ":", "mfc": "none"}
            x = rows["seconds_per_image_with_prior"]
            axes[1][0].plot(x, rows["kid_cifarnet"], **dotted)
            axes[1][1].plot(x, rows["diversity_all_feature"], **dotted)
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.set_xlabel("NFE (network evaluations per sample)")
    for ax in axes[1]:
        ax.set_xlabel("seconds per sample (solid: sampling; dotted: + DIP fit per image)")
    for ax in axes[:, 0]:
        ax.set_ylabel("KID on CifarNet features (95 % interval)")
    for ax in axes[:, 1]:
        ax.set_ylabel("mean pairwise feature distance")
    axes[0][1].legend(fontsize=7, loc="best")
    fig.suptitle("Generation from noise and from forward-diffused DIP priors")
    fig.tight_layout()
    return save_figure(fig, stem)


def _kid_curve(ax, rows: pd.DataFrame, x: str, label: str, style: dict) -> None:
    low = rows["kid_cifarnet"] - rows["kid_cifarnet_ci_low"]
    high = rows["kid_cifarnet_ci_high"] - rows["kid_cifarnet"]
    ax.errorbar(rows[x], rows["kid_cifarnet"], yerr=[low, high], label=label, capsize=2, **style)


# ---------------------------------------------------------------------- sample grid

GRID_ROWS = 4
# Pixels per image pixel: the largest whose PNG stays under GRID_MAX_BYTES (nearest
# neighbour, so the 32x32 pixels stay visible).
GRID_SCALES = (3, 2)
GRID_MAX_BYTES = 1_500_000
GRID_DPI = 100
# Figure pixels: gaps inside and between column groups, the margins for the row labels,
# the title and column titles, the noise block's heading and the right and bottom edge.
_PAD, _GAP, _LEFT, _HEAD, _BLOCK, _EDGE = 3, 14, 112, 62, 34, 6
MODEL_KEY = [*MODEL_COLUMNS, "mode", "t_max"]


def sample_grid_cells(cells: pd.DataFrame) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """The cells the sample grid shows: groups of one setting's cells in sample-seed order.

    DIP-started: per t0 (ascending) one setting of one model -- the model that also
    samples from noise (else the first) -- at its first observation seed, longest prior
    and most steps, so each t0 shows the best-fitted prior through the finest chain. From
    noise: per NFE (ascending) the setting of that model (or of the first model from
    noise). ``cells``: one row per generation cell with the identity columns, ``nfe`` and
    its ``samples`` file.
    """
    if cells is None or cells.empty:
        return [], []
    frame = _as_identity(cells)
    for column, source in (("_t0", "t0"), ("_it", "iters"), ("_obs", "obs_seed")):
        frame[column] = pd.to_numeric(frame[source], errors="coerce")
    frame["_nfe"] = pd.to_numeric(frame["nfe"], errors="coerce")
    frame["_seed"] = pd.to_numeric(frame["sample_seed"], errors="coerce")
    frame["_model"] = list(frame[MODEL_KEY].itertuples(index=False, name=None))
    noise, dip = frame[frame["start"] == "noise"], frame[frame["start"] != "noise"]
    noise_models = sorted(set(noise["_model"]))
    dip_models = sorted(set(dip["_model"]))
    model = ([m for m in dip_models if m in noise_models] or dip_models or [None])[0]
    dip = dip[dip["_model"] == model]
    dip = dip[dip["_obs"] == dip["_obs"].min()]
    order = ["_it", "_nfe", *SETTING_COLUMNS]
    ascending = [False, False] + [True] * len(SETTING_COLUMNS)
    groups = [
        _setting_cells(rows, rows.sort_values(order, ascending=ascending).iloc[0])
        for _, rows in dip.groupby("_t0", sort=True)
    ]
    noise_model = model if model in noise_models else (noise_models or [None])[0]
    noise = noise[noise["_model"] == noise_model]
    from_noise = [
        _setting_cells(rows, rows.sort_values(SETTING_COLUMNS).iloc[0])
        for _, rows in noise.groupby("_nfe", sort=True)
    ]
    return groups, from_noise


def _setting_cells(rows: pd.DataFrame, chosen: pd.Series) -> pd.DataFrame:
    same = (rows[SETTING_COLUMNS] == chosen[SETTING_COLUMNS]).all(axis=1)
    return rows[same].sort_values("_seed", kind="stable").reset_index(drop=True)


def sample_grid_note(
    dip: Sequence[pd.DataFrame], noise: Sequence[pd.DataFrame], shown: int, sources: int
) -> str:
    """What the sample grid holds, for its caption: the rows, the chosen setting per t0
    and the samples from noise."""
    if not dip:
        return "No DIP-started samples to show."
    first = dip[0].iloc[0]
    t0s = ", ".join(str(group.iloc[0]["t0"]) for group in dip)
    steps = sorted({int(group.iloc[0]["_nfe"]) for group in dip})
    text = (
        f"Top: {shown} of the {sources} source images (spread evenly over the set, which "
        f"is sorted by class), one per row: the source, its {first['iters']}-iteration "
        f"DIP prior, then the samples of {len(dip[0])} sample seeds started from that "
        f"prior at each t0 ({t0s}; {'/'.join(map(str, steps))} NFE, the {first['mode']} "
        f"model, observation seed {first['obs_seed']})."
    )
    if noise:
        nfes = ", ".join(str(int(group.iloc[0]["_nfe"])) for group in noise)
        text += f" Bottom: samples from noise of the same model at each NFE ({nfes})."
    return text


@dataclass(frozen=True)
class GridGroup:
    """A column group of the grid's top block: its title, one title per column and the
    images, (columns, rows, C, H, W) in [0, 1]."""

    title: str
    columns: tuple[str, ...]
    images: np.ndarray


def samples_figure(
    groups: Sequence[GridGroup],
    noise: Sequence[tuple[str, np.ndarray]],
    row_labels: Sequence[str],
    path: str | os.PathLike,
    title: str = "Generation from DIP priors (top) and from noise (bottom)",
) -> Path:
    """The sample grid as one PNG: the top block's column groups side by side, one row per
    source image (``row_labels``); below, one row per setting from noise (its label and
    (n, C, H, W) samples, the first as many as the top block has columns). Pixels are
    repeated, not interpolated; the largest of :data:`GRID_SCALES` whose PNG fits in
    :data:`GRID_MAX_BYTES` is written (the smallest when none does). The same arrays give
    the same bytes."""
    path = Path(path)
    if not groups and not noise:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no data for the generation samples", ha="center", va="center")
        return _write_png(fig, path)
    png = b""
    for scale in GRID_SCALES:
        png = _grid_png(groups, noise, row_labels, title, scale)
        if len(png) <= GRID_MAX_BYTES:
            break
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(png)
    return path


def _grid_png(groups, noise, row_labels, title, scale: int) -> bytes:
    first = groups[0].images[0, 0] if groups else noise[0][1][0]
    size = first.shape[-1] * scale
    # Without a top block, the rows from noise take the width of eight columns.
    layout = list(groups) or [GridGroup("", ("",) * min(8, len(noise[0][1])), first[None, None])]
    xs, spans, x = [], [], _LEFT
    for index, group in enumerate(layout):
        x += _GAP if index else 0
        start = x
        for column in range(len(group.columns)):
            x += _PAD if column else 0
            xs.append(x)
            x += size
        spans.append((start, x))
    rows = min([len(row_labels), *(g.images.shape[1] for g in groups)]) if groups else 0
    ys = [_HEAD + r * (size + _PAD) for r in range(rows)]
    bottom = ys[-1] + size if ys else _HEAD - _BLOCK
    noise_top = bottom + _BLOCK
    noise_ys = [noise_top + r * (size + _PAD) for r in range(len(noise))]
    width = x + _EDGE
    height = (noise_ys[-1] + size if noise_ys else bottom) + _EDGE
    canvas = np.ones((height, width, 3), dtype=np.float32)

    def place(image: np.ndarray, left: int, top: int) -> None:
        pixels = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        if pixels.shape[0] == 1:
            pixels = np.repeat(pixels, 3, axis=0)
        pixels = np.repeat(np.repeat(pixels, scale, axis=1), scale, axis=2)
        canvas[top : top + size, left : left + size] = np.transpose(pixels, (1, 2, 0))

    columns = [(g, c) for g in groups for c in range(len(g.columns))]
    for (group, column), left in zip(columns, xs, strict=False):
        for row, top in enumerate(ys):
            place(group.images[column, row], left, top)
    for (_, images), top in zip(noise, noise_ys, strict=True):
        for image, left in zip(images, xs, strict=False):
            place(image, left, top)
    fig = plt.figure(figsize=(width / GRID_DPI, height / GRID_DPI), dpi=GRID_DPI)
    fig.figimage(np.rint(canvas * 255).astype(np.uint8), xo=0, yo=0, origin="upper")

    def text(left: float, top: float, words: str, **style) -> None:
        fig.text(left / width, 1 - top / height, words, **style)

    text(_EDGE, _EDGE, title, ha="left", va="top", fontsize=11, fontweight="bold")
    for group, (start, end) in zip(groups, spans, strict=False):
        text((start + end) / 2, 32, group.title, ha="center", va="center", fontsize=9)
    for (group, column), left in zip(columns, xs, strict=False):
        label = group.columns[column]
        text(left + size / 2, 49, label, ha="center", va="center", fontsize=8)
    for label, top in zip(row_labels, ys, strict=False):
        text(_LEFT - 8, top + size / 2, label, ha="right", va="center", fontsize=8)
    if noise:
        count = max(len(images[: len(xs)]) for _, images in noise)
        heading = f"From noise: the first {count} samples at each NFE (not tied to the columns)"
        text(_EDGE, noise_top - _BLOCK / 2, heading, ha="left", va="center", fontsize=10)
    for (label, _), top in zip(noise, noise_ys, strict=True):
        text(_LEFT - 8, top + size / 2, label, ha="right", va="center", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=GRID_DPI)
    plt.close(fig)
    return buffer.getvalue()


def _write_png(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=GRID_DPI)
    plt.close(fig)
    return path


# -------------------------------------------------------------------------- section


def _number(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.{digits}f}"


def _kid(row: Mapping[str, Any]) -> str:
    return (
        f"{_number(row['kid_cifarnet'])} "
        f"[{_number(row['kid_cifarnet_ci_low'])}, {_number(row['kid_cifarnet_ci_high'])}]"
    )


def _diversity(row: Mapping[str, Any]) -> str:
    return (
        f"{_number(row['diversity_all_feature'], 2)} "
        f"[{_number(row['diversity_all_feature_ci_low'], 2)}, "
        f"{_number(row['diversity_all_feature_ci_high'], 2)}]"
    )


def markdown_table(frame: pd.DataFrame, columns: Mapping[str, str], digits: int = 4) -> str:
    """A Markdown table of ``frame``'s ``columns`` (name -> header)."""
    if frame is None or frame.empty:
        return "(no rows)"
    lines = [
        "| " + " | ".join(columns.values()) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for _, row in frame.iterrows():
        cells = []
        for name in columns:
            value = row[name]
            if isinstance(value, float | np.floating):
                cells.append(_number(value, digits))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def answer(curves: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    """The ``**Answer**`` paragraph: DIP-seeded vs noise at equal NFE (KID and diversity,
    with intervals), copying (distance to the source vs the held-out baseline) and class
    coverage, every number read from the tables."""
    dip = curves[curves["arm"] == DIP]
    noise = curves[curves["arm"] == NOISE]
    parts = ["**Answer**:"]
    if comparisons.empty:
        parts.append(
            "no setting from noise shares an NFE with a DIP-started setting, so the two "
            "arms are not compared at equal NFE here"
            + (" (this run has no samples from noise)." if noise.empty else ".")
        )
    else:
        parts.append(_equal_nfe_text(curves, comparisons))
    parts.append(_copy_text(dip))
    parts.append(_coverage_text(dip, noise))
    return " ".join(parts)


def _equal_nfe_text(curves: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    counts = comparisons["kid_verdict"].value_counts()
    total = len(comparisons)
    nfe = int(comparisons["nfe"].max())
    noise = curves[(curves["arm"] == NOISE) & (curves["nfe"] == nfe)].iloc[0]
    at = comparisons[comparisons["nfe"] == nfe]
    dip = curves[(curves["arm"] == DIP) & (curves["nfe"] == nfe)]
    phrases = []
    for _, row in dip.iterrows():
        comp = at[
            (at["t0"] == row["t0"])
            & (at["prior_iters"] == row["prior_iters"])
            & (at["mode"] == row["mode"])
            & (at["obs_seed"] == row["obs_seed"])
        ].iloc[0]
        phrases.append(
            f"t0 = {row['t0']}, {row['prior_iters']}-iteration prior ({row['mode']}): KID "
            f"{_kid(row)}, difference {comp['kid_diff']:+.4f} "
            f"{interval(comp['kid_diff_ci_low'], comp['kid_diff_ci_high'], 4)} "
            f"({comp['kid_verdict']}), diversity {_diversity(row)}"
        )
    div = comparisons["diversity_verdict"].value_counts()
    kid = (
        f"At equal NFE, DIP-seeded generation has a lower KID than generation from noise in "
        f"{counts.get('lower', 0)} of {total} setting pairs, a higher one in "
        f"{counts.get('higher', 0)} and neither in {counts.get('not resolved', 0)} "
        "(the 95 % interval of the difference holds 0)"
    )
    diversity = (
        f"its mean pairwise feature distance (diversity) is lower in {div.get('lower', 0)}, "
        f"higher in {div.get('higher', 0)} and within overlapping intervals in "
        f"{div.get('intervals overlap', 0)}"
    )
    at_nfe = f"At {nfe} NFE, from noise: KID {_kid(noise)}, diversity {_diversity(noise)}"
    return f"{kid}; {diversity}. {at_nfe}; " + "; ".join(phrases) + "."


def _copy_text(dip: pd.DataFrame) -> str:
    if dip.empty or dip["dist_source_pixel_rms"].isna().all():
        return "No DIP-started setting has a source to compare with."
    baseline = float(dip["memo_pixel_baseline_median"].median())
    closest = dip.loc[dip["dist_source_pixel_rms"].idxmin()]
    farthest = dip.loc[dip["dist_source_pixel_rms"].idxmax()]
    below = dip["dist_source_pixel_rms"] < baseline
    t0s = ", ".join(sorted({str(t) for t in dip.loc[below, "t0"]}, key=int))
    verdict = (
        "closer to their own source than a held-out real image is to its nearest training "
        "image in every DIP-started setting: they are variations of their sources"
        if below.all()
        else "farther from their source than that baseline in every DIP-started setting"
        if not below.any()
        else f"closer to their source than that baseline in {int(below.sum())} of "
        f"{len(dip)} DIP-started settings (t0 = {t0s})"
    )
    return (
        f"Copying: the mean pixel RMS distance of a sample to its own source image ranges "
        f"from {closest['dist_source_pixel_rms']:.4f} (t0 = {closest['t0']}, "
        f"{closest['prior_iters']} iterations, {closest['nfe']:.0f} NFE) to "
        f"{farthest['dist_source_pixel_rms']:.4f} (t0 = {farthest['t0']}), against a "
        f"held-out baseline of {baseline:.4f} (median distance of the reference images to "
        f"their nearest DDPM training image), so samples are {verdict}; the share of "
        f"samples nearer to a training image than the baseline's 5th percentile is "
        f"{dip['memo_pixel_share_below_baseline_p5'].min():.3f} to "
        f"{dip['memo_pixel_share_below_baseline_p5'].max():.3f} (0.05 when nothing is "
        f"copied)."
    )


def _coverage_text(dip: pd.DataFrame, noise: pd.DataFrame) -> str:
    def span(frame: pd.DataFrame) -> str:
        values = frame["coverage_entropy_normalised"]
        classes = frame["coverage_classes_present"]
        return (
            f"{values.min():.3f} to {values.max():.3f} "
            f"({int(classes.min())} to {int(classes.max())} of 10 classes predicted)"
        )

    text = "Class coverage (normalised entropy of the predicted classes, 1 = uniform): "
    text += f"DIP-started {span(dip)}"
    if not noise.empty:
        text += f", from noise {span(noise)}"
    return text + "."


def abstract_sentence(curves: pd.DataFrame) -> str | None:
    """The study abstract's one sentence on generation, read from the curves table as the
    section's answer is: at the largest NFE both arms share, KID (95 % interval) from
    noise and from the longest DIP prior at each t0 with the verdict of each difference,
    the verdicts over every equal-NFE pair, and the copying verdict (distance to the
    source against the held-out baseline, share of samples nearer a training image than
    held-out images come). None without DIP-started settings."""
    if curves is None or curves.empty or not (curves["arm"] == DIP).any():
        return None
    dip = curves[curves["arm"] == DIP]
    comparisons = equal_nfe_comparisons(curves)
    head = (
        "**Generation** (new images from forward-diffused DIP priors vs from noise, "
        f"{_samples_text(curves)} samples per setting; KID on classifier features, 95 % "
        "intervals): "
    )
    if comparisons.empty:
        kid = "no setting from noise shares an NFE with a DIP-started one"
    else:
        kid = _abstract_kid(curves, comparisons)
    return f"{head}{kid}; {_abstract_copy(dip)}."


def _abstract_kid(curves: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    nfe = int(comparisons["nfe"].max())
    at = comparisons[comparisons["nfe"] == nfe]
    iters = pd.to_numeric(at["prior_iters"], errors="coerce")
    obs = pd.to_numeric(at["obs_seed"], errors="coerce")
    at = at[(iters == iters.max()) & (obs == obs.min())]
    at = at.assign(_t0=pd.to_numeric(at["t0"], errors="coerce")).sort_values(["_t0", "mode"])
    dip = curves[(curves["arm"] == DIP) & (curves["nfe"] == nfe)]
    noise = curves[(curves["arm"] == NOISE) & (curves["nfe"] == nfe)].iloc[0]
    with_mode = at["mode"].nunique() > 1
    words = {"lower": "lower than from noise", "higher": "higher than from noise"}
    phrases = []
    for _, comp in at.iterrows():
        row = dip[
            (dip["t0"] == comp["t0"])
            & (dip["prior_iters"] == comp["prior_iters"])
            & (dip["mode"] == comp["mode"])
            & (dip["obs_seed"] == comp["obs_seed"])
        ].iloc[0]
        mode = f", {comp['mode']} model" if with_mode else ""
        verdict = words.get(comp["kid_verdict"], "difference not resolved")
        phrases.append(f"{_kid(row)} at t0 = {comp['t0']}{mode} ({verdict})")
    counts = comparisons["kid_verdict"].value_counts()
    longest = int(float(at["prior_iters"].iloc[0]))
    return (
        f"at {nfe} NFE, KID is {_kid(noise)} from noise and, from the {longest}-iteration "
        f"DIP priors, {'; '.join(phrases)}; over all {len(comparisons)} equal-NFE setting "
        f"pairs the DIP start has the lower KID in {counts.get('lower', 0)}, the higher in "
        f"{counts.get('higher', 0)} and neither in {counts.get('not resolved', 0)}"
    )


def _abstract_copy(dip: pd.DataFrame) -> str:
    distance = dip["dist_source_pixel_rms"]
    baseline = float(dip["memo_pixel_baseline_median"].median())
    if distance.isna().all() or math.isnan(baseline):
        return "no distance to the source images was measured"
    below = distance < baseline
    span = f"pixel RMS {distance.min():.4f} to {distance.max():.4f}"
    if below.all():
        copy = (
            f"samples stay nearer their own source ({span}) than a held-out real image "
            f"is to its nearest training image ({baseline:.4f}) in every DIP-started "
            "setting: variations of their sources"
        )
    elif not below.any():
        copy = (
            f"samples are farther from their own source ({span}) than the held-out "
            f"baseline ({baseline:.4f}) in every DIP-started setting"
        )
    else:
        t0s = ", ".join(sorted({str(t) for t in dip.loc[below, "t0"]}, key=float))
        copy = (
            f"samples stay nearer their own source than the held-out baseline "
            f"({baseline:.4f}) in {int(below.sum())} of {len(dip)} DIP-started settings "
            f"(t0 = {t0s}; {span})"
        )
    share = dip["memo_pixel_share_below_baseline_p5"]
    if share.isna().all():
        return copy
    return (
        f"{copy}, and {share.min():.3f} to {share.max():.3f} of their samples lie nearer a "
        "training image than 95 % of held-out images do (0.05 when nothing is copied)"
    )


def generation_section(
    curves: pd.DataFrame,
    comparisons: pd.DataFrame,
    classifier: Mapping[str, Any],
    settings: Mapping[str, Any],
    figure: str = "generation_curves.png",
    samples_figure: str = "generation_samples.png",
    samples_note: str | None = None,
) -> str:
    """The Markdown section (``templates/generation.md``) with every number filled in;
    ``samples_note`` says what the sample grid holds (:func:`sample_grid_note`)."""
    dip = curves[curves["arm"] == DIP]
    noise = curves[curves["arm"] == NOISE]
    task = settings["task_spec"]
    values = {
        "dataset": settings["dataset"],
        "n_sources": settings["dataset_spec"].get("n", "all"),
        "task": settings["task"],
        "task_text": _task_text(task),
        "prior_arch": settings["prior_arch"],
        "prior_iters": ", ".join(sorted({str(v) for v in dip["prior_iters"]}, key=int)) or "none",
        "t0": ", ".join(sorted({str(v) for v in dip["t0"]}, key=int)) or "none",
        "dip_nfe": ", ".join(str(int(v)) for v in sorted(set(dip["nfe"]))) or "none",
        "noise_nfe": ", ".join(str(int(v)) for v in sorted(set(noise["nfe"]))) or "none",
        "T": settings["T"],
        "schedule": settings["schedule"],
        "sampler": settings["sampler"],
        "eta": settings["eta"],
        "train_dataset": settings["train_dataset"],
        "reference": settings["reference"],
        "n_reference": settings["reference_spec"].get("n", "all"),
        "seeds": _seeds_text(curves),
        "samples": _samples_text(curves),
        "noise_per_seed": settings["noise_per_seed"],
        "accuracy": f"{100 * float(classifier['accuracy']):.1f} %",
        "n_test": classifier.get("n_test", "n/a"),
        "feature_dim": classifier.get("feature_dim", "n/a"),
        "answer": answer(curves, comparisons),
        "figure": figure,
        "samples_figure": samples_figure,
        "samples_note": samples_note or "Samples of the settings in the table below.",
        "curves": markdown_table(curves, SECTION_COLUMNS),
        "comparisons": markdown_table(comparisons, COMPARISON_COLUMNS),
    }
    return templates.render("generation", values)


SECTION_COLUMNS = {
    "arm": "start",
    "mode": "model",
    "t0": "t0",
    "prior_iters": "DIP it",
    "nfe": "NFE",
    "n_samples": "n",
    "kid_cifarnet": "KID",
    "kid_cifarnet_ci_low": "KID low",
    "kid_cifarnet_ci_high": "KID high",
    "diversity_all_feature": "diversity",
    "diversity_within_prior_feature": "within prior",
    "coverage_entropy_normalised": "coverage",
    "dist_source_pixel_rms": "to source",
    "memo_pixel_median_ratio": "NN ratio",
    "sample_seconds_per_image": "s/sample",
    "seconds_per_image_with_prior": "s/sample + DIP",
}
COMPARISON_COLUMNS = {
    "mode": "model",
    "t0": "t0",
    "prior_iters": "DIP it",
    "nfe": "NFE",
    "kid_diff": "KID DIP - noise",
    "kid_diff_ci_low": "low",
    "kid_diff_ci_high": "high",
    "kid_verdict": "KID",
    "diversity_diff": "diversity DIP - noise",
    "diversity_verdict": "diversity",
}


def _task_text(task: Mapping[str, Any]) -> str:
    if task["kind"] == "denoise":
        return f"Gaussian noise of sigma {task['sigma']}/255"
    if task["kind"] == "inpaint":
        return "inpainting"
    return f"{task.get('factor', '')}x super-resolution"


def _seeds_text(curves: pd.DataFrame) -> str:
    seeds = sorted({int(v) for v in curves["n_seeds"]})
    return " or ".join(str(s) for s in seeds)


def _samples_text(curves: pd.DataFrame) -> str:
    counts = sorted({int(v) for v in curves["n_samples"]})
    return " or ".join(str(c) for c in counts)
