"""Atomic file output and small readers shared by every stage.

Every writer goes through a temporary file in the target directory and an
``os.replace``: a killed job or a failing check never leaves a half-written
output that Snakemake (or a later rule) would mistake for a finished one.
A write that fails raises :class:`OutputWriteError`, which names the file and the
reason; the temporary file is removed and an earlier version of the output stays.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TEMP_NAME_TRIES = 16
# Below this much free space, a writer's failure is taken for a full disk: torch.save
# reports one as a RuntimeError about stream positions, with no errno.
NEARLY_FULL_BYTES = 1 << 20


class OutputWriteError(OSError):
    """An output could not be written; the message names the file and the reason."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only on success.

    The output gets the permissions a plain ``open()`` would give it (0o666 less the
    umask). On failure the temporary file is removed and ``path`` is left as it was; an
    OSError, or any error while the disk is full, becomes an :class:`OutputWriteError`,
    and other errors get a note naming ``path``.
    """
    path = Path(path)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_file_beside(path, suffix)
    except OSError as err:
        raise _write_error(path, err) from err
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise _write_error(path, err) from err
    except Exception as err:
        # Measured before the temporary file is removed: it holds the space that ran out.
        if _nearly_full(path.parent):
            raise _write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from err
        err.add_note(f"while writing {path} (left unchanged)")
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _new_file_beside(path: Path, suffix: str) -> Path:
    """Create an empty, uniquely named hidden file in ``path``'s folder.

    Created as ``open()`` creates files, so the umask (and a folder's default ACL) sets
    its permissions; ``tempfile.mkstemp`` would make every output private (0o600).
    """
    for _ in range(TEMP_NAME_TRIES):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(path.parent))


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def _write_error(path: Path, err: OSError) -> OutputWriteError:
    reason = os.strerror(err.errno).lower() if err.errno else str(err)
    error = OutputWriteError(
        f"could not write {path}: {reason}. Nothing was written there (an earlier version, "
        f"if any, is unchanged).{_remedy(path, err.errno)}"
    )
    error.errno = err.errno
    return error


def _remedy(path: Path, code: int | None) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f" Free some space on the file system of {path.parent} and run again."
    if code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
        return f" Check that {path.parent} is a folder you may write to."
    return ""


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


def save_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n")


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
