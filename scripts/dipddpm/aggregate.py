"""Collect per-cell result files and turn them into the comparison tables.

Every evaluated cell writes a ``metrics.csv`` (one row per image, one column per cell
parameter); :func:`collect` stacks them into ``all_cells.csv`` and the table builders
below reduce that frame to the tables of the report. Summaries carry the mean, standard
deviation, count and a 95 % t-interval over all rows of a group (images x seeds).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from dipddpm.io import atomic_path, load_json, save_csv
from dipddpm.metrics import steps_to_quality

METHOD_LABELS = {
    "dip": "DIP alone",
    "ddpm-noise": "DDPM from noise",
    "ddpm-obs": "DDPM from observation",
    "dip+ddpm": "DIP+DDPM",
    "dip-guided": "DIP-guided",
}
METHOD_ORDER = list(METHOD_LABELS)
ParamSource = Mapping[str, Any] | Sequence[Mapping[str, Any]] | Callable[[Path], Mapping]


# --------------------------------------------------------------------------- loading


def params_from_path(path: str | os.PathLike) -> dict[str, str]:
    """Cell parameters encoded in folder names of ``path``: ``key~value`` (Snakemake's
    Paramspace style, what the pipeline writes) or ``key=value`` (hive style)."""
    params = {}
    for part in Path(path).parts:
        for separator in ("~", "="):
            key, sep, value = part.partition(separator)
            if sep and key:
                params[key] = value
                break
    return params


def _cell_params(path: Path, params: ParamSource | None, index: int) -> dict[str, Any]:
    found = params_from_path(path.parent)
    sidecar = path.parent / "params.json"
    if sidecar.is_file():
        found.update(load_json(sidecar))
    if callable(params):
        found.update(params(path))
    elif isinstance(params, Mapping):
        found.update(params)
    elif params is not None:
        found.update(params[index])
    return found


def _with_params(frame: pd.DataFrame, params: Mapping[str, Any], path: Path) -> pd.DataFrame:
    """Add cell parameters as constant columns; values the file already has win."""
    frame = frame.copy()
    scalars = (str, int, float, bool, type(None))  # nested sidecar values do not fit a cell
    for key, value in params.items():
        if key not in frame.columns and isinstance(value, scalars):
            frame[key] = value
    frame["cell"] = str(path.parent)
    return frame


def _numeric_where_possible(frame: pd.DataFrame) -> pd.DataFrame:
    # Parameters parsed from paths arrive as strings; "0.3" and 0.3 must group together.
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
            converted = pd.to_numeric(frame[column], errors="coerce")
            if converted.notna().sum() == frame[column].notna().sum():
                frame[column] = converted
    return frame


def collect(paths: Iterable[str | os.PathLike], params: ParamSource | None = None) -> pd.DataFrame:
    """Concatenate per-cell CSV files (metrics.csv, trajectory.csv, earlystop.csv, ...).

    Columns are the union over all files; a parameter a cell lacks is NaN there. Cell
    parameters not already in a file are added from ``key=value`` folder names, a
    ``params.json`` next to the file, and ``params`` (one mapping for all files, a list
    aligned with ``paths`` or a callable path -> mapping), later sources winning.
    A ``cell`` column records the folder each row came from.
    """
    frames = []
    for index, raw in enumerate(paths):
        path = Path(raw)
        if not path.is_file():
            raise ValueError(f"collect: result file not found: {path}")
        try:
            frame = pd.read_csv(path)
        except pd.errors.EmptyDataError as error:
            raise ValueError(f"collect: result file is empty: {path}") from error
        frames.append(_with_params(frame, _cell_params(path, params, index), path))
    if not frames:
        return pd.DataFrame()
    return _numeric_where_possible(pd.concat(frames, ignore_index=True, sort=False))


def collect_json(
    paths: Iterable[str | os.PathLike], params: ParamSource | None = None
) -> pd.DataFrame:
    """One row per JSON result file (e.g. fid.json), with cell parameters as for collect."""
    rows = []
    for index, raw in enumerate(paths):
        path = Path(raw)
        if not path.is_file():
            raise ValueError(f"collect_json: result file not found: {path}")
        # Nested values (lists, dicts of device info) do not fit a table cell.
        scalars = (str, int, float, bool, type(None))
        record = {k: v for k, v in load_json(path).items() if isinstance(v, scalars)}
        for key, value in _cell_params(path, params, index).items():
            record.setdefault(key, value)
        record["cell"] = str(path.parent)
        rows.append(record)
    return _numeric_where_possible(pd.DataFrame(rows))


def load_curves(
    paths: Iterable[str | os.PathLike], params: ParamSource | None = None
) -> pd.DataFrame:
    """DDPM training curves (curve.csv) with the ``mode`` and ``t_max`` of their cell."""
    curves = collect(paths, params)
    if not curves.empty and "eval_psnr" not in curves.columns and "ema_psnr_mean" in curves:
        # Sampling uses the EMA weights, so their one-shot PSNR is the convergence measure.
        curves["eval_psnr"] = curves["ema_psnr_mean"]
    for column in ("mode", "t_max"):
        if not curves.empty and column not in curves.columns:
            raise ValueError(
                f"load_curves: cell parameter {column!r} unknown; pass it via params, "
                "params.json or a '{column}=...' folder name"
            )
    return curves


# ------------------------------------------------------------------------- summaries


def t_interval(values: Sequence[float] | pd.Series, level: float = 0.95) -> tuple[float, float]:
    """Two-sided t confidence interval of the mean (NaN bounds for fewer than 2 values)."""
    data = pd.Series(values, dtype=float).dropna()
    n = len(data)
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, n - 1) * data.std(ddof=1) / math.sqrt(n)
    return float(data.mean() - half), float(data.mean() + half)


def summarise(frame: pd.DataFrame, by: Sequence[str], value_cols: Sequence[str]) -> pd.DataFrame:
    """Mean, std, n and 95 % t-interval of each value column per group.

    Output columns: the ``by`` columns that exist, then ``<value>_mean``, ``_std``,
    ``_n``, ``_ci_low``, ``_ci_high`` for every value column present in ``frame``.
    Missing group keys (NaN) form their own group instead of being dropped.
    """
    by = [column for column in by if column in frame.columns]
    values = [column for column in value_cols if column in frame.columns]
    out_columns = by + [
        f"{v}_{stat}" for v in values for stat in ("mean", "std", "n", "ci_low", "ci_high")
    ]
    if frame.empty or not values:
        return pd.DataFrame(columns=out_columns)
    rows = []
    groups = frame.groupby(by, dropna=False, sort=True) if by else [((), frame)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key, strict=True))
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
    return pd.DataFrame(rows, columns=out_columns)


def method_label(method: Any, t0: Any = None) -> str:
    """Readable name of a method; the DIP-started ones carry their start time t0."""
    label = METHOD_LABELS.get(str(method), str(method))
    if str(method) in ("dip+ddpm", "dip-guided") and t0 is not None and not pd.isna(t0):
        return f"{label} (t0={t0:g})" if isinstance(t0, int | float) else f"{label} (t0={t0})"
    return label


def with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``label`` (method_label) and ``method_rank`` (fixed method order) columns."""
    frame = frame.copy()
    if frame.empty or "method" not in frame.columns:
        frame["label"] = pd.Series(dtype=str)
        frame["method_rank"] = pd.Series(dtype=float)
        return frame
    t0 = frame["t0"] if "t0" in frame.columns else pd.Series([None] * len(frame), frame.index)
    frame["label"] = [method_label(m, t) for m, t in zip(frame["method"], t0, strict=True)]
    rank = {method: i for i, method in enumerate(METHOD_ORDER)}
    frame["method_rank"] = frame["method"].map(lambda m: rank.get(str(m), len(rank)))
    return frame


def _drop_empty_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.dropna(axis=1, how="all") if not frame.empty else frame


def _by_stage(frame: pd.DataFrame, *stages: str) -> pd.DataFrame:
    if frame.empty or "stage" not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame["stage"].isin(stages)]


# ---------------------------------------------------------------------------- tables


def method_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """PSNR/SSIM of DIP alone, DDPM from noise/observation, DIP+DDPM per t0, DIP-guided."""
    rows = with_labels(_by_stage(frame, "dip", "ddpm"))
    keys = ["dataset", "task", "method_rank", "t0", "label", "arch", "iters", "steps"]
    table = summarise(rows, keys, ["psnr", "ssim", "nfe", "seconds"])
    return _drop_empty_columns(table.drop(columns=["method_rank"], errors="ignore"))


def steps_to_quality_table(frame: pd.DataFrame, target_psnr: float) -> pd.DataFrame:
    """Fewest reverse steps (and NFE) at which each method's mean PSNR reaches the target."""
    rows = with_labels(_by_stage(frame, "ddpm"))
    columns = ["dataset", "task", "label", "target_psnr", "steps_to_target", "nfe_to_target",
               "best_psnr", "steps_at_best"]  # fmt: skip
    if rows.empty or "steps" not in rows.columns:
        return pd.DataFrame(columns=columns)
    keys = [k for k in ("dataset", "task", "method_rank", "t0", "label") if k in rows.columns]
    out = []
    for key, group in rows.groupby(keys, dropna=False, sort=True):
        record = dict(zip(keys, key, strict=True))
        curve = group.groupby("steps")["psnr"].mean()
        steps = steps_to_quality(group, target_psnr, x="steps", y="psnr")
        nfe = math.nan
        if "nfe" in group.columns and not math.isnan(steps):
            nfe = float(group.loc[group["steps"] == steps, "nfe"].mean())
        record.update(
            target_psnr=target_psnr,
            steps_to_target=steps,
            nfe_to_target=nfe,
            best_psnr=float(curve.max()),
            steps_at_best=float(curve.idxmax()),
        )
        out.append(record)
    table = pd.DataFrame(out).drop(columns=["method_rank", "t0"], errors="ignore")
    return _drop_empty_columns(table[[c for c in columns if c in table.columns]])


def fid_table(fid_frame: pd.DataFrame) -> pd.DataFrame:
    """FID/KID by method and number of reverse steps (mean over seeds when repeated)."""
    columns = ["dataset", "label", "steps", "fid", "kid_mean", "kid_std", "n_samples",
               "kid_subset_size", "available", "reason"]  # fmt: skip
    if fid_frame.empty:
        return pd.DataFrame(columns=columns)
    rows = with_labels(fid_frame)
    keys = [k for k in ("dataset", "method_rank", "t0", "label", "steps") if k in rows.columns]
    numeric = [c for c in ("fid", "kid_mean", "kid_std", "n_samples", "kid_subset_size")
               if c in rows.columns]  # fmt: skip
    agg: dict[str, Any] = {c: "mean" for c in numeric}
    if "available" in rows.columns:
        agg["available"] = lambda s: bool(pd.Series(s).astype(bool).all())
    if "reason" in rows.columns:
        agg["reason"] = lambda s: "; ".join(sorted({str(r) for r in s.dropna() if str(r)}))
    table = rows.groupby(keys, dropna=False, sort=True).agg(agg).reset_index()
    return table[[c for c in columns if c in table.columns]]


def training_convergence(curves: pd.DataFrame, target_psnr: float) -> pd.DataFrame:
    """Full vs truncated training: steps to reach a target eval PSNR, final loss and speed."""
    columns = ["mode", "t_max", "target_psnr", "steps_to_target", "final_eval_psnr",
               "final_loss", "images_per_s", "n_runs"]  # fmt: skip
    if curves.empty:
        return pd.DataFrame(columns=columns)
    keys = [k for k in ("dataset", "mode", "t_max") if k in curves.columns]
    out = []
    for key, group in curves.groupby(keys, dropna=False, sort=True):
        record = dict(zip(keys, key, strict=True))
        evaluated = group.dropna(subset=["eval_psnr"]).groupby("step")["eval_psnr"].mean()
        last_step = group["step"].max()
        record.update(
            target_psnr=target_psnr,
            steps_to_target=steps_to_quality(group, target_psnr, x="step", y="eval_psnr"),
            final_eval_psnr=float(evaluated.iloc[-1]) if len(evaluated) else math.nan,
            final_loss=float(group.loc[group["step"] == last_step, "loss"].mean()),
            images_per_s=float(group["images_per_s"].mean()),
            n_runs=int(group["cell"].nunique()) if "cell" in group.columns else 1,
        )
        out.append(record)
    order = [k for k in keys if k not in columns] + columns
    return pd.DataFrame(out)[order]


def dip_by_architecture(frame: pd.DataFrame) -> pd.DataFrame:
    """DIP final and peak PSNR by architecture and number of iterations."""
    rows = _by_stage(frame, "dip")
    keys = ["dataset", "task", "arch", "iters"]
    return _drop_empty_columns(summarise(rows, keys, ["psnr", "ssim", "peak_psnr", "peak_iter"]))


def earlystop_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """Early-stopping rules: PSNR gap to the oracle stop, iteration gap, hit rate, compute."""
    # gap_plain_db: every rule against the same bound, the oracle stop of the plain fit
    # (a progressive rule's gap_db is to its own run's peak, which would flatter it).
    values = ["psnr", "gap_plain_db", "gap_db", "iter_gap", "within_1db", "extra_compute"]
    values = [v for v in values if v in frame.columns]
    # The ablation axes (schedule, K, sigma_max, architecture) stay apart.
    axes = ["dataset", "task", "arch", "schedule", "stages", "smax", "rule"]
    keys = [k for k in axes if k in frame.columns]
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
    """``all_cells.csv``: one row per cell x image, parameter columns first."""
    leading = ["stage", "dataset", "task", "method", "arch", "iters", "seed", "t0", "steps"]
    order = [c for c in leading if c in frame.columns]
    save_csv(path, frame[order + [c for c in frame.columns if c not in order]])
