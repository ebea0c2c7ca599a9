"""Example 1's report section: the formulation template filled with the study's numbers.

Reads the tables :mod:`dipddpm.stages.example1` writes (primary comparisons, steps to target,
auto-t0, chosen settings) and, when given, the models part's verdicts, and renders
``templates/example1.md``. Every number it prints names its cells (the tables' ``setting``
and ``seeds`` columns) and its n; the answer sentences quote only computable, Holm-corrected
paired comparisons between cells on the same task, images and observations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from . import example1, templates
from .ddpm.auto_t0 import noise_level
from .ddpm.diffusion import Diffusion

COMBINED = example1.COMBINED


def example1_section(
    tables: Mapping[str, pd.DataFrame],
    tuning: int,
    T: int = 1000,
    schedule: str = "linear",
    verdicts: pd.DataFrame | None = None,
    prior_headline: pd.DataFrame | None = None,
) -> str:
    """The Markdown of Example 1's section (see the module docstring). ``prior_headline``
    is the prior-training part's headline table when that part has run."""
    primary = tables["primary_comparisons"]
    values = {
        "formulation": formulation(T, schedule, t0_values(tables)),
        "protocol": protocol(tables["settings"], tuning),
        "answer": answer(primary, tables["nfe_to_target"]),
        "primary": primary_table(primary),
        "margin": example1.TARGET_MARGIN_DB,
        "steps": steps_table(tables["steps_to_target"]),
        "nfe": nfe_table(tables["nfe_to_target"]),
        "auto_t0": auto_t0_table(tables["auto_t0"]),
        "ablations": ablations_table(tables["ablations"]),
        "models": models_paragraph(verdicts),
        "prior_training": prior_training_paragraph(prior_headline),
    }
    return templates.render("example1", values)


def formulation(T: int, schedule: str, t0s: Sequence[int]) -> str:
    """Example 1's formulation (its own template, so the default run's report and the
    study's Example 1 section share one text), with the noise levels of ``t0s``."""
    values = {
        "T": T,
        "schedule": schedule,
        "noise_levels": noise_table(Diffusion(schedule, T), t0s),
    }
    return templates.render("example1_formulation", values).rstrip("\n")


def markdown(frame: pd.DataFrame, digits: int = 2) -> str:
    if frame.empty:
        return "_(no rows)_"
    return frame.round(digits).to_markdown(index=False)


def with_ci(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``ci`` column spelling each row's interval."""
    pairs = zip(table["ci_low"], table["ci_high"], strict=True)
    return table.assign(ci=[interval(low, high) for low, high in pairs])


def interval(low: float, high: float, digits: int = 2) -> str:
    if math.isnan(low) or math.isnan(high):
        return "n/a"
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def t0_values(tables: Mapping[str, pd.DataFrame]) -> list[int]:
    """The numeric t0 values the Example 1 cells sampled (from the t0 curves)."""
    curve = tables["t0_curves"]
    values = pd.to_numeric(curve["t0"], errors="coerce").dropna().astype(int)
    return sorted(set(values))


def noise_table(diffusion: Diffusion, steps: Sequence[int]) -> str:
    """s(t) of each sampled start step, in [0, 1] units and as a sigma in 0-255 units."""
    rows = [
        {"t0": t, "s(t0) [0,1]": noise_level(diffusion, t), "sigma equivalent (0-255)": 0.0}
        for t in steps
        if t > 0
    ]
    table = pd.DataFrame(rows)
    if not table.empty:
        table["sigma equivalent (0-255)"] = table["s(t0) [0,1]"] * 255
    return markdown(table, 3)


def protocol(settings: pd.DataFrame, tuning: int) -> str:
    """How settings were chosen, and the chosen DIP+DDPM setting of each task."""
    lines = [
        f"Every {tuning}th image (images 0, {tuning}, {2 * tuning}, ...) is a tuning image: "
        "each method's setting (prior duration and architecture, t0, lambda and window, "
        "sampler, model) is the one with the best mean PSNR on the tuning images, and every "
        "number below comes from the other (evaluation) images. Observation seeds are averaged "
        "within an image before images are paired, so n counts images.",
        "",
    ]
    chosen = settings[settings["method"] == COMBINED]
    for _, row in chosen.iterrows():
        lines.append(
            f"- {row['task']}: DIP+DDPM at {row['setting']} "
            f"(best of {row['n_candidates']} candidates, tuning mean "
            f"{row['tuning_mean']:.2f} dB over {row['n_tuning_images']} images)"
        )
    return "\n".join(lines)


def answer(primary: pd.DataFrame, nfe: pd.DataFrame | None = None) -> str:
    """One paragraph per task from its computable comparisons (and, with ``nfe``, the NFE
    to the target)."""
    usable = primary[primary["computable"].astype(bool)]
    if usable.empty:
        return "No primary comparison could be computed (see the table for the reasons)."
    paragraphs = []
    for task, rows in usable.groupby("task", sort=False):
        parts = [comparison_phrase(name, group) for name, group in rows.groupby("name", sort=False)]
        if nfe is not None:
            parts += [nfe_phrase(row) for _, row in nfe[nfe["task"] == task].iterrows()]
        paragraphs.append(
            f"**{task}** (n = {int(rows['n'].max())} images): " + "; ".join(parts) + "."
        )
    return "\n\n".join(paragraphs)


def nfe_phrase(row: pd.Series) -> str:
    """``NFE to target: 2.0x fewer ... [CI], verdict`` from one nfe_to_target row."""
    if str(row.get("reason") or ""):
        return f"{row['name']}: not computable ({row['reason']})"
    ratio = 2.0 ** row["mean_log2_ratio"]
    return (
        f"{row['name']}: geometric-mean ratio {ratio:.2f} (log2 {row['mean_log2_ratio']:+.2f} "
        f"{interval(row['ci_low'], row['ci_high'])}; {row['n_reached_a']} vs "
        f"{row['n_reached_b']} of {row['n']} images reach the target; rungs run "
        f"{row['rungs_a']} vs {row['rungs_b']} NFE), {row['verdict']} "
        f"(Holm p = {row['p_holm']:.3g}){single_rung(row)}"
    )


def single_rung(row: pd.Series) -> str:
    """A side run at one step count only says that it reaches the target by then."""
    if min(len(str(row["rungs_a"]).split()), len(str(row["rungs_b"]).split())) > 1:
        return ""
    return " [one side ran a single step count here: an upper bound on its fewest NFE]"


def comparison_phrase(name: str, rows: pd.DataFrame) -> str:
    """``name: +0.31 dB [+0.10, +0.52], helps`` or, over several budgets, how many help."""
    if len(rows) == 1:
        row = rows.iloc[0]
        return (
            f"{name}: {row['mean_diff']:+.2f} dB {interval(row['ci_low'], row['ci_high'])}, "
            f"{row['verdict']} (Holm p = {row['p_holm']:.3g}){qualifier(row)}"
        )
    counts = rows["verdict"].value_counts()
    spread = f"{rows['mean_diff'].min():+.2f} to {rows['mean_diff'].max():+.2f} dB"
    tally = ", ".join(f"{verdict} at {n}" for verdict, n in counts.items())
    return f"{name} over {len(rows)} budgets: {spread} ({tally})"


def qualifier(row: pd.Series) -> str:
    """What a verdict means when the sides were not matched as asked (see the note)."""
    note = str(row.get("note") or "")
    if "no common budget" in str(row["name"]):
        a_dearer = row["seconds_a"] > row["seconds_b"]
        if row["verdict"] == "helps" and a_dearer:
            return " [better, but only at a higher cost: not a win at equal seconds]"
        if row["verdict"] == "hurts" and a_dearer:
            return " [worse although it costs more: it loses at every budget both can afford]"
    if "compared instead" in note:
        return (
            " [the chosen setting has no equal-NFE partner; its best tuning setting that has one]"
        )
    return ""


def primary_table(primary: pd.DataFrame) -> str:
    shown = with_ci(primary)
    computable = shown[shown["computable"].astype(bool)]
    columns = [
        "task",
        "name",
        "budget_s",
        "n",
        "mean_diff",
        "ci",
        "p_holm",
        "verdict",
        "min_detectable_diff",
        "setting_a",
        "setting_b",
        "seeds_a",
    ]
    text = markdown(computable[columns].rename(columns={"mean_diff": "a - b (dB)"}))
    left_out = shown[~shown["computable"].astype(bool)]
    if not left_out.empty:
        reasons = [f"- {r['task']}, {r['name']}: {r['reason']}" for _, r in left_out.iterrows()]
        text += "\n\nNot computable:\n\n" + "\n".join(reasons)
    return text


def steps_table(steps: pd.DataFrame) -> str:
    columns = [
        "task",
        "method",
        "target_psnr",
        "n_images",
        "n_reached",
        "median_steps",
        "nfe_at_median",
        "seconds_at_median",
        "setting",
    ]
    return markdown(steps[columns])


def nfe_table(nfe: pd.DataFrame) -> str:
    computable = nfe[nfe["reason"].fillna("") == ""]
    shown = with_ci(computable)
    columns = [
        "task",
        "name",
        "n",
        "n_reached_a",
        "n_reached_b",
        "rungs_a",
        "rungs_b",
        "median_nfe_a",
        "median_nfe_b",
        "mean_log2_ratio",
        "ci",
        "p_holm",
        "verdict",
    ]
    text = markdown(shown[columns])
    for _, row in nfe[nfe["reason"].fillna("") != ""].iterrows():
        text += f"\n\n{row['task']}, {row['name']}: {row['reason']}."
    return text


def ablations_table(ablations: pd.DataFrame) -> str:
    computable = ablations[ablations["reason"].fillna("") == ""]
    shown = with_ci(computable)
    columns = ["task", "ablation", "variant", "n", "variant_psnr", "mean_diff", "ci", "verdict"]
    text = markdown(shown[columns].rename(columns={"mean_diff": "variant - reference (dB)"}))
    references = "; ".join(
        f"{task}: {ref}" for task, ref in computable.groupby("task")["reference"].first().items()
    )
    text += f"\n\nReferences: {references}."
    for _, row in ablations[ablations["reason"].fillna("") != ""].iterrows():
        which = "" if pd.isna(row["ablation"]) else f", {row['ablation']}"
        text += f"\n\n{row['task']}{which}: {row['reason']}."
    return text


def auto_t0_table(auto: pd.DataFrame) -> str:
    """The headline base of each task, both error sources, then a line per other base."""
    if auto.empty:
        return "_(no DIP+DDPM setting was sampled at enough t0 values)_"
    headline = auto[auto["headline"].astype(bool)]
    columns = [
        "task",
        "error",
        "intercept",
        "slope",
        "pearson",
        "spearman",
        "share_within_tolerance",
        "aim_met",
        "mean_regret_db",
        "tuned_fixed_t0",
        "tuned_fixed_regret_db",
        "auto_minus_fixed_db",
        "verdict",
        "n_cases",
        "n_images",
    ]
    text = markdown(headline[columns], 3)
    notes = headline[headline["note"].fillna("").astype(bool)]
    for _, row in notes.iterrows():
        text += f"\n\n{row['task']}: {row['note']}."
    settings = "; ".join(
        f"{r['task']}: {r['setting']}" for _, r in headline.drop_duplicates("task").iterrows()
    )
    estimated = auto[auto["error"] == "estimated"]
    met = int(estimated["aim_met"].astype(bool).sum())
    text += (
        f"\n\nCells: {settings}; t0 grid as sampled. A case is an image under one observation "
        f"seed; share_within_tolerance counts cases within 0.3 dB of their best grid t0 "
        f"(aim 80 %). Over all {len(estimated)} settings with a dense t0 grid (every prior "
        f"duration and architecture of the deep dive included), the estimate meets the aim on "
        f"{met}; `auto_t0.csv` lists each."
    )
    return text


def models_paragraph(verdicts: pd.DataFrame | None) -> str:
    if verdicts is None or verdicts.empty:
        return ""
    lines = ["#### The models behind these numbers", ""]
    for _, row in verdicts.iterrows():
        state = "still improving (under-trained)" if bool(row["under_trained"]) else "flattened"
        lines.append(
            f"- {row['mode']} (t_max {row['t_max']}): {int(row['steps'])} steps, "
            f"{int(row['images_seen'])} images seen, one-step x0 PSNR {row['final_psnr_mean']:.2f} "
            f"dB, +{row['last_doubling_gain_db']:.2f} dB over the last doubling: {state}."
        )
    if verdicts["under_trained"].astype(bool).any():
        lines += [
            "",
            "An under-trained model makes every DDPM number here a lower bound of what a "
            "converged model would give; a comparison DDPM methods lose may turn with more "
            "training, one they win is unlikely to.",
        ]
    return "\n".join(lines)


def prior_training_paragraph(headline: pd.DataFrame | None) -> str:
    """The prior-trained models' answer, or where it comes from when the part has not run."""
    lines = ["**Training that sees the prior.**"]
    if headline is None or headline.empty:
        lines.append(
            "Not measured in this run: the prior-training part (`make study "
            "PART=prior_training`) compares prior-trained models with the truncated one."
        )
        return " ".join(lines)
    from .prior_comparison import answer

    setting = headline.iloc[0]
    lines.append(
        f"Models trained for {int(setting['ckpt'])} steps (the prior-training part: the same "
        f"images seen by every model), restoring the held-out images from their DIP priors "
        f"at t0 = {int(setting['t0'])} with {int(setting['steps'])} reverse steps (every study "
        "image: that part chooses no setting from them), against the truncated model of the "
        f"same length: {answer(headline)} The part's tables and convergence figure are in "
        "[`prior_training.md`](../prior_training/prior_training.md)."
    )
    return " ".join(lines)
