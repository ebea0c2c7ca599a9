"""Degradations: each a named task with parameters that turns clean images into
(clean, observed, operator data) plus a record of every parameter and the seed.

- ``denoise``: y = x + sigma/255 * n, n ~ N(0, I). Not clipped, so the noise is exactly
  Gaussian with the requested level (the discrepancy principle relies on that).
- ``inpaint``: y = m * x with a random-pixel mask (``drop`` = fraction of unknown pixels,
  shared across channels), a mask image (``mask: <path>``) or the dataset's own masks
  (``mask: dataset``, e.g. the DIP paper's inpainting examples).
- ``sr``: y = D(x), anti-aliased downsampling by ``factor`` (``kernel`` bicubic or area).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import read_mask
from .operators import SR_KERNELS, TASK_KINDS, downsample


@dataclass
class Degraded:
    clean: np.ndarray  # (N, C, H, W)
    observed: np.ndarray  # (N, C, H, W), or (N, C, H/f, W/f) for sr
    mask: np.ndarray | None  # (N, 1, H, W), inpainting only
    params: dict  # the task's full parameters, the seed and the realised statistics

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"clean": self.clean, "observed": self.observed}
        if self.mask is not None:
            out["mask"] = self.mask
        return out


def check_task(name: str, task: dict) -> None:
    """Reject a task whose parameters are missing or out of range, naming the key."""
    kind = task.get("kind")
    if kind not in TASK_KINDS:
        raise ValueError(f"tasks.{name}.kind must be one of {TASK_KINDS}; got {kind!r}")
    if kind == "denoise" and not 0 < float(task.get("sigma", -1)) <= 255:
        raise ValueError(f"tasks.{name}.sigma must be in (0, 255]; got {task.get('sigma')!r}")
    if kind == "inpaint":
        mask = task.get("mask", "random")
        if mask == "random" and not 0 < float(task.get("drop", -1)) < 1:
            raise ValueError(f"tasks.{name}.drop must be in (0, 1); got {task.get('drop')!r}")
    if kind == "sr":
        if int(task.get("factor", 0)) < 2:
            raise ValueError(f"tasks.{name}.factor must be >= 2; got {task.get('factor')!r}")
        if task.get("kernel", "bicubic") not in SR_KERNELS:
            raise ValueError(f"tasks.{name}.kernel must be one of {SR_KERNELS}")


def add_gaussian_noise(clean: np.ndarray, sigma255: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(clean.shape, dtype=np.float32)
    return (clean + np.float32(sigma255 / 255.0) * noise).astype(np.float32)


def random_pixel_mask(shape: tuple[int, ...], drop: float, rng: np.random.Generator) -> np.ndarray:
    """(N, 1, H, W) mask with a fraction ``drop`` of pixels unknown (0), the rest known (1)."""
    n, _, h, w = shape
    return (rng.random((n, 1, h, w)) >= drop).astype(np.float32)


def mask_for(task: dict, clean: np.ndarray, dataset_masks, rng, dataset: str) -> np.ndarray:
    source = task.get("mask", "random")
    if source == "random":
        return random_pixel_mask(clean.shape, float(task["drop"]), rng)
    if source == "dataset":
        if dataset_masks is None:
            raise ValueError("task mask 'dataset' needs a dataset with <name>_mask images")
        masks = np.asarray(dataset_masks, dtype=np.float32)
        check_dataset_masks(task.get("name", "task"), masks, clean.shape, dataset)
        return masks
    mask = read_mask(source)
    if mask.shape[1:] != clean.shape[2:]:
        raise ValueError(
            f"mask {source} is {mask.shape[1]}x{mask.shape[2]} but the images are "
            f"{clean.shape[2]}x{clean.shape[3]}"
        )
    return np.repeat(mask[None], len(clean), axis=0)


def check_dataset_masks(name: str, masks: np.ndarray, shape: tuple, dataset: str) -> None:
    """Masks must be (N, 1, H, W) for (N, C, H, W) images: one per image, never broadcast."""
    n, _, h, w = shape
    if masks.shape != (n, 1, h, w):
        size = "x".join(str(side) for side in masks.shape[-2:])
        raise ValueError(
            f"tasks.{name}: the masks of {dataset} are {size} (shape {masks.shape}) but its "
            f"{n} images are {h}x{w} and need masks of shape {(n, 1, h, w)}"
        )


def degrade(
    clean: np.ndarray, task: dict, seed: int, dataset_masks=None, dataset: str = "the dataset"
) -> Degraded:
    """Apply ``task`` to clean (N, C, H, W) images in [0, 1] with a seeded generator.

    ``dataset`` names where the images and ``dataset_masks`` came from, for error messages.
    """
    check_task(task.get("name", "task"), task)
    rng = np.random.default_rng(seed)
    kind = task["kind"]
    params = {**task, "seed": int(seed)}
    mask = None
    if kind == "denoise":
        observed = add_gaussian_noise(clean, float(task["sigma"]), rng)
        params["empirical_sigma"] = float(np.std(observed - clean) * 255.0)
    elif kind == "inpaint":
        mask = mask_for(task, clean, dataset_masks, rng, dataset)
        observed = (clean * mask).astype(np.float32)
        params["empirical_drop"] = float(1.0 - mask.mean())
    else:
        factor, kernel = int(task["factor"]), task.get("kernel", "bicubic")
        if clean.shape[2] % factor or clean.shape[3] % factor:
            raise ValueError(
                f"sr factor {factor} does not divide the {clean.shape[2]}x{clean.shape[3]} images"
            )
        with torch.no_grad():
            observed = downsample(torch.from_numpy(clean), factor, kernel).numpy()
        params.update(factor=factor, kernel=kernel)
    return Degraded(clean=clean, observed=observed, mask=mask, params=params)
