"""DDPM training with EMA, checkpoints and exact resume; loading checkpoints for sampling.

Two modes: ``full`` trains on t ~ U{1..T} (an unconditional generator); ``truncated``
trains only on t ~ U{1..t_max}, the part of the chain a DIP-prior start at t0 <= t_max
ever uses.

Resume is exact on CPU: the data order, timesteps, noise and dropout of step k come from
generators seeded with (seed, k), not from state carried across steps, so a run that is
killed and resumed from ``resume.pt`` (or the newest step checkpoint) reaches the same
weights, bit for bit, as an uninterrupted run. Checkpoints hold the full state anyway
(model, EMA, optimiser, RNG states, step, config, curve so far).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from dipddpm.ddpm.diffusion import Diffusion, to_model_space
from dipddpm.ddpm.unet import build_unet, unet_config
from dipddpm.device import pick_device
from dipddpm.grid import CHECKPOINT_GLOB, CHECKPOINT_RE, checkpoint_name
from dipddpm.io import atomic_path, save_csv

MODES = ("full", "truncated")
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
)


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / checkpoint_name(step)


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


def _resolve_t_max(mode: str, T: int, t_max: int | None) -> int:
    if mode not in MODES:
        raise ValueError(f"training mode must be one of {MODES}; got {mode!r}")
    if mode == "full":
        if t_max not in (None, T):
            raise ValueError(f"t_max={t_max} is only used in truncated mode (full uses T={T})")
        return T
    if t_max is None or not 1 <= t_max <= T:
        raise ValueError(f"truncated mode needs t_max in 1..T={T}; got {t_max}")
    return t_max


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
        out[f"psnr_t{t}"] = float((10.0 * torch.log10(1.0 / mse)).mean())
    model.train(was_training)
    return out


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def _latest_checkpoint(out_dir: Path, steps: int) -> Path | None:
    """The checkpoint with the most steps done (<= steps): resume.pt or a step checkpoint."""
    candidates = []
    for path in out_dir.glob("*.pt"):
        match = CHECKPOINT_RE.match(path.name)
        if match or path.name == "resume.pt":
            done = int(match.group(1)) if match else None
            candidates.append((done, path))
    best, best_step = None, -1
    for done, path in candidates:
        if done is None:  # resume.pt: read its step
            done = int(torch.load(path, map_location="cpu", weights_only=False)["step"])
        if best_step < done <= steps:
            best, best_step = path, done
    return best


def _resumable_until(out_dir: Path, checkpoint_steps: Sequence[int], steps: int) -> int:
    """The latest step a resume may start from: before the first requested checkpoint
    whose file is missing (e.g. deleted by a rerun), so that every checkpoint gets written.
    Training is a pure function of (config, seed, step), so going back costs only time."""
    missing = [int(k) for k in checkpoint_steps if not checkpoint_path(out_dir, int(k)).exists()]
    return min([steps, *(k - 1 for k in missing)])


def _check_resumable(saved: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    diff = [k for k in RESUME_KEYS if saved.get(k) != config.get(k)]
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in diff)
        raise ValueError(
            f"cannot resume from {path}: the training config changed ({details}); "
            "use a new output directory"
        )


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train(
    images01: np.ndarray,
    out_dir: str | Path,
    *,
    preset: str = "tiny",
    schedule: str = "linear",
    T: int = 1000,
    mode: str = "full",
    t_max: int | None = None,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 2e-4,
    ema_decay: float = 0.9999,
    grad_clip: float | None = 1.0,
    checkpoint_steps: Sequence[int] = (),
    seed: int = 0,
    device: str | torch.device = "auto",
    eval_images: np.ndarray | None = None,
    eval_every: int = 0,
    eval_ts: Sequence[int] | None = None,
    bf16: bool = False,
    compile: bool = False,
    progress: bool = True,
    warmup: int = 100,
    resume_every: int = 100,
    weight_decay: float = 0.0,
    prediction: str = "eps",
    unet_overrides: dict[str, Any] | None = None,
    stop_after: int | None = None,
) -> pd.DataFrame:
    """Train a DDPM UNet on ``images01`` ((N, 3, H, W) float in [0, 1]); return the curve.

    Writes ``out_dir/<grid.checkpoint_name(k)>`` for each k in ``checkpoint_steps``, a rolling
    ``out_dir/resume.pt`` every ``resume_every`` steps and at the end, and
    ``out_dir/curve.csv``. If ``out_dir`` already holds a checkpoint of the same config,
    training continues from the newest one (exactly, see the module docstring).

    AdamW with linear warm-up over ``warmup`` steps, gradient-norm clipping at
    ``grad_clip`` (None: off), EMA of the weights with decay
    ``min(ema_decay, (1 + k) / (10 + k))`` so short runs get a useful average.
    ``bf16`` (autocast) and ``compile`` (torch.compile) take effect on CUDA only.
    Curve rows: step, loss, lr, images_per_s, elapsed_s (training wall time so far,
    summed across resumes, evaluation excluded), and every ``eval_every`` steps (when
    ``eval_images`` is given) the PSNR of the one-shot x0 prediction of the raw and EMA
    model from the held-out images noised to ``eval_ts`` (default
    :func:`default_eval_ts` of the trained range) with fixed noise.
    ``stop_after`` ends the call after that many total steps as if the job were killed
    (for tests of resume); the returned curve then covers the steps done so far.
    """
    out_dir = Path(out_dir)
    t_hi = _resolve_t_max(mode, T, t_max)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1; got {steps}, {batch_size}")
    bad = [k for k in checkpoint_steps if not 1 <= int(k) <= steps]
    if bad:
        raise ValueError(f"checkpoint_steps {bad} lie outside 1..steps={steps}")
    overrides = dict(unet_overrides or {})
    overrides.setdefault("image_size", int(images01.shape[-1]) if images01.ndim == 4 else 32)
    unet_kwargs = unet_config(preset, **overrides)
    factor = 2 ** (len(unet_kwargs["ch_mult"]) - 1)
    _check_images(images01, "training images", factor)
    if eval_images is not None:
        _check_images(eval_images, "eval images", factor)

    device = pick_device(device) if isinstance(device, str) else device
    use_bf16, use_compile = bf16 and device.type == "cuda", compile and device.type == "cuda"
    if (bf16 or compile) and device.type != "cuda":
        warnings.warn(
            "bf16 and compile apply to CUDA only; training in float32 eagerly", stacklevel=2
        )

    config = {
        "preset": preset,
        "unet": {k: list(v) if isinstance(v, tuple) else v for k, v in unet_kwargs.items()},
        "schedule": schedule,
        "T": T,
        "prediction": prediction,
        "mode": mode,
        "t_max": t_hi,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "ema_decay": ema_decay,
        "grad_clip": grad_clip,
        "seed": seed,
        "warmup": warmup,
        "weight_decay": weight_decay,
        "n_images": int(images01.shape[0]),
        "bf16": use_bf16,
        "compile": use_compile,
    }
    diffusion = Diffusion(schedule, T, prediction)
    torch.manual_seed(seed)
    model = build_unet(preset, **overrides).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    forward = torch.compile(model) if use_compile else model

    rows: list[dict[str, Any]] = []
    start = 0
    resume_from = None
    if out_dir.exists():
        resume_from = _latest_checkpoint(
            out_dir, _resumable_until(out_dir, checkpoint_steps, steps)
        )
    if resume_from is not None:
        # RNG states must stay CPU tensors; load_state_dict moves weights to the device.
        state = torch.load(resume_from, map_location="cpu", weights_only=False)
        _check_resumable(state["config"], config, resume_from)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        _restore_rng(state["rng"], device)
        start, rows = int(state["step"]), list(state["curve"])

    data = torch.as_tensor(images01, dtype=torch.float32)
    eval_x0 = eval_noise = None
    ts = list(eval_ts) if eval_ts is not None else default_eval_ts(t_hi)
    if eval_images is not None and eval_every > 0:
        eval_x0 = to_model_space(torch.as_tensor(eval_images, dtype=torch.float32)).to(device)
        eval_gen = torch.Generator().manual_seed(_step_seed(seed, 0, 4))
        eval_noise = torch.randn(eval_x0.shape, generator=eval_gen).to(device)

    def state_dict(done: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": _rng_state(device),
            "step": done,
            "config": config,
            "curve": rows,
            "version": 1,
        }

    end = steps if stop_after is None else min(steps, stop_after)
    elapsed = float(rows[-1].get("elapsed_s", 0.0)) if rows else 0.0  # across resumes
    model.train()
    bar = tqdm(range(start, end), desc=f"train {preset} ({mode})", disable=not progress)
    for step in bar:
        tic = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / max(warmup, 1))
        x0 = to_model_space(data[batch_indices(len(data), batch_size, seed, step)]).to(device)
        gen = torch.Generator().manual_seed(_step_seed(seed, step, 1))
        torch.manual_seed(_step_seed(seed, step, 2))  # dropout
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss = diffusion.loss(forward, x0, t_max=t_hi, generator=gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        _update_ema(ema, model, min(ema_decay, (1 + step) / (10 + step)))
        loss_value = float(loss.detach())  # synchronises CUDA, so the timing below is honest
        done = step + 1
        seconds = time.perf_counter() - tic
        elapsed += seconds
        row = {
            "step": done,
            "loss": loss_value,
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": batch_size / seconds,
            "elapsed_s": elapsed,
        }
        if eval_x0 is not None and (done % eval_every == 0 or done == steps):
            for name, net in (("", model), ("ema_", ema)):
                scores = evaluate_x0_psnr(net, diffusion, eval_x0, eval_noise, ts)
                row.update({f"{name}{k}": v for k, v in scores.items()})
                row[f"{name}psnr_mean"] = float(np.mean(list(scores.values())))
        rows.append(row)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if done in checkpoint_steps:
            _save_checkpoint(checkpoint_path(out_dir, done), state_dict(done))
        if done % max(resume_every, 1) == 0 or done == steps:
            _save_checkpoint(out_dir / "resume.pt", state_dict(done))
            save_csv(out_dir / "curve.csv", pd.DataFrame(rows))
    curve = pd.DataFrame(rows)
    if end == steps:
        save_csv(out_dir / "curve.csv", curve)
    return curve


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
    state = torch.load(path, map_location=device, weights_only=False)
    missing = {"model", "ema", "config", "step"} - set(state)
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


def checkpoint_steps_done(out_dir: str | Path) -> list[int]:
    """Steps k for which a checkpoint (grid.checkpoint_name(k)) exists, ascending."""
    found = (CHECKPOINT_RE.match(p.name) for p in Path(out_dir).glob(CHECKPOINT_GLOB))
    return sorted(int(m.group(1)) for m in found if m)


__all__ = [
    "MODES",
    "batch_indices",
    "checkpoint_path",
    "checkpoint_steps_done",
    "default_eval_ts",
    "evaluate_x0_psnr",
    "load_model",
    "train",
]
