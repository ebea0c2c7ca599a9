"""DDPM stage: training cells (full / truncated) and sampling cells (Example 1).

Sampling methods (the ``method`` column of every sample cell):

- ``ddpm-noise``: the reverse chain from pure noise at T (unconditional; for inpainting
  the known pixels are kept consistent with the observation).
- ``ddpm-obs``: denoising only; the scaled observation is x_t at the step whose noise
  level matches sigma.
- ``dip+ddpm``: the DIP output forward-diffused to t0 (SDEdit/CCDF style).
- ``dip-guided``: as ``dip+ddpm``, and at every step the x0 estimate is blended with the
  DIP output with weight lam (``Guide`` in :mod:`dipddpm.ddpm.sample`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from .. import grid
from ..cost import cost_columns
from ..cost import load as load_calibration
from ..cost import merge as merge_calibrations
from ..ddpm.checkpoint import export_weights
from ..ddpm.prior_training import PRIOR_MODE, pool_index
from ..ddpm.sample import (
    Consistency,
    Guide,
    diffuse_prior,
    generate,
    noise_start,
    observation_start,
    sample_k,
    t_for_sigma,
)
from ..ddpm.train import TrainConfig, load_model, train
from ..device import describe_device, pick_device
from ..io import image_grid, load_json, load_npz, save_csv, save_json, save_npz, save_png
from ..metrics import per_image_metrics
from ..operators import Operator
from .dip import load_prior
from .fid import write_fid

log = logging.getLogger("dipddpm")

STARTS = ("noise", "obs", "dip")


def run_train_cell(
    clean_npz,
    eval_npz,
    cell: dict,
    train_cfg: dict,
    device: str,
    threads: int,
    out_dir,
    out_json,
    prior_npz=None,
    prior: dict | None = None,
) -> None:
    """Train one DDPM cell (identity ``cell``: the grid.TRAIN axes); writes one checkpoint
    per ``train_cfg["checkpoints"]`` step and ``curve.csv``; resumable. A prior-trained
    mode also reads ``prior_npz`` (the DIP cell of its training priors) and ``prior`` (its
    ``ddpm.modes`` entry's ``prior`` settings)."""
    torch.set_num_threads(max(1, int(threads)))
    data = load_npz(clean_npz)
    images = data["images"]
    held_out = load_npz(eval_npz)["images"][:16]
    dev = pick_device(device)
    t_max = None if cell["mode"] == "full" else int(cell["t_max"])
    pool = training_priors(prior_npz, prior, data["names"]) if prior else {}
    checkpoint_steps = list(train_cfg["checkpoints"])
    log.info("DDPM %s training on %d images (%s), %s", cell["mode"], len(images), dev, cell)
    config = TrainConfig(
        preset=cell["preset"],
        schedule=cell["schedule"],
        T=int(train_cfg["T"]),
        mode=PRIOR_MODE if prior else cell["mode"],
        t_max=t_max,
        steps=int(cell["train_steps"]),
        batch_size=int(train_cfg["batch_size"]),
        lr=float(train_cfg["lr"]),
        ema_decay=float(train_cfg["ema_decay"]),
        grad_clip=float(train_cfg["grad_clip"]),
        checkpoint_steps=tuple(checkpoint_steps),
        seed=int(cell["train_seed"]),
        eval_every=int(train_cfg["eval_every"]),
        eval_ts=common_eval_ts(train_cfg, t_max),
        bf16=bool(train_cfg.get("bf16", False)),
        compile=bool(train_cfg.get("compile", False)),
        resume_every=int(train_cfg.get("resume_every", 50)),
        **prior_share_settings(prior),
    )
    curve = train(images, out_dir, config, device=dev, eval_images=held_out, progress=True, **pool)
    seconds = float(curve["elapsed_s"].max()) if "elapsed_s" in curve else float("nan")
    save_csv(Path(out_dir) / "curve.csv", grid.stamp(curve, {**cell, "purpose": "training"}))
    save_json(
        out_json,
        {
            **cell,
            "train": train_cfg,
            "checkpoints": checkpoint_steps,
            "seconds": seconds,
            **describe_device(dev),
        },
    )


def training_priors(prior_npz, prior: dict, names) -> dict:
    """``train``'s prior arguments: the DIP outputs after ``prior["iters"]`` iterations of
    the training images the prior cell fitted, and their positions among ``names``."""
    if prior_npz is None:
        raise ValueError("a prior-trained mode needs its DIP prior cell's output.npz")
    priors = load_prior(prior_npz, int(prior["iters"]))
    return {
        "priors01": priors,
        "prior_index": pool_index(load_npz(prior_npz)["names"], names),
    }


def prior_share_settings(prior: dict | None) -> dict:
    """TrainConfig's share fields of a prior-trained mode (none for the others)."""
    if not prior:
        return {}
    return {
        "prior_share": float(prior["share"]),
        "prior_share_start": prior.get("share_start"),
        "prior_ramp_steps": prior.get("ramp_steps"),
    }


def store_model(checkpoint, stored) -> None:
    """Copy a checkpoint's sampling weights into the model store (see export_weights)."""
    if checkpoint is None:
        raise ValueError(
            f"{stored} was a stored copy, so the workflow did not ask for its training "
            "cell: delete the stored file (not force the rule) to retrain it"
        )
    kept = export_weights(checkpoint, stored)
    log.info("stored step-%d EMA weights of %s as %s", kept["step"], checkpoint, stored)


def common_eval_ts(train_cfg: dict, t_max: int | None) -> list[int] | None:
    """Evaluate full and truncated models at the same steps (the sampling start points
    both can reach), so their convergence curves compare like with like."""
    reachable = [t for t in train_cfg.get("eval_t", []) if t <= (t_max or train_cfg["T"])]
    return sorted(set(reachable)) or None


def load_observation(degraded_npz, degraded_json) -> tuple[dict, dict, Operator]:
    data, task = load_npz(degraded_npz), load_json(degraded_json)
    return data, task, Operator.from_arrays(data, task)


def start_point(start: str, diffusion, data: dict, task: dict, prior, t0: str, generator):
    """(x_start in model space, t_start) for one of the start points.

    ``t0`` is only read for the DIP start; noise starts at T and the observation at the
    step that matches the task's sigma.
    """
    shape = data["clean"].shape
    if start == "noise":
        return noise_start(shape, generator), diffusion.T
    if start == "obs":
        if task["kind"] != "denoise":
            raise ValueError(f"start 'obs' needs a denoising task; got {task['kind']!r}")
        return observation_start(diffusion, data["observed"], float(task["sigma"]) / 255.0)
    if start == "dip":
        if prior is None:
            raise ValueError("start 'dip' needs a DIP prior")
        return diffuse_prior(diffusion, prior, int(t0), generator), int(t0)
    raise ValueError(f"start must be one of {STARTS}; got {start!r}")


def load_for_sampling(ckpt, device: str, threads: int):
    """(EMA model, diffusion, checkpoint meta, device) for a sampling job."""
    torch.set_num_threads(max(1, int(threads)))
    dev = pick_device(device)
    return (*load_model(ckpt, dev), dev)


def restore(
    cell: dict, loaded, ckpt, data: dict, task: dict, operator, prior, progress: bool = True
):
    """Sample one sampling cell's restoration of ``data`` (its start, t0, sampler, eta,
    steps, lam, window, k and sample seed) with ``loaded`` = (model, diffusion, meta) and
    the cell's ``prior`` (None unless it starts from DIP); returns (t_start, result)."""
    model, diffusion, meta = loaded
    start, lam, k = cell["start"], float(cell["lam"]), int(cell["k"])
    t_start = start_step(start, diffusion, task, cell["t0"])
    check_trained_range(meta, t_start, ckpt)
    result = sample_k(
        model,
        diffusion,
        lambda g: start_point(start, diffusion, data, task, prior, cell["t0"], g)[0],
        t_start,
        min(int(cell["steps"]), t_start),
        k,
        cell["sampler"],
        float(cell["eta"]),
        guide=dip_guide(prior, lam, cell["window"], t_start),
        consistency=Consistency.for_task(operator, data["observed"]),
        generator=torch.Generator().manual_seed(int(cell["sample_seed"])),
        progress=progress,
    )
    return t_start, result


def run_sample_cell(
    ckpt,
    degraded_npz,
    degraded_json,
    prior_npz,
    cell: dict,
    device: str,
    threads: int,
    out_npz,
    out_metrics,
    out_json,
    out_preview,
    reference_npz,
    weights,
    out_fid,
    calibration_json: list,
) -> None:
    """Restore a degraded set with a trained DDPM from one start point; write metrics (with
    the method's calibrated cost per image) and the set's FID/KID against ``reference_npz``
    (Inception ``weights``).

    ``cell`` is the sampling cell's identity (grid.SAMPLE axes): its start, t0, sampler,
    eta, steps, lam, window, k and sample seed say how to sample, its prior axes which DIP
    output. Inpainting and SR hold every method to the observation at every step
    (:class:`Consistency`); with k > 1 the restored image is the mean of k chains."""
    model, diffusion, meta, dev = load_for_sampling(ckpt, device, threads)
    data, task, operator = load_observation(degraded_npz, degraded_json)
    prior = None if prior_npz is None else load_prior(prior_npz, int(cell["iters"]))
    start, lam, k = cell["start"], float(cell["lam"]), int(cell["k"])
    t_start, result = restore(cell, (model, diffusion, meta), ckpt, data, task, operator, prior)
    chain_nfe = result.nfe // k
    metrics = per_image_metrics(result.mean, data["clean"])
    method = grid.method_name(start, lam)
    dip_iters = int(cell["iters"]) if start == "dip" else 0
    calibration = merge_calibrations([load_calibration(p) for p in calibration_json])
    cost = cost_columns(calibration, cell["arch"], cell["preset"], dip_iters, chain_nfe, k)
    run = {"t_start": t_start, "chain_nfe": chain_nfe, "wall_seconds": result.seconds}
    for key, value in {**run, **cost, "stage": "ddpm", "device": dev.type}.items():
        metrics[key] = value
    metrics["spread"] = result.spread
    shown = result.mean[:8]
    save_png(out_preview, image_grid(np.concatenate([data["clean"][:8], shown]), ncol=len(shown)))
    save_csv(out_metrics, grid.stamp(metrics, cell, method))
    identity = grid.full_identity(cell, method)
    save_json(
        out_json,
        {
            "identity": identity,
            **run,
            **cost,
            "checkpoint": str(ckpt),
            "train_step": meta["step"],
            "train_config": meta["config"],
            **describe_device(dev),
        },
    )
    chains = {"chains": result.samples} if k > 1 else {}
    save_npz(out_npz, samples=result.mean, **chains)
    write_fid(result.mean, identity, result.nfe, reference_npz, weights, device, out_fid)


def start_step(start: str, diffusion, task: dict, t0: str) -> int:
    """The step a start enters the chain at: T from noise, the sigma-matched step from the
    observation, t0 from the DIP prior."""
    if start == "noise":
        return diffusion.T
    if start == "obs":
        return t_for_sigma(diffusion, float(task["sigma"]) / 255.0)
    return int(t0)


def dip_guide(prior, lam: float, window: str, t_start: int) -> Guide | None:
    """DIP guidance of the x0 estimates on the last ``window`` share of the chain."""
    if lam <= 0:
        return None
    return Guide(x_dip=prior, lam=lam, t_max=max(1, math.ceil(float(window) * t_start)))


def check_trained_range(meta: dict, t_start: int, ckpt) -> None:
    """A truncated model has never seen t > t_max; starting above it is an error."""
    config = meta["config"]
    t_max = config.get("t_max") or config["T"]
    if t_start > t_max:
        raise ValueError(
            f"{ckpt} was trained on t <= {t_max} ({config.get('mode')}); "
            f"it cannot start sampling at t = {t_start}"
        )


def run_generate_cell(
    ckpt,
    n: int,
    cell: dict,
    device: str,
    threads: int,
    out_npz,
    out_json,
    out_preview,
    reference_npz,
    weights,
    out_fid,
) -> None:
    """Unconditional samples from noise at T; records NFE, wall time and FID/KID."""
    model, diffusion, meta, dev = load_for_sampling(ckpt, device, threads)
    generator = torch.Generator().manual_seed(int(cell["sample_seed"]))
    image_shape = tuple(meta["config"]["image_shape"])
    result = generate(
        model,
        diffusion,
        n,
        int(cell["steps"]),
        image_shape,
        sampler=cell["sampler"],
        eta=float(cell["eta"]),
        generator=generator,
    )
    save_png(out_preview, image_grid(result.images[:64]))
    cell = {**cell, "purpose": "generation", "start": "noise", "t0": diffusion.T}
    identity = grid.full_identity(cell, "ddpm-noise")
    save_json(
        out_json,
        {
            "identity": identity,
            "n": n,
            "nfe": result.nfe,
            "seconds": result.seconds,
            "train_step": meta["step"],
            **describe_device(dev),
        },
    )
    save_npz(out_npz, samples=result.images)
    write_fid(result.images, identity, result.nfe, reference_npz, weights, device, out_fid)
