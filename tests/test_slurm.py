"""The SLURM workflow profile, run for real on a single-node SLURM started on this machine.

tests/slurm/start_slurm.sh starts slurmctld, slurmd (one fake GPU), slurmdbd and munge.
A tiny configuration of the real workflow (data stage and two DIP cells on a GPU rule) then
runs through ``--workflow-profile workflow/profiles/slurm`` in a copy of the project, and
again locally in a second copy; both must produce bit-identical arrays.
Needs root and apt (Debian); skips itself elsewhere. About 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dipddpm import grid
from dipddpm.io import load_json

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
START_SLURM = ROOT / "tests" / "slurm" / "start_slurm.sh"
CANNOT_RUN_HERE = 3  # start_slurm.sh's exit status for "not root / no packages"

# A few seconds of DIP on one 32x32 image with two tiny architectures. New architecture
# names keep the defaults' hyperparameters from being merged into them.
TINY_CONFIG = """\
data:
  datasets:
    tiny:
      source: skimage
      names: [astronaut]
      size: 32
dip:
  iters: 20
  snapshots: [10, 20]
  archs:
    tconv: {kind: convdecoder, layers: 2, channels: 8}
    tres: {kind: resnet, blocks: 1, channels: 8, input_channels: 8}
  grid:
    - datasets: [tiny]
      tasks: [denoise-s25]
      archs: [tconv, tres]
ddpm:
  sample:
    prior_iters: 20
"""
DIP_CELLS = [
    grid.DIP.path({"purpose": "restoration", "dataset": "tiny", "task": "denoise-s25",
                   "obs_seed": 0, "arch": arch, "dip_seed": 0})
    for arch in ("tconv", "tres")
]  # fmt: skip
TARGETS = [f"{cell}/metrics.csv" for cell in DIP_CELLS]
# Every job of the tiny run goes through sbatch; the two DIP cells share one group job.
EXPECTED_SUBMISSIONS = {"rule_prepare_dataset", "rule_degrade", "group_dip_fit_dip"}
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "results", "resources", ".snakemake", "__pycache__", "*.egg-info",
    ".pytest_cache", ".ruff_cache",
)  # fmt: skip


def _snakemake_command() -> list[str]:
    """The project's snakemake: SLURM jobs rerun the submitting interpreter's snakemake."""
    executable = Path(sys.executable).with_name("snakemake")
    return [str(executable)] if executable.exists() else [sys.executable, "-m", "snakemake"]


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def slurm() -> None:
    if platform.system() != "Linux":
        pytest.skip("a local SLURM needs Linux")
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM needs root")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and apt-get is not available to install it")
    done = subprocess.run(["bash", str(START_SLURM)], capture_output=True, text=True, timeout=900)
    if done.returncode == CANNOT_RUN_HERE:
        pytest.skip(f"cannot start a local SLURM here: {done.stderr.strip()}")
    assert done.returncode == 0, f"start_slurm.sh failed:\n{done.stdout}\n{done.stderr}"


def _project_copy(tmp_path_factory, name: str) -> Path:
    """The workflow in a scratch folder, so its results never land in the repository."""
    copy = tmp_path_factory.mktemp(name) / "project"
    shutil.copytree(ROOT, copy, ignore=COPY_IGNORE)
    (copy / "tiny.yaml").write_text(TINY_CONFIG)
    return copy


def _run_snakemake(workdir: Path, *args: str) -> str:
    # Targets go first: --configfile takes every following word as a file name.
    done = subprocess.run(
        [*_snakemake_command(), *TARGETS, "--configfile", "tiny.yaml", *args],
        cwd=workdir, env=_environment(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"snakemake {' '.join(args)} failed:\n{log[-6000:]}"
    return log


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory) -> tuple[Path, str]:
    workdir = _project_copy(tmp_path_factory, "slurm")
    log = _run_snakemake(
        workdir,
        "--workflow-profile", "workflow/profiles/slurm",
        # Poll every second instead of the profile's cluster-friendly 20 s.
        "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "1",
        "--slurm-jobname-prefix", "pytest",
        "--slurm-keep-successful-logs",
    )  # fmt: skip
    return workdir, log


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    workdir = _project_copy(tmp_path_factory, "local")
    _run_snakemake(workdir, "--workflow-profile", "workflow/profiles/local", "--cores", "2")
    return workdir


def _sacct_jobs(run_id: str) -> dict[str, dict[str, str]]:
    """This run's SLURM jobs (the plugin names every job after the run id), by job id."""
    fields = ["JobID", "State", "AllocTRES"]
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", "now-2hours", "--name", run_id,
         "-o", ",".join(fields)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {
        row[0]: dict(zip(fields, row, strict=True))
        for row in (line.split("|") for line in out.splitlines() if line)
    }


def _submissions(workdir: Path, log: str) -> dict[str, str]:
    """SLURM job id -> what it ran (rule_<rule> or group_<group>), from Snakemake's log."""
    logs = workdir / ".snakemake" / "slurm_logs"
    return {
        jobid: Path(path).relative_to(logs).parts[0]
        for jobid, path in re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", log)
    }


def test_every_job_went_through_sbatch(slurm_run):
    workdir, log = slurm_run
    submitted = _submissions(workdir, log)
    assert sorted(submitted.values()) == sorted(EXPECTED_SUBMISSIONS)
    assert "localrule" not in log, "no job may run on the submitting machine"

    jobs = _sacct_jobs(re.search(r"SLURM run ID: (\S+)", log).group(1))
    assert set(jobs) == set(submitted), "sacct must list exactly the submitted jobs"
    assert {job["State"] for job in jobs.values()} == {"COMPLETED"}


def test_jobs_ran_with_the_project_environment(slurm_run):
    workdir, _ = slurm_run
    group_log = next((workdir / ".snakemake" / "slurm_logs" / "group_dip_fit_dip").rglob("*.log"))
    text = group_log.read_text()
    assert f"{sys.prefix}/lib" in text, "the job's snakemake must come from this venv"
    n = len(DIP_CELLS)
    assert f"{n} of {n} steps (100%) done" in text, "every DIP cell in the one group job"


def test_gpu_rule_was_granted_a_gpu(slurm_run):
    workdir, log = slurm_run
    for cell in DIP_CELLS:
        record = load_json(workdir / cell / "params.json")
        assert record["cuda_visible_devices"] == "0", cell
        # No real GPU behind the fake one: pick_device must fall back to the CPU.
        assert record["device"] == "cpu", cell

    jobs = _sacct_jobs(re.search(r"SLURM run ID: (\S+)", log).group(1))
    granted = {
        kind: "gres/gpu=1" in jobs[jobid]["AllocTRES"]
        for jobid, kind in _submissions(workdir, log).items()
    }
    assert granted == {
        "rule_prepare_dataset": False,
        "rule_degrade": False,
        "group_dip_fit_dip": True,
    }


def test_outputs_equal_a_local_run(slurm_run, local_run):
    workdir, _ = slurm_run
    on_slurm = sorted(p.relative_to(workdir) for p in (workdir / "results").rglob("*.npz"))
    locally = sorted(p.relative_to(local_run) for p in (local_run / "results").rglob("*.npz"))
    assert on_slurm == locally
    assert len(on_slurm) == 2 + len(DIP_CELLS)  # clean, degraded, one output per cell
    for relative in on_slurm:
        with np.load(workdir / relative) as a, np.load(local_run / relative) as b:
            assert sorted(a.files) == sorted(b.files), relative
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{relative}:{key}")


def test_repository_results_untouched(slurm_run, local_run):
    # Others may be running the workflow in the repository: look for this test's cells only.
    assert not (ROOT / "results" / "data" / "tiny").exists()
    assert not any((ROOT / "results").glob("dip/tiny/*"))
