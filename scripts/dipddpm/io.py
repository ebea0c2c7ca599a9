"""Atomic file output and small readers shared by every stage.

Every writer goes through a temporary file in the target directory and an
``os.replace``: a killed job or a failing check never leaves a half-written
output that Snakemake (or a later rule) would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def save_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def load_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame atomically, without the index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Save one (C, H, W) or (H, W) float image in [0, 1] as an 8-bit PNG."""
    from PIL import Image

    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))
    pixels = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def image_grid(images: np.ndarray, ncol: int = 8, pad: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images into one (C, H', W') array with a white border."""
    n, c, h, w = images.shape
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    grid = np.ones((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = img
    return grid
