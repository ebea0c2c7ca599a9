"""A setting's scores from pure noise and the summary of every setting: samples whose
seeds share no start have no within-prior spread, and the summary keeps every row."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_genmetrics import smooth_images

from dipddpm import cifarnet
from dipddpm.io import save_npz
from dipddpm.stages.generation_metrics import score_generation, summarise_generation


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A seeded random classifier, a reference set and two seeds' samples of one setting."""
    folder = tmp_path_factory.mktemp("scores")
    files = {"weights": folder / "cifarnet.pt", "reference": folder / "reference.npz"}
    cifarnet.save_classifier(files["weights"], cifarnet.build_model(width=8, seed=0), {})
    save_npz(files["reference"], images=smooth_images(30, seed=12), labels=np.zeros(30, int))
    files["samples"] = [folder / f"samples_{seed}.npz" for seed in (0, 1)]
    for seed, path in enumerate(files["samples"]):
        save_npz(path, samples=smooth_images(6, seed=30 + seed))
    return files


def _scored(inputs: dict, out, **options) -> dict:
    return score_generation(
        inputs["samples"], inputs["reference"], inputs["weights"], out, **options
    )


def test_seeds_without_a_shared_start_have_no_within_prior_spread(inputs, tmp_path):
    noise = _scored(inputs, tmp_path / "noise.csv", shared_starts=False)
    paired = _scored(inputs, tmp_path / "paired.csv")
    assert math.isnan(noise["diversity_within_prior_feature"])
    assert math.isnan(noise["diversity_within_prior_pixel_rms"])
    assert paired["diversity_within_prior_pixel_rms"] > 0
    assert noise["diversity_all_pixel_rms"] == paired["diversity_all_pixel_rms"]


def test_the_summary_keeps_every_setting_row(inputs, tmp_path):
    rows = []
    for method in ("dip+ddpm", "ddpm-noise"):
        rows.append(tmp_path / f"{method}.csv")
        _scored(inputs, rows[-1], identity={"method": method})
    table = summarise_generation(rows, tmp_path / "generation.csv")
    assert list(table["method"]) == ["dip+ddpm", "ddpm-noise"]
    assert len(pd.read_csv(tmp_path / "generation.csv")) == 2
    with pytest.raises(ValueError, match="no generation scores"):
        summarise_generation([], tmp_path / "empty.csv")
