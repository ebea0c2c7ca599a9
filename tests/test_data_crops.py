"""Natural-image crops: fixed-size, non-overlapping, at native resolution, at positions that
depend on the image's shape only; and the folder source picking images by name."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import yaml
from PIL import Image

from dipddpm.config import ConfigError, load_schema, validate_config
from dipddpm.config_checks import image_side
from dipddpm.data import build_dataset, crop_positions, load_folder_images

SCHEMA = "workflow/schemas/config.schema.yaml"
DIP_PAPER_CLEAN = ["inpainting_kate", "inpainting_library", "inpainting_vase", "sr_zebra_GT"]


def _overlap(a: tuple[int, int], b: tuple[int, int], size: int) -> bool:
    return abs(a[0] - b[0]) < size and abs(a[1] - b[1]) < size


def _write_png(path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


@pytest.fixture
def folder(tmp_path):
    """Two images of distinct sizes with random pixels (so any shifted crop differs), one
    with a mask, and a stray file that a name list must not pick up."""
    rng = np.random.default_rng(0)
    _write_png(tmp_path / "wide.png", rng.integers(0, 256, (70, 150, 3), dtype=np.uint8))
    _write_png(tmp_path / "tall.png", rng.integers(0, 256, (200, 90, 3), dtype=np.uint8))
    _write_png(tmp_path / "tall_mask.png", rng.choice([0, 255], (200, 90)).astype(np.uint8))
    _write_png(tmp_path / "stray.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return tmp_path


def _spec(folder, **crops) -> dict:
    return {
        "source": "folder",
        "path": str(folder),
        "names": ["wide", "tall.png"],
        "crops": {"size": 64, "per_image": 2, **crops},
    }


# ------------------------------------------------------------------------ positions


@pytest.mark.parametrize(
    "height, width, size, per_image",
    [(300, 451, 64, 2), (512, 512, 64, 2), (704, 448, 128, 3), (64, 192, 64, 3), (400, 90, 64, 1)],
)
def test_crops_do_not_overlap_and_stay_inside(height, width, size, per_image):
    boxes = crop_positions(height, width, size, per_image)
    assert len(boxes) == per_image
    assert all(0 <= top <= height - size and 0 <= left <= width - size for top, left in boxes)
    assert not any(_overlap(a, b, size) for a, b in itertools.combinations(boxes, 2))


def test_crops_are_spread_along_the_longer_side_and_centred_across_the_shorter():
    # 451 wide: strips of 225.5 centred at 112.75 and 338.25, less 32, rounded down;
    # (300 - 64) / 2 = 118 down.
    assert crop_positions(300, 451, 64, 2) == [(118, 80), (118, 306)]
    assert crop_positions(451, 300, 64, 2) == [(80, 118), (306, 118)]
    assert crop_positions(64, 128, 64, 2) == [(0, 0), (0, 64)]  # an exact fit


@pytest.mark.parametrize("height, width", [(63, 500), (100, 127)])
def test_an_image_too_small_for_its_crops_is_named(height, width):
    with pytest.raises(ValueError) as info:
        crop_positions(height, width, 64, 2, name="tiny")
    message = str(info.value)
    assert "'tiny'" in message and f"{height}x{width}" in message
    assert "size 64" in message and "per_image 2" in message


# -------------------------------------------------------------------------- datasets


def test_folder_crops_have_count_size_dtype_names_and_masks(folder):
    image_set = build_dataset(_spec(folder), {})
    assert image_set.images.shape == (4, 64, 64, 3) and image_set.images.dtype == np.uint8
    assert image_set.names == ["wide#crop0", "wide#crop1", "tall#crop0", "tall#crop1"]
    # A mask set needs a mask for every image; "wide" has none, so the set has none.
    assert image_set.masks is None
    wide = np.asarray(Image.open(folder / "wide.png"))
    for k, (top, left) in enumerate(crop_positions(70, 150, 64, 2)):
        assert np.array_equal(image_set.images[k], wide[top : top + 64, left : left + 64])
    boxes = [(b["top"], b["left"]) for b in image_set.source["crops"]["boxes"][2:]]
    assert boxes == crop_positions(200, 90, 64, 2)


def test_masks_are_cropped_with_their_image(folder):
    spec = {**_spec(folder), "names": ["tall"]}
    image_set = build_dataset(spec, {})
    mask = np.asarray(Image.open(folder / "tall_mask.png")) > 127
    assert image_set.masks.shape == (2, 1, 64, 64) and image_set.masks.dtype == np.float32
    for k, (top, left) in enumerate(crop_positions(200, 90, 64, 2)):
        assert np.array_equal(image_set.masks[k, 0], mask[top : top + 64, left : left + 64])


def test_the_same_spec_gives_the_same_crops(folder):
    first, second = build_dataset(_spec(folder), {}), build_dataset(_spec(folder), {})
    assert first.images.tobytes() == second.images.tobytes()
    assert first.names == second.names


def test_skimage_crops():
    spec = {
        "source": "skimage",
        "names": ["chelsea", "coffee"],
        "crops": {"size": 64, "per_image": 2},
    }
    image_set = build_dataset(spec, {})
    assert image_set.images.shape == (4, 64, 64, 3) and image_set.images.dtype == np.uint8
    assert image_set.names == ["chelsea#crop0", "chelsea#crop1", "coffee#crop0", "coffee#crop1"]
    assert image_set.labels.tolist() == [-1] * 4


def test_too_small_image_names_the_dataset_image(folder):
    with pytest.raises(ValueError, match=r"'wide' is 70x150 .* size 64 with per_image 3"):
        build_dataset(_spec(folder, per_image=3), {})


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"source": "skimage", "names": ["coffee"], "size": 128}, "'crops' and 'size'"),
        ({"source": "cifar10", "split": "test", "n": 10}, "not cifar10"),
    ],
)
def test_crops_are_refused_with_a_resize_or_cifar10(spec, match):
    with pytest.raises(ValueError, match=match):
        build_dataset({**spec, "crops": {"size": 64, "per_image": 2}}, {})


def test_folder_names_pick_images_in_order(folder):
    image_set = load_folder_images(folder, names=["tall", "wide.png"])
    assert image_set.names == ["tall", "wide"]
    with pytest.raises(Exception, match=r"\['nope'\] not found .* found: stray, tall, wide"):
        load_folder_images(folder, names=["nope"])


def test_dip_paper_clean_images_by_name(shared_data):
    spec = {
        "source": "folder",
        "path": str(shared_data / "dip-paper"),
        "names": DIP_PAPER_CLEAN,
        "crops": {"size": 64, "per_image": 2},
    }
    image_set = build_dataset(spec, {})
    assert image_set.images.shape == (8, 64, 64, 3)
    assert image_set.names[::2] == [f"{name}#crop0" for name in DIP_PAPER_CLEAN]


# ------------------------------------------------------------------ schema and checks


@pytest.fixture(scope="module")
def schema(root):
    return load_schema(root / SCHEMA)


@pytest.fixture
def config(root):
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config["data"]["datasets"]["photos"] = {
        "source": "skimage",
        "names": ["astronaut", "coffee"],
        "crops": {"size": 64, "per_image": 2},
    }
    return config


def _error(config, schema) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, schema)
    return str(info.value)


def test_a_crops_dataset_passes_and_has_the_crop_side(config, schema):
    validate_config(copy.deepcopy(config), schema)
    assert image_side(config["data"]["datasets"]["photos"]) == 64


def test_the_crop_side_is_checked_against_network_depth(config, schema):
    config["dip"]["archs"]["deep"] = {"kind": "skip", "depth": 7}  # 64 / 2^7 < 1
    config["dip"]["grid"].append(
        {"datasets": ["photos"], "tasks": ["denoise-s25"], "archs": ["deep"]}
    )
    message = _error(config, schema)
    assert "'dip.archs.deep.depth'" in message and "'photos'" in message


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda d: d.update(size=128),
            "'data.datasets.photos.crops' and 'data.datasets.photos.size'",
        ),
        (
            lambda d: d.update(source="cifar10", split="test", n=8),
            "'data.datasets.photos.crops' applies to sources skimage and folder",
        ),
        (
            lambda d: d["crops"].update(size=48),
            "'data.datasets.photos.crops.size': 48 is not a multiple",
        ),
        (
            lambda d: d["crops"].update(size=4),
            "'data.datasets.photos.crops.size': 4 is out of range",
        ),
        (lambda d: d["crops"].update(per_image=0), "'data.datasets.photos.crops.per_image': 0"),
        (
            lambda d: d["crops"].pop("per_image"),
            "'data.datasets.photos.crops.per_image' is required",
        ),
        (lambda d: d["crops"].update(step=3), "under 'data.datasets.photos.crops'"),
    ],
)
def test_bad_crops_are_named(config, schema, edit, expected):
    edit(config["data"]["datasets"]["photos"])
    assert expected in _error(config, schema)
