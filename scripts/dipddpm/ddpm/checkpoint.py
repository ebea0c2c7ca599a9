"""Training checkpoints on disk: writing, finding the state to resume from, loading.

Checkpoints hold only tensors and plain Python values (RNG states included), so they load
with ``torch.load(..., weights_only=True)``, which unpickles no arbitrary objects.

A cell folder holds the step checkpoints (``grid.checkpoint_name(k)``, declared outputs of
the training rule), a rolling ``resume.pt`` and a hidden ``.resume/`` folder; the last two
are no rule's outputs. Snakemake deletes the outputs of a killed job before it reruns it,
which would throw away the step checkpoints a resume needs. So every step checkpoint is
also hard-linked into ``.resume/`` (a second name for the same file, no extra disk), and a
rerun links the deleted ones back before it decides where to resume. ``.resume/`` also
holds ``progress.csv``, the curve so far, for watching a run: the output ``curve.csv``
appears only once training is complete.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dipddpm.ddpm.diffusion import Diffusion
from dipddpm.ddpm.unet import build_unet
from dipddpm.device import pick_device
from dipddpm.grid import CHECKPOINT_GLOB, CHECKPOINT_RE, checkpoint_name
from dipddpm.io import atomic_path, save_csv

RESUME_FILE = "resume.pt"
KEPT_DIR = ".resume"
PROGRESS_FILE = "progress.csv"
# 2: RNG states as tensors and plain values (1 pickled numpy's state tuple).
FORMAT_VERSION = 2
# Config keys that must match for a run to continue from an existing checkpoint.
RESUME_KEYS = (
    "preset",
    "unet",
    "schedule",
    "T",
    "prediction",
    "mode",
    "t_max",
    "batch_size",
    "lr",
    "ema_decay",
    "grad_clip",
    "seed",
    "warmup",
    "weight_decay",
    "n_images",
    "code",
)


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / checkpoint_name(step)


def kept_path(out_dir: str | Path, step: int) -> Path:
    """Where the hard link that outlives Snakemake's cleanup of step ``step`` lives."""
    return Path(out_dir) / KEPT_DIR / checkpoint_name(step)


def checkpoint_steps_done(out_dir: str | Path) -> list[int]:
    """Steps k for which a checkpoint (grid.checkpoint_name(k)) exists, ascending."""
    found = (CHECKPOINT_RE.match(p.name) for p in Path(out_dir).glob(CHECKPOINT_GLOB))
    return sorted(int(m.group(1)) for m in found if m)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def save_step_checkpoint(out_dir: Path, step: int, state: dict[str, Any]) -> None:
    """The checkpoint of step ``step``, kept in ``.resume/`` and linked to its output name.

    Kept first: an output checkpoint then always has its kept twin, whenever a kill lands."""
    kept = kept_path(out_dir, step)
    save_checkpoint(kept, state)
    _link_or_copy(kept, checkpoint_path(out_dir, step))


def save_progress(out_dir: Path, curve: pd.DataFrame) -> None:
    save_csv(Path(out_dir) / KEPT_DIR / PROGRESS_FILE, curve)


def restore_kept_checkpoints(out_dir: Path, steps: Iterable[int]) -> list[int]:
    """Link back each requested step checkpoint that is missing but kept; return those steps."""
    restored = []
    for step in steps:
        path, kept = checkpoint_path(out_dir, step), kept_path(out_dir, step)
        if not path.exists() and kept.is_file():
            _link_or_copy(kept, path)
            restored.append(int(step))
    return restored


def _link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` name the file ``source`` names, replacing any older ``target``.

    The link is made under a temporary name and moved into place, so ``target`` is never
    missing or half-written. Copies only where the file system has no hard links."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.stem}.", dir=target.parent)) / target.name
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.parent.rmdir()


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's state, loaded without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} does not load with weights_only=True: it was probably written before "
            f"checkpoint format {FORMAT_VERSION} (which stores RNG states as plain values); "
            "retrain it in a new output directory"
        ) from error


def latest_checkpoint(out_dir: Path, steps: int) -> Path | None:
    """The checkpoint with the most steps done (<= steps): resume.pt or a step checkpoint."""
    candidates = []
    for path in out_dir.glob("*.pt"):
        match = CHECKPOINT_RE.match(path.name)
        if match or path.name == RESUME_FILE:
            done = int(match.group(1)) if match else None
            candidates.append((done, path))
    best, best_step = None, -1
    for done, path in candidates:
        if done is None:  # resume.pt: read its step
            done = int(load_checkpoint(path)["step"])
        if best_step < done <= steps:
            best, best_step = path, done
    return best


def resumable_until(out_dir: Path, checkpoint_steps: Iterable[int], steps: int) -> int:
    """The latest step a resume may start from: before the first requested checkpoint
    whose output file is missing, so that every checkpoint gets written.
    Training is a pure function of (config, seed, step), so going back costs only time."""
    missing = [int(k) for k in checkpoint_steps if not checkpoint_path(out_dir, int(k)).exists()]
    return min([steps, *(k - 1 for k in missing)])


def stale_settings(saved: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """What differs between a saved run and this one (empty: it may be continued). The
    library's source hash is among the keys: weights trained by other code are not resumed."""
    return [
        f"{k}: {saved.get(k)!r} -> {config.get(k)!r}"
        for k in RESUME_KEYS
        if saved.get(k) != config.get(k)
    ]


def discard_training_state(out_dir: Path) -> None:
    """Remove the resume state and step checkpoints of a run that cannot be continued."""
    shutil.rmtree(out_dir / KEPT_DIR, ignore_errors=True)
    for path in [out_dir / RESUME_FILE, *out_dir.glob(CHECKPOINT_GLOB)]:
        path.unlink(missing_ok=True)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global RNG states as tensors and plain values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            # uint32 words; int64 holds them exactly and every torch version stores it.
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    keys = saved["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((saved["kind"], keys, saved["pos"], saved["has_gauss"], saved["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def export_weights(source: str | Path, target: str | Path) -> dict[str, Any]:
    """Write the EMA weights, step and training config of a checkpoint to ``target``.

    What sampling needs and nothing it does not (no raw weights, optimiser, RNG states or
    curve): a few MB a model, small enough to commit so a later session samples from the
    same weights without retraining. :func:`load_model` reads it like a full checkpoint.
    """
    state = load_checkpoint(Path(source))
    missing = {"ema", "config", "step"} - set(state)
    if missing:
        raise ValueError(f"{source} is not a DDPM training checkpoint (missing {sorted(missing)})")
    kept = {"ema": state["ema"], "config": state["config"], "step": int(state["step"])}
    save_checkpoint(Path(target), kept)
    return kept


def load_model(
    ckpt_path: str | Path, device: str | torch.device = "cpu", ema: bool = True
) -> tuple[nn.Module, Diffusion, dict[str, Any]]:
    """Rebuild (model in eval mode, diffusion, meta) from a training checkpoint.

    ``ema=True`` loads the EMA weights (what sampling should use). ``meta`` holds the step,
    the training config (mode, t_max, schedule, ...) and which weights were loaded.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"DDPM checkpoint not found: {path}")
    device = pick_device(device) if isinstance(device, str) else device
    state = load_checkpoint(path, map_location=device)
    missing = {"ema" if ema else "model", "config", "step"} - set(state)
    if missing:
        raise ValueError(f"{path} is not a DDPM training checkpoint (missing {sorted(missing)})")
    config = state["config"]
    unet_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config["unet"].items()}
    model = build_unet(config["preset"], **unet_kwargs).to(device)
    model.load_state_dict(state["ema" if ema else "model"])
    model.eval().requires_grad_(False)
    diffusion = Diffusion(config["schedule"], config["T"], config["prediction"])
    meta = {"step": int(state["step"]), "config": config, "weights": "ema" if ema else "model"}
    return model, diffusion, meta
