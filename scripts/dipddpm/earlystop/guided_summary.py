"""The DDPM-guided DIP fits summarised (issue 18): does guidance remove the need to stop
early, and what does it gain over plain DIP and over the DDPM alone?

The rows are the guided cells' (``stages.earlystop_guided``): per image and fit a ``final``
row (the last iteration) and a ``peak`` row (the run's own PSNR peak); the lam-0 cells (form
``none``) are plain DIP with the same iterations and also hold the DDPM-alone rows
(``ddpm-x0``, ``ddpm-obs``). Every comparison is paired on the unit (dataset, task,
observation seed, image): DIP seeds are averaged within a unit first, so n = images x
observation seeds, never more (``stats.paired_differences`` with ``on=UNIT``), and the 95 %
CI is ``stats.paired_comparison``'s bootstrap over units.

Tables (``summarise``):

``summary``      per dataset x task x architecture x form x lam: mean PSNR and SSIM at the
                 final iteration and at the peak; final minus peak, guided final minus plain
                 final, minus the plain peak (the plain-DIP oracle) and minus the DDPM
                 alone (its one-step x0 estimate, the cheaper and better of its two rows
                 here), in dB with CIs and verdicts; UNet evaluations per DIP step and
                 seconds per image
``comparisons``  every paired comparison behind it, in PSNR and SSIM, one row each
                 (``stats``' columns, the two sides' means and the minimum detectable
                 difference)
``ddpm``         per dataset x task x architecture: the DDPM alone (one-step x0 estimate
                 and reverse chain) against that architecture's plain-DIP oracle

Guidance "removes the need to stop early" when the final-minus-peak CI includes 0 or lies
above -``NEAR_PEAK_DB`` dB (``stopping_verdict``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from .. import stats
from ..aggregate import to_markdown as markdown_table
from .guided import CHAIN, ONE_STEP

UNIT = ("dataset", "task", "obs_seed", "image")
SETTING = ["dataset", "task", "arch", "guide_form", "guide_lam"]
# The reverse chain's identity axes: set on the DDPM-alone chain rows, none on a fit's.
CHAIN_AXES = ("start", "t0", "sampler", "eta", "steps", "sample_seed")
METHOD_GUIDED, METHOD_PLAIN = "ddpm-guided-dip", "dip"
FINAL, PEAK = "final", "peak"
# The variant's row labels -> the stop a row reports.
STOPS = {"guided": FINAL, "guided_oracle": PEAK}
# Within this much of the peak, stopping early is no longer worth a rule.
NEAR_PEAK_DB = 0.5
REMOVES = "removes the need to stop early"
STILL_NEEDED = "early stopping still needed"
TOO_FEW = "too few units for a CI"
VALUES = ("psnr", "ssim")
# What each comparison of a setting differences: (a stop, b stop, b is the plain fit).
COMPARISONS = {
    "final - peak": (FINAL, PEAK, False),
    "final - plain final": (FINAL, FINAL, True),
    "final - plain peak": (FINAL, PEAK, True),
}
# Guided fits against the DDPM alone: does DIP add anything to the denoiser it is guided by?
VERSUS_DDPM = {"final - ddpm x0": ONE_STEP}
COMPARISON_COLUMNS = [
    *SETTING,
    "method",
    "comparison",
    "value",
    "n",
    "mean_a",
    "mean_b",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p",
    "verdict",
    "mdd",
]


def summarise(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(summary, comparisons, ddpm) of the module docstring from the cells' rows."""
    fits = rows[rows["stop"].isin([FINAL, PEAK])]
    ddpm_rows = rows[rows["method"].isin([ONE_STEP, CHAIN])]
    comparisons = pd.DataFrame(
        [
            row
            for setting in settings(fits)
            for row in setting_comparisons(fits, setting) + versus_ddpm(fits, ddpm_rows, setting)
        ],
        columns=COMPARISON_COLUMNS,
    )
    summary = pd.DataFrame([summary_row(fits, comparisons, s) for s in settings(fits)])
    return summary, comparisons, ddpm_table(ddpm_rows, fits)


def settings(fits: pd.DataFrame) -> list[dict[str, str]]:
    """Every setting with fitted rows, lam 0 (plain DIP) first within an architecture."""
    found = fits[SETTING].drop_duplicates()
    found = found.assign(_lam=found["guide_lam"].astype(float))
    found = found.sort_values(["dataset", "task", "arch", "_lam", "guide_form"])
    return found[SETTING].to_dict("records")


def plain_of(setting: Mapping[str, str]) -> dict[str, str]:
    """The lam-0 setting (plain DIP) a setting is paired with."""
    return {**setting, "guide_form": "none", "guide_lam": "0"}


def is_plain(setting: Mapping[str, str]) -> bool:
    return float(setting["guide_lam"]) == 0


def setting_comparisons(fits: pd.DataFrame, setting: Mapping[str, str]) -> list[dict]:
    """The setting's comparisons in PSNR and SSIM; against plain DIP only for lam > 0."""
    rows = []
    for name, (stop_a, stop_b, against_plain) in COMPARISONS.items():
        if against_plain and is_plain(setting):
            continue
        b_setting = plain_of(setting) if against_plain else setting
        for value in VALUES:
            a = {**setting, "stop": stop_a}
            b = {**b_setting, "stop": stop_b}
            rows.append(comparison_row(fits, setting, name, value, a, b))
    return rows


def versus_ddpm(fits: pd.DataFrame, ddpm_rows: pd.DataFrame, setting: Mapping[str, str]) -> list:
    """A guided setting's final iteration against the DDPM alone on the same units (none
    for lam 0, or where the DDPM-alone rows are missing)."""
    if is_plain(setting) or ddpm_rows.empty:
        return []
    frame = pd.concat([fits, ddpm_rows], ignore_index=True)
    rows = []
    for name, method in VERSUS_DDPM.items():
        b = {key: setting[key] for key in ("dataset", "task", "arch")} | {"method": method}
        if select(ddpm_rows, b).empty:
            continue
        for value in VALUES:
            a = {**setting, "stop": FINAL}
            rows.append(comparison_row(frame, setting, name, value, a, b))
    return rows


def comparison_row(
    frame: pd.DataFrame,
    setting: Mapping[str, str],
    name: str,
    value: str,
    a: Mapping[str, str],
    b: Mapping[str, str],
) -> dict:
    """One paired comparison ``a - b`` of ``value`` on the units both sides have."""
    pairs = stats.paired_differences(frame, value, a, b, on=UNIT)
    result = stats.paired_comparison(pairs)
    return {
        **{key: setting[key] for key in SETTING},
        "method": METHOD_PLAIN if is_plain(setting) else METHOD_GUIDED,
        "comparison": name,
        "value": value,
        "n": result.n,
        "mean_a": float(pairs["a"].mean()),
        "mean_b": float(pairs["b"].mean()),
        "mean_diff": result.mean_diff,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "p": result.p,
        "verdict": result.verdict,
        "mdd": result.mdd,
    }


def stopping_verdict(ci_low: float, ci_high: float) -> str:
    """Whether a fit can run to its end: its final-minus-peak CI includes 0 or lies above
    -NEAR_PEAK_DB dB (a NaN interval, from one unit, decides nothing)."""
    if math.isnan(ci_low) or math.isnan(ci_high):
        return TOO_FEW
    if ci_low <= 0 <= ci_high or ci_low > -NEAR_PEAK_DB:
        return REMOVES
    return STILL_NEEDED


def summary_row(fits: pd.DataFrame, comparisons: pd.DataFrame, setting: Mapping[str, str]) -> dict:
    """One setting's line: its means, its PSNR comparisons and its cost."""
    mine = comparisons
    for key in SETTING:
        mine = mine[mine[key] == setting[key]]
    psnr, ssim = mine[mine["value"] == "psnr"], mine[mine["value"] == "ssim"]
    to_peak = psnr[psnr["comparison"] == "final - peak"].iloc[0]
    ssim_to_peak = ssim[ssim["comparison"] == "final - peak"].iloc[0]
    selected = select(fits, setting)
    final = selected[selected["stop"] == FINAL]
    row = {
        **setting,
        "fit_iters": int(final["stop_iter"].max()),
        "n": int(to_peak["n"]),
        "obs_seeds": seeds_of(selected, "obs_seed"),
        "dip_seeds": seeds_of(selected, "dip_seed"),
        "psnr_final": to_peak["mean_a"],
        "psnr_peak": to_peak["mean_b"],
        "ssim_final": ssim_to_peak["mean_a"],
        "ssim_peak": ssim_to_peak["mean_b"],
        **interval(to_peak, "final_minus_peak_db"),
        "stopping_verdict": stopping_verdict(to_peak["ci_low"], to_peak["ci_high"]),
    }
    for name, prefix in (
        ("final - plain final", "minus_plain_final_db"),
        ("final - plain peak", "minus_plain_peak_db"),
        ("final - ddpm x0", "minus_ddpm_x0_db"),
    ):
        found = psnr[psnr["comparison"] == name]
        row |= interval(found.iloc[0] if len(found) else None, prefix)
    row["unet_evals_per_step"] = float(final["unet_evals_per_step"].mean())
    row["seconds_per_image"] = float(final["seconds"].mean())
    return row


def interval(comparison: pd.Series | None, prefix: str) -> dict:
    """A comparison's mean difference, CI, verdict and minimum detectable difference as
    ``prefix``-named columns (NaN and empty where there is none: lam 0 against itself)."""
    fields = {"": "mean_diff", "_ci_low": "ci_low", "_ci_high": "ci_high", "_mdd": "mdd"}
    out = {
        f"{prefix}{suffix}": math.nan if comparison is None else comparison[field]
        for suffix, field in fields.items()
    }
    out[f"{prefix}_verdict"] = "" if comparison is None else comparison["verdict"]
    return out


def select(frame: pd.DataFrame, filters: Mapping[str, str]) -> pd.DataFrame:
    keep = pd.Series(True, index=frame.index)
    for key, value in filters.items():
        keep &= frame[key].astype(str) == str(value)
    return frame[keep]


def seeds_of(frame: pd.DataFrame, column: str) -> str:
    return " ".join(sorted(frame[column].astype(str).unique(), key=float))


def ddpm_table(ddpm_rows: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x task x architecture and DDPM-alone method: its means, cost, and its
    difference to that architecture's plain-DIP oracle (the lam-0 fits' peak)."""
    frame = pd.concat([ddpm_rows, fits], ignore_index=True)
    out, keys = [], ["dataset", "task", "arch", "method"]
    for method in ddpm_rows[keys].drop_duplicates().to_dict("records"):
        rows = select(ddpm_rows, method)
        oracle = {**method, "method": METHOD_PLAIN, "guide_lam": "0", "stop": PEAK}
        line = {
            **method,
            "t_start": int(rows["t_start"].iloc[0]),
            "chain_steps": int(rows["chain_steps"].iloc[0]),
            "unet_evals_per_image": float(rows["unet_evals"].mean()),
            "seconds_per_image": float(rows["seconds"].mean()),
        }
        for value in VALUES:
            pairs = stats.paired_differences(frame, value, method, oracle, on=UNIT)
            result = stats.paired_comparison(pairs)
            line |= {
                "n": result.n,
                value: float(pairs["a"].mean()),
                f"{value}_plain_peak": float(pairs["b"].mean()),
                f"{value}_minus_plain_peak": result.mean_diff,
                f"{value}_minus_plain_peak_ci_low": result.ci_low,
                f"{value}_minus_plain_peak_ci_high": result.ci_high,
                f"{value}_minus_plain_peak_verdict": result.verdict,
                f"{value}_minus_plain_peak_mdd": result.mdd,
            }
        out.append(line)
    return pd.DataFrame(out)


MARKDOWN_SUMMARY = {
    "dataset": "dataset",
    "task": "task",
    "arch": "arch",
    "guide_form": "form",
    "guide_lam": "lam",
    "n": "n",
    "psnr_final": "PSNR final",
    "psnr_peak": "PSNR peak",
    "final_minus_peak_db": "final - peak",
    "stopping_verdict": "stopping",
    "minus_plain_final_db": "- plain final",
    "minus_plain_peak_db": "- plain peak",
    "minus_ddpm_x0_db": "- DDPM x0",
    "unet_evals_per_step": "UNet/step",
    "seconds_per_image": "s/image",
}
MARKDOWN_DDPM = {
    "dataset": "dataset",
    "task": "task",
    "arch": "arch",
    "method": "DDPM alone",
    "n": "n",
    "psnr": "PSNR",
    "psnr_plain_peak": "plain peak",
    "psnr_minus_plain_peak": "- plain peak",
    "unet_evals_per_image": "UNet/image",
    "seconds_per_image": "s/image",
}


def to_markdown(summary: pd.DataFrame, ddpm: pd.DataFrame) -> str:
    """The two tables as short Markdown, each difference with its 95 % CI."""
    shown = summary.copy()
    for prefix in (
        "final_minus_peak_db",
        "minus_plain_final_db",
        "minus_plain_peak_db",
        "minus_ddpm_x0_db",
    ):
        shown[prefix] = [ci_text(row, prefix) for _, row in shown.iterrows()]
    alone = ddpm.copy()
    if len(alone):
        alone["psnr_minus_plain_peak"] = [
            ci_text(row, "psnr_minus_plain_peak") for _, row in alone.iterrows()
        ]
    lines = [
        "## DDPM-guided DIP",
        "",
        f"PSNR in dB at the last iteration (final) and at each run's own peak; differences "
        f"are paired per image and observation seed (n), with 95 % bootstrap CIs. Guidance "
        f"{REMOVES} where the final-minus-peak CI includes 0 or lies above "
        f"-{NEAR_PEAK_DB} dB. lam 0 is plain DIP with the same iterations.",
        "",
        markdown_table(shown[list(MARKDOWN_SUMMARY)].rename(columns=MARKDOWN_SUMMARY)),
        "",
        "### The DDPM alone against the plain-DIP oracle",
        "",
        markdown_table(alone.reindex(columns=list(MARKDOWN_DDPM)).rename(columns=MARKDOWN_DDPM)),
        "",
    ]
    return "\n".join(lines)


def ci_text(row: pd.Series, prefix: str) -> str:
    """``+0.12 [-0.05, +0.30]``; an em dash where there is no comparison."""
    mean = row[prefix]
    if pd.isna(mean):
        return "—"
    low, high = row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"]
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"
