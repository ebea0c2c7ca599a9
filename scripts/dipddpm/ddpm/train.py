"""DDPM training with EMA, checkpoints and exact resume.

Three modes: ``full`` trains on t ~ U{1..T} (an unconditional generator); ``truncated``
trains only on t ~ U{1..t_max}, the part of the chain a DIP-prior start at t0 <= t_max
ever uses; ``prior-trained`` is truncated training in which a share p of each batch is
noised from the DIP output of its training image and learns to recover the clean image
(:mod:`dipddpm.ddpm.prior_training`, which says how its targets stay bounded).

Resume is exact on CPU: the data order, timesteps, noise, dropout and prior choice of
step k come from generators seeded with (seed, k), not from state carried across steps, so
a run that is killed and resumed from ``resume.pt`` (or the newest step checkpoint) reaches
the same weights, bit for bit, as an uninterrupted run. Checkpoints hold the full state anyway
(model, EMA, optimiser, RNG states, step, config, curve so far); how they are kept on disk
across Snakemake's cleanup of a killed job is in :mod:`dipddpm.ddpm.checkpoint`.

:func:`train` builds a :class:`TrainConfig` (the settings, frozen) and a :class:`Run`
(model, EMA, optimiser, data and progress), resumes it if it can, then loops:
one optimisation step, an evaluation when due, the checkpoints when due.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from dipddpm.ddpm.checkpoint import (
    FORMAT_VERSION,
    RESUME_FILE,
    checkpoint_path,
    checkpoint_steps_done,
    discard_training_state,
    latest_checkpoint,
    load_checkpoint,
    load_model,
    restore_kept_checkpoints,
    restore_rng,
    resumable_until,
    rng_state,
    save_checkpoint,
    save_progress,
    save_step_checkpoint,
    stale_settings,
)
from dipddpm.ddpm.diffusion import Diffusion, to_model_space
from dipddpm.ddpm.prior_training import (
    PRIOR_MODE,
    TrainingPriors,
    check_prior_settings,
    pool_members,
    prepare_priors,
    prior_share_at,
    prior_trained_loss,
)
from dipddpm.ddpm.unet import build_unet, unet_config
from dipddpm.device import pick_device
from dipddpm.io import save_csv
from dipddpm.metrics import psnr_from_mse
from dipddpm.version import source_hash

log = logging.getLogger("dipddpm")

MODES = ("full", "truncated", PRIOR_MODE)
# Seed streams of _step_seed: 0 batch order, 1 t and noise, 2 dropout, 4 evaluation probe,
# 5 the prior-or-clean choice of prior-trained mode (its own, so the others never shift).
PRIOR_STREAM = 5
# 6: which pool member a prior sample trains on, when only a subset has priors.
POOL_STREAM = 6


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What to train: every setting that decides the weights, plus the checkpoint plan.

    AdamW with linear warm-up over ``warmup`` steps, gradient-norm clipping at
    ``grad_clip`` (None: off), EMA of the weights with decay
    ``min(ema_decay, (1 + k) / (10 + k))`` so short runs get a useful average.
    ``t_max`` is for ``truncated`` and ``prior-trained`` mode (``full`` trains on 1..T).
    ``prior_share`` (p), ``prior_share_start`` and ``prior_ramp_steps`` are for
    ``prior-trained`` mode only: a share p of each batch starts from the DIP prior; with
    ``prior_share_start`` p rises linearly from it to ``prior_share`` over the first
    ``prior_ramp_steps`` steps (default: all steps), see
    :func:`~dipddpm.ddpm.prior_training.prior_share_at`. A checkpoint is written after
    each step in ``checkpoint_steps``, ``resume.pt`` every ``resume_every`` steps and at
    the end. Every ``eval_every`` steps (0: never) the raw and EMA models are scored on
    held-out images noised to ``eval_ts`` (None: :func:`default_eval_ts`).
    ``bf16`` (autocast) and ``compile`` (torch.compile) take effect on CUDA only (unless
    :func:`train` is given ``cpu_speedups``).
    """

    preset: str = "tiny"
    schedule: str = "linear"
    T: int = 1000
    mode: str = "full"
    t_max: int | None = None
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-4
    ema_decay: float = 0.9999
    grad_clip: float | None = 1.0
    checkpoint_steps: tuple[int, ...] = ()
    seed: int = 0
    eval_every: int = 0
    eval_ts: tuple[int, ...] | None = None
    bf16: bool = False
    compile: bool = False
    warmup: int = 100
    resume_every: int = 100
    weight_decay: float = 0.0
    prediction: str = "eps"
    unet_overrides: Mapping[str, Any] | None = None
    prior_share: float | None = None
    prior_share_start: float | None = None
    prior_ramp_steps: int | None = None

    def __post_init__(self) -> None:
        # Lists from YAML become tuples, so a config stays immutable once built.
        object.__setattr__(self, "checkpoint_steps", tuple(int(k) for k in self.checkpoint_steps))
        if self.eval_ts is not None:
            object.__setattr__(self, "eval_ts", tuple(int(t) for t in self.eval_ts))
        _resolve_t_max(self.mode, self.T, self.t_max)
        check_prior_settings(
            self.mode, self.prior_share, self.prior_share_start, self.prior_ramp_steps
        )
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"steps and batch_size must be >= 1; got {self.steps}, {self.batch_size}"
            )
        bad = [k for k in self.checkpoint_steps if not 1 <= k <= self.steps]
        if bad:
            raise ValueError(f"checkpoint_steps {bad} lie outside 1..steps={self.steps}")

    @property
    def t_hi(self) -> int:
        """The largest timestep trained on."""
        return _resolve_t_max(self.mode, self.T, self.t_max)

    @property
    def prior_ramp(self) -> int:
        """Steps over which the prior share ramps up (all steps unless set)."""
        return self.steps if self.prior_ramp_steps is None else int(self.prior_ramp_steps)


def _resolve_t_max(mode: str, T: int, t_max: int | None) -> int:
    if mode not in MODES:
        raise ValueError(f"training mode must be one of {MODES}; got {mode!r}")
    if mode == "full":
        if t_max not in (None, T):
            raise ValueError(
                f"t_max={t_max} is only used in truncated and {PRIOR_MODE} mode (full uses T={T})"
            )
        return T
    if t_max is None or not 1 <= t_max <= T:
        raise ValueError(f"{mode} mode needs t_max in 1..T={T}; got {t_max}")
    return t_max


def _step_seed(seed: int, step: int, stream: int) -> int:
    """An independent 63-bit seed per (run seed, step, purpose)."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1, np.uint64)[0] >> 1)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of step ``step``'s batch: consecutive slices of per-epoch permutations."""
    first = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(first + len(out), n)
        order = torch.Generator().manual_seed(_step_seed(seed, epoch, 0))
        perm = torch.randperm(n, generator=order)
        out.extend(perm[offset : offset + batch_size - len(out)].tolist())
    return torch.tensor(out, dtype=torch.long)


def _check_images(images01: np.ndarray, name: str, factor: int) -> None:
    if not isinstance(images01, np.ndarray) or images01.ndim != 4 or images01.shape[1] != 3:
        shape = getattr(images01, "shape", None)
        raise ValueError(f"{name} must be a float (N, 3, H, W) array in [0, 1]; got shape {shape}")
    if images01.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    h, w = images01.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"{name}: H and W must be divisible by {factor}; got {h}x{w}")
    lo, hi = float(images01.min()), float(images01.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must lie in [0, 1]; got range [{lo:.3g}, {hi:.3g}]")


def default_eval_ts(t_hi: int) -> list[int]:
    """Fixed evaluation steps: 10 %, 25 %, 50 % and 100 % of the trained range."""
    return sorted({max(1, round(f * t_hi)) for f in (0.1, 0.25, 0.5, 1.0)})


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


@torch.no_grad()
def evaluate_x0_psnr(
    model: nn.Module,
    diffusion: Diffusion,
    x0: torch.Tensor,
    noise: torch.Tensor,
    ts: Sequence[int],
) -> dict[str, float]:
    """PSNR (dB, [0, 1] data) of the one-shot x0 prediction from x_t, per fixed t."""
    was_training = model.training
    model.eval()
    out = {}
    for t in ts:
        t_batch = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
        xt = diffusion.q_sample(x0, t_batch, noise)
        x0_hat = diffusion.predict_x0(model(xt, t_batch).float(), xt, t_batch).clamp(-1, 1)
        mse = (((x0_hat - x0) / 2.0) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
        out[f"psnr_t{t}"] = float(psnr_from_mse(mse).mean())
    model.train(was_training)
    return out


class Probe(NamedTuple):
    """Held-out images (model space) with fixed noise, scored at fixed timesteps."""

    x0: torch.Tensor
    noise: torch.Tensor
    ts: list[int]


@dataclasses.dataclass
class Run:
    """One training call's live objects and progress; the loop advances ``step``."""

    config: TrainConfig
    meta: dict[str, Any]  # the config as checkpoints record it
    device: torch.device
    bf16: bool
    diffusion: Diffusion
    model: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    forward: nn.Module  # the model, compiled when asked
    data: torch.Tensor
    priors: TrainingPriors | None = None  # prior-trained mode: the DIP outputs of ``data``
    step: int = 0
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    elapsed: float = 0.0  # training wall time, summed across resumes

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(self.device),
            "step": self.step,
            "config": self.meta,
            "curve": self.rows,
            "version": FORMAT_VERSION,
        }


def _speedups(config: TrainConfig, device: torch.device, cpu_speedups: bool) -> tuple[bool, bool]:
    """(bf16, compile) as they take effect on ``device``."""
    if device.type == "cuda" or cpu_speedups:
        return config.bf16, config.compile
    if config.bf16 or config.compile:
        warnings.warn(
            "bf16 and compile apply to CUDA only; training in float32 eagerly", stacklevel=4
        )
    return False, False


def _meta(
    config: TrainConfig, unet_kwargs: dict, shape: tuple, bf16: bool, compile: bool
) -> dict[str, Any]:
    return {
        "preset": config.preset,
        "unet": {k: list(v) if isinstance(v, tuple) else v for k, v in unet_kwargs.items()},
        "schedule": config.schedule,
        "T": config.T,
        "prediction": config.prediction,
        "mode": config.mode,
        "t_max": config.t_hi,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "ema_decay": config.ema_decay,
        "grad_clip": config.grad_clip,
        "seed": config.seed,
        "warmup": config.warmup,
        "weight_decay": config.weight_decay,
        "n_images": int(shape[0]),
        # What the network generates: sampling from noise needs it.
        "image_shape": [int(side) for side in shape[1:]],
        "code": source_hash(),
        "bf16": bf16,
        "compile": compile,
    }


def _prior_meta(config: TrainConfig, priors: TrainingPriors) -> dict[str, Any]:
    """What decides a prior-trained run beyond the common settings; a resume must match it.

    The ramp length is resolved: a ramp over all steps changes with ``steps``, so a run
    extended to more steps starts over instead of continuing another schedule."""
    return {
        "share": config.prior_share,
        "share_start": config.prior_share_start,
        "ramp_steps": config.prior_ramp,
        "digest": priors.digest,
        "error_rms_median": float(np.median(priors.error_rms)),
        "t_floor_median": int(priors.t_floor.median()),
    }


def build_run(
    config: TrainConfig,
    images01: np.ndarray,
    eval_images: np.ndarray | None,
    device: str | torch.device,
    cpu_speedups: bool = False,
    priors01: np.ndarray | None = None,
    prior_index: np.ndarray | None = None,
) -> Run:
    """Check the images (and priors) and create the model (seeded), its EMA copy and the
    optimiser."""
    overrides = dict(config.unet_overrides or {})
    overrides.setdefault("image_size", int(images01.shape[-1]) if images01.ndim == 4 else 32)
    unet_kwargs = unet_config(config.preset, **overrides)
    factor = 2 ** (len(unet_kwargs["ch_mult"]) - 1)
    _check_images(images01, "training images", factor)
    if eval_images is not None:
        _check_images(eval_images, "eval images", factor)
    device = pick_device(device) if isinstance(device, str) else device
    bf16, compile = _speedups(config, device, cpu_speedups)
    meta = _meta(config, unet_kwargs, images01.shape, bf16, compile)
    diffusion = Diffusion(config.schedule, config.T, config.prediction)
    priors = _training_priors(config, priors01, prior_index, images01, diffusion)
    if priors is not None:
        meta["prior"] = _prior_meta(config, priors)
    torch.manual_seed(config.seed)
    model = build_unet(config.preset, **overrides).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    forward = torch.compile(model) if compile else model
    data = torch.as_tensor(images01, dtype=torch.float32)
    return Run(config, meta, device, bf16, diffusion, model, ema, optimizer, forward, data, priors)


def _training_priors(
    config: TrainConfig,
    priors01: np.ndarray | None,
    prior_index: np.ndarray | None,
    images01: np.ndarray,
    diffusion: Diffusion,
) -> TrainingPriors | None:
    if config.mode != PRIOR_MODE:
        if priors01 is not None:
            raise ValueError(f"priors01 is only used in {PRIOR_MODE} mode, not {config.mode!r}")
        return None
    if priors01 is None:
        raise ValueError(f"{PRIOR_MODE} mode needs priors01, the DIP outputs of the images")
    return prepare_priors(priors01, images01, diffusion, config.t_hi, prior_index)


def _stale_prior(saved: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Prior settings or prior data that differ from the saved run's (checkpoint.RESUME_KEYS
    predate prior-trained mode)."""
    if saved.get("prior") == meta.get("prior"):
        return []
    return [f"prior: {saved.get('prior')!r} -> {meta.get('prior')!r}"]


def resume(run: Run, out_dir: Path) -> None:
    """Continue from the newest usable checkpoint in ``out_dir``, if there is one.

    Step checkpoints that Snakemake deleted are first linked back from ``.resume/``; a
    checkpoint still missing then caps the resume point, so that it gets written again."""
    if not out_dir.exists():
        return
    steps = run.config.checkpoint_steps
    restore_kept_checkpoints(out_dir, steps)
    path = latest_checkpoint(out_dir, resumable_until(out_dir, steps, run.config.steps))
    if path is None:
        return
    # RNG states must stay CPU tensors; load_state_dict moves weights to the device.
    state = load_checkpoint(path, map_location="cpu")
    stale = stale_settings(state["config"], run.meta) + _stale_prior(state["config"], run.meta)
    if stale:  # a changed config or library: the saved weights are not this run's
        log.warning(
            "not resuming from %s, it was trained differently (%s); starting over",
            path,
            "; ".join(stale),
        )
        discard_training_state(out_dir)
        return
    run.model.load_state_dict(state["model"])
    run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    restore_rng(state["rng"], run.device)
    run.step, run.rows = int(state["step"]), list(state["curve"])
    run.elapsed = float(run.rows[-1].get("elapsed_s", 0.0)) if run.rows else 0.0


def optimisation_step(run: Run) -> dict[str, Any]:
    """Train on step ``run.step``'s batch, advance the step; return the step's curve row."""
    config, step = run.config, run.step
    tic = time.perf_counter()
    for group in run.optimizer.param_groups:
        group["lr"] = config.lr * min(1.0, (step + 1) / max(config.warmup, 1))
    index = batch_indices(len(run.data), config.batch_size, config.seed, step)
    x0 = to_model_space(run.data[index]).to(run.device)
    gen = torch.Generator().manual_seed(_step_seed(config.seed, step, 1))
    torch.manual_seed(_step_seed(config.seed, step, 2))  # dropout
    bf16 = torch.autocast(run.device.type, dtype=torch.bfloat16) if run.bf16 else None
    prior_columns = {}
    with bf16 or contextlib.nullcontext():
        if run.priors is None:
            loss = run.diffusion.loss(run.forward, x0, t_max=config.t_hi, generator=gen)
        else:
            loss, prior_columns = _prior_batch_loss(run, index, x0, gen)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.optimizer.step()
    _update_ema(run.ema, run.model, min(config.ema_decay, (1 + step) / (10 + step)))
    loss_value = float(loss.detach())  # synchronises CUDA, so the timing below is honest
    seconds = time.perf_counter() - tic
    run.elapsed += seconds
    run.step = step + 1
    return {
        "step": run.step,
        "loss": loss_value,
        "lr": run.optimizer.param_groups[0]["lr"],
        "images_per_s": config.batch_size / seconds,
        "elapsed_s": run.elapsed,
        **prior_columns,
    }


def _prior_batch_loss(
    run: Run, index: torch.Tensor, x0: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    """The prior-trained loss of step ``run.step``'s batch and its curve columns: the
    scheduled share p, the share actually drawn, and the prior samples' mean target RMS."""
    config, step = run.config, run.step
    share = prior_share_at(step, config.prior_share, config.prior_share_start, config.prior_ramp)
    prior_gen = torch.Generator().manual_seed(_step_seed(config.seed, step, PRIOR_STREAM))
    pool_gen = torch.Generator().manual_seed(_step_seed(config.seed, step, POOL_STREAM))
    members = pool_members(run.priors, index, pool_gen)
    own = members if run.priors.index is None else run.priors.index[members]
    loss, stats = prior_trained_loss(
        run.diffusion,
        run.forward,
        x0,
        to_model_space(run.data[own]).to(run.device),
        to_model_space(run.priors.images[members]).to(run.device),
        run.priors.t_floor[members],
        share,
        config.t_hi,
        gen,
        prior_gen,
    )
    return loss, {
        "prior_p": share,
        "prior_drawn": stats.share,
        "prior_target_rms": stats.target_rms,
    }


def make_probe(run: Run, eval_images: np.ndarray | None) -> Probe | None:
    """The fixed evaluation set, or None when no evaluation is asked for."""
    config = run.config
    if eval_images is None or config.eval_every <= 0:
        return None
    x0 = to_model_space(torch.as_tensor(eval_images, dtype=torch.float32)).to(run.device)
    gen = torch.Generator().manual_seed(_step_seed(config.seed, 0, 4))
    noise = torch.randn(x0.shape, generator=gen).to(run.device)
    ts = list(config.eval_ts) if config.eval_ts is not None else default_eval_ts(config.t_hi)
    return Probe(x0, noise, ts)


def evaluation_due(run: Run, probe: Probe | None) -> bool:
    done, config = run.step, run.config
    return probe is not None and (done % config.eval_every == 0 or done == config.steps)


def evaluate(run: Run, probe: Probe) -> dict[str, float]:
    """Curve columns: x0-prediction PSNR per t and its mean, for the raw and EMA model."""
    row = {}
    for name, net in (("", run.model), ("ema_", run.ema)):
        scores = evaluate_x0_psnr(net, run.diffusion, probe.x0, probe.noise, probe.ts)
        row.update({f"{name}{k}": v for k, v in scores.items()})
        row[f"{name}psnr_mean"] = float(np.mean(list(scores.values())))
    return row


def save_due_checkpoints(run: Run, out_dir: Path) -> None:
    """The step checkpoint when one is asked for at this step; resume.pt when due."""
    done, config = run.step, run.config
    if done in config.checkpoint_steps:
        save_step_checkpoint(out_dir, done, run.state())
    if done % max(config.resume_every, 1) == 0 or done == config.steps:
        save_checkpoint(out_dir / RESUME_FILE, run.state())
        save_progress(out_dir, pd.DataFrame(run.rows))


def train(
    images01: np.ndarray,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    device: str | torch.device = "auto",
    eval_images: np.ndarray | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    cpu_speedups: bool = False,
    priors01: np.ndarray | None = None,
    prior_index: np.ndarray | None = None,
    **settings: Any,
) -> pd.DataFrame:
    """Train a DDPM UNet on ``images01`` ((N, 3, H, W) float in [0, 1]); return the curve.

    ``config`` (default :class:`TrainConfig`) with ``settings`` (its fields) replaced says
    what to train. Writes ``out_dir/<grid.checkpoint_name(k)>`` for each k in
    ``checkpoint_steps``, a rolling ``out_dir/resume.pt``, and ``out_dir/curve.csv`` once
    training is complete. If ``out_dir`` already holds a checkpoint of the same config,
    training continues from the newest one (exactly, see the module docstring).
    Curve rows: step, loss, lr, images_per_s, elapsed_s (training wall time so far,
    summed across resumes, evaluation excluded), and when evaluated the PSNR of the
    one-shot x0 prediction of the raw and EMA model from ``eval_images`` with fixed noise.
    ``cpu_speedups`` lets ``bf16`` and ``compile`` take effect on the CPU too (slow there;
    it lets CPU tests run those code paths). ``stop_after`` ends the call after that many
    total steps as if the job were killed (for tests of resume); the returned curve then
    covers the steps done so far.

    ``prior-trained`` mode needs ``priors01``: the DIP outputs of the training images, an
    array shaped like ``images01`` in [0, 1] with row i the prior of image i (align them by
    name with :func:`dipddpm.ddpm.prior_training.align_priors`), or of a subset of them, the
    images at positions ``prior_index`` (:func:`~dipddpm.ddpm.prior_training.pool_index`);
    prior samples then train on pool members drawn at random. Its curve rows also hold
    ``prior_p`` (the scheduled share), ``prior_drawn`` (the share of the batch drawn as
    prior samples) and ``prior_target_rms`` (their mean target RMS; NaN when none).
    """
    config = dataclasses.replace(config or TrainConfig(), **settings)
    out_dir = Path(out_dir)
    run = build_run(config, images01, eval_images, device, cpu_speedups, priors01, prior_index)
    resume(run, out_dir)
    probe = make_probe(run, eval_images)
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    run.model.train()
    bar = tqdm(
        range(run.step, end), desc=f"train {config.preset} ({config.mode})", disable=not progress
    )
    for _ in bar:
        row = optimisation_step(run)
        if evaluation_due(run, probe):
            row.update(evaluate(run, probe))
        run.rows.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        save_due_checkpoints(run, out_dir)
    curve = pd.DataFrame(run.rows)
    if end == config.steps:
        save_csv(out_dir / "curve.csv", curve)
    return curve


__all__ = [
    "MODES",
    "PRIOR_STREAM",
    "Run",
    "TrainConfig",
    "batch_indices",
    "build_run",
    "checkpoint_path",
    "checkpoint_steps_done",
    "default_eval_ts",
    "evaluate",
    "evaluate_x0_psnr",
    "load_model",
    "optimisation_step",
    "resume",
    "save_due_checkpoints",
    "train",
]
