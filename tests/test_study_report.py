"""The study report: answers from the committed parts' tables, sections with valid links,
parts not yet run named with their command."""

from __future__ import annotations

import pandas as pd

from dipddpm import study_report


def _primary() -> pd.DataFrame:
    rows = []
    for task, chosen, nfe in (("denoise-s25", 1.09, -1.5), ("sr-x2", 0.37, 0.68)):
        for match, diff in (("chosen", chosen), ("equal NFE", nfe)):
            verdict = "helps" if diff > 0 else "hurts"
            rows.append(
                dict(task=task, match=match, value="psnr", mean_diff=diff, n=24)
                | dict(ci_low=diff - 0.2, ci_high=diff + 0.2, verdict=verdict)
            )
    return pd.DataFrame(rows)


def test_the_abstract_quotes_the_parts_tables_and_names_the_missing_parts(tmp_path):
    (tmp_path / "example1").mkdir()
    _primary().to_csv(tmp_path / "example1/primary_comparisons.csv", index=False)
    (tmp_path / "example1/example1.md").write_text(
        "## Example 1: title\n\n### Answer\n\nSee ![t0](psnr_vs_t0.png) and "
        "[the part](../prior_training/prior_training.md), [web](https://x.org/a).\n"
    )
    (tmp_path / "example1/psnr_vs_t0.png").write_bytes(b"png")
    text = study_report.render_study_report(tmp_path, "abc1234", {"Python / torch": "3 / 2"})
    abstract = text.split("## Abstract")[1].split("\n## ")[0]
    assert "denoise-s25 (vs DIP alone +1.09 dB [+0.89, +1.29], helps" in abstract
    assert "vs DDPM alone at equal NFE -1.50 dB [-1.70, -1.30], hurts; n = 24)" in abstract
    assert "sr-x2 (vs DIP alone +0.37 dB" in abstract
    for target in ("prior_training", "earlystop_loo", "generation"):
        assert f"`make study PART={target}`" in abstract
    # The section: its own title replaced by the report's, links valid from results/study.
    assert "## Example 1: DIP priors for DDPM" in text and "Example 1: title" not in text
    assert "![t0](example1/psnr_vs_t0.png)" in text
    assert "[the part](prior_training/prior_training.md)" in text
    assert "[web](https://x.org/a)" in text
    assert "*Figure 1: PSNR of DIP+DDPM against the start step t0" in text
    assert "abc1234" in text and "Python / torch: 3 / 2" in text


def test_an_example2_answer_is_read_from_its_section(tmp_path):
    (tmp_path / "earlystop").mkdir()
    (tmp_path / "earlystop/example2.md").write_text(
        "## Example 2\n\nIntro.\n\n**Answer**: rule X is within 0.5 dB of the oracle on\n"
        "72 % of 36 cases.\n\n### More\n"
    )
    text = study_report.render_study_report(tmp_path, "0", {})
    assert (
        "**Example 2** (early stopping): rule X is within 0.5 dB of the oracle on 72 % of "
        "36 cases." in text
    )
    assert "No part of the study" not in text
    # The section's answer may also sit under an "### Answer" heading.
    (tmp_path / "earlystop/example2.md").write_text(
        "## E2\n\n### Answer\n\nNone is.\n\nThe gap is 0.5 dB.\n\n#### Table\n\nx\n"
    )
    text = study_report.render_study_report(tmp_path, "0", {})
    assert "**Example 2** (early stopping): None is. The gap is 0.5 dB.\n" in text


def _guided_row(dataset, form, lam, verdict, final, **diffs):
    row = dict(dataset=dataset, guide_form=form, guide_lam=lam, n=8, psnr_final=final)
    row |= dict(stopping_verdict=verdict, final_minus_peak_db=-0.1)
    for prefix, value in diffs.items():
        row |= {prefix: value, f"{prefix}_ci_low": value - 0.2, f"{prefix}_ci_high": value + 0.2}
    return row


def test_the_guided_answer_names_the_setting_that_runs_to_its_end_per_dataset(tmp_path):
    removes, needed = "removes the need to stop early", "early stopping still needed"
    rows = [
        _guided_row("cifar", "none", 0.0, needed, 21.0),
        _guided_row("cifar", "red", 1.0, removes, 25.0, minus_plain_peak_db=-1.0),
        _guided_row("cifar", "mix", 1.0, removes, 29.0, minus_plain_peak_db=2.4),
        _guided_row("crops", "mix", 1.0, needed, 31.0, minus_plain_peak_db=1.2),
    ]
    (tmp_path / "earlystop").mkdir()
    frame = pd.DataFrame(rows)
    frame["minus_ddpm_x0_db"] = [None, -3.0, -0.05, 0.35]
    frame["minus_ddpm_x0_db_ci_low"] = frame["minus_ddpm_x0_db"] - 0.01
    frame["minus_ddpm_x0_db_ci_high"] = frame["minus_ddpm_x0_db"] + 0.01
    frame.to_csv(tmp_path / "earlystop/guided_summary.csv", index=False)
    answer = study_report.guided_answer(tmp_path)
    # The best final PSNR among the settings that may run to their end, lam 0 excluded.
    assert "on cifar mix at lam 1 ends -0.10 dB from its own peak, +2.40 dB" in answer
    assert "-0.05 dB [-0.06, -0.04] against the DDPM alone (n = 8)" in answer
    assert "on crops no guided setting removes the need to stop early" in answer
