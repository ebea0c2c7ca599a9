"""Paired comparisons of two methods on the same images.

A comparison on the same images is paired: per-image differences ``a - b`` with a 95 %
confidence interval, and "helps" means that interval excludes zero. Seeds are averaged within
an image first, so n counts images (the unit that is resampled), not images x seeds.

The pieces, in the order a report uses them:

* :func:`per_image_means` averages the seed columns within each image;
* :func:`paired_differences` selects two cells by identity filters and differences them on
  the images both have, refusing a side that pools cells differing in more than their seeds;
* :func:`paired_comparison` summarises the differences: mean, percentile bootstrap CI over
  images, Wilcoxon signed-rank p-value, verdict, the smallest p-value the exact test can reach
  at this n and the minimum detectable difference;
* :func:`holm` / :func:`apply_holm` correct a family of comparisons for multiplicity;
* :func:`comparison_table` does all of it for named comparisons, one row each.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from dipddpm import grid

HELPS = "helps"
HURTS = "hurts"
NO_DIFFERENCE = "no measurable difference"
VERDICTS = (HELPS, HURTS, NO_DIFFERENCE)

# Family-wise error rate and power the reachability and detectable-difference figures use.
ALPHA = 0.05
POWER = 0.80
# scipy's own switch from the exact null distribution to the normal approximation.
EXACT_MAX_N = 50
# Metrics where a smaller value is the better one, so a negative difference "helps".
LOWER_IS_BETTER = ("seconds", "nfe")
# Bound on the index array of one block of bootstrap draws, so large image sets fit in memory.
BOOT_BLOCK_ELEMENTS = 1 << 22

EXACT = "exact"
NORMAL = "normal approximation"
ALL_ZERO = "none (all differences are zero)"

DEFAULT_ON = ("dataset", "task", "image")
TABLE_COLUMNS = (
    "name",
    "value",
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
    "significance_reachable",
    "mdd",
)


# ------------------------------------------------------------------- per-image differences


def per_image_means(frame: pd.DataFrame, value: str, by: Sequence[str]) -> pd.DataFrame:
    """One row per (``by``..., ``image``): the mean of ``value`` over that image's rows.

    ``by`` normally names identity columns without the seed columns, so the rows of one
    image that differ only in their seeds are averaged. Output columns: ``by``, ``image``,
    ``value`` and ``n_averaged`` (how many rows each mean averages). A missing value makes
    its image's mean NaN rather than being skipped, so it cannot go unnoticed.
    """
    keys = [*by, "image"]
    _require_columns(frame, [*keys, value], "per_image_means")
    values = frame[keys].copy()
    values[value] = pd.to_numeric(frame[value], errors="coerce").astype(float)
    grouped = values.groupby(keys, dropna=False, sort=True)[value]
    counts = grouped.size().rename("n_averaged")
    # count() skips NaN, so a shortfall against size() marks an image with a missing value.
    means = grouped.mean().where(grouped.count() == counts)
    return pd.concat([means.rename(value), counts], axis=1).reset_index()


def paired_differences(
    frame: pd.DataFrame,
    value: str,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    on: Sequence[str] = DEFAULT_ON,
) -> pd.DataFrame:
    """Per-image differences ``a - b`` of ``value`` on the images both selections have.

    ``a`` and ``b`` filter identity columns (values compared in their canonical spelling,
    e.g. ``{"method": "dip", "iters": 2000}``). Each side is averaged over its seeds within
    an image before differencing. Output columns: ``on``, ``a``, ``b``, ``difference``.

    Raises ValueError when a side selects no row, pools cells (more than one value in an
    identity column other than the seeds and ``on``), holds two rows for the same image and
    seeds, or when the two sides share no image.
    """
    on = list(on)
    if "image" not in on:
        raise ValueError(f"paired_differences: `on` must include 'image' (got {on})")
    _require_columns(frame, [*on, value], "paired_differences")
    sides = [_one_cell(frame, value, filters, on, label) for label, filters in (("a", a), ("b", b))]
    pairs = sides[0].merge(sides[1], on=on, how="inner", suffixes=("_a", "_b"))
    if pairs.empty:
        raise ValueError(
            f"paired_differences: a={dict(a)} and b={dict(b)} share no {on} "
            f"({len(sides[0])} and {len(sides[1])} images)"
        )
    pairs = pairs.rename(columns={f"{value}_a": "a", f"{value}_b": "b"})
    pairs["difference"] = pairs["a"] - pairs["b"]
    return pairs[[*on, "a", "b", "difference"]].reset_index(drop=True)


def _one_cell(
    frame: pd.DataFrame, value: str, filters: Mapping[str, Any], on: list[str], label: str
) -> pd.DataFrame:
    """The per-image means of the one cell ``filters`` selects."""
    rows = _select(frame, filters, label)
    _refuse_pooling(rows, filters, on, label)
    _refuse_repeated_units(rows, filters, on, label)
    means = per_image_means(rows, value, [c for c in on if c != "image"])
    return means.drop(columns="n_averaged")


def _select(frame: pd.DataFrame, filters: Mapping[str, Any], label: str) -> pd.DataFrame:
    _require_columns(frame, list(filters), f"paired_differences ({label}={dict(filters)})")
    keep = pd.Series(True, index=frame.index)
    for column, wanted in filters.items():
        keep &= frame[column].map(grid.canonical) == grid.canonical(wanted)
    rows = frame[keep]
    if rows.empty:
        raise ValueError(f"paired_differences: {label}={dict(filters)} selects no row")
    return rows


def _refuse_pooling(
    rows: pd.DataFrame, filters: Mapping[str, Any], on: list[str], label: str
) -> None:
    """A side must be one cell apart from its seeds, or its mean would blend methods,
    checkpoints or priors without saying so."""
    free = [
        c
        for c in grid.IDENTITY_COLUMNS
        if c in rows.columns and c not in grid.SEED_COLUMNS and c not in on
    ]
    pooled = {
        c: sorted(map(str, rows[c].unique())) for c in free if rows[c].nunique(dropna=False) > 1
    }
    if pooled:
        raise ValueError(
            f"paired_differences: {label}={dict(filters)} pools cells that differ in "
            f"{pooled}; add these columns to the filter"
        )


def _refuse_repeated_units(
    rows: pd.DataFrame, filters: Mapping[str, Any], on: list[str], label: str
) -> None:
    """Two rows for one image and seeds (e.g. a cell collected twice) would weight that
    image's seed unevenly in its mean."""
    unit = [*on, *(c for c in grid.SEED_COLUMNS if c in rows.columns)]
    repeated = rows.duplicated(unit, keep=False)
    if repeated.any():
        raise ValueError(
            f"paired_differences: {label}={dict(filters)} holds {int(repeated.sum())} rows "
            f"that repeat the same {unit}"
        )


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{where}: frame lacks column(s) {missing}")


# ------------------------------------------------------------------------- one comparison


@dataclass(frozen=True)
class PairedComparison:
    """Summary of per-image differences ``a - b``.

    ``ci_low``/``ci_high`` is the percentile bootstrap interval at ``level`` (NaN for one
    image). ``p`` is the two-sided Wilcoxon signed-rank p-value, ``p_method`` says how it was
    computed. ``min_p_reachable`` is the smallest two-sided p-value the exact test can give
    with n images (2 / 2^n); ``significance_reachable`` says whether that is at most
    :data:`ALPHA`. ``mdd`` is the minimum detectable difference (see :func:`min_detectable`).
    ``p_holm`` is NaN until :func:`apply_holm` fills it in.
    """

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    level: float
    p: float
    p_method: str
    verdict: str
    min_p_reachable: float
    significance_reachable: bool
    mdd: float
    higher_is_better: bool
    n_boot: int
    seed: int
    differences: tuple[float, ...] = field(repr=False)
    p_holm: float = math.nan


def paired_comparison(
    differences: pd.DataFrame | pd.Series | Sequence[float] | np.ndarray,
    level: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
    *,
    higher_is_better: bool = True,
) -> PairedComparison:
    """Summarise per-image differences ``a - b`` (the ``difference`` column of
    :func:`paired_differences`, or the differences themselves).

    The verdict is "helps" when the bootstrap CI lies wholly on the better side of zero
    (above it, or below it when ``higher_is_better`` is False), "hurts" when it lies wholly
    on the worse side and "no measurable difference" otherwise.
    """
    values = _as_differences(differences)
    if not 0 < level < 1:
        raise ValueError(f"paired_comparison: level must lie in (0, 1), got {level}")
    low, high = bootstrap_ci(values, level, n_boot, seed)
    p, method = wilcoxon_p(values)
    min_p = min_p_reachable(len(values))
    return PairedComparison(
        n=len(values),
        mean_diff=float(values.mean()),
        ci_low=low,
        ci_high=high,
        level=level,
        p=p,
        p_method=method,
        verdict=verdict(low, high, higher_is_better),
        min_p_reachable=min_p,
        significance_reachable=min_p <= ALPHA,
        mdd=min_detectable(values),
        higher_is_better=higher_is_better,
        n_boot=n_boot,
        seed=seed,
        differences=tuple(float(v) for v in values),
    )


def _as_differences(differences: Any) -> np.ndarray:
    if isinstance(differences, pd.DataFrame):
        differences = differences["difference"]
    values = np.asarray(differences, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("paired_comparison: no differences")
    if np.isnan(values).any():
        raise ValueError(
            f"paired_comparison: {int(np.isnan(values).sum())} of {values.size} differences "
            "are NaN (an image lacks the value on one side)"
        )
    return values


def bootstrap_ci(values: np.ndarray, level: float, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling images with replacement.

    Draws come from ``np.random.default_rng(seed).integers(0, n, size=(rows, n))`` in blocks
    of rows (a single block of ``n_boot`` rows unless ``n_boot * n`` exceeds
    :data:`BOOT_BLOCK_ELEMENTS`). One image gives no spread to resample: NaN bounds.
    """
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    rows_per_block = max(1, BOOT_BLOCK_ELEMENTS // n)
    means = []
    for start in range(0, n_boot, rows_per_block):
        rows = min(rows_per_block, n_boot - start)
        means.append(values[rng.integers(0, n, size=(rows, n))].mean(axis=1))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(np.concatenate(means), [tail, 100 - tail])
    return float(low), float(high)


def _scipy_stats():
    """scipy.stats, imported on first use: the early-stopping cells import this module
    through their package, and scipy.stats costs about a second per job."""
    from scipy import stats

    return stats


def wilcoxon_p(values: np.ndarray) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p-value and the method used.

    The exact null distribution is only exact for distinct, non-zero differences, so it is
    used for up to :data:`EXACT_MAX_N` such differences; otherwise the normal approximation
    (zeros dropped, tie-corrected variance). All-zero differences carry no evidence: p = 1.
    """
    if not np.any(values):
        return 1.0, ALL_ZERO
    stats = _scipy_stats()
    distinct_nonzero = np.all(values != 0) and len(np.unique(np.abs(values))) == len(values)
    if distinct_nonzero and len(values) <= EXACT_MAX_N:
        return float(stats.wilcoxon(values, method="exact").pvalue), EXACT
    return float(stats.wilcoxon(values, method="asymptotic").pvalue), NORMAL


def min_p_reachable(n: int) -> float:
    """Smallest two-sided p-value of the exact signed-rank test on n images: every
    difference of one sign, which has probability 1 / 2^n under the null, doubled."""
    return min(1.0, 2.0 / 2.0**n)


def min_detectable(values: np.ndarray, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable mean difference: (z_{1-alpha/2} + z_power) * sd / sqrt(n).

    Normal approximation of a two-sided one-sample test of the mean difference, with sd the
    sample standard deviation of the differences; at alpha 0.05 and 80 % power the factor is
    1.96 + 0.84, about 2.8. NaN for fewer than two images.
    """
    n = len(values)
    if n < 2:
        return math.nan
    stats = _scipy_stats()
    factor = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(factor * np.std(values, ddof=1) / math.sqrt(n))


def verdict(ci_low: float, ci_high: float, higher_is_better: bool = True) -> str:
    """The verdict of an interval: helps or hurts only when it excludes zero (a NaN
    interval never does)."""
    if ci_low > 0:
        return HELPS if higher_is_better else HURTS
    if ci_high < 0:
        return HURTS if higher_is_better else HELPS
    return NO_DIFFERENCE


# ------------------------------------------------------------------------- multiplicity


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given.

    The k-th smallest of m p-values is multiplied by m - k + 1; a running maximum keeps the
    adjusted values in the order of the raw ones, and they are capped at 1.
    """
    p = np.asarray(p_values, dtype=float)
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"holm: p-values must lie in [0, 1], got {list(p_values)}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(v) for v in adjusted]


def holm_levels(p_values: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """CI level of each comparison under Holm: 1 - alpha / (m - k + 1) for the k-th smallest
    p-value. Tied p-values share the strictest level of their tie, so the order the caller
    lists them in cannot loosen one."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    # Rank k (1-based) of each p-value; ties take the smallest rank, the strictest level.
    ranks = np.searchsorted(np.sort(p), p, side="left") + 1
    return [1 - alpha / (m - int(k) + 1) for k in ranks]


def apply_holm(
    comparisons: Sequence[PairedComparison], alpha: float = ALPHA
) -> list[PairedComparison]:
    """The comparisons, in the order given, with Holm-adjusted p-values (``p_holm``) and
    their CI and verdict recomputed at the Holm level of :func:`holm_levels`.

    The CI level is the Bonferroni-style 1 - alpha / m_k, with m_k = m - k + 1 the hypotheses
    still open at the k-th smallest Wilcoxon p-value; the bootstrap reuses each comparison's
    seed and n_boot. Like Holm's procedure, the claims stop at the first one that fails: once
    a comparison (taken in order of p, tie groups together) keeps zero in its corrected CI,
    every comparison with a larger p-value gets "no measurable difference" whatever its
    interval, as Holm's bound on the family-wise error (here up to bootstrap error) needs.
    """
    p = [c.p for c in comparisons]
    adjusted = holm(p)
    levels = holm_levels(p, alpha)
    corrected = [
        replace(_at_level(c, level), p_holm=p_adj)
        for c, level, p_adj in zip(comparisons, levels, adjusted, strict=True)
    ]
    return _stop_at_first_failure(corrected)


def holm_records(
    records: list[dict],
    n_boot: int = 10000,
    *,
    higher_is_better: bool = True,
    diff: str = "mean_diff",
) -> list[dict]:
    """``records`` with each one that carries per-image ``differences`` summarised by
    :func:`paired_comparison` and corrected by :func:`apply_holm` over all of them: the
    ``differences`` are replaced by ``n``, ``diff`` (the mean difference), ``ci_low``,
    ``ci_high``, ``level``, ``p``, ``p_holm`` and ``verdict``. Records without differences
    (not computable, with their reason) pass through."""
    computable = [r for r in records if "differences" in r]
    results = [
        paired_comparison(r["differences"], n_boot=n_boot, higher_is_better=higher_is_better)
        for r in computable
    ]
    for record, result in zip(computable, apply_holm(results) if results else [], strict=True):
        record.pop("differences")
        record.update(
            {
                "n": result.n,
                diff: result.mean_diff,
                "ci_low": result.ci_low,
                "ci_high": result.ci_high,
                "level": result.level,
                "p": result.p,
                "p_holm": result.p_holm,
                "verdict": result.verdict,
            }
        )
    return records


def _at_level(comparison: PairedComparison, level: float) -> PairedComparison:
    return paired_comparison(
        comparison.differences,
        level=level,
        n_boot=comparison.n_boot,
        seed=comparison.seed,
        higher_is_better=comparison.higher_is_better,
    )


def _stop_at_first_failure(comparisons: list[PairedComparison]) -> list[PairedComparison]:
    out = list(comparisons)
    failed_below = False
    for p in sorted({c.p for c in comparisons}):
        tie = [i for i, c in enumerate(comparisons) if c.p == p]
        if failed_below:
            for i in tie:
                out[i] = replace(out[i], verdict=NO_DIFFERENCE)
        failed_below = failed_below or any(out[i].verdict == NO_DIFFERENCE for i in tie)
    return out


# ------------------------------------------------------------------------------- table


def comparison_table(
    frame: pd.DataFrame,
    comparisons: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]],
    values: Sequence[str] = ("psnr",),
    on: Sequence[str] = DEFAULT_ON,
    level: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
    holm_correct: bool = True,
    lower_is_better: Collection[str] = LOWER_IS_BETTER,
) -> pd.DataFrame:
    """One row per named comparison (``name -> (a filters, b filters)``) and value column.

    Every row compares ``a - b`` with :func:`paired_comparison`. With ``holm_correct`` the
    rows of the whole table form one family: :func:`apply_holm` at alpha = 1 - level sets
    ``p_holm``, the CI level and the verdict; without it ``p_holm`` is NaN. Columns:
    :data:`TABLE_COLUMNS`.
    """
    keys, results = [], []
    for name, (a, b) in comparisons.items():
        for value in values:
            differences = paired_differences(frame, value, a, b, on)
            better_high = value not in lower_is_better
            results.append(
                paired_comparison(differences, level, n_boot, seed, higher_is_better=better_high)
            )
            keys.append((name, value))
    if holm_correct and results:
        results = apply_holm(results, alpha=1 - level)
    rows = [_table_row(name, value, c) for (name, value), c in zip(keys, results, strict=True)]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _table_row(name: str, value: str, comparison: PairedComparison) -> dict[str, Any]:
    row = {"name": name, "value": value}
    row.update({c: getattr(comparison, c) for c in TABLE_COLUMNS if c not in row})
    return row
