"""A training process killed with SIGKILL, cleaned up the way Snakemake cleans up a failed
job, and rerun, ends with the same checkpoints as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import dipddpm
from dipddpm.grid import checkpoint_name

STEPS = 12
CHECKPOINTS = [3, 8, 12]
SETTINGS = {
    "preset": "tiny",
    "unet_overrides": {"ch": 8, "ch_mult": [1, 2], "attn": [4], "norm_groups": 4},
    "T": 50,
    "steps": STEPS,
    "batch_size": 5,
    "lr": 1e-3,
    "ema_decay": 0.99,
    "checkpoint_steps": CHECKPOINTS,
    "seed": 7,
    "device": "cpu",
    "eval_every": 4,
    "warmup": 2,
    "resume_every": 2,
}
# Counts the optimiser steps this process takes: a public trace of where training resumed.
# The delay makes each step slow, so that a kill after the first checkpoint lands mid-run.
TRAINER = """
import json, sys, time
import numpy as np
import torch
from dipddpm.ddpm.train import train

out_dir, settings, delay = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
images, eval_images = np.load(sys.argv[4]), np.load(sys.argv[5])
torch.set_num_threads(1)
steps_taken = 0
adamw_step = torch.optim.AdamW.step

def counted_step(self, *args, **kwargs):
    global steps_taken
    steps_taken += 1
    time.sleep(delay)
    return adamw_step(self, *args, **kwargs)

torch.optim.AdamW.step = counted_step
train(images, out_dir, eval_images=eval_images, progress=False, **settings)
print("optimiser steps:", steps_taken)
"""


def start(tmp_path: Path, name: str, delay: float) -> subprocess.Popen:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "images.npy", rng.random((12, 3, 8, 8), dtype=np.float32))
    np.save(tmp_path / "eval.npy", rng.random((4, 3, 8, 8), dtype=np.float32))
    # The child imports the same dipddpm as this process, whichever checkout that is.
    package_root = str(Path(dipddpm.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    command = [sys.executable, "-c", TRAINER, str(tmp_path / name), json.dumps(SETTINGS)]
    command += [str(delay), str(tmp_path / "images.npy"), str(tmp_path / "eval.npy")]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen) -> int:
    """Wait for a training process; return how many optimiser steps it took."""
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return int(output.strip().splitlines()[-1].split(":")[1])


def kill_once_written(process: subprocess.Popen, path: Path) -> None:
    deadline = time.monotonic() + 300
    while not path.exists():
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.01)
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "training ended before it was killed"


def delete_outputs_like_snakemake(out_dir: Path) -> None:
    """Snakemake removes a failed job's declared outputs; resume.pt and .resume/ are none."""
    for name in [*(checkpoint_name(k) for k in CHECKPOINTS), "curve.csv", "params.json"]:
        (out_dir / name).unlink(missing_ok=True)


def tensors(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return {}
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


def assert_same_tensors(got: dict, want: dict, name: str) -> None:
    got, want = tensors(got), tensors(want)
    # numpy's global RNG is never seeded (training draws nothing from it), so each process
    # starts it from fresh entropy; it is saved only to be restored.
    numpy_rng = [key for key in want if key.startswith("/rng/numpy/")]
    assert got.keys() == want.keys() and numpy_rng, name
    for key in sorted(set(want) - set(numpy_rng)):
        assert torch.equal(got[key], want[key]), f"{name}: {key} differs"


@pytest.mark.slow  # three training processes, about 10 s on 2 cores
def test_a_killed_run_resumes_after_snakemake_deletes_its_outputs(tmp_path):
    reference = start(tmp_path, "reference", delay=0.0)
    killed = start(tmp_path, "killed", delay=0.1)
    out = tmp_path / "killed"
    kill_once_written(killed, out / checkpoint_name(CHECKPOINTS[0]))
    assert not (out / "curve.csv").exists(), "a killed run left a partial curve.csv"
    delete_outputs_like_snakemake(out)

    steps_taken = finish(start(tmp_path, "killed", delay=0.0))
    assert finish(reference) == STEPS
    assert steps_taken <= STEPS - CHECKPOINTS[0], "the rerun did not resume"
    for name in [*(checkpoint_name(k) for k in CHECKPOINTS), "resume.pt"]:
        want = torch.load(tmp_path / "reference" / name, weights_only=True)
        assert_same_tensors(torch.load(out / name, weights_only=True), want, name)
    timing = ["images_per_s", "elapsed_s"]
    want = pd.read_csv(tmp_path / "reference" / "curve.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(pd.read_csv(out / "curve.csv").drop(columns=timing), want)
