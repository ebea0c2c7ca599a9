"""Example 2's ablations: the progressive rule with one factor varied at a time.

Each ablation cell is an early-stopping cell (its own progressive fit and plain fit, the same
seeds as the centre's); the table compares the progressive rule's stop in each cell with the
centre setting's on the same images and observations (paired per image, 95 % bootstrap CI,
n = images x observation seeds averaged to images), and states each setting's gap to the
plain-DIP oracle of its own cell, the share of cases within 0.5 dB of it, the stop
iteration and the progressive run's own peak (what its schedule could reach at best).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from .. import stats
from ..grid import ABLATION_FACTORS, ablation_settings, canonical

RULE = "progressive"
PEAK = "progressive_oracle"
ON = ("dataset", "task", "image")
WITHIN_DB = 0.5
COLUMNS = [
    "factor",
    "setting",
    "n",
    "psnr",
    "gap_plain_db",
    "gap_ci_low",
    "gap_ci_high",
    "within_0_5db",
    "stop_iter",
    "run_peak_psnr",
    "diff_vs_centre",
    "ci_low",
    "ci_high",
    "verdict",
]


def _filters(setting: Mapping) -> dict[str, str]:
    return {axis: canonical(setting[axis]) for _, axis, _ in ABLATION_FACTORS}


def setting_label(setting: Mapping, factor: str) -> str:
    """The varied factor's value (the centre spelled out in full)."""
    if factor == "centre":
        return (
            f"{setting['arch']}, {setting['es_schedule']}, K = {setting['stages']}, "
            f"sigma_max = {setting['sigma_max']}, stage_patience = {setting['stage_patience']}"
        )
    axis = {vary: axis for vary, axis, _ in ABLATION_FACTORS}[factor]
    return f"{axis} = {setting[axis]}"


def _rows(frame: pd.DataFrame, filters: Mapping[str, str], rule: str) -> pd.DataFrame:
    mask = frame["rule"].astype(str) == rule
    for column, value in filters.items():
        mask &= frame[column].astype(str) == value
    return frame[mask]


def ablation_table(frame: pd.DataFrame, ablations: Mapping) -> pd.DataFrame:
    """One row per setting of ``ablations`` (the centre first) from the cells' stacked
    ``earlystop.csv`` rows (see the module docstring)."""
    settings = ablation_settings(ablations)
    centre = _filters(settings[0])
    rows = []
    for setting in settings:
        filters = _filters(setting)
        stops = _rows(frame, filters, RULE)
        if stops.empty:
            raise ValueError(f"no {RULE!r} rows for the ablation setting {filters}")
        gap = stats.paired_comparison(_per_image(stops, "gap_plain_db"))
        row = {
            "factor": setting["factor"],
            "setting": setting_label(setting, setting["factor"]),
            "n": gap.n,
            "psnr": stops["psnr"].mean(),
            "gap_plain_db": gap.mean_diff,
            "gap_ci_low": gap.ci_low,
            "gap_ci_high": gap.ci_high,
            "within_0_5db": float((stops["gap_plain_db"] <= WITHIN_DB).mean()),
            "stop_iter": stops["stop_iter"].mean(),
            "run_peak_psnr": _rows(frame, filters, PEAK)["psnr"].mean(),
        }
        row.update(_versus_centre(frame, filters, centre))
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _per_image(rows: pd.DataFrame, value: str) -> pd.Series:
    """Per image (dataset, task, image), the mean over observation and DIP seeds."""
    return rows.groupby(list(ON))[value].mean()


def _versus_centre(frame: pd.DataFrame, filters: Mapping, centre: Mapping) -> dict:
    if dict(filters) == dict(centre):
        return {"diff_vs_centre": 0.0, "ci_low": 0.0, "ci_high": 0.0, "verdict": "reference"}
    a, b = ({**f, "rule": RULE} for f in (filters, centre))
    differences = stats.paired_differences(frame, "psnr", a, b, on=ON)
    result = stats.paired_comparison(differences["difference"])
    return {
        "diff_vs_centre": result.mean_diff,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "verdict": result.verdict,
    }


def ablation_markdown(table: pd.DataFrame) -> str:
    """The table as the report shows it: PSNR at the progressive stop, its gap to the
    plain-DIP oracle and its difference from the centre setting, each with its CI."""
    lines = [
        "## Ablations of the progressive rule",
        "",
        "One factor of the progressive rule varied at a time around the centre setting (the "
        "first row); every setting is a fit of its own on the same crops, observations and "
        "DIP seed, stopped by the rule. `gap to plain oracle` is the plain-DIP oracle's "
        "PSNR (the plain fit of the same architecture) minus the rule's, with its 95 % "
        "bootstrap CI over crops; `vs centre` is the setting's PSNR at its stop minus the "
        "centre's, paired per crop (helps or hurts where the CI excludes 0). n counts "
        "crops. These are the comparison's images: a setting that helps here is a "
        "hypothesis for new images, not a tuned default.",
        "",
        "| factor | setting | n | PSNR | gap to plain oracle (dB) | within 0.5 dB "
        "| stop iteration | run's own peak | vs centre (dB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        versus = (
            "reference"
            if r["verdict"] == "reference"
            else f"{r['diff_vs_centre']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}], "
            f"{r['verdict']}"
        )
        lines.append(
            f"| {r['factor']} | {r['setting']} | {int(r['n'])} | {r['psnr']:.2f} "
            f"| {r['gap_plain_db']:.2f} [{r['gap_ci_low']:.2f}, {r['gap_ci_high']:.2f}] "
            f"| {100 * r['within_0_5db']:.0f} % | {r['stop_iter']:.0f} "
            f"| {r['run_peak_psnr']:.2f} | {versus} |"
        )
    return "\n".join(lines) + "\n"
