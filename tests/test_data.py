"""Data stage: CIFAR-10 readers, subsets, natural images and degradations."""

import tarfile

import numpy as np
import pytest
import torch

from dipddpm.data import (
    DataUnavailable,
    balanced_subset,
    load_cifar10,
    load_folder_images,
    load_skimage_images,
    shape_images,
    to_chw_float,
)
from dipddpm.degrade import degrade
from dipddpm.operators import Operator


def test_balanced_subset_is_deterministic_and_balanced():
    labels = np.repeat(np.arange(10), 50)
    first = balanced_subset(labels, 25, seed=3)
    assert np.array_equal(first, balanced_subset(labels, 25, seed=3))
    assert not np.array_equal(first, balanced_subset(labels, 25, seed=4))
    counts = np.bincount(labels[first], minlength=10)
    assert counts.tolist() == [3] * 5 + [2] * 5
    assert len(np.unique(first)) == 25


def test_balanced_subset_rejects_too_many():
    with pytest.raises(ValueError, match="exceeds the 20 available"):
        balanced_subset(np.repeat(np.arange(10), 2), 21, seed=0)


def test_archive_reader_on_small_archive(tiny_archive):
    subset = load_cifar10("test", 20, seed=0, source="archive", path=str(tiny_archive))
    assert subset.images.shape == (20, 32, 32, 3) and subset.images.dtype == np.uint8
    assert np.bincount(subset.labels, minlength=10).tolist() == [2] * 10
    assert all(name.startswith("cifar10-jpeg/test/") for name in subset.names)
    train = str(tiny_archive).replace("jpeg-test", "jpeg-train")
    again = load_cifar10("train", 20, seed=0, source="archive", path=train)
    assert all("/train/" in name for name in again.names)


def test_archive_path_template_and_folder_reader(tiny_archive, tmp_path):
    template = str(tiny_archive).replace("test.tar", "{split}.tar")
    from_template = load_cifar10("test", 10, seed=1, source="archive", path=template)
    with tarfile.open(tiny_archive) as tar:
        tar.extractall(tmp_path, filter="data")
    from_folder = load_cifar10("test", 10, seed=1, source="folder", path=str(tmp_path))
    assert from_template.names == from_folder.names
    assert np.array_equal(from_template.images, from_folder.images)


def test_auto_prefers_local_copy(tiny_archive, tmp_path):
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / tiny_archive.name).write_bytes(tiny_archive.read_bytes())
    subset = load_cifar10("test", 10, seed=0, source="auto", resources=str(resources))
    assert subset.source["kind"] == "archive"


def test_missing_archive_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.tar.gz"
    with pytest.raises(DataUnavailable, match="nope.tar.gz"):
        load_cifar10("test", 10, seed=0, source="archive", path=str(missing))


def test_bad_image_file_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataUnavailable, match="broken.png"):
        load_folder_images(tmp_path)


def test_shared_cifar10_archive(shared_data):
    subset = load_cifar10(
        "test", 10, seed=0, source="archive", path=str(shared_data / "cifar10-jpeg-{split}.tar.gz")
    )
    assert subset.images.shape == (10, 32, 32, 3)
    assert sorted(subset.labels.tolist()) == list(range(10))


def test_dip_paper_images_load_through_folder_path(shared_data):
    image_set = load_folder_images(shared_data / "dip-paper", "inpainting_*.png")
    assert image_set.names == ["inpainting_kate", "inpainting_library", "inpainting_vase"]
    assert image_set.masks is not None
    shaped = shape_images(image_set, multiple=32, size=128)
    assert shaped.images.shape == (3, 128, 128, 3)
    assert shaped.masks.shape == (3, 1, 128, 128)
    assert 0.05 < 1 - shaped.masks.mean() < 0.95  # masks hide part of each image


def test_skimage_images_crop_to_multiple():
    shaped = shape_images(load_skimage_images(["coffee"]), multiple=32)
    assert shaped.images.shape == (1, 384, 576, 3)  # 400x600 cropped to multiples of 32
    with pytest.raises(ValueError, match="unknown scikit-image image 'lena'"):
        load_skimage_images(["lena"])


def test_image_smaller_than_network_is_rejected():
    tiny = load_skimage_images(["astronaut"])
    tiny.images = [tiny.images[0][:20, :20]]
    with pytest.raises(ValueError, match="20x20, smaller than the 32x32"):
        shape_images(tiny, multiple=32)


@pytest.fixture
def clean():
    rng = np.random.default_rng(0)
    return rng.random((2, 3, 64, 64), dtype=np.float32)


def test_gaussian_noise_statistics(clean):
    degraded = degrade(clean[:1], {"kind": "denoise", "sigma": 25}, seed=7)
    empirical = np.std(degraded.observed - degraded.clean) * 255
    assert abs(empirical - 25) / 25 < 0.02
    assert abs(np.mean(degraded.observed - degraded.clean)) < 0.01
    again = degrade(clean[:1], {"kind": "denoise", "sigma": 25}, seed=7)
    assert np.array_equal(degraded.observed, again.observed)


def test_inpainting_mask_ratio(clean):
    degraded = degrade(clean, {"kind": "inpaint", "drop": 0.3}, seed=1)
    assert degraded.mask.shape == (2, 1, 64, 64)
    assert abs((1 - degraded.mask.mean()) - 0.3) < 0.02
    assert np.array_equal(degraded.observed, clean * degraded.mask)


@pytest.mark.parametrize("kernel", ["bicubic", "area"])
def test_super_resolution_shapes(clean, kernel):
    degraded = degrade(clean, {"kind": "sr", "factor": 4, "kernel": kernel}, seed=0)
    assert degraded.observed.shape == (2, 3, 16, 16)
    operator = Operator("sr", factor=4, kernel=kernel)
    assert np.allclose(operator(torch.from_numpy(clean)).numpy(), degraded.observed, atol=1e-6)


def test_sr_area_kernel_averages_blocks():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = Operator("sr", factor=2, kernel="area")(x)
    assert y.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]


def test_sr_factor_must_divide(clean):
    with pytest.raises(ValueError, match="factor 3 does not divide the 64x64"):
        degrade(clean, {"kind": "sr", "factor": 3}, seed=0)


def test_to_chw_float_range():
    images = np.full((1, 2, 2, 3), 255, dtype=np.uint8)
    out = to_chw_float(images)
    assert out.shape == (1, 3, 2, 2) and out.dtype == np.float32 and out.max() == 1.0
