"""The whole workflow on a tiny configuration: every rule runs, the report is generated,
a single cell builds alone, and a second run has nothing to do."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from dipddpm import grid

pytestmark = pytest.mark.slow

DIP_CELL = grid.DIP.path(
    {
        "purpose": "restoration",
        "dataset": "cifar10-test",
        "task": "denoise-s25",
        "obs_seed": 0,
        "arch": "skip",
        "dip_seed": 0,
    }
)


def tiny_config(root, tiny_archive, inception_weights) -> dict:
    config = yaml.safe_load((root / "tests" / "config" / "tiny.yaml").read_text())
    config["data"]["cifar10"]["path"] = str(tiny_archive).replace("jpeg-test", "jpeg-{split}")
    config["metrics"]["inception_weights"] = str(inception_weights)
    return config


@pytest.fixture(scope="module")
def workdir(root, tiny_archive, inception_weights, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    config = tiny_config(root, tiny_archive, inception_weights)
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    return workdir


def snakemake_command(root, workdir, *args, config="tiny.yaml") -> list[str]:
    return [
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
        str(workdir / config),
        "--replace-workflow-config",
    ]


def snakemake(root, workdir, *args, config="tiny.yaml") -> subprocess.CompletedProcess:
    command = snakemake_command(root, workdir, *args, config=config)
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
    sections = ("## Abstract", "## Methods", "## Experiments", "## Ablations", "## Limitations")
    for heading in (*sections, "## Appendix: reproducibility"):
        assert heading in report
    # The appendix times every stage from the rules' benchmark files of this run.
    assert "Compute per stage" in report and "| dip " in report
    assert "placeholder" not in report.lower() and "nan dB" not in report
    assert "test" in report.splitlines()[0].lower() or "scale" in report.lower()


def test_tidy_table_has_every_cell(workdir, full_run):
    cells = pd.read_csv(workdir / "results/tables/all_cells.csv")
    assert set(cells["stage"]) == {"dip", "ddpm"}
    assert {"dip", "ddpm-obs", "dip+ddpm", "dip-guided"} <= set(cells["method"])
    # Denoising is never scored on a chain from pure noise (that is a generation).
    assert "ddpm-noise" not in set(cells["method"])
    ddpm = cells[cells["stage"] == "ddpm"]
    cost = ["dip_iters", "nfe", "dip_seconds", "ddpm_seconds", "seconds_per_image"]
    assert ddpm[cost].notna().all().all() and (ddpm["seconds_per_image"] > 0).all()
    assert (ddpm.loc[ddpm["start"] == "dip", "dip_seconds"] > 0).all()
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


def started_rules(result) -> list[str]:
    """The rules of a run's jobs in the order Snakemake started them."""
    text = result.stdout + result.stderr
    return [
        line.split()[-1].rstrip(":")
        for line in text.splitlines()
        if line.startswith(("rule ", "localrule ")) and line.endswith(":")
    ]


def test_long_chains_start_before_the_short_jobs(full_run):
    # The rules' priorities (common.smk PRIORITY): DDPM training, the early-stopping fits and
    # the DIP fits start as soon as their data exist, before any sampling or scoring job,
    # which then fill the cores at the end of the run (without them, Snakemake ran the
    # sampling cells as soon as one prior existed and left long fits for the end).
    order = started_rules(full_run)
    long_fits = [
        i
        for i, rule in enumerate(order)
        if rule.startswith("train_ddpm") or rule in ("earlystop_plain", "earlystop", "fit_dip")
    ]
    assert len(long_fits) >= 4, order
    assert max(long_fits) < order.index("sample_ddpm"), order
    assert order.index("train_ddpm") < order.index("fit_dip"), order


def test_rows_name_their_cells_and_tables_never_pool(workdir, full_run):
    cells = pd.read_csv(workdir / "results/tables/all_cells.csv", dtype=str)
    assert set(grid.IDENTITY_COLUMNS) <= set(cells.columns)
    assert not cells[list(grid.IDENTITY_COLUMNS)].isna().any().any()
    assert cells["code_hash"].nunique() == 1
    table = pd.read_csv(workdir / "results/tables/method_comparison.csv", dtype=str)
    images = 4  # tiny.yaml: 4 test images, one seed of each kind
    assert (table["psnr_n"].astype(int) == images).all()
    versions = pd.read_csv(workdir / "results/tables/code_versions.csv")
    assert len(versions) == 1


def scheduled_jobs(result) -> dict[str, int]:
    """Job counts of a dry run's 'Job stats' table."""
    text = result.stdout + result.stderr
    counts = {}
    block = text.split("Job stats:", 1)[1] if "Job stats:" in text else ""
    for line in block.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_editing_one_grid_entry_reruns_only_the_cells_it_changes(
    root, workdir, full_run, tiny_archive, inception_weights
):
    config = tiny_config(root, tiny_archive, inception_weights)
    # One architecture's width: only its own DIP cell and cost calibration rerun, then the
    # summaries (no sampling cell: none has that architecture as its prior).
    config["dip"]["archs"]["convdecoder"]["channels"] = 6
    # One more early-stopping schedule: only the new cell runs, the existing one stays.
    config["earlystop"]["grid"][0]["schedules"].append("linear")
    (workdir / "edited.yaml").write_text(yaml.safe_dump(config))
    jobs = scheduled_jobs(snakemake(root, workdir, "--dry-run", config="edited.yaml"))
    expected = {"fit_dip": 1, "calibrate_dip": 1, "earlystop": 1, "aggregate": 1}
    assert jobs == {**expected, "figures": 1, "report": 1, "all": 1, "total": 7}


def test_a_second_checkout_sharing_the_venv_runs_its_own_code(
    root, tiny_archive, inception_weights, tmp_path
):
    """The venv's editable install points at this checkout; a copy of the workflow with a
    changed library must still run the copy's library (the cell records which)."""
    import hashlib
    import shutil

    copy = tmp_path / "checkout"
    copy.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in ("Snakefile", "environment.yml", "workflow", "scripts", "config"):
        source = root / part
        if source.is_dir():
            shutil.copytree(source, copy / part, ignore=ignore)
        else:
            shutil.copy(source, copy / part)
    grid_py = copy / "scripts" / "dipddpm" / "grid" / "paths.py"
    grid_py.write_text(grid_py.read_text() + "\n# a change only this checkout has\n")
    digest = hashlib.sha256()
    package = copy / "scripts" / "dipddpm"
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "tiny.yaml").write_text(
        yaml.safe_dump(tiny_config(root, tiny_archive, inception_weights))
    )
    snakemake(copy, workdir, f"{DIP_CELL}/metrics.csv")
    metrics = pd.read_csv(workdir / DIP_CELL / "metrics.csv", dtype=str)
    assert set(metrics["code_hash"]) == {digest.hexdigest()[:12]}


# Timing columns, and the id of the cost calibration (a hash of timings), differ between runs.
TIMING = ("seconds", "elapsed", "per_s", "started", "calibration")


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    """A table without its timing columns (wall times differ between runs)."""
    return table[[c for c in table.columns if not any(t in c for t in TIMING)]]


def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_tables(
    root, workdir, full_run, tiny_archive, inception_weights, tmp_path
):
    """SIGKILL the whole pipeline once a DDPM checkpoint exists, rerun it, and every
    non-timing column of every table equals the uninterrupted run's."""
    import os
    import signal
    import time

    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "tiny.yaml").write_text(
        yaml.safe_dump(tiny_config(root, tiny_archive, inception_weights))
    )
    command = snakemake_command(root, killed)
    process = subprocess.Popen(
        command,
        cwd=killed,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    train_root = killed / grid.RESULTS / grid.TRAIN.root
    deadline = time.time() + 300
    while not list(train_root.rglob(grid.CHECKPOINT_GLOB)) and time.time() < deadline:
        assert process.poll() is None, "the pipeline ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / grid.REPORT / "report.md").exists()
    snakemake(root, killed, "--unlock")
    snakemake(root, killed, "--rerun-incomplete")
    for path in sorted((workdir / grid.TABLES).glob("*.csv")):
        want = comparable(pd.read_csv(path))
        got = comparable(pd.read_csv(killed / grid.TABLES / path.name))
        pd.testing.assert_frame_equal(got, want, obj=path.name)


def test_force_rebuilds_one_cell_alone(root, workdir, full_run):
    """The README's way to recompute one cell schedules that cell and nothing else."""
    jobs = scheduled_jobs(
        snakemake(root, workdir, "--dry-run", "--force", f"{DIP_CELL}/metrics.csv")
    )
    assert jobs == {"fit_dip": 1, "total": 1}
