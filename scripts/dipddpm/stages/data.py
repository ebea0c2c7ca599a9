"""Data stage: named image sets and their degraded observations."""

from __future__ import annotations

import logging

import numpy as np

from ..data import build_dataset, to_chw_float
from ..degrade import degrade
from ..io import image_grid, load_npz, save_json, save_npz, save_png

log = logging.getLogger("dipddpm")


def prepare_dataset(name: str, spec: dict, cifar10: dict, out_npz, out_png, out_json) -> None:
    """Load, shape and store one named dataset as (N, C, H, W) float32 in [0, 1]."""
    image_set = build_dataset(spec, cifar10)
    images = to_chw_float(image_set.images)
    arrays = {
        "images": images,
        "names": np.array(image_set.names),
        "labels": np.asarray(image_set.labels, dtype=np.int64),
    }
    if image_set.masks is not None:
        arrays["masks"] = image_set.masks
    log.info("dataset %s: %d images of %s", name, len(images), images.shape[1:])
    meta = {
        "name": name,
        "spec": spec,
        "cifar10": cifar10 if spec["source"] == "cifar10" else None,
        "source": image_set.source,
        "shape": list(images.shape),
        "names": image_set.names,
    }
    save_png(out_png, image_grid(images[:64]))
    save_json(out_json, meta)
    save_npz(out_npz, **arrays)


def degrade_dataset(clean_npz, task_name: str, task: dict, seed: int, out_npz, out_json, out_png):
    """Apply a named task to a prepared dataset with a seeded generator."""
    data = load_npz(clean_npz)
    task = {**task, "name": task_name}
    degraded = degrade(data["images"], task, seed, data.get("masks"), dataset=str(clean_npz))
    log.info("task %s seed %d: %s", task_name, seed, degraded.params)
    observed = degraded.observed
    if observed.shape != degraded.clean.shape:  # sr: show the low-resolution input upsampled
        factor = degraded.clean.shape[-1] // observed.shape[-1]
        observed = observed.repeat(factor, axis=2).repeat(factor, axis=3)
    rows = min(8, len(observed))
    preview = np.concatenate([degraded.clean[:rows], np.clip(observed[:rows], 0, 1)])
    save_png(out_png, image_grid(preview, ncol=rows))
    save_json(out_json, {"task": task_name, "names": data["names"].tolist(), **degraded.params})
    save_npz(out_npz, names=data["names"], **degraded.arrays())
