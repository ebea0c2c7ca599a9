"""The generation metrics end to end on tests/config/tiny-generation.yaml: the
`generation` target trains the classifier, samples every seed of the generation setting
and scores the setting once, all seeds pooled, then summarises the settings. Settings from
noise are checked in a dry run (their cells' Inception FID is too slow to run here)."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import yaml
from test_pipeline import snakemake

from dipddpm import grid
from dipddpm.config import load_config

pytestmark = pytest.mark.slow

CONFIG = "tiny-generation.yaml"
SEEDS = 2
# No more samples than CifarNet's 128 feature dimensions: too few for a Fréchet distance.
FEATURE_DIM = 128
GENERATION_KINDS = (grid.SAMPLE, grid.GENERATE)
SCHEMA = "workflow/schemas/config.schema.yaml"


@pytest.fixture(scope="module")
def config(root, tiny_archive) -> dict:
    config = yaml.safe_load((root / "tests" / "config" / CONFIG).read_text())
    config["data"]["cifar10"]["path"] = str(tiny_archive).replace("jpeg-test", "jpeg-{split}")
    return config


@pytest.fixture(scope="module")
def workdir(config, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("generation")
    (workdir / CONFIG).write_text(yaml.safe_dump(config))
    return workdir


@pytest.fixture(scope="module")
def settings(root, workdir) -> dict[str, list[dict[str, str]]]:
    """Each generation kind's settings, from the config with its defaults filled in."""
    return _settings(root, workdir / CONFIG)


def _settings(root, path) -> dict[str, list[dict[str, str]]]:
    full = load_config(path, root / SCHEMA)
    return {kind.name: grid.generation_settings(full, kind) for kind in GENERATION_KINDS}


@pytest.fixture(scope="module")
def generation_run(root, workdir):
    return snakemake(root, workdir, "generation", config=CONFIG)


def _scores(workdir, kind_name: str, setting: dict) -> pd.DataFrame:
    path = grid.setting_path(grid.KINDS[kind_name], setting, grid.GENERATION_SCORES)
    return pd.read_csv(workdir / path)


def test_the_target_scores_each_setting_once(root, workdir, generation_run, settings):
    full_config = load_config(workdir / CONFIG, root / SCHEMA)
    assert {kind: len(found) for kind, found in settings.items()} == {"sample": 1, "generate": 0}
    log = generation_run.stdout + generation_run.stderr
    for rule in ("train_classifier", "score_generation", "summarise_generation"):
        assert f"rule {rule}:" in log
    # Only what the generation cells read: no restoration fit, no report.
    assert "rule report:" not in log and "rule fit_dip:" in log
    restoration = [c for c in grid.dip_cells(full_config) if c["purpose"] == "restoration"]
    assert restoration and not [c for c in restoration if grid.DIP.path(c) in log]


def test_the_setting_has_one_row_of_numeric_scores(workdir, generation_run, settings):
    row = _scores(workdir, "sample", settings["sample"][0])
    assert len(row) == 1
    row = row.iloc[0]
    assert row["sample_seed"] == grid.POOLED_SEEDS and row["n_seeds"] == SEEDS
    assert row["method"] == "dip+ddpm" and row["purpose"] == "generation"
    numeric = [
        "kid_cifarnet",
        "diversity_within_prior_feature",
        "diversity_all_feature",
        "coverage_entropy_nats",
        "dist_prior_pixel_rms",
        "dist_source_feature",
        "memo_pixel_median_ratio",
    ]
    for column in numeric:
        assert math.isfinite(float(row[column])), column
    assert row["kid_cifarnet_ci_low"] <= row["kid_cifarnet_ci_high"]
    assert row["n_seeds"] * row["n_per_seed"] <= FEATURE_DIM
    assert math.isnan(row["fid_cifarnet"]) and row["fid_cifarnet_reason"] == "n < d"


def test_the_summary_has_every_setting(workdir, generation_run):
    summary = pd.read_csv(workdir / grid.RESULTS / "generation" / "generation.csv")
    assert list(summary["method"]) == ["dip+ddpm"]
    assert set(grid.IDENTITY_COLUMNS) <= set(summary.columns)


def test_a_second_run_has_nothing_to_do(root, workdir, generation_run):
    again = snakemake(root, workdir, "generation", "--dry-run", config=CONFIG)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_settings_from_noise_are_scored_without_prior_or_source(root, workdir, config):
    """With unconditional samples, each of their settings gets a job of its own that
    reads every seed's samples and no prior or source image."""
    edited = copy.deepcopy(config)
    edited["ddpm"]["sample"]["generate"] = 4
    (workdir / "noise.yaml").write_text(yaml.safe_dump(edited))
    (noise,) = _settings(root, workdir / "noise.yaml")["generate"]
    target = grid.setting_path(grid.GENERATE, noise, grid.GENERATION_SCORES)
    plan = snakemake(root, workdir, target, "--dry-run", config="noise.yaml")
    text = plan.stdout + plan.stderr
    assert "rule score_generation_noise:" in text
    job = text[text.index("rule score_generation_noise:") :].split("\n\n")[0]
    seeds = [grid.GENERATE.path({**noise, "sample_seed": s}, "samples.npz") for s in (0, 1)]
    assert all(path in job for path in seeds)
    assert "output.npz" not in job and "cifar10-gen" not in job
