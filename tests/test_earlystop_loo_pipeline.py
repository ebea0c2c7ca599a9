"""Example 2's fair comparison end to end on tests/config/tiny-earlystop-loo.yaml: two
natural-image crop datasets, the plain fit run past its peak under a cap with ES-WMV at
several windows, and the leave-one-image-out tables of the earlystop_loo target."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import yaml
from test_pipeline import scheduled_jobs, snakemake

from dipddpm import grid

pytestmark = pytest.mark.slow

CONFIG = "tiny-earlystop-loo.yaml"
RULES = [
    "fixed",
    "discrepancy",
    "es_wmv",
    "es_wmv_untuned",
    "oracle",
    "progressive cosine K=2 smax=50",
]
CROPS = 4  # two photos, two crops each
TABLES = ["cases", "summary", "summary_by_task", "comparisons", "choices", "plain_peaks"]


@pytest.fixture(scope="module")
def config(root) -> dict:
    return yaml.safe_load((root / "tests" / "config" / CONFIG).read_text())


@pytest.fixture(scope="module")
def workdir(config, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("earlystop-loo")
    # Written as the edited configs below are: Snakemake compares a dataset's params with
    # their key order, so a copy of the file would read as changed params next to them.
    _write(workdir, CONFIG, config)
    return workdir


def _write(workdir, name: str, config: dict) -> None:
    (workdir / name).write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def loo_run(root, workdir):
    return snakemake(root, workdir, "earlystop_loo", config=CONFIG)


def _table(workdir, name: str) -> pd.DataFrame:
    return pd.read_csv(workdir / grid.RESULTS / "earlystop" / f"loo_{name}.csv")


def test_the_target_runs_only_the_early_stopping_cells_and_the_summary(loo_run):
    log = loo_run.stdout + loo_run.stderr
    rules = (
        "prepare_dataset",
        "degrade",
        "earlystop_plain",
        "earlystop",
        "summarise_earlystop_loo",
    )
    for rule in rules:
        assert f"rule {rule}:" in log
    assert "fit_dip" not in log and "train_ddpm" not in log


def test_every_rule_is_summarised_over_every_crop(workdir, loo_run):
    summary = _table(workdir, "summary").set_index("rule")
    assert list(summary.index) == RULES
    assert (summary["n_cases"] == CROPS).all() and (summary["n_images"] == 2).all()
    assert summary.loc["oracle", "mean_gap_plain_db"] == 0
    for column in ("mean_gap_db", "share_within_0_5db", "share_within_1db", "mean_stop_iter"):
        assert summary[column].notna().all(), column
    assert summary.drop(index="oracle")["mean_seconds_to_stop"].gt(0).all()
    assert len(_table(workdir, "summary_by_task")) == len(RULES)
    cases = _table(workdir, "cases")
    assert set(cases["photo"]) == {"astronaut", "coffee"} and cases["name"].nunique() == CROPS


def test_rules_are_compared_with_es_wmv_and_the_oracle(workdir, loo_run):
    comparisons = _table(workdir, "comparisons")
    for reference in ("es_wmv_untuned", "es_wmv", "oracle"):
        mine = comparisons[comparisons["b"] == reference]
        assert set(mine["a"]) == set(RULES) - {reference}
    assert (comparisons["n_cases"] == CROPS).all()
    assert comparisons[["ci_low", "ci_high", "p_holm"]].notna().all().all()
    choices = _table(workdir, "choices")
    assert len(choices) == 3 * 2  # the tuned rules, each photo held out


def test_the_plain_fit_ran_past_its_peak_under_the_cap(workdir, loo_run, config):
    peaks = _table(workdir, "plain_peaks")
    assert len(peaks) == CROPS and "hit_cap" in peaks.columns
    es = config["earlystop"]
    assert (peaks["ran_to"] <= es["max_iters"]).all()
    assert (peaks["run_past_peak"] == es["run_past_peak"]).all()
    # Where the cap did not come first the fit ran the patience past the peak.
    done = peaks[~peaks["hit_cap"].astype(bool)]
    assert (done["ran_to"] >= done["peak_iter"] + es["run_past_peak"]).all()


def test_each_cell_records_its_plain_trajectory_windows_and_peaks(workdir, loo_run, config):
    photos = {"astronaut-crops": "astronaut", "coffee-crops": "coffee"}
    cells = grid.earlystop_cells(config)
    assert {c["dataset"] for c in cells} == set(photos)
    for cell in cells:
        trajectory = pd.read_csv(workdir / grid.EARLYSTOP.path(cell, "trajectory.csv"))
        assert {"wmv", "wmv_5", "wmv_10", "psnr_clean_ema", "elapsed_s"} <= set(trajectory)
        record = json.loads((workdir / grid.EARLYSTOP.path(cell, "params.json")).read_text())
        assert record["earlystop"]["run_past_peak"] == config["earlystop"]["run_past_peak"]
        images = record["info"]["plain_past_peak"]["images"]
        names = [image["name"] for image in images]
        assert names == [f"{photos[cell['dataset']]}#crop{k}" for k in range(2)]


def test_the_plain_fit_keys_are_cell_params(root, workdir, loo_run, config):
    """A cell and its plain fit rerun when run_past_peak, max_iters or wmv_windows
    change; the summary alone when only a candidate grid does."""
    edited = copy.deepcopy(config)
    edited["earlystop"]["wmv_windows"] = [5]
    _write(workdir, "edited.yaml", edited)
    jobs = scheduled_jobs(snakemake(root, workdir, "-n", "earlystop_loo", config="edited.yaml"))
    assert jobs["earlystop_plain"] == jobs["earlystop"] == 2
    assert jobs["summarise_earlystop_loo"] == 1
    edited = copy.deepcopy(config)
    edited["earlystop"]["loo_patiences"] = [4]
    _write(workdir, "edited.yaml", edited)
    jobs = scheduled_jobs(snakemake(root, workdir, "-n", "earlystop_loo", config="edited.yaml"))
    assert "earlystop" not in jobs and "earlystop_plain" not in jobs
    assert jobs["summarise_earlystop_loo"] == 1


def test_without_loo_or_out_the_target_asks_for_nothing(root, workdir, loo_run, config):
    off = copy.deepcopy(config)
    del off["earlystop"]["loo"]
    _write(workdir, "off.yaml", off)
    jobs = scheduled_jobs(snakemake(root, workdir, "-n", "earlystop_loo", config="off.yaml"))
    assert jobs == {"earlystop_loo": 1, "total": 1}
