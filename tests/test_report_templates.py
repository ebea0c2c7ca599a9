"""Report section templates: every placeholder filled, nothing dropped, numbers in place."""

from __future__ import annotations

import pandas as pd
import pytest
from test_example1_auto_t0 import TUNING, _study

from dipddpm import (
    example1,
    example1_ablations,
    example1_auto_t0,
    example1_report,
    example1_steps,
    templates,
)


def test_render_refuses_missing_and_unused_values():
    names = templates.placeholders(templates.template("example1"))
    assert {"formulation", "answer", "primary", "auto_t0"} <= names
    # The formulation is its own template, shared with the default run's Methods section.
    assert {"T", "schedule", "noise_levels"} == templates.placeholders(
        templates.template("example1_formulation")
    )
    values = dict.fromkeys(names, "x")
    assert "{{" not in templates.render("example1", values)
    with pytest.raises(ValueError, match="no value for \\['answer'\\]"):
        templates.render("example1", {k: v for k, v in values.items() if k != "answer"})
    with pytest.raises(ValueError, match="without a placeholder: \\['extra'\\]"):
        templates.render("example1", {**values, "extra": 1})
    with pytest.raises(FileNotFoundError, match="no report template 'nope'"):
        templates.template("nope")


def test_example1_section_quotes_the_tables_numbers():
    observations, prior, frame = _study()
    settings = example1.chosen_settings(frame, TUNING)
    primary = example1.primary_comparisons(frame, TUNING, settings, n_boot=200)
    auto, _ = example1_auto_t0.auto_t0_tables(frame, TUNING, observations, prior, 1000)
    tables = {
        "settings": settings,
        "primary_comparisons": primary,
        "steps_to_target": pd.DataFrame(columns=list(example1.STEPS_TO_TARGET_COLUMNS)),
        "nfe_to_target": pd.DataFrame(columns=list(example1_steps.COLUMNS)),
        "t0_curves": example1.t0_curves(frame, TUNING, settings),
        "auto_t0": auto,
        "ablations": example1_ablations.ablation_table(frame, TUNING, n_boot=100),
    }
    verdicts = pd.DataFrame(
        [
            {
                "mode": "full",
                "t_max": 1000,
                "steps": 5000,
                "images_seen": 320000,
                "final_psnr_mean": 28.7,
                "last_doubling_gain_db": 0.24,
                "under_trained": True,
            }
        ]
    )
    text = example1_report.example1_section(tables, TUNING, verdicts=verdicts)
    assert "{{" not in text and "$T = 1000$" in text
    # s(t) of the sigma-25 step is 25/255 in [0, 1] units: the noise table says ~25 at t0 57.
    assert "|   57 |" in text
    share = auto.set_index("error").loc["estimated", "share_within_tolerance"]
    assert f"{share:.3f}".rstrip("0") in text
    assert "still improving (under-trained)" in text
    assert "Not measured in this run: the prior-training part" in text
    # No DIP-alone rows: the comparisons are listed as not computable, with the reason.
    assert "Not computable" in text or "No primary comparison" in text


def test_example1_section_quotes_the_prior_training_answer_when_the_part_ran():
    from test_prior_comparison import IMAGES, samples

    from dipddpm import prior_comparison

    headline = prior_comparison.headline(samples(), {"ckpt": 200, "t0": 57, "steps": 25})
    text = example1_report.prior_training_paragraph(headline)
    assert "Models trained for 200 steps" in text and "t0 = 57 with 25 reverse steps" in text
    assert "prior-p0.5 vs truncated: +0.50 dB" in text and f"n = {IMAGES} images" in text
