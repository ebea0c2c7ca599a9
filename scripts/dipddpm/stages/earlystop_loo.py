"""Example 2 made fair: the post-hoc stopping rules tuned leave-one-image-out on the plain
DIP trajectories of every early-stopping cell, and scored against the plain-DIP oracle.

A case is one image (a crop of a photo) under one observation (dataset, task, noise seed),
architecture and DIP seed. Cells that differ only in the progressive variant's settings
share that plain fit (same seeds, same settings); the longest of their trajectories stands
for it, so every case is counted once. The unit held out is the photo: crops of one photo
share its content, so a setting tuned on one crop and scored on another of the same photo
would be scored on what it was tuned on. Every photo is held out in turn
(``loo.leave_one_image_out``): every image is an evaluation image.

Tables (one file each, paths from the rule):

``cases``            every case at the setting chosen without its photo, the oracle's rows
                     and the progressive variants' (``loo.leave_one_image_out``'s columns)
``summary``          per rule: ``loo.summarise_rules``'s columns, ``tuned`` and ``settings``
                     (the settings used, with the number of held-out photos each)
``summary_by_task``  the same per task (noise level), at the settings chosen over all tasks
``comparisons``      every rule against ES-WMV (untuned and tuned) and the oracle, paired on
                     the cases, resampled over photos, one Holm family (``loo.compare_rules``)
``choices``          per tuned rule and held-out photo: the setting chosen on the other
                     photos and its mean gap there
``plain_peaks``      per cell and image: the plain fit's PSNR peak, the iteration it ran to
                     and ``hit_cap`` (the cap came before peak + run_past_peak; empty for a
                     fixed-length fit)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import grid
from ..data import crop_name
from ..earlystop.loo import (
    ORACLE,
    RuleGrid,
    compare_rules,
    grid_settings,
    leave_one_image_out,
    score_candidates,
    setting_label,
    summarise_rules,
)
from ..earlystop.past_peak import PEAK_COLUMNS, peak_summary
from ..io import load_json, save_csv

log = logging.getLogger("dipddpm")

# What names one plain fit; the case adds the image.
PLAIN_FIT_COLUMNS = ["dataset", "task", "obs_seed", "arch", "dip_seed"]
GROUP = "photo"
CASE_COLUMNS = [*PLAIN_FIT_COLUMNS, GROUP, "name"]
SIGMA_COLUMN = "sigma_task"
# ES-WMV at the configured window and patience (the paper's 100 / 1000 in paper.yaml),
# never tuned: the reference a tuned rule has to beat.
UNTUNED_ES_WMV = "es_wmv_untuned"
TUNED_ES_WMV = "es_wmv"
# The trajectory columns the rules and the oracle read, besides every wmv_<W>.
TRAJECTORY_COLUMNS = ["image", "iteration", "loss", "psnr_clean_ema", "wmv", "elapsed_s"]
PEAK_TABLE_COLUMNS = [
    *grid.EARLYSTOP.axes,
    *PEAK_COLUMNS[:1],
    "name",
    GROUP,
    *PEAK_COLUMNS[1:],
    "run_past_peak",
    "max_iters",
]


@dataclass(frozen=True)
class LooCell:
    """One early-stopping cell as the summary reads it: its identity, plain trajectory,
    table, run record (``params.json``'s ``info``) and its observation's image names and
    noise std (range 1)."""

    identity: dict[str, str]
    trajectory: pd.DataFrame
    table: pd.DataFrame
    info: dict
    names: list[str]
    sigma: float

    @property
    def plain_fit(self) -> tuple[str, ...]:
        return tuple(self.identity[c] for c in PLAIN_FIT_COLUMNS)

    @property
    def last_iter(self) -> int:
        return int(self.trajectory["iteration"].max())


def summarise_earlystop_loo(
    trajectories: Sequence[str],
    tables: Sequence[str],
    cell_params: Sequence[str],
    observations: Sequence[str],
    settings: Mapping,
    out_cases,
    out_summary,
    out_summary_by_task,
    out_comparisons,
    out_choices,
    out_plain_peaks,
) -> None:
    """Every table of the module docstring from the cells' ``trajectory.csv``,
    ``earlystop.csv`` and ``params.json`` (aligned lists) and their observations'
    ``params.json``. ``settings``: the early-stopping keys the candidate grids come from
    (``rule_grids``)."""
    cells = load_cells(trajectories, tables, cell_params, observations)
    peaks = plain_peaks(cells)
    capped = peaks["hit_cap"].eq(True).sum()
    log.info("%d cells; %d of %d images hit the cap", len(cells), capped, len(peaks))
    scores = score_candidates(
        plain_trajectories(cells),
        rule_grids(settings),
        CASE_COLUMNS,
        sigma_column=SIGMA_COLUMN,
        wmv_window=int(settings["wmv_window"]),
    )
    results = leave_one_image_out(scores, group=GROUP)
    results = pd.concat([results, progressive_rows(cells, scores)], ignore_index=True)
    log.info("%d cases, %d photos held out in turn", _n_cases(scores), scores[GROUP].nunique())
    save_csv(out_cases, results)
    save_csv(out_summary, rule_summary(results))
    save_csv(out_summary_by_task, summary_by_task(results))
    save_csv(out_comparisons, rule_comparisons(results))
    save_csv(out_choices, chosen_settings(results))
    save_csv(out_plain_peaks, peaks)


# ------------------------------------------------------------------------------ inputs


def load_cells(
    trajectories: Sequence[str],
    tables: Sequence[str],
    cell_params: Sequence[str],
    observations: Sequence[str],
) -> list[LooCell]:
    """The cells, each with its observation found by the grid's path for it."""
    by_path = {str(path): load_json(path) for path in observations}
    cells = []
    for trajectory, table, params in zip(trajectories, tables, cell_params, strict=True):
        record = load_json(params)
        identity = grid.EARLYSTOP.identity(record)
        observation = by_path[grid.OBSERVATION.path(grid.observation_of(identity), "params.json")]
        if observation["kind"] != "denoise":
            raise ValueError(f"early stopping needs a denoising task; {identity} is not one")
        cells.append(
            LooCell(
                identity=identity,
                trajectory=pd.read_csv(trajectory),
                table=pd.read_csv(table),
                info=record["info"],
                names=[str(n) for n in observation["names"]],
                sigma=float(observation["sigma"]) / 255.0,
            )
        )
    return cells


def photo_of(name: str) -> str:
    """The photo a crop was cut from (the inverse of ``data.crop_name``); an image that is
    no crop is its own photo."""
    photo, mark, index = name.rpartition("#crop")
    if mark and index.isdigit() and crop_name(photo, int(index)) == name:
        return photo
    return name


def plain_trajectories(cells: Sequence[LooCell]) -> pd.DataFrame:
    """One trajectory per case, with its case columns and noise std: per plain fit, the
    longest run among the cells sharing it (the others are the same fit stopped sooner)."""
    longest: dict[tuple[str, ...], LooCell] = {}
    for cell in cells:
        kept = longest.get(cell.plain_fit)
        if kept is None or cell.last_iter > kept.last_iter:
            longest[cell.plain_fit] = cell
    return pd.concat([case_trajectory(cell) for cell in longest.values()], ignore_index=True)


def case_trajectory(cell: LooCell) -> pd.DataFrame:
    traj = cell.trajectory
    wmv = [c for c in traj.columns if c.startswith("wmv_")]
    frame = traj[[c for c in TRAJECTORY_COLUMNS if c in traj.columns] + wmv].copy()
    return with_case_columns(frame, cell)


def with_case_columns(frame: pd.DataFrame, cell: LooCell) -> pd.DataFrame:
    """``frame`` (one row per image index ``image``) with the case columns and sigma."""
    names = np.asarray(cell.names)[frame["image"].to_numpy(dtype=int)]
    frame = frame.assign(name=names, **{GROUP: [photo_of(n) for n in names]})
    frame = frame.assign(**{c: cell.identity[c] for c in PLAIN_FIT_COLUMNS})
    return frame.assign(**{SIGMA_COLUMN: cell.sigma})


# ------------------------------------------------------------------------------- grids


def rule_grids(settings: Mapping) -> list[RuleGrid]:
    """Fixed budgets (``budgets``), the discrepancy principle (``loo_taus``) and ES-WMV
    (every recorded window, ``wmv_window`` and ``wmv_windows``, x ``loo_patiences``), all
    tuned; and ES-WMV at ``wmv_window`` and ``wmv_patience``, untuned."""
    windows = sorted({int(settings["wmv_window"]), *map(int, settings["wmv_windows"])})
    untuned = {"wmv_window": int(settings["wmv_window"]), "patience": int(settings["wmv_patience"])}
    return [
        RuleGrid("fixed", "fixed", tuple({"budgets": [int(b)]} for b in settings["budgets"])),
        RuleGrid(
            "discrepancy",
            "discrepancy",
            grid_settings(tau=[float(t) for t in settings["loo_taus"]]),
        ),
        RuleGrid(
            TUNED_ES_WMV,
            "es_wmv",
            grid_settings(wmv_window=windows, patience=[int(p) for p in settings["loo_patiences"]]),
        ),
        RuleGrid(UNTUNED_ES_WMV, "es_wmv", (untuned,), tuned=False),
    ]


# ------------------------------------------------------------------ progressive variant


def progressive_rows(cells: Sequence[LooCell], scores: pd.DataFrame) -> pd.DataFrame:
    """Each cell's progressive rule (its primary stop) as an untuned rule of its own,
    named by its settings and scored against the case's plain oracle like every rule."""
    oracle = _case_oracles(scores)
    show_patience = patiences_differ(cell.identity for cell in cells)
    frames = [_progressive_frame(cell, show_patience) for cell in cells]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True).merge(oracle, on=CASE_COLUMNS, how="inner")
    rows["gap_plain_db"] = rows["oracle_psnr"] - rows["psnr"]
    return rows


def _case_oracles(scores: pd.DataFrame) -> pd.DataFrame:
    first = scores[scores["setting_index"] == 0].drop_duplicates(CASE_COLUMNS)
    return first[[*CASE_COLUMNS, "oracle_iter", "oracle_psnr", "last_iter"]]


def _progressive_frame(cell: LooCell, show_patience: bool) -> pd.DataFrame:
    table = cell.table
    mine = table[(table["run"] == "progressive") & (table["rule"] == "progressive")]
    frame = mine[["image", "stop_iter", "decision_iter", "psnr", "gap_db"]].copy()
    frame = with_case_columns(frame, cell).drop(columns=["image", SIGMA_COLUMN])
    frame = frame.assign(
        rule=progressive_rule(cell.identity, show_patience),
        setting=progressive_setting(cell.identity, show_patience),
        setting_index=0,
        tuned=False,
        train_objective=math.nan,
    )
    # The batch's seconds at the stop, prorated over its iterations: what elapsed_s gives
    # a plain rule (a batched fit's clock at that iteration).
    per_iter = cell.info.get("progressive_seconds", math.nan) / cell.info.get(
        "progressive_iters", math.nan
    )
    frame["seconds_to_stop"] = frame["stop_iter"] * per_iter
    frame["seconds_to_decision"] = frame["decision_iter"] * per_iter
    return frame


def patiences_differ(identities: Iterable[Mapping[str, str]]) -> bool:
    """Whether the cells ran more than one stage patience: only then do the progressive
    rules' names spell it, so a run of one patience keeps the names it had before the
    patience was an axis, and cells of two patiences are never pooled under one name."""
    return len({identity["stage_patience"] for identity in identities}) > 1


def progressive_rule(identity: Mapping[str, str], show_patience: bool = False) -> str:
    """The progressive rule's name in the tables, e.g. ``progressive geometric K=5
    smax=50`` (with `` spat=20`` when ``show_patience``: see ``patiences_differ``)."""
    name = (
        f"progressive {identity['es_schedule']} K={identity['stages']} smax={identity['sigma_max']}"
    )
    return f"{name} spat={identity['stage_patience']}" if show_patience else name


def progressive_setting(identity: Mapping[str, str], show_patience: bool = False) -> str:
    setting = {
        "schedule": identity["es_schedule"],
        "stages": identity["stages"],
        "sigma_max": identity["sigma_max"],
    }
    if show_patience:
        setting["stage_patience"] = identity["stage_patience"]
    return setting_label(setting)


# ------------------------------------------------------------------------------ tables


def rule_summary(results: pd.DataFrame) -> pd.DataFrame:
    """``summarise_rules`` per rule, with whether it is tuned and the settings it used."""
    summary = summarise_rules(results, group=GROUP)
    first = results.drop_duplicates("rule").set_index("rule")
    summary.insert(1, "tuned", summary["rule"].map(first["tuned"]).astype(bool))
    summary.insert(2, "settings", summary["rule"].map(lambda r: settings_used(results, r)))
    return summary


def settings_used(results: pd.DataFrame, rule: str) -> str:
    """``setting (n/N photos)`` for each setting a rule was held out at, most used first."""
    per_photo = results[results["rule"] == rule].drop_duplicates(GROUP)
    counts = per_photo["setting"].fillna("").value_counts(sort=True)
    total = len(per_photo)
    return "; ".join(f"{s or '-'} ({n}/{total} photos)" for s, n in counts.items())


def summary_by_task(results: pd.DataFrame) -> pd.DataFrame:
    frames = [
        summarise_rules(rows, group=GROUP).assign(task=task)
        for task, rows in results.groupby("task", sort=True)
    ]
    frame = pd.concat(frames, ignore_index=True)
    return frame[["task", *[c for c in frame.columns if c != "task"]]]


def rule_comparisons(results: pd.DataFrame) -> pd.DataFrame:
    """Every rule against untuned ES-WMV, tuned ES-WMV and the oracle (one Holm family)."""
    return compare_rules(
        results, CASE_COLUMNS, references=(UNTUNED_ES_WMV, TUNED_ES_WMV, ORACLE), group=GROUP
    )


def chosen_settings(results: pd.DataFrame) -> pd.DataFrame:
    tuned = results[results["tuned"].astype(bool)]
    chosen = tuned.drop_duplicates(["rule", GROUP])
    return chosen[["rule", GROUP, "setting", "train_objective"]].reset_index(drop=True)


def plain_peaks(cells: Sequence[LooCell]) -> pd.DataFrame:
    """Per cell and image: where its plain fit peaked, how far it ran and whether the cap
    came first. A fixed-length fit has no patience to have run out of: hit_cap is empty."""
    frames = []
    for cell in cells:
        recorded = cell.info.get("plain_past_peak")
        if recorded is None:
            peaks = peak_summary(cell.trajectory, 0).assign(
                hit_cap=pd.NA, run_past_peak=pd.NA, max_iters=pd.NA
            )
        else:
            peaks = pd.DataFrame(recorded["images"])[PEAK_COLUMNS].assign(
                run_past_peak=recorded["patience"], max_iters=recorded["max_iters"]
            )
        peaks = peaks.assign(**cell.identity)
        names = [cell.names[i] for i in peaks["image"]]
        frames.append(peaks.assign(name=names, **{GROUP: [photo_of(n) for n in names]}))
    return pd.concat(frames, ignore_index=True)[PEAK_TABLE_COLUMNS]


def _n_cases(scores: pd.DataFrame) -> int:
    return len(scores.drop_duplicates(CASE_COLUMNS))
