"""Leave-one-image-out tuning of the post-hoc stopping rules, and the per-rule summary.

Every post-hoc rule has a small grid of candidate settings (``RuleGrid``; e.g. ES-WMV's
window x patience). ``score_candidates`` evaluates every candidate of every grid on each
case's plain-DIP trajectory (a case: one image, crop, noise level and seed), all from the
same trajectory frame. ``leave_one_image_out`` then picks, for each held-out image, the
setting with the best mean objective (default: the smallest gap to the plain-DIP oracle)
over the OTHER images only, and reports the held-out image's cases at that setting. So every
image is an evaluation image and no number comes from the data its setting was tuned on. A
grid with ``tuned=False`` (ES-WMV with its paper parameters, W = 100 and P = 1000) has one
setting and is reported as it is.

Every rule and the oracle read the same PSNR column, the EMA output's (``psnr_clean_ema``),
like the cell's plain rows. Columns of a scored row: the case columns, ``rule`` (the grid's
name), ``setting`` (``key=value`` pairs), ``setting_index``, ``tuned``, ``stop_iter``,
``decision_iter``, ``psnr``, ``oracle_iter``, ``oracle_psnr``, ``last_iter`` (the
trajectory's), ``gap_plain_db`` (to the
plain-DIP oracle of the same case: the primary gap), ``gap_db`` (to the run's own peak; the
same on the plain run) and, when the trajectory has ``elapsed_s``, ``seconds_to_stop`` and
``seconds_to_decision``.

``summarise_rules`` gives per rule the mean gap to the oracle, the gap to the run's own
peak, the share of cases within 0.5 dB and 1 dB of the oracle and the stop iteration;
``compare_rules`` the paired differences between rules, averaged within each image and
bootstrapped over images (``stats.paired_comparison``), with the minimum detectable
difference where n is too small for significance. Both also read the rows of a training
variant (a cell table's ``gap_db`` and ``gap_plain_db``) given the same case columns.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from .. import stats
from ..dip.defaults import DIP_DEFAULTS
from .baselines import oracle_stop
from .registry import POSTHOC_RULES, RULE_COLUMNS, merge_params
from .table import baseline_defaults

ES_WMV_PAPER = {"wmv_window": 100, "patience": 1000}
ES_WMV_WINDOWS = (50, 100, 200)
ES_WMV_PATIENCES = (200, 500, 1000)
WITHIN_DB = (0.5, 1.0)
PSNR_COLUMN = "psnr_clean_ema"
# Objectives a setting can be tuned on, and whether a smaller value is the better one.
OBJECTIVES = {"gap_plain_db": True, "gap_db": True, "psnr": False}
# Metrics compared by compare_rules where a smaller value is the better one.
LOWER_IS_BETTER = ("gap_plain_db", "gap_db", "stop_iter", "seconds_to_stop")
ORACLE = "oracle"


# --------------------------------------------------------------------------- the grids


@dataclass(frozen=True)
class RuleGrid:
    """Candidate settings of one registered post-hoc rule, reported as ``name``.

    ``rule``: a ``POSTHOC_RULES`` name; ``settings``: ``baseline_params`` overrides, one
    dict per candidate (``fixed`` takes one budget each: ``{"budgets": [500]}``);
    ``tuned=False``: a single fixed setting, never tuned.
    """

    name: str
    rule: str
    settings: tuple[Mapping[str, object], ...] = field(default_factory=tuple)
    tuned: bool = True

    def __post_init__(self) -> None:
        if self.rule not in POSTHOC_RULES:
            raise ValueError(
                f"grid {self.name!r}: unknown post-hoc rule {self.rule!r}; "
                f"registered: {list(POSTHOC_RULES)}"
            )
        if not self.settings:
            raise ValueError(f"grid {self.name!r} has no settings")
        if not self.tuned and len(self.settings) != 1:
            raise ValueError(
                f"grid {self.name!r} is untuned and must have one setting; got {len(self.settings)}"
            )
        if self.name == ORACLE:
            raise ValueError(f"grid name {ORACLE!r} is reserved for the oracle rows")
        for setting in self.settings:
            merge_params(f"grid {self.name!r} setting", setting, baseline_defaults())


def grid_settings(**axes: Sequence[object]) -> tuple[dict[str, object], ...]:
    """Every combination of the ``axes`` values, e.g. ``grid_settings(wmv_window=(50, 100),
    patience=(200, 500))``: four settings, the last axis varying fastest."""
    names = list(axes)
    return tuple(
        dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())
    )


def default_grids(
    budgets: Sequence[int],
    taus: Sequence[float],
    windows: Sequence[int] = ES_WMV_WINDOWS,
    patiences: Sequence[int] = ES_WMV_PATIENCES,
) -> list[RuleGrid]:
    """The study's grids: fixed budgets, the discrepancy principle's tau, ES-WMV's window x
    patience (all tuned) and ES-WMV with its paper parameters (``es_wmv_paper``, untuned)."""
    return [
        RuleGrid("fixed", "fixed", tuple({"budgets": [int(b)]} for b in budgets)),
        RuleGrid("discrepancy", "discrepancy", grid_settings(tau=[float(t) for t in taus])),
        RuleGrid("es_wmv", "es_wmv", grid_settings(wmv_window=windows, patience=patiences)),
        RuleGrid("es_wmv_paper", "es_wmv", (dict(ES_WMV_PAPER),), tuned=False),
    ]


def setting_label(setting: Mapping[str, object]) -> str:
    """``key=value`` pairs in key order, e.g. ``patience=200 wmv_window=50``."""

    def spell(value: object) -> str:
        if isinstance(value, list | tuple):
            return ",".join(spell(v) for v in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    return " ".join(f"{key}={spell(setting[key])}" for key in sorted(setting))


# ------------------------------------------------------------------------ scoring cases


def rule_view(
    traj: pd.DataFrame, rule: str, params: Mapping[str, object], wmv_window: int
) -> pd.DataFrame:
    """The columns ``rule`` may read. ES-WMV's ``wmv`` is the ``wmv_<W>`` column for the
    setting's window W, or ``wmv`` itself when the fit recorded it with window W. One fit
    records every window of a grid: ``fit_dip(..., wmv_windows=ES_WMV_WINDOWS)`` (the
    cell's ``baseline_params`` key ``wmv_windows``); ``wmv_<W>`` equals ``wmv`` bit for bit
    where W is the fit's ``wmv_window``."""
    columns = list(RULE_COLUMNS[rule])
    if "wmv" not in columns:
        return traj[columns]
    window = int(params["wmv_window"])
    source = f"wmv_{window}"
    if source not in traj.columns:
        if window != wmv_window or "wmv" not in traj.columns:
            raise ValueError(
                f"ES-WMV with wmv_window={window} needs a trajectory column {source!r} "
                f"(its 'wmv' column has window {wmv_window}); has {list(traj.columns)}"
            )
        source = "wmv"
    view = traj[[c for c in columns if c != "wmv"]].copy()
    view["wmv"] = traj[source]
    return view[columns]


def stop_for(
    traj: pd.DataFrame,
    grid: RuleGrid,
    setting: Mapping[str, object],
    sigma_task: float,
    wmv_window: int,
) -> tuple[int, int]:
    """(stop, decision iteration) of ``grid``'s rule under ``setting`` on one trajectory."""
    params = merge_params("baseline_params", setting, baseline_defaults())
    rule = POSTHOC_RULES[grid.rule](sigma_task, params)
    stops = rule.labelled_stops(rule_view(traj, grid.rule, params, wmv_window))
    if len(stops) != 1:
        raise ValueError(
            f"grid {grid.name!r}: setting {dict(setting)} gives {len(stops)} stops "
            f"{list(stops)}; a candidate must give one (fixed: one budget per setting)"
        )
    stop, decision = next(iter(stops.values()))
    return int(stop), int(decision)


def score_candidates(
    trajectories: pd.DataFrame,
    grids: Sequence[RuleGrid],
    case_columns: Sequence[str],
    sigma_column: str = "sigma_task",
    wmv_window: int = DIP_DEFAULTS.wmv_window,
) -> pd.DataFrame:
    """Every candidate setting of every grid on every case (module docstring's columns).

    ``trajectories``: plain-DIP trajectories, one per case, stacked; ``case_columns``
    identify a case (e.g. photo, crop, sigma, seed); ``sigma_column`` holds the case's noise
    std in range-1 units; ``wmv_window`` is the window of the ``wmv`` column. All grids read
    the same sorted trajectory frame of a case.
    """
    case_columns = list(case_columns)
    _require(trajectories, [*case_columns, sigma_column, "iteration", PSNR_COLUMN], "trajectories")
    rows = []
    for key, traj in trajectories.groupby(case_columns, sort=True):
        case = dict(zip(case_columns, key if isinstance(key, tuple) else (key,), strict=True))
        traj = _one_trajectory(traj, case, sigma_column)
        sigma = float(traj[sigma_column].iloc[0])
        psnr_at = dict(zip(traj["iteration"], traj[PSNR_COLUMN], strict=True))
        seconds_at = (
            dict(zip(traj["iteration"], traj["elapsed_s"], strict=True))
            if "elapsed_s" in traj
            else None
        )
        oracle_iter = oracle_stop(traj, PSNR_COLUMN)
        last_iter = int(traj["iteration"].iloc[-1])
        oracle_psnr = float(psnr_at[oracle_iter])
        for grid in grids:
            for index, setting in enumerate(grid.settings):
                stop, decision = stop_for(traj, grid, setting, sigma, wmv_window)
                psnr = float(psnr_at[stop])
                row = {
                    **case,
                    "rule": grid.name,
                    "setting": setting_label(setting),
                    "setting_index": index,
                    "tuned": grid.tuned,
                    "stop_iter": stop,
                    "decision_iter": decision,
                    "psnr": psnr,
                    "oracle_iter": oracle_iter,
                    "oracle_psnr": oracle_psnr,
                    "last_iter": last_iter,
                    "gap_plain_db": oracle_psnr - psnr,
                    "gap_db": oracle_psnr - psnr,
                }
                if seconds_at is not None:
                    row["seconds_to_stop"] = float(seconds_at[stop])
                    row["seconds_to_decision"] = float(seconds_at[decision])
                rows.append(row)
    return pd.DataFrame(rows)


def _one_trajectory(traj: pd.DataFrame, case: dict, sigma_column: str) -> pd.DataFrame:
    traj = traj.sort_values("iteration")
    if traj["iteration"].duplicated().any():
        raise ValueError(
            f"case {case} holds more than one trajectory (repeated iterations): the case "
            "columns must identify one fit of one image"
        )
    sigmas = traj[sigma_column].unique()
    if len(sigmas) != 1 or not (math.isfinite(float(sigmas[0])) and 0 <= float(sigmas[0]) <= 1):
        raise ValueError(
            f"case {case}: {sigma_column!r} must be one noise std in range-1 units; "
            f"got {list(sigmas)}"
        )
    return traj


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; has {list(frame.columns)}")


# ------------------------------------------------------------------ leave one image out


def choose_setting(train: pd.DataFrame, group: str, objective: str) -> tuple[str, float]:
    """The setting with the best mean ``objective`` on ``train`` (each image's cases
    averaged first, so every image counts once) and that mean; ties go to the first
    setting of the grid."""
    per_image = train.groupby([group, "setting_index", "setting"])[objective].mean()
    means = per_image.groupby(["setting_index", "setting"]).mean().sort_index()
    if means.isna().any():
        bad = [s for (_, s), v in means.items() if math.isnan(v)]
        raise ValueError(f"{objective!r} is NaN for setting(s) {bad} on the training images")
    best = means.idxmin() if OBJECTIVES[objective] else means.idxmax()
    return best[1], float(means[best])


def leave_one_image_out(
    scores: pd.DataFrame,
    group: str = "image",
    objective: str = "gap_plain_db",
    include_oracle: bool = True,
    chooser: Callable[[pd.DataFrame, str, str], tuple[str, float]] = choose_setting,
) -> pd.DataFrame:
    """Per rule and held-out image (``group``): its cases at the setting ``chooser`` picks on
    the other images, with ``train_objective`` (that setting's mean there). Untuned grids
    are reported as they are (``train_objective`` NaN). ``include_oracle`` adds the plain
    oracle's rows (``rule`` = ``oracle``, gaps 0).

    The held-out image's rows are split off before anything is chosen and only indexed by
    the chosen setting afterwards: the choice is a function of the other images alone.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}; got {objective!r}")
    _require(scores, [group, "rule", "setting", "setting_index", "tuned", objective], "scores")
    out = []
    for rule in scores["rule"].unique():
        rows = scores[scores["rule"] == rule]
        images = dict(tuple(rows.groupby(group, sort=True)))
        tuned = bool(rows["tuned"].iloc[0])
        if tuned and len(images) < 2:
            raise ValueError(f"rule {rule!r}: leave-one-image-out needs two {group}s or more")
        for held_out, held_rows in images.items():
            if not tuned:
                out.append(held_rows.assign(train_objective=math.nan))
                continue
            others = pd.concat([r for g, r in images.items() if g != held_out])
            chosen, value = chooser(others, group, objective)
            picked = held_rows[held_rows["setting"] == chosen]
            if picked.empty:
                raise ValueError(f"rule {rule!r}: {group} {held_out!r} has no {chosen!r} rows")
            out.append(picked.assign(train_objective=value))
    result = pd.concat(out, ignore_index=True)
    if include_oracle:
        result = pd.concat([result, oracle_rows(scores)], ignore_index=True)
    return result


def oracle_rows(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per case for the plain-DIP oracle: its stop, its PSNR and zero gaps; it
    knows its stop at the run's last iteration. The cases are those of the first scored
    candidate (every candidate scores every case)."""
    first = scores[(scores["rule"] == scores["rule"].iloc[0]) & (scores["setting_index"] == 0)]
    oracle = first.assign(
        rule=ORACLE,
        setting="",
        tuned=False,
        stop_iter=first["oracle_iter"],
        decision_iter=first["last_iter"],
        psnr=first["oracle_psnr"],
        gap_plain_db=0.0,
        gap_db=0.0,
        train_objective=math.nan,
    )
    for column in ("seconds_to_stop", "seconds_to_decision"):
        if column in oracle:
            oracle[column] = math.nan
    return oracle.reset_index(drop=True)


# ------------------------------------------------------------------------------ summary


def within_column(db: float) -> str:
    """``share_within_0_5db`` for 0.5, ``share_within_1db`` for 1.0."""
    return f"share_within_{f'{db:g}'.replace('.', '_')}db"


def summarise_rules(
    results: pd.DataFrame, group: str = "image", within: Sequence[float] = WITHIN_DB
) -> pd.DataFrame:
    """One row per rule, in order of appearance: ``n_cases``, ``n_images``, mean and median
    gap to the plain-DIP oracle (``gap_plain_db``, primary), mean gap to the run's own peak
    (``gap_db``), the share of cases within each of ``within`` dB of the oracle, mean
    PSNR, mean and median stop iteration, and mean seconds to the stop when known. Means are
    over cases."""
    _require(results, [group, "rule", "psnr", "gap_plain_db", "gap_db", "stop_iter"], "results")
    rows = []
    for rule in results["rule"].unique():
        mine = results[results["rule"] == rule]
        gap = mine["gap_plain_db"].astype(float)
        row = {
            "rule": rule,
            "n_cases": len(mine),
            "n_images": mine[group].nunique(),
            "mean_gap_plain_db": gap.mean(),
            "median_gap_plain_db": gap.median(),
            "mean_gap_db": mine["gap_db"].astype(float).mean(),
        }
        row |= {within_column(db): float((gap <= db).mean()) for db in within}
        row |= {
            "mean_psnr": mine["psnr"].astype(float).mean(),
            "mean_stop_iter": mine["stop_iter"].astype(float).mean(),
            "median_stop_iter": mine["stop_iter"].astype(float).median(),
        }
        if "seconds_to_stop" in mine:
            row["mean_seconds_to_stop"] = mine["seconds_to_stop"].astype(float).mean()
        rows.append(row)
    return pd.DataFrame(rows)


COMPARISON_COLUMNS = [
    "name",
    "a",
    "b",
    "value",
    "n_cases",
    *[c for c in stats.TABLE_COLUMNS if c not in ("name", "value")],
    "note",
]


def compare_rules(
    results: pd.DataFrame,
    case_columns: Sequence[str],
    references: Sequence[str] = ("es_wmv_paper", ORACLE),
    group: str = "image",
    value: str = "gap_plain_db",
    level: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
    holm_correct: bool = True,
) -> pd.DataFrame:
    """Every rule against each of ``references``: per-case differences ``a - b`` of
    ``value`` paired on ``case_columns``, averaged within each image (``group``, the unit
    resampled), summarised by ``stats.paired_comparison``.

    With ``holm_correct`` the rows form one family (``stats.apply_holm``: ``p_holm`` and
    the CI and verdict at the Holm level, which ``level`` then shows), as in
    ``stats.comparison_table``. ``note`` says when n images cannot reach significance at
    alpha 0.05, and gives the minimum detectable difference (``mdd``) when the CI includes 0.
    Columns: ``COMPARISON_COLUMNS``.
    """
    case_columns = list(case_columns)
    _require(results, [*case_columns, group, "rule", value], "results")
    rules = list(results["rule"].unique())
    missing = [r for r in references if r not in rules]
    if missing:
        raise ValueError(f"reference rule(s) {missing} not in results; rules: {rules}")
    pairs = [(a, b) for b in references for a in rules if a != b]
    keys, comparisons = [], []
    for a, b in pairs:
        differences = _per_image_differences(results, a, b, case_columns, group, value)
        comparisons.append(
            stats.paired_comparison(
                differences["difference"],
                level,
                n_boot,
                seed,
                higher_is_better=value not in LOWER_IS_BETTER,
            )
        )
        keys.append((a, b, differences.attrs["n_cases"]))
    if holm_correct and comparisons:
        comparisons = stats.apply_holm(comparisons, alpha=1 - level)
    rows = [
        _comparison_row(a, b, value, n_cases, c)
        for (a, b, n_cases), c in zip(keys, comparisons, strict=True)
    ]
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _per_image_differences(
    results: pd.DataFrame, a: str, b: str, case_columns: list[str], group: str, value: str
) -> pd.DataFrame:
    """Per image: the mean over its cases of ``a - b``; ``attrs['n_cases']`` the pairs."""
    keys = list(dict.fromkeys([*case_columns, group]))
    sides = []
    for rule in (a, b):
        rows = results.loc[results["rule"] == rule, [*keys, value]]
        if rows.duplicated(keys).any():
            raise ValueError(f"rule {rule!r} has more than one row for a case {case_columns}")
        sides.append(rows)
    pairs = sides[0].merge(sides[1], on=keys, suffixes=("_a", "_b"))
    if pairs.empty:
        raise ValueError(f"rules {a!r} and {b!r} share no case {case_columns}")
    frame = pd.DataFrame(
        {"image": pairs[group].to_numpy(), "difference": pairs[f"{value}_a"] - pairs[f"{value}_b"]}
    )
    means = stats.per_image_means(frame, "difference", by=[])
    means.attrs["n_cases"] = len(pairs)
    return means


def _comparison_row(
    a: str, b: str, value: str, n_cases: int, comparison: stats.PairedComparison
) -> dict:
    row = {"name": f"{a} - {b}", "a": a, "b": b, "value": value, "n_cases": n_cases}
    row |= {c: getattr(comparison, c) for c in stats.TABLE_COLUMNS if c not in row and c != "name"}
    row["note"] = _power_note(comparison)
    return row


def _power_note(comparison: stats.PairedComparison) -> str:
    """What a reader needs when the comparison cannot or does not show a difference."""
    mdd = "nan" if math.isnan(comparison.mdd) else f"{comparison.mdd:.3g}"
    if not comparison.significance_reachable:
        return (
            f"n = {comparison.n} images is too few for significance (smallest reachable "
            f"p {comparison.min_p_reachable:.3g} > {stats.ALPHA}); minimum detectable "
            f"difference {mdd}"
        )
    if comparison.verdict == stats.NO_DIFFERENCE:
        return f"no measurable difference; minimum detectable difference {mdd}"
    return ""
