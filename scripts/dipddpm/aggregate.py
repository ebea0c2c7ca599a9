"""Collect per-cell result files and turn them into the comparison tables.

Every evaluated cell writes rows that carry its full identity (:data:`grid.IDENTITY_COLUMNS`,
``none`` where an axis does not apply); :func:`collect` stacks them into ``all_cells.csv``
and the table builders below reduce that frame to the tables of the report. Each table
groups by a declared list of identity columns: every identity column except the seeds, which
are averaged over. :func:`summarise` refuses a group that holds two rows for the same image
and seeds, so a row can never pool two models, checkpoints, samplers or priors; its n is
images x seeds of the cells it names, and the seeds it averaged are listed beside it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dipddpm import cost, grid
from dipddpm.io import atomic_path, load_json, save_csv
from dipddpm.metrics import steps_to_quality

log = logging.getLogger("dipddpm")

METHOD_LABELS = {
    "dip": "DIP alone",
    "ddpm-noise": "DDPM from noise",
    "ddpm-obs": "DDPM from observation",
    "dip+ddpm": "DIP+DDPM",
    "dip-guided": "DIP-guided",
}
METHOD_ORDER = list(METHOD_LABELS)
VERSION_COLUMNS = ("code_commit", "code_hash")
# Every identity column but the seeds: what tells two table rows apart.
CELL_KEYS = [c for c in grid.IDENTITY_COLUMNS if c not in grid.SEED_COLUMNS]
TRAIN_KEYS = [c for c in grid.TRAIN_AXES if c not in grid.SEED_COLUMNS]


class PoolingError(ValueError):
    """A table row would average cells that differ in more than their seeds."""


# --------------------------------------------------------------------------- loading


def _read_cell_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"collect: result file not found: {path}")
    try:
        # Identity values are canonical strings ("none", "0.5", "sigma"): read them as such,
        # so "1" and 1.0 cannot form two groups and "none" cannot turn a column into NaN;
        # likewise a commit such as "1287910" must stay a string.
        frame = pd.read_csv(
            path,
            dtype=dict.fromkeys((*grid.IDENTITY_COLUMNS, *VERSION_COLUMNS), str),
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"collect: result file is empty: {path}") from error
    missing = [c for c in grid.IDENTITY_COLUMNS if c not in frame.columns]
    # An axis added after a cell was written, and not one of that cell's own axes (its
    # path names those), does not apply to it: `none`, as for any axis a cell lacks. So a
    # committed DIP prior stays readable when sampling gains an axis.
    own = set(grid.parse(path.parent)) | {"method"}
    for column in [c for c in missing if c not in own]:
        frame[column] = grid.NONE
    missing = [c for c in missing if c in own]
    if missing and len(frame):
        raise ValueError(
            f"collect: {path} lacks identity column(s) {missing}; it was written by code "
            "older than the cell-identity contract: rebuild it"
        )
    if "cell" not in frame.columns:  # all_cells.csv already names each row's cell
        frame["cell"] = path.parent.as_posix()
    return frame


def collect(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate per-cell CSV files (metrics.csv, curve.csv, earlystop.csv, ...).

    Every file must carry the identity columns; a ``cell`` column records the folder each
    row came from (for tracing only: nothing is read from it).
    """
    frames = [_read_cell_csv(Path(raw)) for raw in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True, sort=False)


def collect_json(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per set-level JSON result (fid.json), with the identity it records."""
    rows = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise ValueError(f"collect_json: result file not found: {path}")
        record = load_json(path)
        if "identity" not in record:
            raise ValueError(f"collect_json: {path} records no cell identity: rebuild it")
        # Nested values (lists, dicts of device info) do not fit a table cell.
        scalars = (str, int, float, bool, type(None))
        row = {k: v for k, v in record.items() if isinstance(v, scalars)}
        row.update(record["identity"])
        row["cell"] = path.parent.as_posix()
        rows.append(row)
    return pd.DataFrame(rows)


def load_curves(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """DDPM training curves (curve.csv) with the identity of their training cell."""
    curves = collect(paths)
    if not curves.empty and "eval_psnr" not in curves.columns and "ema_psnr_mean" in curves:
        # Sampling uses the EMA weights, so their one-shot PSNR is the convergence measure.
        curves["eval_psnr"] = curves["ema_psnr_mean"]
    return curves


def code_versions(*frames: pd.DataFrame) -> pd.DataFrame:
    """The code versions the cells came from, with how many cells each computed; warns when
    the cells of one summary were computed by different code."""
    parts = [
        f[["cell", *VERSION_COLUMNS]]
        for f in frames
        if not f.empty and set(VERSION_COLUMNS) <= set(f.columns)
    ]
    if not parts:
        return pd.DataFrame(columns=[*VERSION_COLUMNS, "cells"])
    cells = pd.concat(parts).drop_duplicates()
    table = cells.groupby(list(VERSION_COLUMNS)).size().rename("cells").reset_index()
    if len(table) > 1:
        log.warning(
            "cells were computed by %d code versions: %s", len(table), table.to_dict("records")
        )
    return table


# ------------------------------------------------------------------------- summaries


def t_interval(values: Sequence[float] | pd.Series, level: float = 0.95) -> tuple[float, float]:
    """Two-sided t confidence interval of the mean (NaN bounds for fewer than 2 values)."""
    data = pd.Series(values, dtype=float).dropna()
    n = len(data)
    if n < 2:
        return math.nan, math.nan
    # Imported here: the cells import this module, and scipy.stats costs ~1 s per job.
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, n - 1) * data.std(ddof=1) / math.sqrt(n)
    return float(data.mean() - half), float(data.mean() + half)


def check_pooling(group: pd.DataFrame, key: Mapping[str, Any], unit: Sequence[str]) -> None:
    """Raise :class:`PoolingError` when a group holds two rows for the same ``unit`` (image
    and seeds): the group would pool cells that differ in an axis it does not name."""
    unit = [c for c in unit if c in group.columns]
    if not unit or not group.duplicated(unit).any():
        return
    differing = [
        c
        for c in (*grid.IDENTITY_COLUMNS, "cell")
        if c in group.columns and c not in key and group[c].nunique(dropna=False) > 1
    ]
    raise PoolingError(
        f"a table row would pool {len(group)} rows with repeated {unit}: the group "
        f"{dict(key)} mixes cells that differ in {differing or 'no recorded column'}"
    )


def _seed_lists(group: pd.DataFrame) -> dict[str, str]:
    """The seeds a row averages, e.g. ``obs_seeds = "0,1"`` (``none`` where not applicable)."""
    out = {}
    for column in grid.SEED_COLUMNS:
        if column in group.columns:
            values = sorted({str(v) for v in group[column]}, key=_natural)
            out[f"{column}s"] = ",".join(values)
    return out


def _natural(value: Any) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def summarise(
    frame: pd.DataFrame,
    by: Sequence[str],
    value_cols: Sequence[str],
    unit: Sequence[str] = ("image", *grid.SEED_COLUMNS),
) -> pd.DataFrame:
    """Mean, std, n and 95 % t-interval of each value column per group.

    Output columns: the ``by`` columns that exist, the seeds averaged (``obs_seeds``, ...),
    ``n_images``, then ``<value>_mean``, ``_std``, ``_n``, ``_ci_low``, ``_ci_high`` for every
    value column present. Each group must hold one row per ``unit`` (image x seeds, or seeds
    alone for set-level metrics); see :func:`check_pooling`.
    """
    by = [column for column in by if column in frame.columns]
    values = [column for column in value_cols if column in frame.columns]
    seeds = [f"{c}s" for c in grid.SEED_COLUMNS if c in frame.columns]
    stats_columns = [
        f"{v}_{stat}" for v in values for stat in ("mean", "std", "n", "ci_low", "ci_high")
    ]
    out_columns = by + seeds + ["n_images"] * ("image" in frame.columns) + stats_columns
    if frame.empty or not values:
        return pd.DataFrame(columns=out_columns)
    rows = []
    groups = frame.groupby(by, dropna=False, sort=False) if by else [((), frame)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key, strict=True))
        check_pooling(group, row, unit)
        row.update(_seed_lists(group))
        if "image" in group.columns:
            row["n_images"] = int(group["image"].nunique())
        for value in values:
            data = pd.to_numeric(group[value], errors="coerce").dropna()
            low, high = t_interval(data)
            row.update(
                {
                    f"{value}_mean": float(data.mean()) if len(data) else math.nan,
                    f"{value}_std": float(data.std(ddof=1)) if len(data) > 1 else math.nan,
                    f"{value}_n": int(len(data)),
                    f"{value}_ci_low": low,
                    f"{value}_ci_high": high,
                }
            )
        rows.append(row)
    return _sorted(pd.DataFrame(rows, columns=out_columns), by)


def _sorted(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Rows in a stable, readable order: methods in METHOD_ORDER, numbers numerically."""
    if frame.empty:
        return frame
    # Where and what first (purpose, dataset, task, method), then the remaining axes.
    leading = [c for c in ("purpose", "dataset", "task", "method") if c in by]
    keys = [c for c in leading + [c for c in by if c not in leading] if c in frame.columns]

    def order(column: pd.Series) -> pd.Series:
        if column.name == "method":
            rank = {m: i for i, m in enumerate(METHOD_ORDER)}
            return column.map(lambda m: rank.get(str(m), len(rank)))
        return column.map(lambda v: _natural(v))

    return frame.sort_values(keys, key=order, kind="stable").reset_index(drop=True)


def _tag(row: Mapping[str, Any], column: str) -> str | None:
    value = row.get(column, grid.NONE)
    return None if value is None or str(value) == grid.NONE else str(value)


def cell_label(row: Mapping[str, Any]) -> str:
    """A readable name that spells out what tells a row apart (apart from steps, DIP
    iterations and seeds, which tables and figures show as their own axes)."""
    method = str(row.get("method", ""))
    label = METHOD_LABELS.get(method, method)
    details = []
    if _tag(row, "start") == "dip":
        details.append(f"t0={_tag(row, 't0')}")
        if method == "dip-guided":
            details.append(f"lam={_tag(row, 'lam')}")
            if _tag(row, "window") not in (None, "1"):
                details.append(f"window={_tag(row, 'window')}")
        details.append(f"prior {_tag(row, 'arch')}-i{_tag(row, 'iters')}")
    if _tag(row, "k") not in (None, "1"):
        details.append(f"mean of k={_tag(row, 'k')}")
    if details:
        label += f" ({', '.join(details)})"
    if _tag(row, "mode"):
        model = f"{_tag(row, 'mode')}-t{_tag(row, 't_max')}"
        if _tag(row, "ckpt") != _tag(row, "train_steps"):
            model += f" @{_tag(row, 'ckpt')}"
        label += f" · {model} · {_tag(row, 'sampler')} eta={_tag(row, 'eta')}"
    return label


def method_label(method: Any, t0: Any = None) -> str:
    """Readable name of a method; the DIP-started ones carry their start time t0."""
    return cell_label({"method": method, "start": "dip" if t0 is not None else None, "t0": t0})


def with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Add a ``label`` column (cell_label of each row)."""
    frame = frame.copy()
    if frame.empty or "method" not in frame.columns:
        frame["label"] = pd.Series(dtype=str)
        return frame
    frame["label"] = [cell_label(row) for row in frame.to_dict("records")]
    return frame


def _drop_empty_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop columns with no value, or ``none`` in every row (axes no row of it has)."""
    if frame.empty:
        return frame
    empty = [
        c
        for c in frame.columns
        if frame[c].isna().all() or frame[c].astype(str).eq(grid.NONE).all()
    ]
    return frame.drop(columns=empty)


def _restoration(frame: pd.DataFrame, *stages: str) -> pd.DataFrame:
    """Rows of the given stages that measure restoration (generation cells are scored with
    generation metrics only)."""
    if frame.empty or "stage" not in frame.columns:
        return frame.iloc[0:0]
    rows = frame[frame["stage"].isin(stages)]
    return rows[rows["purpose"] == "restoration"] if "purpose" in rows.columns else rows


def _with_label_first(table: pd.DataFrame) -> pd.DataFrame:
    table = with_labels(table)
    leading = ["purpose", "dataset", "task", "label"]
    order = [c for c in leading if c in table.columns]
    return table[order + [c for c in table.columns if c not in order]]


# ---------------------------------------------------------------------------- tables


def with_dip_cost(frame: pd.DataFrame, calibration: Mapping[str, Any]) -> pd.DataFrame:
    """DIP rows with the calibrated cost of DIP alone: iters x seconds per iteration of
    their architecture (the same columns sample rows carry; other rows unchanged)."""
    if frame.empty or "stage" not in frame.columns:
        return frame
    frame = frame.copy()
    dip = frame["stage"] == "dip"
    pairs = frame.loc[dip, ["arch", "iters"]].drop_duplicates()
    for arch, iters in pairs.itertuples(index=False):
        columns = cost.cost_columns(calibration, arch, None, int(iters), 0)
        rows = dip & (frame["arch"] == arch) & (frame["iters"] == iters)
        for name, value in columns.items():
            frame.loc[rows, name] = value
    return frame


def method_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """PSNR/SSIM per restoration cell family: one row per identity without its seeds.
    ``seconds_per_image`` is the calibrated cost (one timing bench, never job wall time)."""
    rows = _restoration(frame, "dip", "ddpm")
    values = ["psnr", "ssim", "nfe", "seconds_per_image", "spread"]
    table = summarise(rows, CELL_KEYS, [v for v in values if v in rows.columns])
    return _drop_empty_columns(_with_label_first(table))


def steps_to_quality_table(frame: pd.DataFrame, target_psnr: float) -> pd.DataFrame:
    """Fewest reverse steps (and NFE) at which each method's mean PSNR reaches the target."""
    rows = _restoration(frame, "ddpm")
    if rows.empty or "steps" not in rows.columns:
        return pd.DataFrame(columns=["label", "target_psnr", "steps_to_target"])
    keys = [k for k in CELL_KEYS if k != "steps"]
    out = []
    for key, group in rows.groupby(keys, dropna=False, sort=False):
        record = dict(zip(keys, key, strict=True))
        group = group.assign(steps=pd.to_numeric(group["steps"]))
        for steps, at_steps in group.groupby("steps"):
            check_pooling(at_steps, {**record, "steps": steps}, ("image", *grid.SEED_COLUMNS))
        curve = group.groupby("steps")["psnr"].mean()
        steps = steps_to_quality(group, target_psnr, x="steps", y="psnr")
        nfe = math.nan
        if "nfe" in group.columns and not math.isnan(steps):
            nfe = float(group.loc[group["steps"] == steps, "nfe"].mean())
        record.update(
            _seed_lists(group),
            n_images=int(group["image"].nunique()),
            target_psnr=target_psnr,
            steps_to_target=steps,
            nfe_to_target=nfe,
            best_psnr=float(curve.max()),
            steps_at_best=float(curve.idxmax()),
        )
        out.append(record)
    table = _sorted(pd.DataFrame(out), keys)
    return _drop_empty_columns(_with_label_first(table))


def fid_table(fid_frame: pd.DataFrame) -> pd.DataFrame:
    """FID/KID per sample-set family: one row per identity without seeds; n = sets."""
    columns = ["label", "fid", "kid_mean", "n_samples", "available", "reason"]
    if fid_frame.empty:
        return pd.DataFrame(columns=columns)
    values = ["fid", "kid_mean", "kid_std", "n_samples"]
    table = summarise(fid_frame, CELL_KEYS, values, unit=grid.SEED_COLUMNS)
    flags = fid_frame.groupby(CELL_KEYS, dropna=False, sort=False).agg(
        available=("available", lambda s: bool(pd.Series(s).astype(bool).all())),
        reason=("reason", lambda s: "; ".join(sorted({str(r) for r in s.dropna() if str(r)}))),
    )
    table = table.merge(flags.reset_index(), on=CELL_KEYS, how="left")
    # Means over sample sets (seeds); the spread that matters is FID's across sets.
    table = table.rename(
        columns={
            "fid_mean": "fid",
            "kid_mean_mean": "kid_mean",
            "kid_std_mean": "kid_std",
            "n_samples_mean": "n_samples",
            "fid_n": "n_sets",
        }
    )
    table = table.drop(
        columns=[
            c
            for c in table.columns
            if c.startswith(("kid_mean_", "kid_std_", "n_samples_", "kid_std_", "kid_mean_"))
        ]
        + ["fid_n"],
        errors="ignore",
    )
    return _drop_empty_columns(_with_label_first(table))


def training_convergence(curves: pd.DataFrame, target_psnr: float) -> pd.DataFrame:
    """Full vs truncated training: steps to reach a target eval PSNR, final loss and speed."""
    columns = [
        "mode",
        "t_max",
        "target_psnr",
        "steps_to_target",
        "final_eval_psnr",
        "final_loss",
        "images_per_s",
        "n_runs",
    ]
    if curves.empty:
        return pd.DataFrame(columns=columns)
    out = []
    for key, group in curves.groupby(TRAIN_KEYS, dropna=False, sort=False):
        record = dict(zip(TRAIN_KEYS, key, strict=True))
        check_pooling(group, record, ("step", "train_seed"))
        evaluated = group.dropna(subset=["eval_psnr"]).groupby("step")["eval_psnr"].mean()
        last_step = group["step"].max()
        record.update(
            train_seeds=",".join(sorted(group["train_seed"].unique(), key=_natural)),
            target_psnr=target_psnr,
            steps_to_target=steps_to_quality(group, target_psnr, x="step", y="eval_psnr"),
            final_eval_psnr=float(evaluated.iloc[-1]) if len(evaluated) else math.nan,
            final_loss=float(group.loc[group["step"] == last_step, "loss"].mean()),
            images_per_s=float(group["images_per_s"].mean()),
            n_runs=int(group["train_seed"].nunique()),
        )
        out.append(record)
    return _sorted(pd.DataFrame(out), TRAIN_KEYS)


def dip_by_architecture(frame: pd.DataFrame) -> pd.DataFrame:
    """DIP final and peak PSNR by architecture and number of iterations."""
    rows = _restoration(frame, "dip")
    keys = ["purpose", "dataset", "task", "arch", "iters"]
    values = ["psnr", "ssim", "peak_psnr", "peak_iter"]
    return _drop_empty_columns(summarise(rows, keys, values))


def earlystop_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """Early-stopping rules: PSNR gap to the oracle stop, iteration gap, hit rate, compute."""
    # gap_plain_db, the primary gap: every rule against the same bound, the oracle stop of
    # the plain fit on the same image, observation and seed. gap_db is to a run's own peak
    # (for a progressive rule that flatters it), kept as a secondary column.
    values = ["psnr", "gap_plain_db", "gap_db", "iter_gap", "within_1db", "extra_compute"]
    keys = [*CELL_KEYS, "run", "rule"]
    return _drop_empty_columns(summarise(frame, keys, values))


def build_tables(
    cells: pd.DataFrame,
    curves: pd.DataFrame | None = None,
    fid: pd.DataFrame | None = None,
    earlystop: pd.DataFrame | None = None,
    target_psnr: float = 25.0,
    target_eval_psnr: float = 20.0,
) -> dict[str, pd.DataFrame]:
    """Every report table, keyed by the names write_report and the figures expect."""
    empty = pd.DataFrame()
    return {
        "method_comparison": method_comparison(cells),
        "steps_to_quality": steps_to_quality_table(cells, target_psnr),
        "fid": fid_table(fid if fid is not None else empty),
        "training_convergence": training_convergence(
            curves if curves is not None else empty, target_eval_psnr
        ),
        "dip_by_architecture": dip_by_architecture(cells),
        "earlystop": earlystop_comparison(earlystop if earlystop is not None else empty),
    }


# --------------------------------------------------------------------------- writers


def to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """Markdown table with fixed precision; NaN shows as an em dash, not 'nan'."""
    if frame.empty:
        return "_No rows._"
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            finite = shown[column].dropna()
            # Integer-valued parameters (steps, iters) turn float once a NaN joins them.
            spec = ".0f" if len(finite) and (finite == finite.round()).all() else f".{digits}f"
            shown[column] = shown[column].map(lambda v, s=spec: "—" if pd.isna(v) else f"{v:{s}}")
        else:
            shown[column] = shown[column].map(lambda v: "—" if _is_missing(v) else v)
    return shown.to_markdown(index=False)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def write_table(frame: pd.DataFrame, stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` atomically; return both paths."""
    stem = Path(stem)
    csv_path, md_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    save_csv(csv_path, frame)
    with atomic_path(md_path) as tmp:
        tmp.write_text(to_markdown(frame) + "\n")
    return csv_path, md_path


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: str | os.PathLike) -> list[Path]:
    """Write every table as CSV + Markdown under ``out_dir``; return the written paths."""
    written: list[Path] = []
    for name, frame in tables.items():
        written.extend(write_table(frame, Path(out_dir) / name))
    return written


def write_all_cells(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """``all_cells.csv``: one row per cell x image, identity columns first."""
    order = [c for c in ("stage", *grid.IDENTITY_COLUMNS, "image") if c in frame.columns]
    save_csv(path, frame[order + [c for c in frame.columns if c not in order]])
