"""Example 1: does a DIP prior help a DDPM restore images?

The analysis reads the tidy per-image table of the pipeline (``all_cells.csv``, built by
:func:`dipddpm.aggregate.collect`): one row per (cell, image) carrying the cell's full identity
(:data:`grid.IDENTITY_COLUMNS`, canonical strings, ``none`` where an axis does not apply),
``psnr``/``ssim`` and the calibrated cost columns (``seconds_per_image``, ``nfe``, ...). Only
rows of purpose ``restoration`` are read: generation rows are scored by other metrics.

Choices are made on the *tuning* images (index < ``tuning``) and every reported number comes
from the *evaluation* images, so no number is both selected and reported on the same images:

* :func:`split_images` marks each row's split;
* :func:`choose_setting` / :func:`chosen_settings` pick each method's setting on the tuning
  split: the best mean PSNR, seeds averaged within an image first, ties to the cheaper one;
* :func:`primary_comparisons` compares DIP+DDPM with DIP alone and with DDPM alone, paired per
  image through :mod:`dipddpm.stats`, at the chosen settings, at equal NFE and at equal
  calibrated seconds, with Holm's correction over the family;
* :func:`quality_targets`, :func:`quality_ladder` and :func:`steps_to_target`: how many reverse
  steps each method needs to come within 0.5 dB of DIP alone's peak;
* :func:`restoration_diversity`: the spread of K chains against the start step t0;
* :func:`cost_curves` and :func:`t0_curves`: the data of the Example 1 figures.

Every table names the cells behind its numbers: ``setting`` strings spell identity values and
``seeds`` the seeds averaged within each image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dipddpm import grid, stats

log = logging.getLogger("dipddpm")

RESTORATION = "restoration"
TUNING = "tuning"
EVALUATION = "evaluation"

DIP_ALONE = "dip"
COMBINED = "dip+ddpm"
GUIDED = "dip-guided"
DDPM_ALONE = ("ddpm-obs", "ddpm-noise")
STEP_METHODS = (*DDPM_ALONE, COMBINED, GUIDED)
# The order of aggregate.METHOD_ORDER (not imported: aggregate pulls in torch via cost).
METHOD_ORDER = (DIP_ALONE, "ddpm-noise", "ddpm-obs", COMBINED, GUIDED)
# The axis along which each method buys quality with compute.
COST_AXIS = {DIP_ALONE: "iters", **dict.fromkeys(STEP_METHODS, "steps")}

LADDER = (1, 2, 5, 10, 25, 50, 100)
TARGET_MARGIN_DB = 0.5
# Mean PSNRs equal to this many decimals tie: identical chains (every steps >= the start
# step runs the same chain) give bit-identical means, which must not be told apart by noise.
TIE_DECIMALS = 9
NOT_COMPUTABLE = "not computable"

# aggregate.CELL_KEYS: every identity column but the seeds (which are averaged within images).
SETTING_COLUMNS = tuple(c for c in grid.IDENTITY_COLUMNS if c not in grid.SEED_COLUMNS)
# Fixed by the question a function answers, so never part of a chosen setting.
SCOPE_COLUMNS = ("purpose", "dataset", "task", "method")
MODEL_COLUMNS = tuple(c for c in (*grid.TRAIN_AXES, "ckpt") if c not in grid.SEED_COLUMNS)
# Two DDPM chains pay the same network evaluations on the same checkpoint when these agree.
EQUAL_NFE_COLUMNS = (*MODEL_COLUMNS, "sampler", "eta", "steps", "k")

SETTINGS_COLUMNS = (
    *SETTING_COLUMNS,
    "tuning_mean",
    "n_tuning_images",
    "seconds_per_image",
    "n_candidates",
    "setting",
    "seeds",
)
PRIMARY_COLUMNS = (
    "name",
    "dataset",
    "task",
    "value",
    "match",
    "budget_s",
    "setting_a",
    "setting_b",
    "seeds_a",
    "seeds_b",
    "nfe_a",
    "nfe_b",
    "seconds_a",
    "seconds_b",
    "n",
    "mean_diff",
    "ci_low",
    "ci_high",
    "level",
    "p",
    "p_method",
    "p_holm",
    "verdict",
    "min_p_reachable",
    "min_detectable_diff",
    "computable",
    "reason",
    "note",
)
TARGET_COLUMNS = (
    "dataset",
    "task",
    "target_psnr",
    "peak_psnr_mean",
    "margin_db",
    "n_images",
    "setting",
    "seeds",
    "reason",
)
LADDER_COLUMNS = (
    "dataset",
    "task",
    "method",
    "setting",
    "seeds",
    "target_psnr",
    "steps",
    "full_chain",
    "status",
    "reason",
    "cell_steps",
    "n_images",
    "n_reached",
    "share",
    "n_reached_by",
    "share_reached_by",
    "psnr_mean",
    "nfe",
    "seconds_per_image",
)
STEPS_TO_TARGET_COLUMNS = (
    "dataset",
    "task",
    "method",
    "setting",
    "seeds",
    "target_psnr",
    "n_images",
    "n_reached",
    "largest_steps",
    "median_steps",
    "median_steps_value",
    "censored",
    "nfe_at_median",
    "seconds_at_median",
    "reason",
)
DIVERSITY_COLUMNS = (
    "dataset",
    "task",
    "method",
    "t0",
    "k",
    "steps",
    "setting",
    "seeds",
    "n_images",
    "spread_mean",
    "spread_sd",
    "psnr_mean",
)
COST_CURVE_COLUMNS = (
    "dataset",
    "task",
    "method",
    "axis",
    "axis_value",
    "seconds_per_image",
    "nfe",
    "psnr_mean",
    "n_images",
    "setting",
    "seeds",
)
T0_CURVE_COLUMNS = ("dataset", "task", "method", "t0", "psnr_mean", "n_images", "setting", "seeds")

# Ladder statuses.
OK = "ok"
ABOVE_START = "above start step"
NOT_RUN = "not run"
NO_TARGET = "no target"


class NotComputable(LookupError):
    """The table lacks the cells a number needs; the message says which (the reason)."""


# ------------------------------------------------------------------------------ rows


def split_images(frame: pd.DataFrame, tuning: int) -> pd.DataFrame:
    """``frame`` with a ``split`` column: ``tuning`` for every ``tuning``-th image (index
    divisible by ``tuning``; 0: no tuning images), else ``evaluation``. CIFAR subsets are
    in class order, so a stride (not a prefix) spreads the tuning images over the classes
    instead of choosing settings on airplanes and judging them on trucks. The image index
    is the row's position in its dataset, so one image falls in the same split in every
    cell."""
    if isinstance(tuning, bool) or int(tuning) != tuning or tuning < 0:
        raise ValueError(f"split_images: tuning must be a non-negative integer, got {tuning!r}")
    _require(frame, ["image"], "split_images")
    image = pd.to_numeric(frame["image"], errors="coerce")
    if image.isna().any():
        raise ValueError(f"split_images: {int(image.isna().sum())} rows lack an image index")
    out = frame.copy()
    tuned = (image % tuning == 0) if tuning else np.zeros(len(image), dtype=bool)
    out["split"] = np.where(tuned, TUNING, EVALUATION)
    return out


def restoration_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of purpose ``restoration``."""
    _require(frame, ["purpose"], "restoration_rows")
    return frame[frame["purpose"].astype(str) == RESTORATION]


def _prepare(frame: pd.DataFrame, tuning: int) -> pd.DataFrame:
    """Restoration rows with their split and identity values in canonical spelling, so a
    filter matches ``1`` and ``1.0`` alike by plain string comparison."""
    _require(frame, ["purpose", "image", "method", "dataset", "task"], "example1")
    rows = split_images(restoration_rows(frame), tuning)
    rows["image"] = pd.to_numeric(rows["image"]).astype(int)
    for column in grid.IDENTITY_COLUMNS:
        if column in rows.columns:
            spelled = {v: grid.canonical(v) for v in rows[column].unique()}
            rows[column] = rows[column].map(spelled).astype(object)
    return rows


def _split(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    return rows[rows["split"] == name]


def _require(frame: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{where}: frame lacks column(s) {missing}")


def _matching(rows: pd.DataFrame, filters: Mapping[str, Any]) -> pd.DataFrame:
    """Rows of a prepared frame whose identity values equal ``filters`` (canonical)."""
    _require(rows, filters, f"filter {dict(filters)}")
    keep = np.ones(len(rows), dtype=bool)
    for column, wanted in filters.items():
        keep &= (rows[column] == grid.canonical(wanted)).to_numpy()
    return rows[keep]


# ------------------------------------------------------------------------------ cells


@dataclass(frozen=True)
class Cell:
    """One cell on one split: its identity without seeds, the per-image seed means of one
    value (indexed by image), its mean calibrated cost and the seeds it averages."""

    setting: dict[str, str]
    values: pd.Series
    seconds: float
    nfe: float
    seeds: str


def cell_means(frame: pd.DataFrame, filters: Mapping[str, Any], value: str = "psnr") -> pd.Series:
    """Per-image seed means of ``value`` over the one cell ``filters`` selects, indexed by image.

    The cell is paired with itself through :func:`stats.paired_differences`, so selection, its
    refusals (a selection pooling cells that differ in more than their seeds, rows repeating an
    image and seeds: ValueError) and seed averaging follow the comparisons' own rule.
    """
    # Only what stats reads: copying the cost and bookkeeping columns dominates otherwise.
    keep = [c for c in (*grid.IDENTITY_COLUMNS, "image", value) if c in frame.columns]
    pairs = stats.paired_differences(frame[keep], value, filters, filters)
    if len(pairs[["dataset", "task"]].drop_duplicates()) > 1:
        raise ValueError(f"cell_means: {dict(filters)} spans several datasets or tasks")
    return pairs.set_index("image")["a"].rename(value)


def _cell(rows: pd.DataFrame, filters: Mapping[str, Any], value: str = "psnr") -> Cell:
    selected = _matching(rows, filters)
    if selected.empty:
        raise NotComputable(f"no row of {_filters_text(filters)}")
    return Cell(
        setting={c: str(selected[c].iloc[0]) for c in SETTING_COLUMNS if c in selected.columns},
        values=cell_means(selected, filters, value),
        seconds=_column_mean(selected, "seconds_per_image"),
        nfe=_column_mean(selected, "nfe"),
        seeds=_seeds_text(selected),
    )


def _column_mean(rows: pd.DataFrame, column: str) -> float:
    if column not in rows.columns:
        return math.nan
    values = pd.to_numeric(rows[column], errors="coerce")
    return float(values.mean()) if values.notna().any() else math.nan


def _seeds_text(rows: pd.DataFrame) -> str:
    """The seeds averaged, e.g. ``obs_seed=0,1; dip_seed=0`` (seeds that do not apply left out)."""
    parts = []
    for column in grid.SEED_COLUMNS:
        if column in rows.columns:
            values = sorted({str(v) for v in rows[column]}, key=_natural)
            if values != [grid.NONE]:
                parts.append(f"{column}={','.join(values)}")
    return "; ".join(parts) or grid.NONE


def _setting_text(setting: Mapping[str, Any], exclude: Sequence[str] = ()) -> str:
    """Every identity value of a setting that applies (not ``none``), scope columns aside."""
    parts = [
        f"{c}={setting[c]}"
        for c in SETTING_COLUMNS
        if c in setting
        and c not in SCOPE_COLUMNS
        and c not in exclude
        and str(setting[c]) != grid.NONE
    ]
    return ", ".join(parts) or grid.NONE


def _difference_text(
    own: Mapping[str, Any], other: Mapping[str, Any], exclude: Sequence[str] = ()
) -> str:
    """The identity values of ``own`` that differ from ``other``, the method first."""
    order = ["method", *(c for c in SETTING_COLUMNS if c not in ("method", "purpose"))]
    parts = [
        f"{c}={own.get(c, grid.NONE)}"
        for c in order
        if c not in exclude and str(own.get(c, grid.NONE)) != str(other.get(c, grid.NONE))
    ]
    return ", ".join(parts) or "same cell"


def _filters_text(filters: Mapping[str, Any]) -> str:
    return ", ".join(f"{c}={grid.canonical(v)}" for c, v in filters.items())


def _natural(value: Any) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _ordered_tasks(rows: pd.DataFrame, tasks: Sequence[str] | None) -> list[str]:
    present = sorted(rows["task"].unique(), key=_natural)
    return [grid.canonical(t) for t in tasks] if tasks is not None else present


def _ordered_methods(rows: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    present = set(rows["method"].unique())
    if methods is not None:
        return [m for m in methods if m in present]
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(present, key=lambda m: (rank.get(m, len(rank)), m))


# --------------------------------------------------------------------------- settings


def rank_settings(
    frame: pd.DataFrame,
    method: str,
    task: str,
    tuning: int,
    over: Sequence[str] | None = None,
    where: Mapping[str, Any] | None = None,
    value: str = "psnr",
) -> pd.DataFrame:
    """Every candidate setting of one method and task, best first, scored on the tuning split.

    A candidate is one value of the ``over`` columns (default: every identity column apart
    from the seeds and the scope columns that varies among the method's rows); ``where`` pins
    further identity columns. Its score is the mean over tuning images of the per-image seed
    mean (:func:`cell_means`), on the tuning images every candidate has, so all candidates are
    scored on the same images. Ties (equal to :data:`TIE_DECIMALS` decimals) go to the smaller
    ``seconds_per_image``, then to the smaller values of ``over`` in natural order.

    Columns: :data:`SETTINGS_COLUMNS` less ``n_candidates``, plus ``rank``. Raises ValueError
    when no tuning row matches, when a candidate pools cells that differ in a column outside
    ``over`` and ``where`` (stats' refusal), or when the candidates share no tuning image.
    """
    rows = _prepare(frame, tuning)
    return _rank(rows, method, task, tuning, over, where, value)


def _rank(
    rows: pd.DataFrame,
    method: str,
    task: str,
    tuning: int,
    over: Sequence[str] | None,
    where: Mapping[str, Any] | None,
    value: str,
) -> pd.DataFrame:
    scope = {"method": method, "task": task, **(where or {})}
    tuning_rows = _matching(_split(rows, TUNING), scope)
    if tuning_rows.empty:
        raise ValueError(
            f"choose_setting: no restoration row of {_filters_text(scope)} on the tuning "
            f"images (index < {tuning})"
        )
    if over is None:
        over = [
            c
            for c in SETTING_COLUMNS
            if c in tuning_rows.columns
            and c not in SCOPE_COLUMNS
            and tuning_rows[c].nunique(dropna=False) > 1
        ]
    over = list(over)
    groups = tuning_rows.groupby(over, sort=False, dropna=False) if over else [((), tuning_rows)]
    candidates = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        candidates.append(_cell(group, {**scope, **dict(zip(over, key, strict=True))}, value))
    common = sorted(set.intersection(*(set(c.values.index) for c in candidates)))
    if not common:
        raise ValueError(f"choose_setting: the candidates of {scope} share no tuning image")
    records = []
    for cell in candidates:
        score = float(cell.values.loc[common].mean(skipna=False))
        records.append(
            {
                **cell.setting,
                "tuning_mean": score,
                "n_tuning_images": len(common),
                "seconds_per_image": cell.seconds,
                "setting": _setting_text(cell.setting),
                "seeds": cell.seeds,
            }
        )
    records.sort(key=lambda r: _rank_key(r, over))
    table = pd.DataFrame(records)
    table["rank"] = range(1, len(table) + 1)
    return table


def _rank_key(record: Mapping[str, Any], over: Sequence[str]) -> tuple:
    # A NaN score (an image lacks the value) can never win; a NaN cost never wins a tie.
    score, seconds = record["tuning_mean"], record["seconds_per_image"]
    return (
        math.isnan(score),
        -round(score, TIE_DECIMALS) if not math.isnan(score) else 0.0,
        math.isnan(seconds),
        seconds if not math.isnan(seconds) else 0.0,
        tuple(_natural(record.get(c)) for c in over),
    )


def choose_setting(
    frame: pd.DataFrame,
    method: str,
    task: str,
    tuning: int,
    over: Sequence[str] | None = None,
    where: Mapping[str, Any] | None = None,
    value: str = "psnr",
) -> dict[str, str]:
    """The setting of ``method`` on ``task`` with the best mean ``value`` on the tuning images
    (see :func:`rank_settings`), as its identity values without seeds: usable as a filter of
    :func:`stats.paired_differences` as it stands."""
    best = rank_settings(frame, method, task, tuning, over, where, value).iloc[0]
    return {c: str(best[c]) for c in SETTING_COLUMNS if c in best.index}


def chosen_settings(
    frame: pd.DataFrame,
    tuning: int,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    over: Sequence[str] | None = None,
    value: str = "psnr",
) -> pd.DataFrame:
    """The chosen setting of every method on every task (those with restoration rows), one row
    each: its identity values, ``tuning_mean`` (mean ``value`` over ``n_tuning_images`` tuning
    images), its ``seconds_per_image``, how many candidates it beat and its ``setting`` and
    ``seeds`` spelled out. Columns: :data:`SETTINGS_COLUMNS`."""
    rows = _prepare(frame, tuning)
    return _chosen(rows, tuning, tasks, methods, over, value)


def _chosen(
    rows: pd.DataFrame,
    tuning: int,
    tasks: Sequence[str] | None,
    methods: Sequence[str] | None,
    over: Sequence[str] | None,
    value: str,
) -> pd.DataFrame:
    records = []
    for task in _ordered_tasks(rows, tasks):
        in_task = rows[rows["task"] == task]
        for method in _ordered_methods(in_task, methods):
            ranked = _rank(rows, method, task, tuning, over, None, value)
            records.append({**ranked.iloc[0].to_dict(), "n_candidates": len(ranked)})
    return pd.DataFrame(records, columns=list(SETTINGS_COLUMNS))


def _setting_for(settings: pd.DataFrame, task: str, method: str) -> dict[str, str]:
    rows = settings[(settings["task"] == task) & (settings["method"] == method)]
    if rows.empty:
        raise NotComputable(f"no chosen {method} setting on {task} (the table has no such rows)")
    if len(rows) > 1:
        raise ValueError(f"settings hold {len(rows)} {method} settings for {task}: pin a dataset")
    row = rows.iloc[0]
    return {c: grid.canonical(row[c]) for c in SETTING_COLUMNS if c in row.index}


# ----------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class Curve:
    """One method's per-image value against calibrated seconds along its cost axis, the
    other identity values fixed at ``setting``. Points with the same cost are one chain
    (steps beyond the start step), so only the first in natural order is kept."""

    method: str
    setting: dict[str, str]
    axis: str
    axis_values: tuple[str, ...]
    seconds: np.ndarray
    nfe: np.ndarray
    values: pd.DataFrame
    seeds: str

    def describe(self) -> str:
        return f"{self.method} along {self.axis} {','.join(self.axis_values)}"


def cost_curve(evaluation: pd.DataFrame, setting: Mapping[str, str], value: str = "psnr") -> Curve:
    """The :class:`Curve` of ``setting``'s method through the rows given (already one split
    and prepared; see :func:`cost_curves` for the public table). Raises NotComputable when
    no row matches or a point lacks its calibrated cost; ``values`` keeps the images every
    point has (index image, one column per point, in order of cost)."""
    method = setting["method"]
    axis = COST_AXIS[method]
    base = {c: v for c, v in setting.items() if c != axis}
    rows = _matching(evaluation, base)
    if rows.empty:
        raise NotComputable(f"no evaluation row of {method} at {_setting_text(base, (axis,))}")
    points = [(str(v), _cell(group, {**base, axis: v}, value)) for v, group in rows.groupby(axis)]
    uncosted = [v for v, cell in points if not math.isfinite(cell.seconds)]
    if uncosted:
        raise NotComputable(
            f"{method} at {axis}={','.join(sorted(uncosted, key=_natural))} has no calibrated "
            "seconds_per_image"
        )
    points.sort(key=lambda p: (p[1].seconds, _natural(p[0])))
    kept: list[tuple[str, Cell]] = []
    for v, cell in points:
        if kept and math.isclose(cell.seconds, kept[-1][1].seconds, rel_tol=1e-12):
            continue
        kept.append((v, cell))
    values = pd.concat([cell.values for _, cell in kept], axis=1, join="inner")
    values.columns = range(len(kept))
    if values.empty:
        raise NotComputable(f"{method} along {axis}: no evaluation image in every point")
    return Curve(
        method=method,
        setting=base,
        axis=axis,
        axis_values=tuple(v for v, _ in kept),
        seconds=np.array([cell.seconds for _, cell in kept]),
        nfe=np.array([cell.nfe for _, cell in kept]),
        values=values.sort_index(),
        seeds=_seeds_text(rows),
    )


def interpolate_log(
    seconds: Sequence[float] | np.ndarray, values: Sequence[Any] | np.ndarray, budget: float
) -> np.ndarray:
    """Values at ``budget`` seconds, linear in log seconds between the two cost points that
    bracket it. ``seconds`` must increase strictly; ``values`` has one row per cost point
    (and any number of columns, e.g. images). A budget outside the points raises ValueError:
    a curve is never extrapolated."""
    x = np.log(np.asarray(seconds, dtype=float))
    y = np.asarray(values, dtype=float)
    if x.size == 0 or len(y) != x.size:
        raise ValueError(f"interpolate_log: {x.size} cost points for {len(y)} value rows")
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"interpolate_log: seconds must increase strictly, got {list(seconds)}")
    target = math.log(budget)
    tolerance = 1e-12 * max(1.0, abs(target))
    if target < x[0] - tolerance or target > x[-1] + tolerance:
        raise ValueError(
            f"interpolate_log: budget {budget:g} s lies outside [{math.exp(x[0]):g}, "
            f"{math.exp(x[-1]):g}] s (no extrapolation)"
        )
    if x.size == 1:
        return y[0]
    i = int(np.clip(np.searchsorted(x, target, side="right") - 1, 0, x.size - 2))
    weight = float(np.clip((target - x[i]) / (x[i + 1] - x[i]), 0.0, 1.0))
    return (1 - weight) * y[i] + weight * y[i + 1]


def _bracket(curve: Curve, budget: float) -> str:
    """The cells a value at ``budget`` comes from, e.g. ``steps=5..10 at 0.8 s``."""
    close = np.isclose(curve.seconds, budget, rtol=1e-9, atol=0.0)
    if close.any():
        where = curve.axis_values[int(np.argmax(close))]
    else:
        i = int(np.searchsorted(curve.seconds, budget)) - 1
        where = f"{curve.axis_values[i]}..{curve.axis_values[i + 1]}"
    return f"{curve.axis}={where} at {budget:.4g} s"


# ------------------------------------------------------------------------ comparisons


@dataclass
class _Planned:
    meta: dict[str, Any]
    differences: np.ndarray | None = None
    reason: str = ""


def primary_comparisons(
    frame: pd.DataFrame,
    tuning: int,
    settings: pd.DataFrame | None = None,
    tasks: Sequence[str] | None = None,
    combined: Sequence[str] = (COMBINED,),
    budgets: Sequence[float] | None = None,
    value: str = "psnr",
    level: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
    holm_by: Sequence[str] = (),
) -> pd.DataFrame:
    """The primary comparisons of Example 1, per task, on the evaluation images.

    For each combined method (default DIP+DDPM) at its chosen setting, ``a - b`` per image:

    * ``vs dip``, match ``chosen``: against DIP alone at its chosen setting;
    * ``vs dip``, match ``equal seconds``: both cost curves (:func:`cost_curve`: DIP alone
      along ``iters``, the combined method along ``steps``, whose calibrated seconds include
      its prior's DIP iterations) interpolated linearly in log seconds at each budget;
    * ``vs <DDPM alone>`` (``ddpm-obs`` / ``ddpm-noise``, whichever the task has), match
      ``equal NFE``: the DDPM-alone cell on the same checkpoint (non-seed training columns and
      ``ckpt``), sampler, eta, ``steps`` and ``k`` as the combined setting;
    * ``vs <DDPM alone>``, match ``equal seconds``: against DDPM alone's chosen setting's curve.

    ``budgets`` default to the combined curve's own cost points inside the range both curves
    cover, so one side of each row is a measured cell. A comparison whose sides cannot be
    matched is a row with ``computable`` False and its ``reason``; a budget outside the common
    range likewise. ``settings`` default to :func:`chosen_settings` on the tuning images.

    Each row is summarised by :func:`stats.paired_comparison`; the computable rows of each
    ``holm_by`` group (default: the whole table, one family) then go through
    :func:`stats.apply_holm` at alpha = 1 - level, which sets ``p_holm``, the CI level and the
    verdict. A side that pools cells differing in more than their seeds raises stats'
    ValueError. Columns: :data:`PRIMARY_COLUMNS`.
    """
    rows = _prepare(frame, tuning)
    if settings is None:
        settings = _chosen(rows, tuning, tasks, None, None, value)
    evaluation = _split(rows, EVALUATION)
    planned: list[_Planned] = []
    for task in _ordered_tasks(rows, tasks):
        ddpm_methods = [m for m in DDPM_ALONE if (rows[rows["task"] == task]["method"] == m).any()]
        for method in combined:
            fallbacks = _ranked_settings(rows, method, task, tuning, value)
            planned += _task_comparisons(
                evaluation, settings, task, method, ddpm_methods, budgets, value, fallbacks
            )
    for row in planned:
        row.meta["value"] = value
    results = _summarise(planned, level, n_boot, seed, holm_by)
    return pd.DataFrame(results, columns=list(PRIMARY_COLUMNS))


def _ranked_settings(
    rows: pd.DataFrame, method: str, task: str, tuning: int, value: str
) -> list[dict[str, str]]:
    """``method``'s settings on ``task``, best on the tuning images first (none if it has
    no rows there)."""
    try:
        ranked = _rank(rows, method, task, tuning, None, None, value)
    except ValueError:
        return []
    return [
        {c: str(r[c]) for c in SETTING_COLUMNS if c in ranked.columns}
        for r in ranked.to_dict("records")
    ]


def _task_comparisons(
    evaluation: pd.DataFrame,
    settings: pd.DataFrame,
    task: str,
    method: str,
    ddpm_methods: list[str],
    budgets: Sequence[float] | None,
    value: str,
    fallbacks: Sequence[Mapping[str, str]] = (),
) -> list[_Planned]:
    opponents = ddpm_methods or ["ddpm alone"]
    names = [(DIP_ALONE, "chosen"), (DIP_ALONE, "equal seconds")]
    names += [(m, match) for m in opponents for match in ("equal NFE", "equal seconds")]
    try:
        a = _setting_for(settings, task, method)
    except NotComputable as missing:
        return [_unmatched(method, b, match, task, str(missing)) for b, match in names]
    out = []
    for b_method, match in names:
        base = {"name": f"{method} vs {b_method} ({match})", "task": task, "match": match}
        base["dataset"] = a.get("dataset")
        try:
            if b_method not in ddpm_methods and b_method != DIP_ALONE:
                raise NotComputable(f"{task} has no DDPM-alone rows (ddpm-obs or ddpm-noise)")
            if match == "chosen":
                b = _setting_for(settings, task, b_method)
                out.append(_cell_pair(evaluation, a, b, value, base))
            elif match == "equal NFE":
                out.append(_equal_nfe(evaluation, a, b_method, value, base, fallbacks))
            else:
                b = _setting_for(settings, task, b_method)
                out += _equal_seconds(evaluation, a, b, budgets, value, base)
        except NotComputable as missing:
            out.append(_Planned(meta=base, reason=str(missing)))
    return out


def _unmatched(method: str, b_method: str, match: str, task: str, reason: str) -> _Planned:
    name = f"{method} vs {b_method} ({match})"
    return _Planned(meta={"name": name, "task": task, "match": match}, reason=reason)


def _cell_pair(
    evaluation: pd.DataFrame,
    a: Mapping[str, str],
    b: Mapping[str, str],
    value: str,
    meta: dict[str, Any],
) -> _Planned:
    cells = [_cell(evaluation, side, value) for side in (a, b)]
    pairs = stats.paired_differences(evaluation, value, a, b)
    meta.update(_sides(cells[0], cells[1]))
    return _Planned(meta=meta, differences=pairs["difference"].to_numpy(float))


def _sides(a: Cell, b: Cell) -> dict[str, Any]:
    return {
        "setting_a": _difference_text(a.setting, b.setting),
        "setting_b": _difference_text(b.setting, a.setting),
        "seeds_a": a.seeds,
        "seeds_b": b.seeds,
        "nfe_a": a.nfe,
        "nfe_b": b.nfe,
        "seconds_a": a.seconds,
        "seconds_b": b.seconds,
    }


def _equal_nfe(
    evaluation: pd.DataFrame,
    a: Mapping[str, str],
    b_method: str,
    value: str,
    meta: dict[str, Any],
    fallbacks: Sequence[Mapping[str, str]] = (),
) -> _Planned:
    """``a`` against the DDPM-alone cell on the same checkpoint, sampler, steps and k. When
    ``a`` (the chosen setting) has no such partner (e.g. it averages k = 4 chains where the
    deterministic DDPM-alone chain has k = 1, or it runs on a truncated model that cannot
    start from noise), the best tuning setting of ``fallbacks`` that has one stands in, and
    ``note`` says so."""
    scope = {c: a[c] for c in ("purpose", "dataset", "task")}
    chosen, rank = a, 0
    b = _nfe_partner(scope, b_method, a)
    if _matching(evaluation, b).empty:
        found = next(
            (
                (i, f)
                for i, f in enumerate(fallbacks)
                if not _matching(evaluation, _nfe_partner(scope, b_method, f)).empty
            ),
            None,
        )
        if found is None:
            raise NotComputable(_nfe_mismatch(evaluation, scope, b_method, b))
        rank, a = found
        b = _nfe_partner(scope, b_method, a)
    steps = a.get("steps", grid.NONE)
    meta["name"] = f"{meta['name'][:-1]}, steps={steps}, k={a.get('k', grid.NONE)})"
    planned = _cell_pair(evaluation, a, b, value, meta)
    if a is not chosen:
        meta["note"] = (
            f"the chosen setting has no equal-NFE {b_method} cell "
            f"({_nfe_mismatch(evaluation, scope, b_method, _nfe_partner(scope, b_method, chosen))}"
            f"); compared instead: the best tuning setting that has one (rank {rank + 1})"
        )
    nfe_a, nfe_b = meta["nfe_a"], meta["nfe_b"]
    if math.isfinite(nfe_a) and math.isfinite(nfe_b) and not math.isclose(nfe_a, nfe_b):
        meta["note"] = meta.get("note", "") + (
            f"steps={steps} runs {nfe_a:g} vs {nfe_b:g} network evaluations per image: a "
            "chain runs at most its start step"
        )
    return planned


def _nfe_partner(scope: Mapping[str, str], b_method: str, a: Mapping[str, str]) -> dict:
    return {**scope, "method": b_method, **{c: a[c] for c in EQUAL_NFE_COLUMNS if c in a}}


def _nfe_mismatch(
    evaluation: pd.DataFrame, scope: Mapping[str, str], b_method: str, b: Mapping[str, str]
) -> str:
    have = _matching(evaluation, {**scope, "method": b_method})
    if have.empty:
        return f"{b_method} has no evaluation row on {scope['task']}"
    gaps = [
        f"{c}={b[c]} (it has {','.join(sorted(map(str, have[c].unique()), key=_natural))})"
        for c in EQUAL_NFE_COLUMNS
        if c in b and not (have[c] == b[c]).any()
    ]
    detail = "; ".join(gaps) or "that combination of " + ", ".join(EQUAL_NFE_COLUMNS)
    return f"{b_method} has no cell on the same checkpoint and NFE: {detail}"


def _equal_seconds(
    evaluation: pd.DataFrame,
    a: Mapping[str, str],
    b: Mapping[str, str],
    budgets: Sequence[float] | None,
    value: str,
    meta: dict[str, Any],
) -> list[_Planned]:
    curve_a, curve_b = cost_curve(evaluation, a, value), cost_curve(evaluation, b, value)
    low = max(curve_a.seconds[0], curve_b.seconds[0])
    high = min(curve_a.seconds[-1], curve_b.seconds[-1])
    span = (
        f"{curve_a.describe()} spans [{curve_a.seconds[0]:.4g}, {curve_a.seconds[-1]:.4g}] s, "
        f"{curve_b.describe()} spans [{curve_b.seconds[0]:.4g}, {curve_b.seconds[-1]:.4g}] s"
    )
    if low > high * (1 + 1e-12):
        return [_disjoint_costs(curve_a, curve_b, value, meta, span)]
    if budgets is None:
        inside = (curve_a.seconds >= low * (1 - 1e-12)) & (curve_a.seconds <= high * (1 + 1e-12))
        chosen = [float(s) for s in curve_a.seconds[inside]]
    else:
        chosen = [float(s) for s in budgets]
    images = curve_a.values.index.intersection(curve_b.values.index)
    if images.empty:
        raise NotComputable(f"the two curves share no evaluation image ({span})")
    out = []
    for budget in chosen:
        row = {**meta, "name": f"{meta['name'][:-1]}, {budget:.4g} s)", "budget_s": budget}
        if not low * (1 - 1e-12) <= budget <= high * (1 + 1e-12):
            out.append(_Planned(meta=row, reason=f"budget {budget:.4g} s outside: {span}"))
            continue
        values = [
            interpolate_log(c.seconds, c.values.loc[images].to_numpy().T, budget)
            for c in (curve_a, curve_b)
        ]
        # Each side's own axis is named by its bracket; the other's fixed value still shows.
        setting_a = _difference_text(curve_a.setting, curve_b.setting, (curve_a.axis,))
        setting_b = _difference_text(curve_b.setting, curve_a.setting, (curve_b.axis,))
        row.update(
            setting_a=f"{setting_a}; {_bracket(curve_a, budget)}",
            setting_b=f"{setting_b}; {_bracket(curve_b, budget)}",
            seeds_a=curve_a.seeds,
            seeds_b=curve_b.seeds,
            seconds_a=budget,
            seconds_b=budget,
        )
        out.append(_Planned(meta=row, differences=values[0] - values[1]))
    return out


def _disjoint_costs(
    curve_a: Curve, curve_b: Curve, value: str, meta: dict[str, Any], span: str
) -> _Planned:
    """Curves whose costs do not overlap: the cheaper method at its most expensive point
    against the dearer one at its cheapest. If the dearer method loses there, it loses at
    every budget both can afford (the cheaper method is better and cheaper); if it wins, that
    is not a win at equal cost, and the note says so."""
    images = curve_a.values.index.intersection(curve_b.values.index)
    if images.empty:
        raise NotComputable(f"the two curves share no evaluation image ({span})")
    a_cheaper = curve_a.seconds[-1] < curve_b.seconds[0]
    i_a, i_b = (-1, 0) if a_cheaper else (0, -1)
    seconds_a, seconds_b = float(curve_a.seconds[i_a]), float(curve_b.seconds[i_b])
    values_a = curve_a.values.loc[images].to_numpy().T[i_a]
    values_b = curve_b.values.loc[images].to_numpy().T[i_b]
    cheaper, dearer = (curve_a, curve_b) if a_cheaper else (curve_b, curve_a)
    ratio = max(seconds_a, seconds_b) / min(seconds_a, seconds_b)
    row = {
        **meta,
        "name": f"{meta['name'][:-1]}: {seconds_a:.3g} s vs {seconds_b:.3g} s, no common budget)",
        "setting_a": f"{_difference_text(curve_a.setting, curve_b.setting, (curve_a.axis,))}; "
        f"{_bracket(curve_a, seconds_a)}",
        "setting_b": f"{_difference_text(curve_b.setting, curve_a.setting, (curve_b.axis,))}; "
        f"{_bracket(curve_b, seconds_b)}",
        "seeds_a": curve_a.seeds,
        "seeds_b": curve_b.seeds,
        "seconds_a": seconds_a,
        "seconds_b": seconds_b,
        "note": (
            f"costs do not overlap ({span}); {cheaper.method} at its most expensive point "
            f"costs {ratio:.3g}x less than {dearer.method} at its cheapest: if "
            f"{dearer.method} is worse there it is worse at every affordable budget, if it "
            "is better that is not a win at equal cost"
        ),
    }
    return _Planned(meta=row, differences=values_a - values_b)


def _summarise(
    planned: list[_Planned], level: float, n_boot: int, seed: int, holm_by: Sequence[str]
) -> list[dict[str, Any]]:
    computed = {
        i: stats.paired_comparison(p.differences, level, n_boot, seed)
        for i, p in enumerate(planned)
        if p.differences is not None
    }
    families: dict[tuple, list[int]] = {}
    for i in computed:
        families.setdefault(tuple(planned[i].meta.get(c) for c in holm_by), []).append(i)
    for members in families.values():
        corrected = stats.apply_holm([computed[i] for i in members], alpha=1 - level)
        computed.update(zip(members, corrected, strict=True))
    return [_primary_row(p, computed.get(i)) for i, p in enumerate(planned)]


def _primary_row(planned: _Planned, result: stats.PairedComparison | None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(PRIMARY_COLUMNS, math.nan)
    row.update(setting_a="", setting_b="", seeds_a="", seeds_b="", p_method="", note="")
    row.update(planned.meta)
    if result is None:
        row.update(n=0, verdict=NOT_COMPUTABLE, computable=False, reason=planned.reason)
        return row
    row.update(
        n=result.n,
        mean_diff=result.mean_diff,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        level=result.level,
        p=result.p,
        p_method=result.p_method,
        p_holm=result.p_holm,
        verdict=result.verdict,
        min_p_reachable=result.min_p_reachable,
        min_detectable_diff=result.mdd,
        computable=True,
        reason="",
    )
    return row


# ------------------------------------------------------------------ steps to quality


def quality_targets(
    frame: pd.DataFrame,
    tuning: int,
    settings: pd.DataFrame | None = None,
    margin: float = TARGET_MARGIN_DB,
    tasks: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The PSNR target of each task: DIP alone's mean per-image peak PSNR (``peak_psnr`` of its
    chosen setting's rows, seeds averaged within an image) over the evaluation images, minus
    ``margin`` dB. The peak needs the clean image, so it is a reference, not a method. A task
    without DIP alone or peak values gets a NaN target and a ``reason``. Columns:
    :data:`TARGET_COLUMNS`."""
    rows = _prepare(frame, tuning)
    if settings is None:
        settings = _chosen(rows, tuning, tasks, (DIP_ALONE,), None, "psnr")
    return _targets(_split(rows, EVALUATION), settings, margin, _ordered_tasks(rows, tasks))


def _targets(
    evaluation: pd.DataFrame, settings: pd.DataFrame, margin: float, tasks: list[str]
) -> pd.DataFrame:
    records = []
    for task in tasks:
        record: dict[str, Any] = {"task": task, "margin_db": margin, "reason": ""}
        try:
            dip = _setting_for(settings, task, DIP_ALONE)
            if "peak_psnr" not in evaluation.columns:
                raise NotComputable("the table has no peak_psnr column")
            cell = _cell(evaluation, dip, "peak_psnr")
            peak = float(cell.values.mean(skipna=False))
            record.update(
                dataset=dip["dataset"],
                target_psnr=peak - margin,
                peak_psnr_mean=peak,
                n_images=len(cell.values),
                setting=_setting_text(dip),
                seeds=cell.seeds,
            )
        except NotComputable as missing:
            record.update(target_psnr=math.nan, reason=f"DIP alone: {missing}")
        records.append(record)
    return pd.DataFrame(records, columns=list(TARGET_COLUMNS))


def quality_ladder(
    frame: pd.DataFrame,
    tuning: int,
    settings: pd.DataFrame | None = None,
    targets: pd.DataFrame | Mapping[str, float] | None = None,
    ladder: Sequence[int] = LADDER,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] = STEP_METHODS,
    margin: float = TARGET_MARGIN_DB,
) -> pd.DataFrame:
    """Share of evaluation images whose PSNR reaches the task's target at each reverse-step
    rung, per step-based method at its chosen setting (only ``steps`` varies).

    Rungs are ``ladder`` plus the full chain (the start step, served by the cell of fewest
    steps at or above it) where such a cell exists. A ladder rung above the start step is a
    row with status ``above start step`` (the chain would run its start step only); a rung
    with no cell is ``not run``. ``share`` is the share reaching the target at that rung,
    ``share_reached_by`` the share that reached it at that rung or a smaller one; both count
    the images every rung of the method has. ``targets`` default to :func:`quality_targets`
    (a task without one gives one ``no target`` row per method). Columns:
    :data:`LADDER_COLUMNS`.
    """
    rows = _prepare(frame, tuning)
    task_list = _ordered_tasks(rows, tasks)
    evaluation = _split(rows, EVALUATION)
    if settings is None:
        settings = _chosen(rows, tuning, task_list, None, None, "psnr")
    if targets is None:
        targets = _targets(evaluation, settings, margin, task_list)
    target_of = _target_map(targets)
    records = []
    for task in task_list:
        in_task = evaluation[evaluation["task"] == task]
        for method in _ordered_methods(in_task, methods):
            setting = _setting_for(settings, task, method)
            target = target_of.get(task, (math.nan, "no target given"))
            records += _ladder_rows(in_task, setting, target, ladder)
    return pd.DataFrame(records, columns=list(LADDER_COLUMNS))


def _target_map(targets: pd.DataFrame | Mapping[str, float]) -> dict[str, tuple[float, str]]:
    if isinstance(targets, pd.DataFrame):
        return {
            str(r["task"]): (float(r["target_psnr"]), str(r.get("reason", "") or ""))
            for r in targets.to_dict("records")
        }
    return {grid.canonical(t): (float(v), "") for t, v in targets.items()}


def _ladder_rows(
    rows: pd.DataFrame,
    setting: Mapping[str, str],
    target: tuple[float, str],
    ladder: Sequence[int],
) -> list[dict[str, Any]]:
    base = {c: v for c, v in setting.items() if c != "steps"}
    cells = _matching(rows, base)
    head = {
        "dataset": setting["dataset"],
        "task": setting["task"],
        "method": setting["method"],
        "setting": _setting_text(base),
        "seeds": _seeds_text(cells),
        "target_psnr": target[0],
    }
    if not math.isfinite(target[0]):
        return [{**head, "status": NO_TARGET, "reason": target[1] or "no target"}]
    start = _start_step(cells)
    served = {s: cell_steps for s, cell_steps, _ in _rungs(cells, start, ladder) if cell_steps}
    measured = {s: _cell(cells, {**base, "steps": c}) for s, c in served.items()}
    image_sets = [set(c.values.index) for c in measured.values()]
    images = sorted(set.intersection(*image_sets)) if image_sets else []
    reached_by: set[int] = set()
    out = []
    for steps, cell_steps, reason in _rungs(cells, start, ladder):
        row = {**head, "steps": steps, "full_chain": start is not None and steps == start}
        if cell_steps is None:
            out.append(
                {**row, "status": ABOVE_START if reason[0] else NOT_RUN, "reason": reason[1]}
            )
            continue
        cell = measured[steps]
        values = cell.values.loc[images]
        reached = values >= target[0]
        reached_by |= set(values.index[reached])
        out.append(
            {
                **row,
                "status": OK,
                "reason": "",
                "cell_steps": cell_steps,
                "n_images": len(images),
                "n_reached": int(reached.sum()),
                "share": float(reached.mean()) if len(images) else math.nan,
                "n_reached_by": len(reached_by),
                "share_reached_by": len(reached_by) / len(images) if images else math.nan,
                "psnr_mean": float(values.mean()),
                "nfe": cell.nfe,
                "seconds_per_image": cell.seconds,
                "seeds": cell.seeds,
            }
        )
    return out


def _start_step(cells: pd.DataFrame) -> int | None:
    """The step the chain starts at: ``t_start`` as run, else a numeric ``t0``."""
    for column in ("t_start", "t0"):
        if column in cells.columns:
            values = pd.to_numeric(cells[column], errors="coerce").dropna().unique()
            if len(values) == 1:
                return int(values[0])
            if len(values) > 1:
                raise ValueError(f"one setting starts at several steps: {sorted(values)}")
    return None


def _rungs(
    cells: pd.DataFrame, start: int | None, ladder: Sequence[int]
) -> list[tuple[int, int | None, tuple[bool, str]]]:
    """(rung, steps of the cell serving it or None, (above start?, reason)) in rung order."""
    available = sorted({int(s) for s in cells["steps"] if str(s) != grid.NONE})
    full = [s for s in available if start is not None and s >= start]
    rungs = sorted(set(int(s) for s in ladder) | ({start} if full else set()))
    out = []
    for steps in rungs:
        if start is not None and steps > start:
            reason = (
                f"steps={steps} exceeds the start step {start}: the chain runs {start} steps "
                f"(the full-chain rung)"
            )
            out.append((steps, None, (True, reason)))
        elif steps in available:
            out.append((steps, steps, (False, "")))
        elif steps == start and full:
            out.append((steps, full[0], (False, "")))
        else:
            out.append((steps, None, (False, f"no cell at steps={steps}")))
    return out


def steps_to_target(ladder: pd.DataFrame) -> pd.DataFrame:
    """Median reverse steps to the target per method and task, from :func:`quality_ladder`.

    Each image's steps-to-target is the first rung at which it reaches the target; an image
    that never does is censored above the largest rung. The median is the smallest rung by
    which more than half of the images have reached the target, reported only then; otherwise
    ``median_steps`` reads ``>`` the largest rung and ``censored`` is True. ``nfe_at_median``
    is the network evaluations per image of the cell at that rung. Columns:
    :data:`STEPS_TO_TARGET_COLUMNS`.
    """
    records = []
    if ladder.empty:
        return pd.DataFrame(columns=list(STEPS_TO_TARGET_COLUMNS))
    for _, group in ladder.groupby(["dataset", "task", "method"], sort=False, dropna=False):
        first = group.iloc[0]
        record = {c: first[c] for c in ("dataset", "task", "method", "setting", "target_psnr")}
        ok = group[group["status"] == OK].sort_values("steps")
        if ok.empty:
            reasons = "; ".join(sorted({str(r) for r in group["reason"] if str(r)}))
            records.append(
                {**record, "median_steps": NOT_COMPUTABLE, "reason": reasons or "no rung run"}
            )
            continue
        n = int(ok["n_images"].iloc[0])
        over_half = ok[ok["n_reached_by"] > n / 2]
        largest = int(ok["steps"].iloc[-1])
        record.update(
            seeds="; ".join(dict.fromkeys(str(s) for s in ok["seeds"])),
            n_images=n,
            n_reached=int(ok["n_reached_by"].iloc[-1]),
            largest_steps=largest,
            censored=over_half.empty,
            reason="",
        )
        if over_half.empty:
            record.update(median_steps=f">{largest}", median_steps_value=math.nan)
        else:
            at = over_half.iloc[0]
            record.update(
                median_steps=str(int(at["steps"])),
                median_steps_value=float(at["steps"]),
                nfe_at_median=float(at["nfe"]),
                seconds_at_median=float(at["seconds_per_image"]),
            )
        records.append(record)
    return pd.DataFrame(records, columns=list(STEPS_TO_TARGET_COLUMNS))


# ------------------------------------------------------------------------ diversity


def restoration_diversity(
    frame: pd.DataFrame, tuning: int, tasks: Sequence[str] | None = None
) -> pd.DataFrame:
    """Mean ``spread`` (per-image spread of the K chains, seeds averaged within an image) of
    every cell with k > 1 on the evaluation images, one row per cell, ordered by task, method,
    setting and t0, so spread can be read against t0 with everything else fixed. Columns:
    :data:`DIVERSITY_COLUMNS`."""
    rows = _prepare(frame, tuning)
    evaluation = _split(rows, EVALUATION)
    if "spread" not in evaluation.columns or "k" not in evaluation.columns:
        return pd.DataFrame(columns=list(DIVERSITY_COLUMNS))
    chains = evaluation[pd.to_numeric(evaluation["k"], errors="coerce") > 1]
    chains = chains[chains["task"].isin(_ordered_tasks(rows, tasks))]
    keys = [c for c in SETTING_COLUMNS if c in chains.columns]
    records = []
    for key, group in chains.groupby(keys, sort=False, dropna=False):
        filters = dict(zip(keys, key, strict=True))
        spread = _cell(group, filters, "spread")
        psnr = _cell(group, filters, "psnr")
        records.append(
            {
                **{c: filters[c] for c in ("dataset", "task", "method", "t0", "k", "steps")},
                "setting": _setting_text(filters, ("t0", "k", "steps")),
                "seeds": spread.seeds,
                "n_images": len(spread.values),
                "spread_mean": float(spread.values.mean()),
                "spread_sd": float(spread.values.std(ddof=1))
                if len(spread.values) > 1
                else math.nan,
                "psnr_mean": float(psnr.values.mean()),
            }
        )
    table = pd.DataFrame(records, columns=list(DIVERSITY_COLUMNS))
    return _natural_sort(table, ["task", "method", "setting", "k", "steps", "t0"])


def _natural_sort(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    if table.empty:
        return table
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}

    def order(column: pd.Series) -> pd.Series:
        if column.name == "method":
            return column.map(lambda m: rank.get(str(m), len(rank)))
        return column.map(_natural)

    return table.sort_values(list(columns), key=order, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------- figure data


def cost_curves(
    frame: pd.DataFrame,
    tuning: int,
    settings: pd.DataFrame | None = None,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Mean PSNR over the evaluation images against calibrated seconds per image: each
    method's :func:`cost_curve` at its chosen setting, one row per point (the Pareto figure's
    data). A method whose curve cannot be built (e.g. no calibrated cost) is left out with a
    warning. Columns: :data:`COST_CURVE_COLUMNS`."""
    rows = _prepare(frame, tuning)
    if settings is None:
        settings = _chosen(rows, tuning, tasks, methods, None, "psnr")
    evaluation = _split(rows, EVALUATION)
    records = []
    for task in _ordered_tasks(rows, tasks):
        for method in _ordered_methods(evaluation[evaluation["task"] == task], methods):
            try:
                curve = cost_curve(evaluation, _setting_for(settings, task, method))
            except NotComputable as missing:
                log.warning("cost curve of %s on %s left out: %s", method, task, missing)
                continue
            for i, axis_value in enumerate(curve.axis_values):
                records.append(
                    {
                        "dataset": curve.setting["dataset"],
                        "task": task,
                        "method": method,
                        "axis": curve.axis,
                        "axis_value": axis_value,
                        "seconds_per_image": float(curve.seconds[i]),
                        "nfe": float(curve.nfe[i]),
                        "psnr_mean": float(curve.values[i].mean()),
                        "n_images": len(curve.values),
                        "setting": _setting_text(curve.setting, (curve.axis,)),
                        "seeds": curve.seeds,
                    }
                )
    return pd.DataFrame(records, columns=list(COST_CURVE_COLUMNS))


def t0_curves(
    frame: pd.DataFrame,
    tuning: int,
    settings: pd.DataFrame | None = None,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] = (COMBINED, GUIDED),
) -> pd.DataFrame:
    """Mean PSNR over the evaluation images against the start step t0, each DIP-started method
    at its chosen setting with only t0 varying (a point per t0 the grid ran with those other
    values), plus one ``dip`` row per task (``t0`` ``none``): DIP alone at its chosen setting,
    the reference line. Columns: :data:`T0_CURVE_COLUMNS`."""
    rows = _prepare(frame, tuning)
    if settings is None:
        settings = _chosen(rows, tuning, tasks, (DIP_ALONE, *methods), None, "psnr")
    evaluation = _split(rows, EVALUATION)
    records = []
    for task in _ordered_tasks(rows, tasks):
        in_task = evaluation[evaluation["task"] == task]
        for method in _ordered_methods(in_task, (DIP_ALONE, *methods)):
            try:
                setting = _setting_for(settings, task, method)
            except NotComputable as missing:
                log.warning("t0 curve of %s on %s left out: %s", method, task, missing)
                continue
            base = {c: v for c, v in setting.items() if method == DIP_ALONE or c != "t0"}
            cells = _matching(in_task, base)
            for t0, group in cells.groupby("t0", sort=False):
                cell = _cell(group, {**base, "t0": t0})
                records.append(
                    {
                        "dataset": setting["dataset"],
                        "task": task,
                        "method": method,
                        "t0": t0,
                        "psnr_mean": float(cell.values.mean()),
                        "n_images": len(cell.values),
                        "setting": _setting_text(base, ("t0",)),
                        "seeds": cell.seeds,
                    }
                )
    table = pd.DataFrame(records, columns=list(T0_CURVE_COLUMNS))
    return _natural_sort(table, ["task", "method", "t0"])
