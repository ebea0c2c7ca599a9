"""Output writers: a failed write is one clear error and leaves no trace; outputs get
the permissions of the user's umask, as a plain open() gives them."""

import collections
import errno
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dipddpm.io import atomic_path, load_json, load_npz, save_csv, save_json, save_npz, save_png

# The message torch gives when its C++ writer hits a full disk (seen on a full tmpfs).
TORCH_DISK_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"
DiskUsage = collections.namedtuple("DiskUsage", "total used free")


def _save_checkpoint(path, value):
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"value": torch.tensor(value)}, tmp)


# name: (file name, write value to path, read value back, the library call that writes)
WRITERS = {
    "npz": (
        "observed.npz",
        lambda path, v: save_npz(path, value=np.array(v)),
        lambda path: int(load_npz(path)["value"]),
        (np, "savez_compressed"),
    ),
    "csv": (
        "metrics.csv",
        lambda path, v: save_csv(path, pd.DataFrame({"value": [v]})),
        lambda path: int(pd.read_csv(path)["value"][0]),
        (pd.DataFrame, "to_csv"),
    ),
    "json": (
        "params.json",
        lambda path, v: save_json(path, {"value": v}),
        lambda path: load_json(path)["value"],
        (Path, "write_text"),
    ),
    "checkpoint": (
        "step_100.pt",
        _save_checkpoint,
        lambda path: int(torch.load(path, weights_only=True)["value"]),
        (torch, "save"),
    ),
}


def _write_part_then_fail(error):
    """A stand-in for a library writer that fills the disk: some bytes land, then ``error``."""

    def write(*args, **kwargs):
        target = next(a for a in (*args, *kwargs.values()) if isinstance(a, str | os.PathLike))
        with open(target, "wb") as handle:
            handle.write(b"partial")
        raise error

    return write


def _disk_full():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("kind", WRITERS)
@pytest.mark.parametrize("had_previous", [False, True])
def test_disk_full_names_the_file_and_leaves_no_trace(kind, had_previous, tmp_path, monkeypatch):
    name, write, read, (owner, attribute) = WRITERS[kind]
    dest = tmp_path / "cell" / name
    if had_previous:
        write(dest, 1)
    monkeypatch.setattr(owner, attribute, _write_part_then_fail(_disk_full()))
    with pytest.raises(OSError, match="no space left on device") as caught:
        write(dest, 2)
    assert str(dest) in str(caught.value)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert os.listdir(dest.parent) == ([name] if had_previous else [])
    if had_previous:
        assert read(dest) == 1


def test_torch_error_on_a_full_disk_is_reported_as_disk_full(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError about stream positions."""
    dest = tmp_path / "step_100.pt"
    monkeypatch.setattr(torch, "save", _write_part_then_fail(RuntimeError(TORCH_DISK_FULL)))
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: DiskUsage(1 << 30, 1 << 30, 0))
    with pytest.raises(OSError, match=re.escape(str(dest)) + ".*no space left on device"):
        _save_checkpoint(dest, 2)
    assert os.listdir(tmp_path) == []


def test_other_failures_keep_their_type_and_name_the_file(tmp_path, monkeypatch):
    dest = tmp_path / "step_100.pt"
    _save_checkpoint(dest, 1)
    monkeypatch.setattr(torch, "save", _write_part_then_fail(RuntimeError("cannot pickle")))
    with pytest.raises(RuntimeError, match="cannot pickle") as caught:
        _save_checkpoint(dest, 2)
    assert any(str(dest) in note for note in getattr(caught.value, "__notes__", []))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["step_100.pt"] and WRITERS["checkpoint"][2](dest) == 1


def test_unwritable_folder_names_the_file(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError, match=re.escape(str(blocker / "cell" / "params.json"))):
        save_json(blocker / "cell" / "params.json", {"value": 1})


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


@pytest.mark.parametrize("kind", [*WRITERS, "png"])
def test_outputs_get_the_umask_permissions(kind, umask, tmp_path):
    if kind == "png":
        dest = tmp_path / "preview.png"
        save_png(dest, np.zeros((3, 4, 4), dtype=np.float32))
    else:
        name, write, _, _ = WRITERS[kind]
        dest = tmp_path / name
        write(dest, 1)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask


def test_overwrite_keeps_umask_permissions_and_replaces_content(umask, tmp_path):
    dest = tmp_path / "params.json"
    save_json(dest, {"value": 1})
    save_json(dest, {"value": 2})
    assert load_json(dest) == {"value": 2}
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["params.json"]
