"""The whole workflow on a tiny configuration: every rule runs, the report is generated,
a single cell builds alone, and a second run has nothing to do."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

DIP_CELL = "results/dip/cifar10-test/task~denoise-s25/arch~skip/seed~0"


@pytest.fixture(scope="module")
def workdir(root, tiny_archive, inception_weights, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    config = yaml.safe_load((root / "tests" / "config" / "tiny.yaml").read_text())
    config["data"]["cifar10"]["path"] = str(tiny_archive).replace("jpeg-test", "jpeg-{split}")
    config["metrics"]["inception_weights"] = str(inception_weights)
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    return workdir


def snakemake(root, workdir, *args) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "--cores",
        "2",
        "--snakefile",
        str(root / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "tiny.yaml"),
        "--replace-workflow-config",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def single_cell(root, workdir):
    """One DIP cell requested alone, before anything else exists."""
    return snakemake(root, workdir, f"{DIP_CELL}/metrics.csv")


@pytest.fixture(scope="module")
def full_run(root, workdir, single_cell):
    return snakemake(root, workdir)


def test_single_cell_builds_alone(workdir, single_cell):
    log = single_cell.stdout + single_cell.stderr
    assert "fit_dip" in log and "train_ddpm" not in log and "report" not in log
    metrics = pd.read_csv(workdir / DIP_CELL / "metrics.csv")
    assert sorted(metrics["iters"].unique()) == [10, 20]
    assert len(metrics) == 2 * 4  # two durations x four images
    output = np.load(workdir / DIP_CELL / "output.npz")
    assert output["it20"].shape == (4, 3, 32, 32)


def test_report_has_every_section(workdir, full_run):
    report = (workdir / "results/report/report.md").read_text()
    for heading in ("## Setup", "## Findings", "## Comparisons", "## Ablations", "## Figures"):
        assert heading in report
    assert "placeholder" not in report.lower() and "nan dB" not in report
    assert "test" in report.splitlines()[0].lower() or "scale" in report.lower()


def test_tidy_table_has_every_cell(workdir, full_run):
    cells = pd.read_csv(workdir / "results/tables/all_cells.csv")
    assert set(cells["stage"]) == {"dip", "ddpm"}
    assert {"dip", "ddpm-noise", "ddpm-obs", "dip+ddpm", "dip-guided"} <= set(cells["method"])
    dip = cells[cells["stage"] == "dip"]
    assert len(dip) == 3 * 2 * 4  # cells x durations x images
    assert cells["psnr"].notna().all()


def test_fid_is_computed_with_the_configured_weights(workdir, full_run):
    fid = pd.read_csv(workdir / "results/tables/fid.csv")
    assert len(fid) > 0 and fid["fid"].notna().all()


def test_figures_exist(workdir, full_run):
    for name in (
        "quality_vs_steps",
        "dip_trajectories",
        "training_curves",
        "qualitative",
        "earlystop_curves",
        "gap_distribution",
    ):
        assert (workdir / f"results/figures/{name}.png").stat().st_size > 1000
        assert (workdir / f"results/figures/{name}.pdf").exists()


def test_second_run_has_nothing_to_do(root, workdir, full_run):
    again = snakemake(root, workdir, "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr
