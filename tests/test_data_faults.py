"""Bad input data stops early, with one message that names the file and what is wrong."""

import re
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from dipddpm.data import DataUnavailable, build_dataset, load_cifar10, load_folder_images
from dipddpm.degrade import degrade
from dipddpm.io import save_npz
from dipddpm.operators import Operator
from dipddpm.stages.data import degrade_dataset

LOCAL_COPY_HINT = "make run CIFAR10=../shared/data"


def _write_png(path, height, width, channels=3):
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, channels), np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(path)


# ----------------------------------------------------------------- inpainting masks


@pytest.mark.parametrize("size", [None, 32], ids=["as-is", "resized"])
def test_folder_mask_of_another_size_names_the_mask_and_both_sizes(tmp_path, size):
    _write_png(tmp_path / "kate.png", 64, 64)
    _write_png(tmp_path / "kate_mask.png", 48, 64, channels=1)
    spec = {"source": "folder", "path": str(tmp_path), "size": size}
    with pytest.raises(ValueError, match=r"kate_mask\.png is 48x64.*kate\.png.* 64x64"):
        build_dataset(spec, {})


def test_folder_mask_of_the_same_size_still_loads(tmp_path):
    _write_png(tmp_path / "kate.png", 64, 64)
    _write_png(tmp_path / "kate_mask.png", 64, 64, channels=1)
    assert load_folder_images(tmp_path).masks[0].shape == (1, 64, 64)


@pytest.fixture
def clean():
    return np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)


@pytest.mark.parametrize(
    "mask_shape", [(2, 1, 32, 32), (1, 1, 64, 64), (2, 3, 64, 64), (2, 64, 64)]
)
def test_dataset_masks_of_the_wrong_shape_are_rejected(clean, mask_shape):
    task = {"kind": "inpaint", "mask": "dataset", "name": "inpaint-paper"}
    shapes = re.escape(f"{mask_shape}") + ".*" + re.escape("(2, 1, 64, 64)")
    with pytest.raises(ValueError, match=f"tasks.inpaint-paper: .*{shapes}"):
        degrade(clean, task, seed=0, dataset_masks=np.ones(mask_shape, np.float32))


def test_degrade_stage_names_the_dataset_file_of_bad_masks(clean, tmp_path):
    clean_npz = tmp_path / "dip-inpainting" / "clean.npz"
    save_npz(clean_npz, images=clean, names=np.array(["a", "b"]), masks=np.ones((2, 1, 32, 32)))
    task = {"kind": "inpaint", "mask": "dataset"}
    out = [tmp_path / name for name in ("obs.npz", "params.json", "preview.png")]
    with pytest.raises(ValueError, match=re.escape(str(clean_npz)) + ".* 32x32.* 64x64"):
        degrade_dataset(clean_npz, "inpaint-paper", task, 0, *out)
    assert not any(path.exists() for path in out)


def test_operator_rejects_a_mask_that_does_not_fit_the_observation(clean):
    arrays = {"observed": clean, "mask": np.ones((2, 1, 32, 32), np.float32)}
    with pytest.raises(ValueError, match=r"inpaint-paper.* 32x32.* 64x64"):
        Operator.from_arrays(arrays, {"kind": "inpaint", "task": "inpaint-paper"})
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\).*\(64, 64\)"):
        Operator("inpaint", mask=torch.ones(64, 64))


def test_operator_still_accepts_a_mask_shared_by_the_batch(clean):
    arrays = {"observed": clean, "mask": np.ones((1, 1, 64, 64), np.float32)}
    operator = Operator.from_arrays(arrays, {"kind": "inpaint"})
    assert operator(torch.from_numpy(clean)).shape == clean.shape


# ----------------------------------------------------------------- CIFAR-10 sources


def test_truncated_archive_names_the_file_and_says_to_copy_again(tiny_archive, tmp_path):
    truncated = tmp_path / tiny_archive.name
    data = tiny_archive.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataUnavailable, match=re.escape(str(truncated))) as caught:
        load_cifar10("test", 10, seed=0, source="archive", path=str(truncated))
    message = str(caught.value)
    assert "truncated or corrupt" in message and "again" in message


def test_truncated_archive_found_by_auto_names_the_file(tiny_archive, tmp_path):
    resources = tmp_path / "resources"
    resources.mkdir()
    damaged = resources / tiny_archive.name
    damaged.write_bytes(tiny_archive.read_bytes()[:-100])
    with pytest.raises(DataUnavailable, match=re.escape(str(damaged)) + " is truncated or corrupt"):
        load_cifar10("test", 10, seed=0, source="auto", resources=str(resources))


@pytest.mark.parametrize("source", ["archive", "folder"])
def test_missing_local_copy_names_the_key_the_path_and_the_fix(tmp_path, source):
    missing = tmp_path / "nowhere" / "cifar10-jpeg-{split}.tar.gz"
    with pytest.raises(DataUnavailable) as caught:
        load_cifar10("test", 10, seed=0, source=source, path=str(missing))
    message = str(caught.value)
    assert "data.cifar10.path" in message and f"data.cifar10.source: {source}" in message
    assert str(missing).replace("{split}", "test") in message
    assert LOCAL_COPY_HINT in message


def test_source_without_path_names_the_key_and_the_fix():
    with pytest.raises(ValueError, match="needs data.cifar10.path") as caught:
        load_cifar10("test", 10, seed=0, source="archive")
    assert LOCAL_COPY_HINT in str(caught.value)


def test_failed_download_names_the_key_the_folder_and_the_fix(tmp_path, monkeypatch):
    import torchvision.datasets

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", unreachable)
    resources = tmp_path / "resources" / "cifar10"
    with pytest.raises(DataUnavailable) as caught:
        load_cifar10("test", 10, seed=0, source="auto", resources=str(resources))
    message = str(caught.value)
    assert "data.cifar10.source" in message and str(resources) in message
    assert LOCAL_COPY_HINT in message
