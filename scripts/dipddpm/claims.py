"""The report's claims: paired comparisons between comparable cells, each with its n and CI.

A claim compares two settings (cells less their seeds) on the same images: the per-image
difference of one metric, averaged over each side's seeds within an image, summarised by
:func:`dipddpm.stats.paired_comparison` (bootstrap 95 % CI, verdict). Two settings are
comparable only when they measure the same thing on the same data: the same purpose
(a generation cell is scored with generation metrics, a restoration cell with restoration
metrics, never across), the same dataset, task and observation seeds, and shared images.
:func:`check_comparable` refuses anything else by name, so no sentence of the report can
set a generation sample's PSNR against a restoration's.

Which comparisons the report makes (:func:`restoration_claims`), per dataset and task with
DIP+DDPM cells: the best DIP+DDPM setting by mean PSNR (chosen on the same images, so the
claim is optimistic for it, and said so) against DIP alone from its own prior (the same
architecture and duration: did the chain improve on its start?), against the best DDPM
alone (from the observation, or from noise where the task starts there) and against the
best DIP-guided setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from . import grid, stats
from .aggregate import cell_label

ON = ("dataset", "task", "image")
SETTING_COLUMNS = tuple(
    c for c in grid.IDENTITY_COLUMNS if c not in grid.SEED_COLUMNS and c not in ON
)
RESTORATION = "restoration"
DDPM_ALONE = ("ddpm-obs", "ddpm-noise")


class IncomparableCells(ValueError):
    """Two selections that no claim may compare (different purpose, data or seeds)."""


@dataclass(frozen=True)
class Claim:
    """One paired comparison ``subject - rival`` of ``metric`` on ``where``."""

    where: str
    subject: str
    rival: str
    metric: str
    result: stats.PairedComparison
    seeds: str
    subject_note: str = ""
    rival_note: str = ""

    def sentence(self) -> str:
        r = self.result
        unit = " dB" if self.metric == "psnr" else ""
        subject = self.subject + (f" ({self.subject_note})" if self.subject_note else "")
        rival = self.rival + (f" ({self.rival_note})" if self.rival_note else "")
        return (
            f"On {self.where}, {subject} vs {rival}: {self.metric.upper()} "
            f"{r.mean_diff:+.2f}{unit} [{r.ci_low:+.2f}, {r.ci_high:+.2f}] "
            f"(paired 95 % CI, n = {r.n} images, {self.seeds}): {r.verdict}."
        )


def check_comparable(cells: pd.DataFrame, a: Mapping, b: Mapping) -> None:
    """Refuse a comparison of ``a`` and ``b`` (filters of ``cells``) that measures
    different things: another purpose, dataset, task or set of observation seeds."""
    sides = [_selected(cells, side, label) for label, side in (("a", a), ("b", b))]
    for column in ("purpose", "dataset", "task"):
        values = [set(side[column].astype(str)) for side in sides if column in side]
        if len(values) == 2 and values[0] != values[1]:
            what = (
                "a generation cell is scored with generation metrics only and is never "
                "compared with a restoration cell"
                if column == "purpose"
                else f"the two sides differ in {column}"
            )
            raise IncomparableCells(
                f"cannot compare {dict(a)} ({sorted(values[0])}) with {dict(b)} "
                f"({sorted(values[1])}): {what}"
            )
    seeds = [set(side["obs_seed"].astype(str)) for side in sides if "obs_seed" in side]
    if len(seeds) == 2 and seeds[0] != seeds[1]:
        raise IncomparableCells(
            f"cannot compare {dict(a)} with {dict(b)}: observation seeds "
            f"{sorted(seeds[0])} vs {sorted(seeds[1])} (not the same observations)"
        )


def _selected(cells: pd.DataFrame, filters: Mapping, label: str) -> pd.DataFrame:
    mask = pd.Series(True, index=cells.index)
    for column, value in filters.items():
        mask &= cells[column].astype(str) == str(value)
    rows = cells[mask]
    if rows.empty:
        raise IncomparableCells(f"side {label} ({dict(filters)}) selects no row")
    return rows


def paired_claim(
    cells: pd.DataFrame,
    a: Mapping,
    b: Mapping,
    where: str,
    metric: str = "psnr",
    notes: tuple[str, str] = ("", ""),
) -> Claim:
    """The claim ``a - b`` on the images both settings have (see the module docstring);
    ``notes`` qualify the two sides (e.g. how a side was chosen)."""
    check_comparable(cells, a, b)
    differences = stats.paired_differences(cells, metric, a, b, on=ON)
    result = stats.paired_comparison(differences["difference"])
    seeds = _seeds_text(cells, a)
    return Claim(where, _label(a), _label(b), metric, result, seeds, *notes)


def _label(setting: Mapping) -> str:
    """The cell label with the axes it leaves to the tables: steps, DIP iterations."""
    label = cell_label(setting)
    if str(setting.get("method")) == "dip":
        return f"{label} ({setting.get('arch')}, {setting.get('iters')} iterations)"
    steps = str(setting.get("steps", grid.NONE))
    return label if steps == grid.NONE else f"{label} · {steps} steps"


def _seeds_text(cells: pd.DataFrame, setting: Mapping) -> str:
    """Which seeds each image's value averages (only the seed axes with several values)."""
    rows = _selected(cells, setting, "a")
    several = [
        f"{rows[c].nunique()} {c.replace('_', ' ')}s"
        for c in grid.SEED_COLUMNS
        if c in rows and rows[c].nunique() > 1
    ]
    return "each the mean over " + ", ".join(several) if several else "one seed of each kind"


# ------------------------------------------------------------------ restoration claims


def settings(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per setting with its mean PSNR, best first."""
    keys = [c for c in SETTING_COLUMNS if c in rows.columns]
    means = rows.groupby(keys, dropna=False)["psnr"].mean().rename("psnr_mean").reset_index()
    return means.sort_values("psnr_mean", ascending=False, kind="stable")


def _setting(row: pd.Series, where: Mapping) -> dict:
    keys = [c for c in SETTING_COLUMNS if c in row.index]
    return {**where, **{k: row[k] for k in keys}}


def restoration_claims(cells: pd.DataFrame) -> list[Claim]:
    """The report's restoration claims (see the module docstring), per dataset and task."""
    if cells.empty or "purpose" not in cells:
        return []
    rows = cells[cells["purpose"].astype(str) == RESTORATION]
    claims = []
    for (dataset, task), group in rows.groupby(["dataset", "task"], sort=True):
        claims += _group_claims(group, {"dataset": dataset, "task": task})
    return claims


def _group_claims(group: pd.DataFrame, where: Mapping) -> list[Claim]:
    combined = settings(group[group["method"] == "dip+ddpm"])
    if combined.empty:
        return []
    best = _setting(combined.iloc[0], where)
    text = f"{where['dataset']}, {where['task']}"
    chosen = _chosen(len(combined))
    claims = []
    for rival, rival_note in _rivals(group, best, where):
        try:
            claims.append(paired_claim(group, best, rival, text, notes=(chosen, rival_note)))
        except (IncomparableCells, ValueError):
            continue  # e.g. the rival has other observation seeds: no claim, not a pooled one
    return claims


def _chosen(count: int) -> str:
    return f"the best of {count} settings by mean PSNR on these images" if count > 1 else ""


def _rivals(group: pd.DataFrame, best: Mapping, where: Mapping) -> list[tuple[dict, str]]:
    """DIP alone from the subject's own prior, the best DDPM alone, the best DIP-guided."""
    rivals = []
    prior = {"method": "dip", **{k: best[k] for k in ("arch", "iters") if k in best}}
    prior_rows = group
    for column, value in prior.items():
        prior_rows = prior_rows[prior_rows[column].astype(str) == str(value)]
    if not prior_rows.empty:
        rivals.append((_setting(settings(prior_rows).iloc[0], where), "its own prior"))
    for methods in (DDPM_ALONE, ("dip-guided",)):
        candidates = settings(group[group["method"].isin(methods)])
        if not candidates.empty:
            rivals.append((_setting(candidates.iloc[0], where), _chosen(len(candidates))))
    return rivals


def claim_sentences(claims: Sequence[Claim]) -> list[str]:
    return [claim.sentence() for claim in claims]


# ------------------------------------------------------------------- early-stopping claims

STOP_SETTING = ("dataset", "task", "arch", "es_schedule", "stages", "sigma_max", "stage_patience")


@dataclass(frozen=True)
class StopClaim:
    """A stopping rule's PSNR below the plain-DIP oracle of the same fit: the per-image
    gap (oracle - rule, on the same image, observation and seed) is itself the paired
    difference, so its CI is the paired CI."""

    where: str
    rule: str
    gap: float
    ci_low: float
    ci_high: float
    n: int
    within_1db: float

    def sentence(self) -> str:
        share = (
            f", within 1 dB of it on {100 * self.within_1db:.0f} % of them"
            if pd.notna(self.within_1db)
            else ""
        )
        return (
            f"On {self.where}, {self.rule} stops {self.gap:.2f} dB "
            f"[{self.ci_low:.2f}, {self.ci_high:.2f}] below the plain-DIP oracle "
            f"(paired 95 % CI, n = {self.n} images x seeds{share})."
        )


def earlystop_claims(table: pd.DataFrame) -> list[StopClaim]:
    """Per early-stopping setting: the rule closest to the oracle, the progressive rule
    and ES-WMV (each once), from the aggregated ``earlystop`` table."""
    gap = "gap_plain_db_mean"
    if table.empty or gap not in table.columns:
        return []
    rows = table.dropna(subset=[gap])
    rows = rows[~rows["rule"].astype(str).str.contains("oracle")]
    keys = [c for c in STOP_SETTING if c in rows.columns]
    claims = []
    for key, group in rows.groupby(keys, sort=True):
        where = _stop_where(dict(zip(keys, key, strict=True)))
        picked = [group.loc[group[gap].idxmin()]]
        picked += [r for _, r in group.iterrows() if r["rule"] in ("progressive", "es_wmv")]
        seen = set()
        for row in picked:
            if row["rule"] in seen:
                continue
            seen.add(row["rule"])
            claims.append(_stop_claim(where, row))
    return claims


def _stop_where(setting: Mapping) -> str:
    parts = [str(setting.get(c)) for c in ("dataset", "task", "arch") if c in setting]
    if "es_schedule" in setting:
        parts.append(
            f"progressive targets {setting['es_schedule']}, K = {setting.get('stages')}, "
            f"sigma_max = {setting.get('sigma_max')}"
        )
    if "stage_patience" in setting:
        # Two settings that differ only in it would otherwise read the same.
        parts.append(f"stage patience {setting['stage_patience']}")
    return ", ".join(parts)


def _stop_claim(where: str, row: pd.Series) -> StopClaim:
    return StopClaim(
        where=where,
        rule=str(row["rule"]),
        gap=float(row["gap_plain_db_mean"]),
        ci_low=float(row.get("gap_plain_db_ci_low", float("nan"))),
        ci_high=float(row.get("gap_plain_db_ci_high", float("nan"))),
        n=int(row.get("gap_plain_db_n", row.get("n_images", 0))),
        within_1db=float(row.get("within_1db_mean", float("nan"))),
    )
