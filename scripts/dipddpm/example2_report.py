"""Example 2's report section: the formulation template filled with the study's numbers.

Reads the leave-one-image-out tables (``stages.earlystop_loo``: every case at the setting
chosen without its photograph, the per-rule summary, the Holm family of comparisons) and
the cells they came from, and renders ``templates/example2.md``. Per rule: the gap to the
plain-DIP oracle (mean over cases, 95 % interval over photographs), the share of cases
within 0.5 dB and 1 dB, the stop iteration, the seconds to it, PSNR and SSIM; every rule
against ES-WMV untuned and the oracle from the comparisons table; the sentence naming the
rules within 0.5 dB of the oracle on at least 70 % of cases, or that none is.

The example images the figures show image by image are chosen here too
(``example_cells``, ``example_images``), so the rules that refit them and the section agree
on them; ``check_reproduced`` is the refit's check against the cell it reproduces.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from . import grid, templates
from .data import crop_name
from .earlystop.loo import ES_WMV_PAPER, ORACLE, compare_rules, within_column
from .earlystop.progressive_variant import RULE_DEFAULTS
from .earlystop.targets import stage_sigmas
from .stages.earlystop_loo import (
    CASE_COLUMNS,
    GROUP,
    PLAIN_FIT_COLUMNS,
    TUNED_ES_WMV,
    UNTUNED_ES_WMV,
    LooCell,
    patiences_differ,
    photo_of,
    progressive_rule,
    with_case_columns,
)

# The headline sentence: the rules within WITHIN_DB of the oracle on WITHIN_SHARE of cases.
WITHIN_DB = 0.5
WITHIN_SHARE = 0.70
# A refit must reproduce its cell's PSNR curve to this many dB at every iteration.
REFIT_TOLERANCE_DB = 1e-3
# How the stage noises were drawn (targets.NOISE_MODES), as the formulation says it.
NOISE_DRAWS = {
    "fresh": "an independent draw $n_k$ per stage",
    "fixed": "one draw $n_k = n$ for every stage, a single forward-diffusion path",
}
# What the section quotes from the comparisons family: every rule against these.
REFERENCES = (UNTUNED_ES_WMV, ORACLE)


# -------------------------------------------------------------------- example images


def plain_fit_of(cell: Mapping[str, str]) -> tuple[str, ...]:
    """The plain fit an early-stopping cell shares with the cells that differ from it only
    in the progressive variant's settings."""
    return tuple(grid.canonical(cell[c]) for c in PLAIN_FIT_COLUMNS)


def example_cells(
    cells: Sequence[Mapping[str, str]], sigmas: Mapping[str, float]
) -> list[dict[str, str]]:
    """The cells of the plain fits shown image by image: per dataset, the fit at the
    lowest noise (``sigmas``: task -> sigma), then the lowest observation seed, the first
    architecture by name and the lowest DIP seed; every cell sharing that fit, ordered by
    schedule, stages, sigma_max and stage patience. Independent of the order ``cells`` come
    in."""
    chosen = []
    for dataset in sorted({c["dataset"] for c in cells}):
        mine = [grid.EARLYSTOP.identity(c) for c in cells if c["dataset"] == dataset]
        first = min(
            mine,
            key=lambda c: (
                float(sigmas[c["task"]]),
                c["task"],
                int(c["obs_seed"]),
                c["arch"],
                int(c["dip_seed"]),
            ),
        )
        chosen += sorted(
            (c for c in mine if plain_fit_of(c) == plain_fit_of(first)), key=_progressive_key
        )
    return chosen


def progressive_examples(cells: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Of ``example_cells``' cells, the first progressive setting of each plain fit: the
    progressive run whose outputs the crops figure shows."""
    first: dict[tuple[str, ...], dict[str, str]] = {}
    for cell in sorted((grid.EARLYSTOP.identity(c) for c in cells), key=_progressive_key):
        first.setdefault(plain_fit_of(cell), cell)
    return list(first.values())


def _progressive_key(cell: Mapping[str, str]) -> tuple:
    return (
        cell["es_schedule"],
        int(cell["stages"]),
        float(cell["sigma_max"]),
        int(cell["stage_patience"]),
    )


def example_images(names: Sequence[str]) -> list[int]:
    """Indices of the first crop of each photograph (an image that is no crop is its own
    photograph), in the order the photographs first appear."""
    first: dict[str, tuple[int, int]] = {}
    for index, name in enumerate(names):
        photo = photo_of(str(name))
        crop = _crop_index(str(name), photo)
        if photo not in first or crop < first[photo][0]:
            first[photo] = (crop, index)
    return [index for _, index in first.values()]


def _crop_index(name: str, photo: str) -> int:
    if name == photo:
        return 0
    return next(k for k in range(len(name)) if crop_name(photo, k) == name)


# ------------------------------------------------------------------- refit checking


def check_reproduced(
    refit: pd.DataFrame,
    reference: pd.DataFrame,
    value: str,
    what: str,
    tolerance_db: float = REFIT_TOLERANCE_DB,
) -> float:
    """The largest |refit - reference| of ``value`` over the refit's (image, iteration)
    rows; raises ValueError when it exceeds ``tolerance_db`` or the reference lacks an
    iteration the refit logged. ``what`` names the fit in the message."""
    keys = ["image", "iteration"]
    merged = refit[[*keys, value]].merge(
        reference[[*keys, value]], on=keys, how="left", suffixes=("_refit", "_cell")
    )
    missing = merged[f"{value}_cell"].isna() & merged[f"{value}_refit"].notna()
    if missing.any():
        row = merged[missing].iloc[0]
        raise ValueError(
            f"{what}: the cell has no {value!r} at image {int(row['image'])}, iteration "
            f"{int(row['iteration'])}, which the refit logged ({int(missing.sum())} such rows)"
        )
    diff = (merged[f"{value}_refit"] - merged[f"{value}_cell"]).abs()
    if diff.isna().any() and not merged.loc[diff.isna(), f"{value}_refit"].isna().all():
        raise ValueError(f"{what}: {value!r} is NaN in the refit where the cell has a value")
    worst = float(diff.max()) if diff.notna().any() else 0.0
    if worst > tolerance_db:
        row = merged.loc[diff.idxmax()]
        raise ValueError(
            f"{what} does not reproduce its cell: {value} {row[f'{value}_refit']:.6f} dB "
            f"against the cell's {row[f'{value}_cell']:.6f} dB at image {int(row['image'])}, "
            f"iteration {int(row['iteration'])} (|diff| {worst:.3g} dB > {tolerance_db:g}); "
            "the refit must use the cell's settings, seeds and observation on the CPU"
        )
    return worst


# -------------------------------------------------------------------- the section


def canonical_cases(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its case columns in their canonical spelling (as cells name them)."""
    frame = frame.copy()
    for column in CASE_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].map(grid.canonical)
    return frame


def progressive_names(cells: Sequence[LooCell]) -> list[str]:
    """The progressive rules' names in ``cases``, one per progressive setting."""
    show_patience = shows_patience(cells)
    return list(dict.fromkeys(progressive_rule(cell.identity, show_patience) for cell in cells))


def shows_patience(cells: Sequence[LooCell]) -> bool:
    """Whether the progressive rules' names spell the stage patience, as the loo tables
    name them (``earlystop_loo.patiences_differ``)."""
    return patiences_differ(cell.identity for cell in cells)


def gap_intervals(cases: pd.DataFrame) -> pd.DataFrame:
    """Per rule (``a``): its gap to the oracle paired on the cases, averaged within each
    photograph and bootstrapped over photographs at 95 %, uncorrected (``loo.compare_rules``
    against the oracle alone): ``mean_diff``, ``ci_low``, ``ci_high``, ``n``, ``mdd``."""
    return compare_rules(cases, CASE_COLUMNS, references=(ORACLE,), group=GROUP, holm_correct=False)


def ssim_at_stops(cases: pd.DataFrame, cells: Sequence[LooCell]) -> pd.DataFrame:
    """Per case row of ``cases``: the SSIM the cell scored at that stop (NaN where it
    scored none there). A plain rule's SSIM at stop t is that of the plain fit's EMA
    snapshot the cell used for t, whatever rule stopped there; the progressive rule's is
    its own row. Returns ``cases`` with an ``ssim`` column."""
    plain, progressive = [], []
    show_patience = shows_patience(cells)
    for cell in sorted(cells, key=lambda c: -c.last_iter):
        table = cell.table
        rows = table[table["run"] == "plain"][["image", "stop_iter", "ssim"]]
        plain.append(with_case_columns(rows, cell))
        mine = table[(table["run"] == "progressive") & (table["rule"] == "progressive")]
        mine = with_case_columns(mine[["image", "stop_iter", "ssim"]], cell)
        progressive.append(mine.assign(rule=progressive_rule(cell.identity, show_patience)))
    keys = [*CASE_COLUMNS, "stop_iter"]
    plain_ssim = canonical_cases(pd.concat(plain)).drop_duplicates(keys)[[*keys, "ssim"]]
    prog_ssim = canonical_cases(pd.concat(progressive)).drop_duplicates([*keys, "rule"])
    cases = canonical_cases(cases)
    is_progressive = cases["rule"].isin(set(prog_ssim["rule"]))
    with_plain = cases[~is_progressive].merge(plain_ssim, on=keys, how="left")
    with_prog = cases[is_progressive].merge(
        prog_ssim[[*keys, "rule", "ssim"]], on=[*keys, "rule"], how="left"
    )
    return pd.concat([with_plain, with_prog], ignore_index=True)


RULE_TABLE_COLUMNS = [
    "rule",
    "tuned",
    "n cases",
    "n photos",
    "mean gap (dB)",
    "95 % CI",
    "median gap",
    "within 0.5 dB",
    "within 1 dB",
    "mean stop",
    "median stop",
    "seconds to stop",
    "PSNR",
    "SSIM",
]


def rule_table(summary: pd.DataFrame, intervals: pd.DataFrame, ssim: pd.DataFrame) -> pd.DataFrame:
    """One row per rule of ``summary`` (``loo_summary``) with its interval and SSIM."""
    by_rule = intervals.set_index("a")
    rows = []
    for _, row in summary.iterrows():
        rule = row["rule"]
        mine = ssim[ssim["rule"] == rule]["ssim"].astype(float)
        ci = (
            interval(by_rule.loc[rule, "ci_low"], by_rule.loc[rule, "ci_high"])
            if rule in by_rule.index
            else "-"
        )
        rows.append(
            {
                "rule": rule,
                "tuned": "yes" if _true(row["tuned"]) else "no",
                "n cases": int(row["n_cases"]),
                "n photos": int(row["n_images"]),
                "mean gap (dB)": row["mean_gap_plain_db"],
                "95 % CI": ci,
                "median gap": row["median_gap_plain_db"],
                "within 0.5 dB": percent(row[within_column(0.5)]),
                "within 1 dB": percent(row[within_column(1.0)]),
                "mean stop": row["mean_stop_iter"],
                "median stop": row["median_stop_iter"],
                "seconds to stop": row.get("mean_seconds_to_stop", math.nan),
                "PSNR": row["mean_psnr"],
                "SSIM": ssim_spelling(mine),
            }
        )
    return pd.DataFrame(rows, columns=RULE_TABLE_COLUMNS)


def ssim_spelling(values: pd.Series) -> str:
    """The mean SSIM of a rule's cases, with how many of them it covers when not all."""
    known = values.dropna()
    if known.empty:
        return "n/a"
    text = f"{known.mean():.3f}"
    return text if len(known) == len(values) else f"{text} ({len(known)} of {len(values)})"


def within_sentence(
    summary: pd.DataFrame, db: float = WITHIN_DB, share: float = WITHIN_SHARE
) -> str:
    """Which rules are within ``db`` of the oracle on at least ``share`` of their cases
    (the oracle itself excluded), or plainly that none is, naming the closest."""
    rules = summary[summary["rule"] != ORACLE]
    if rules.empty:
        return "No rule besides the oracle was scored."
    shares = rules.set_index("rule")[within_column(db)].astype(float)
    passing = shares[shares >= share - 1e-12]
    if passing.empty:
        best = shares.idxmax()
        return (
            f"No rule is within {db:g} dB of the plain-DIP oracle on {percent(share)} of cases "
            f"or more; the closest is {best} ({percent(shares[best])} of cases)."
        )
    named = [f"{rule} ({percent(value)} of cases)" for rule, value in passing.items()]
    verb = "is" if len(named) == 1 else "are"
    return (
        f"{_join(named)} {verb} within {db:g} dB of the plain-DIP oracle on at least "
        f"{percent(share)} of cases."
    )


def comparison_rows(comparisons: pd.DataFrame, references: Sequence[str] = REFERENCES):
    """The comparisons family's rows against ``references`` (in that order)."""
    rows = [comparisons[comparisons["b"] == b] for b in references]
    return pd.concat(rows, ignore_index=True) if rows else comparisons.iloc[:0]


def comparison_table(comparisons: pd.DataFrame, references: Sequence[str] = REFERENCES) -> str:
    rows = comparison_rows(comparisons, references)
    if rows.empty:
        return "_(no comparisons)_"
    reachable = rows["significance_reachable"].map(_true)
    shown = rows.assign(
        ci=[interval(lo, hi) for lo, hi in zip(rows["ci_low"], rows["ci_high"], strict=True)],
        note=rows["note"].fillna(""),
        verdict=rows["verdict"].where(reachable, "n too small"),
    )
    columns = ["name", "n", "n_cases", "mean_diff", "ci", "level", "p_holm", "verdict", "mdd"]
    text = markdown(shown[columns].rename(columns={"mean_diff": "a - b gap (dB)"}), 3)
    notes = shown[shown["note"] != ""]
    text += (
        "\n\n`a - b gap` is rule a's gap to the oracle minus rule b's, per case, averaged "
        "within each photograph; `helps` means a stops closer to the oracle. `n` counts "
        "photographs, `level` is each interval's Holm level and `mdd` the minimum detectable "
        "difference (alpha 0.05, power 0.8). The family also compares every rule with the "
        f"tuned `{TUNED_ES_WMV}` (`loo_comparisons.csv`)."
    )
    if not notes.empty:
        text += "\n\n" + "\n".join(f"- {r['name']}: {r['note']}." for _, r in notes.iterrows())
    return text


def comparison_phrase(row: pd.Series) -> str:
    """``a - b: +0.31 dB [+0.10, +0.52] (Holm level 0.99), hurts (Holm p = 0.02)``, or the
    power note when n photographs cannot reach significance."""
    text = (
        f"against {row['b']}: {row['mean_diff']:+.2f} dB {interval(row['ci_low'], row['ci_high'])}"
    )
    note = _note(row)
    if not _true(row["significance_reachable"]):
        return f"{text}; {note}" if note else text
    text += f", {row['verdict']} (Holm p = {row['p_holm']:.3g})"
    return f"{text}; {note}" if note else text


def _note(row: pd.Series) -> str:
    """The comparison's note, empty when it has none (a CSV reads a missing one as NaN)."""
    note = row.get("note")
    return "" if note is None or pd.isna(note) else str(note)


def answer(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    progressive: Sequence[str],
    db: float = WITHIN_DB,
    share: float = WITHIN_SHARE,
) -> str:
    """The section's answer: the within sentence, the closest rule, and the progressive
    rules against ES-WMV and the oracle."""
    paragraphs = [f"**{within_sentence(summary, db, share)}**"]
    rules = summary[summary["rule"] != ORACLE].set_index("rule")
    if not rules.empty:
        gaps = rules["mean_gap_plain_db"].astype(float)
        best = gaps.idxmin()
        n = int(rules["n_cases"].max())
        paragraphs.append(
            f"Over {n} cases ({int(rules['n_images'].max())} photographs), the smallest mean "
            f"gap to the oracle is {best}'s, {gaps[best]:.2f} dB "
            f"({percent(rules.loc[best, within_column(1.0)])} of cases within 1 dB); "
            f"the largest is {gaps.idxmax()}'s, {gaps.max():.2f} dB."
        )
    for rule in progressive:
        mine = comparisons[comparisons["a"] == rule]
        phrases = [comparison_phrase(row) for _, row in comparison_rows(mine).iterrows()]
        if phrases:
            paragraphs.append(
                f"**{rule}** (its gap minus the other rule's, per case; negative: closer to "
                "the oracle): " + "; ".join(phrases) + "."
            )
    return "\n\n".join(paragraphs)


def settings_paragraph(summary: pd.DataFrame) -> str:
    """The settings each rule was scored at, with the photographs held out at each."""
    lines = ["Settings used (photographs held out at each):", ""]
    for _, row in summary.iterrows():
        if row["rule"] == ORACLE:
            continue
        lines.append(f"- {row['rule']}: {row['settings']}")
    return "\n".join(lines)


def by_task_table(by_task: pd.DataFrame) -> str:
    columns = {
        "task": "task",
        "rule": "rule",
        "n_cases": "n cases",
        "mean_gap_plain_db": "mean gap (dB)",
        within_column(0.5): "within 0.5 dB",
        within_column(1.0): "within 1 dB",
        "mean_stop_iter": "mean stop",
        "mean_psnr": "PSNR",
    }
    shown = by_task[list(columns)].rename(columns=columns)
    for column in ("within 0.5 dB", "within 1 dB"):
        shown[column] = shown[column].map(percent)
    return markdown(shown)


def protocol(cases: pd.DataFrame, cells: Sequence[LooCell]) -> str:
    """What was run: the photographs and crops, noise levels, seeds, the plain fit's length
    and the progressive settings, each from the cells themselves."""
    cases = canonical_cases(cases)
    plain = cases[cases["rule"] == ORACLE]
    sigmas = {cell.identity["task"]: cell.sigma * 255 for cell in cells}
    tasks = ", ".join(f"{t} (sigma {sigmas[t]:g})" for t in sorted(sigmas, key=sigmas.get))
    datasets = ", ".join(sorted(plain["dataset"].unique()))
    lines = [
        f"{len(plain)} cases: {plain['name'].nunique()} images (crops of "
        f"{plain[GROUP].nunique()} photographs; datasets {datasets}) x noise levels {tasks} "
        f"x observation seeds {_values(plain['obs_seed'])}, DIP architecture(s) "
        f"{_values(plain['arch'])}, DIP seed(s) {_values(plain['dip_seed'])}.",
        "",
        plain_length(cells),
        "",
        "Progressive settings: "
        + "; ".join(f"{rule} ({len(rows)} cells)" for rule, rows in _by_progressive(cells).items())
        + ".",
    ]
    return "\n".join(lines)


def plain_length(cells: Sequence[LooCell]) -> str:
    """How long the plain fits ran: past each image's peak under a cap, or a fixed length."""
    recorded = [cell.info.get("plain_past_peak") for cell in cells]
    lasts = sorted({cell.last_iter for cell in cells})
    if all(r is None for r in recorded):
        return (
            f"The plain fits ran a fixed length ({', '.join(map(str, lasts))} iterations): an "
            "oracle or an ES-WMV stop near the end may be cut short."
        )
    patience = sorted({r["patience"] for r in recorded if r})
    caps = sorted({r["max_iters"] for r in recorded if r})
    return (
        f"Each plain fit ran until every image was {_join(map(str, patience))} iterations "
        f"past its EMA-PSNR peak, under a cap of {_join(map(str, caps))} iterations "
        f"(runs ended at {lasts[0]} to {lasts[-1]} iterations)."
    )


def peaks_paragraph(peaks: pd.DataFrame) -> str:
    """How many plain fits reached the cap before their peak + patience."""
    if peaks.empty or peaks["hit_cap"].isna().all():
        return (
            "The plain fits ran a fixed length, so whether each image ran past its peak is not "
            "recorded (`loo_plain_peaks.csv`)."
        )
    capped = peaks["hit_cap"].astype(str).str.lower().eq("true")
    text = (
        f"**Run past the peak.** {int(capped.sum())} of {len(peaks)} plain fits (image x cell) "
        "reached the cap before their EMA-PSNR peak plus the patience"
    )
    if capped.any():
        names = ", ".join(sorted(peaks.loc[capped, "name"].astype(str).unique())[:6])
        return (
            f"{text} ({names}{', ...' if capped.sum() > 6 else ''}): on those the oracle is "
            "the best iteration up to the cap and ES-WMV may not have run out its patience."
        )
    return (
        f"{text}: every oracle is a peak the run went past, and ES-WMV could run out its patience."
    )


def formulation(
    settings: Mapping,
    sigma_table: str,
    patiences: Iterable[int] = (RULE_DEFAULTS["stage_patience"],),
) -> str:
    """Example 2's formulation (its own template, so the default run's report and the
    study's Example 2 section share one text). ``settings``: the early-stopping block's
    ``noise``, ``iters_per_stage`` and ``final_iters`` and the DIP fit's ``exp_weight``;
    ``sigma_table``: the table of the stage noise levels that ran; ``patiences``: the
    stage patiences the cells ran with."""
    values = {
        "exp_weight": settings["exp_weight"],
        "ratio": RULE_DEFAULTS["ratio"],
        "noise_draws": NOISE_DRAWS[settings["noise"]],
        "stage_patience": patience_spelling(patiences),
        "iters_per_stage": settings["iters_per_stage"],
        "final_iters": settings["final_iters"],
        "stage_sigmas": sigma_table,
        "stop_stage": RULE_DEFAULTS["stop_stage"],
    }
    return templates.render("example2_formulation", values).rstrip("\n")


def patience_spelling(patiences: Iterable[int]) -> str:
    """The stage patience as the formulation states it: the one value, or each value the
    cells ran with (every cell has one)."""
    values = [str(p) for p in sorted({int(p) for p in patiences})]
    if len(values) == 1:
        return values[0]
    return f"{_or(values)} (the cell's stage patience)"


def configured_stage_sigmas(settings: Sequence[Mapping]) -> str:
    """The stage noise levels (0-255) of each configured progressive setting
    (``schedule``, ``stages``, ``sigma_max`` in 0-255), computed as the fit computes them."""
    rows = []
    for setting in settings:
        sigmas = stage_sigmas(
            str(setting["schedule"]),
            int(setting["stages"]),
            float(setting["sigma_max"]) / 255.0,
            ratio=RULE_DEFAULTS["ratio"],
        )
        label = f"{setting['schedule']} K={setting['stages']} smax={setting['sigma_max']}"
        rows.append(
            {"setting": label, "sigma_k (0-255)": ", ".join(f"{s * 255:.3g}" for s in sigmas)}
        )
    return markdown(pd.DataFrame(rows))


def stage_sigma_table(cells: Sequence[LooCell]) -> str:
    """Each progressive setting's stage noise levels (0-255), as the cells recorded them."""
    rows = []
    for rule, mine in _by_progressive(cells).items():
        sigmas = mine[0].info.get("sigmas") or []
        rows.append(
            {"setting": rule, "sigma_k (0-255)": ", ".join(f"{s * 255:.3g}" for s in sigmas)}
        )
    return markdown(pd.DataFrame(rows))


def refit_paragraph(plain: pd.DataFrame | None, progressive: pd.DataFrame | None) -> str:
    """How the crops figure's outputs were obtained and how closely they reproduce."""
    lines = ["### How the crops were obtained", ""]
    if plain is not None and not plain.empty:
        examples = plain.drop_duplicates("example")
        lines.append(
            f"A cell keeps the progressive run's outputs at its stop only, so the plain fit "
            f"of the {len(examples)} example images ({', '.join(examples['name'].astype(str))}) "
            f"was refitted on the CPU with its cell's architecture, seed, observation and "
            f"hyperparameters, for {int(plain['stop_iter'].max())} iterations at most (the "
            f"largest stop of a rule on them), saving the EMA output at every rule's stop. "
            f"Its PSNR matches the cell's trajectory at every iteration it ran to "
            f"{agreement(plain['max_abs_diff_db'].max())} (the check refuses more than "
            f"{REFIT_TOLERANCE_DB:g} dB), and the saved outputs' PSNR the trajectory's at the "
            f"stops {agreement(plain['output_diff_db'].max())}."
        )
    if progressive is not None and not progressive.empty:
        lines += [
            "",
            "The progressive runs of those images were refitted too, alone as well: the one "
            "thing an image's progressive fit shares with the other images of its run is the "
            "backtracking reset the run makes whenever one of them ends a noisy stage, and "
            "the refit replays the cell's resets from its recorded stage ends. Their PSNR "
            "curves match the cell's at every iteration "
            f"{agreement(progressive['max_abs_diff_db'].max())}, with the same stage ends, "
            "stops and outputs at the stop. The crops show each run's output at the end of "
            "each noisy stage and at the rule's stop.",
        ]
    return "\n".join(lines)


def agreement(worst_db: float) -> str:
    """``bit for bit`` for a zero difference, else ``to within x dB``."""
    return "bit for bit" if worst_db == 0 else f"to within {worst_db:.2g} dB"


def figures_paragraph(figures: Mapping[str, str]) -> str:
    captions = {
        "curves": "Example images (first crop of each photograph at the lowest noise level, "
        "observation and DIP seed): the plain fit's EMA PSNR (solid) with every rule's stop "
        "(markers), and the progressive run's PSNR (dashed) with its stop.",
        "gaps": "Gap to the plain-DIP oracle per rule over every case (box: quartiles; dots: "
        "cases; dotted lines at 0.5 and 1 dB).",
        "crops": "Observation, the plain fit's output at each rule's stop, the progressive "
        "run's output at the end of each noisy stage and at its stop, and the clean crop, "
        "with PSNR.",
    }
    return "\n\n".join(
        f"![{captions[name]}]({path})\n\n*{captions[name]}*" for name, path in figures.items()
    )


def example2_section(
    tables: Mapping[str, pd.DataFrame],
    cells: Sequence[LooCell],
    settings: Mapping,
    figures: Mapping[str, str],
    plain_refit: pd.DataFrame | None = None,
    progressive_refit: pd.DataFrame | None = None,
) -> str:
    """The Markdown of Example 2's section. ``tables``: the leave-one-image-out tables
    (``cases``, ``summary``, ``summary_by_task``, ``comparisons``, ``plain_peaks``);
    ``cells``: the early-stopping cells they came from; ``settings``: the candidate grids'
    keys (``budgets``, ``loo_taus``, ``wmv_window``, ``wmv_windows``, ``wmv_patience``,
    ``loo_patiences``), the progressive stages' ``iters_per_stage``, ``final_iters`` and
    ``noise``
    and the DIP fit's ``exp_weight``; ``figures``: name -> path relative to the
    section; the refit tables as the refit rules write them."""
    cases, summary = tables["cases"], tables["summary"]
    intervals = gap_intervals(cases)
    ssim = ssim_at_stops(cases, cells)
    windows = sorted({int(settings["wmv_window"]), *map(int, settings["wmv_windows"])})
    untuned = {"wmv_window": int(settings["wmv_window"]), "patience": int(settings["wmv_patience"])}
    values = {
        "formulation": formulation(
            settings,
            stage_sigma_table(cells),
            [int(cell.identity["stage_patience"]) for cell in cells],
        ),
        "budgets": _set(settings["budgets"]),
        "taus": _set(settings["loo_taus"]),
        "es_wmv_paper": es_wmv_spelling(ES_WMV_PAPER),
        "untuned": UNTUNED_ES_WMV,
        "es_wmv_untuned": es_wmv_spelling(untuned)
        + (" (the paper's)" if untuned == ES_WMV_PAPER else " (not the paper's)"),
        "tuned": TUNED_ES_WMV,
        "windows": _set(windows),
        "patiences": _set(settings["loo_patiences"]),
        "protocol": protocol(cases, cells),
        "answer": answer(summary, tables["comparisons"], progressive_names(cells)),
        "rules": markdown(rule_table(summary, intervals, ssim)),
        "settings": settings_paragraph(summary),
        "by_task": by_task_table(tables["summary_by_task"]),
        "comparisons": comparison_table(tables["comparisons"]),
        "peaks": peaks_paragraph(tables["plain_peaks"]),
        "figures": figures_paragraph(figures),
        "refit": refit_paragraph(plain_refit, progressive_refit),
    }
    return templates.render("example2", values)


# ------------------------------------------------------------------------ spelling


def markdown(frame: pd.DataFrame, digits: int = 2) -> str:
    if frame.empty:
        return "_(no rows)_"
    shown = frame.round(digits).astype(object).where(frame.notna(), None)
    return shown.to_markdown(index=False, missingval="-")


def interval(low: float, high: float, digits: int = 2) -> str:
    if math.isnan(low) or math.isnan(high):
        return "n/a"
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def percent(share: float) -> str:
    return "n/a" if math.isnan(float(share)) else f"{100 * float(share):.0f} %"


def es_wmv_spelling(setting: Mapping[str, object]) -> str:
    return f"$W = {setting['wmv_window']}$, $P = {setting['patience']}$"


def _set(values: Iterable[object]) -> str:
    return "$\\{" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) + "\\}$"


def _join(items: Iterable[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _or(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1]


def _values(column: pd.Series) -> str:
    return ", ".join(sorted(column.astype(str).unique(), key=lambda v: (len(v), v)))


def _true(value: object) -> bool:
    return str(value).lower() == "true"


def _by_progressive(cells: Sequence[LooCell]) -> dict[str, list[LooCell]]:
    groups: dict[str, list[LooCell]] = {}
    show_patience = shows_patience(cells)
    for cell in cells:
        groups.setdefault(progressive_rule(cell.identity, show_patience), []).append(cell)
    return groups
