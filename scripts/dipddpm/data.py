"""Image sources: CIFAR-10 (four ways to get it) and natural images for DIP.

CIFAR-10 ``source`` values:

- ``torchvision``: the official release through ``torchvision.datasets.CIFAR10``
  (downloads into ``root`` when missing).
- ``archive``: a ``.tar.gz`` in ImageFolder layout (``*/train/<class>/*.jpg``,
  ``*/test/<class>/*.jpg``), e.g. ``../shared/data/cifar10-jpeg-test.tar.gz``.
- ``folder``: the same layout extracted into a directory.
- ``auto``: a local copy under ``resources/cifar10`` if there is one, else the download,
  else a :class:`DataUnavailable` error that says how to provide a copy.

Subsets are class-balanced and seeded: the same seed gives the same images.
Natural-image datasets (``skimage``, ``folder``) may be cut into fixed-size crops at their
native resolution (:func:`crop_positions` gives the rule), one image per crop.
All loaders return uint8 HWC arrays; :func:`to_chw_float` turns them into the
(N, C, H, W) float32 [0, 1] arrays the rest of the pipeline uses.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_SPLITS = ("train", "test")
CIFAR10_SOURCES = ("auto", "torchvision", "archive", "folder")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Images scikit-image ships inside its wheel (no pooch download needed).
SKIMAGE_BUNDLED = (
    "astronaut",
    "camera",
    "cat",
    "chelsea",
    "coffee",
    "coins",
    "hubble_deep_field",
    "moon",
    "motorcycle_left",
    "page",
    "retina",
    "rocket",
    "text",
)
# Bundled images that are one part of what a loader returns: (loader, index of the part).
SKIMAGE_PARTS = {"motorcycle_left": ("stereo_motorcycle", 0)}


class DataUnavailable(RuntimeError):
    """A data source cannot be reached or read; the message says how to fix it."""


# What a truncated or damaged .tar.gz raises, from the tar, gzip or zlib layer.
ARCHIVE_DAMAGE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


@dataclass
class ImageSet:
    """Images as uint8 (N, H, W, C) plus what identifies each one."""

    images: np.ndarray
    names: list[str]
    labels: np.ndarray
    masks: np.ndarray | None = None  # float32 (N, 1, H, W), 1 = known pixel
    source: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- CIFAR-10


def balanced_subset(labels: np.ndarray, n: int, seed: int, num_classes: int = 10) -> np.ndarray:
    """Sorted indices of ``n`` items, as equal per class as ``n`` allows, drawn with ``seed``.

    The remainder of ``n / num_classes`` goes to the lowest class ids, so the counts are a
    pure function of ``n``, and the draw within each class a pure function of the seed.
    """
    labels = np.asarray(labels)
    if n < 1:
        raise ValueError(f"subset size must be >= 1; got {n}")
    if n > len(labels):
        raise ValueError(f"subset size {n} exceeds the {len(labels)} available images")
    rng = np.random.default_rng(seed)
    per_class = [n // num_classes + (1 if c < n % num_classes else 0) for c in range(num_classes)]
    chosen = []
    for cls, count in enumerate(per_class):
        members = np.flatnonzero(labels == cls)
        if count > len(members):
            raise ValueError(f"class {cls} has {len(members)} images, {count} requested")
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen))


def _decode(data: bytes | Path, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise DataUnavailable(f"cannot read image {name}: {err}") from err


def _labelled_members(names: list[str], split: str) -> list[tuple[str, int]]:
    """(name, class id) of every image under ``<split>/<class>/`` in a listing, sorted."""
    found = []
    for name in names:
        parts = Path(name).parts
        if len(parts) < 3 or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if parts[-3] == split and parts[-2] in CIFAR10_CLASSES:
            found.append((name, CIFAR10_CLASSES.index(parts[-2])))
    return sorted(found)


def _select(members: list[tuple[str, int]], n: int, seed: int, where: str):
    if not members:
        raise DataUnavailable(
            f"{where} holds no images in the layout <split>/<class>/*.jpg "
            f"with classes {', '.join(CIFAR10_CLASSES)}"
        )
    labels = np.array([label for _, label in members])
    try:
        return [members[i] for i in balanced_subset(labels, n, seed)]
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def read_cifar10_archive(path: str | Path, split: str, n: int, seed: int) -> ImageSet:
    """Class-balanced subset of a CIFAR-10 ImageFolder ``.tar.gz``; decodes only the subset."""
    path = Path(path)
    if not path.is_file():
        raise DataUnavailable(_not_found("archive", path))
    try:
        with tarfile.open(path, "r:*") as tar:
            members = _labelled_members(tar.getnames(), split)
            chosen = _select(members, n, seed, f"archive {path} (split {split!r})")
            images = [_decode(tar.extractfile(name).read(), f"{path}:{name}") for name, _ in chosen]
    except ARCHIVE_DAMAGE as err:
        raise DataUnavailable(
            f"CIFAR-10 archive {path} is truncated or corrupt ({type(err).__name__}: {err}). "
            "Download or copy it again, and check its sha256 against the source's "
            "(../shared/data/README.md lists those of the offline copies)."
        ) from err
    except OSError as err:
        raise DataUnavailable(
            f"cannot read CIFAR-10 archive {path}: {err.strerror or err}. " + HOW_TO_PROVIDE_CIFAR
        ) from err
    return _cifar_set(images, chosen, {"kind": "archive", "path": str(path)})


def read_cifar10_folder(path: str | Path, split: str, n: int, seed: int) -> ImageSet:
    """Class-balanced subset of an extracted CIFAR-10 ImageFolder tree."""
    root = Path(path)
    if not root.is_dir():
        raise DataUnavailable(_not_found("folder", root))
    listing = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    chosen = _select(_labelled_members(listing, split), n, seed, f"folder {root} ({split!r})")
    images = [_decode(root / name, str(root / name)) for name, _ in chosen]
    return _cifar_set(images, chosen, {"kind": "folder", "path": str(root)})


def _cifar_set(images, chosen, source) -> ImageSet:
    return ImageSet(
        images=np.stack(images),
        names=[name for name, _ in chosen],
        labels=np.array([label for _, label in chosen], dtype=np.int64),
        source=source,
    )


def read_cifar10_torchvision(root: str | Path, split: str, n: int, seed: int) -> ImageSet:
    """The official release via torchvision; downloads into ``root`` when it is missing."""
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(root), train=(split == "train"), download=True)
    except Exception as err:  # urllib, ssl and socket errors all mean "unreachable"
        raise DataUnavailable(
            f"could not download CIFAR-10 into {root} ({type(err).__name__}: {err}). "
            + HOW_TO_PROVIDE_CIFAR
        ) from err
    labels = np.asarray(dataset.targets)
    index = balanced_subset(labels, n, seed)
    return ImageSet(
        images=np.asarray(dataset.data)[index],
        names=[f"{split}/{i:05d}" for i in index],
        labels=labels[index],
        source={"kind": "torchvision", "root": str(root)},
    )


HOW_TO_PROVIDE_CIFAR = (
    "Point the pipeline at a local copy: `make run CIFAR10=../shared/data` (a folder "
    "holding cifar10-jpeg-{train,test}.tar.gz), or set data.cifar10.source to 'archive' and "
    "data.cifar10.path to a .tar.gz in ImageFolder layout (e.g. "
    "../shared/data/cifar10-jpeg-{split}.tar.gz), or 'folder' with an extracted tree, or "
    "place one under resources/cifar10/ for source 'auto'."
)


def _not_found(source: str, path: Path) -> str:
    return (
        f"CIFAR-10 {source} not found: {path} (from data.cifar10.source: {source} and "
        "data.cifar10.path). " + HOW_TO_PROVIDE_CIFAR
    )


def find_local_cifar10(resources: str | Path, split: str) -> tuple[str, Path] | None:
    """A local copy under ``resources``: a split archive, an ImageFolder tree or torchvision's."""
    base = Path(resources)
    for archive in sorted(base.glob(f"*{split}*.tar.gz")):
        return "archive", archive
    for tree in [base, *sorted(p for p in base.glob("*") if p.is_dir())]:
        if (tree / split).is_dir():
            return "folder", tree
    if (base / "cifar-10-batches-py").is_dir():
        return "torchvision", base
    return None


def load_cifar10(
    split: str,
    n: int,
    seed: int,
    source: str = "auto",
    path: str | None = None,
    resources: str = "resources/cifar10",
) -> ImageSet:
    """A class-balanced, seeded CIFAR-10 subset from the configured source.

    ``path`` may contain ``{split}``, so one setting serves both splits' archives.
    """
    if split not in CIFAR10_SPLITS:
        raise ValueError(f"CIFAR-10 split must be one of {CIFAR10_SPLITS}; got {split!r}")
    if source not in CIFAR10_SOURCES:
        raise ValueError(f"data.cifar10.source must be one of {CIFAR10_SOURCES}; got {source!r}")
    if source in ("archive", "folder") and not path:
        raise ValueError(
            f"data.cifar10.source {source!r} needs data.cifar10.path. " + HOW_TO_PROVIDE_CIFAR
        )
    if path:
        path = str(path).replace("{split}", split)
    if source == "auto":
        local = find_local_cifar10(resources, split)
        if local is None:
            source, path = "torchvision", resources
        else:
            source, path = local[0], str(local[1])
    if source == "archive":
        return read_cifar10_archive(path, split, n, seed)
    if source == "folder":
        return read_cifar10_folder(path, split, n, seed)
    return read_cifar10_torchvision(path or resources, split, n, seed)


# --------------------------------------------------------------------- natural images


def load_skimage_images(names: list[str]) -> ImageSet:
    """scikit-image's bundled images by name (those inside the wheel; no download)."""
    from skimage import data as skdata

    images = []
    for name in names:
        if name not in SKIMAGE_BUNDLED:
            raise ValueError(
                f"unknown scikit-image image {name!r}; bundled ones: {', '.join(SKIMAGE_BUNDLED)}"
            )
        images.append(_as_rgb(_skimage_array(skdata, name)))
    return ImageSet(images=images, names=list(names), labels=np.full(len(names), -1))


def _skimage_array(skdata, name: str) -> np.ndarray:
    if name in SKIMAGE_PARTS:
        loader, part = SKIMAGE_PARTS[name]
        return getattr(skdata, loader)()[part]
    return getattr(skdata, name)()


def _as_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3]).astype(np.uint8)


def load_folder_images(
    path: str | Path,
    pattern: str = "*",
    mask_suffix: str = "_mask",
    grayscale: bool = False,
    names: list[str] | None = None,
) -> ImageSet:
    """Every PNG/JPEG in a folder matching ``pattern``; ``<stem><mask_suffix>.*`` are masks.

    ``names`` (file stems or file names) picks those images, in that order, from the ones
    ``pattern`` matches: one glob cannot list images like ``inpainting_kate.png`` and
    ``sr_zebra_GT.png`` without their neighbours. A mask (white = known pixel) is attached
    to the image with the same stem, which is how the DIP paper ships its inpainting
    examples.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataUnavailable(f"image folder not found: {root}")
    files = sorted(
        p
        for p in root.glob(pattern)
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(mask_suffix)
    )
    if not files:
        raise DataUnavailable(f"no PNG/JPEG images match {pattern!r} in {root}")
    if names is not None:
        files = _named_files(files, names, root, pattern)
    images, masks = [], []
    for file in files:
        rgb = _decode(file, str(file))
        images.append(rgb[..., :1] if grayscale else rgb)
        masks.append(_mask_of(file, rgb.shape[:2], mask_suffix))
    return ImageSet(
        images=images,
        names=[f.stem for f in files],
        labels=np.full(len(files), -1),
        masks=masks if all(m is not None for m in masks) else None,
        source={"kind": "folder", "path": str(root), "pattern": pattern},
    )


def _named_files(files: list[Path], names: list[str], root: Path, pattern: str) -> list[Path]:
    """The image files ``names`` lists (by stem or by file name), in the order listed."""
    by_name = {**{f.stem: f for f in files}, **{f.name: f for f in files}}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise DataUnavailable(
            f"images {missing} not found among the {pattern!r} images in {root}; "
            f"found: {', '.join(f.stem for f in files)}"
        )
    return [by_name[name] for name in names]


def _mask_of(image_file: Path, size: tuple[int, int], mask_suffix: str) -> np.ndarray | None:
    """The mask ``<stem><mask_suffix>.*`` beside ``image_file``, if any; it must match ``size``.

    A mask of another size is refused rather than resized: stretched to fit, its known
    pixels would no longer sit on the pixels they describe.
    """
    found = sorted(image_file.parent.glob(f"{image_file.stem}{mask_suffix}.*"))
    if not found:
        return None
    mask = read_mask(found[0])
    if mask.shape[1:] != tuple(size):
        raise ValueError(
            f"mask {found[0]} is {mask.shape[1]}x{mask.shape[2]} but its image {image_file} "
            f"is {size[0]}x{size[1]} (height x width); a mask must have its image's size"
        )
    return mask


def read_mask(path: str | Path) -> np.ndarray:
    """A binary mask image as float32 (1, H, W): 1 where the pixel is known (white)."""
    try:
        with Image.open(path) as img:
            gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise DataUnavailable(f"cannot read mask {path}: {err}") from err
    return (gray > 0.5).astype(np.float32)[None]


# ------------------------------------------------------------------------------ crops


def crop_positions(
    height: int, width: int, size: int, per_image: int, name: str = "image"
) -> list[tuple[int, int]]:
    """(top, left) of ``per_image`` non-overlapping ``size`` x ``size`` crops of an image.

    The rule depends on the image's shape only, never on its content: the longer side (the
    width when both are equal) is split into ``per_image`` equal strips and each crop is
    centred in its own strip; across the shorter side every crop is centred. A strip is at
    least ``size`` long, so neighbouring crops never share a pixel.
    """
    along_width = width >= height
    long_side, short_side = (width, height) if along_width else (height, width)
    if per_image * size > long_side or size > short_side:
        raise ValueError(
            f"image {name!r} is {height}x{width} (height x width), too small for "
            f"crops of size {size} with per_image {per_image}: that needs {per_image * size} "
            f"pixels along its longer side and {size} across its shorter one"
        )
    across = (short_side - size) // 2
    # Crop k is centred in strip k: k*L/n + (L/n - size)/2, rounded down, in integers.
    along = [
        (2 * k * long_side + long_side - per_image * size) // (2 * per_image)
        for k in range(per_image)
    ]
    return [(across, a) if along_width else (a, across) for a in along]


def crop_name(name: str, k: int) -> str:
    """The name of crop ``k`` (from 0) of image ``name``: ``<name>#crop<k>``."""
    return f"{name}#crop{k}"


def crop_images(image_set: ImageSet, size: int, per_image: int) -> ImageSet:
    """Each image (and its mask) cut into ``per_image`` crops at :func:`crop_positions`;
    every crop becomes an image of its own, at the source's native resolution."""
    images, masks, names, labels, boxes = [], [], [], [], []
    for index, image in enumerate(image_set.images):
        name = image_set.names[index]
        mask = None if image_set.masks is None else image_set.masks[index]
        positions = crop_positions(image.shape[0], image.shape[1], size, per_image, name)
        for k, (top, left) in enumerate(positions):
            images.append(image[top : top + size, left : left + size])
            if mask is not None:
                masks.append(mask[:, top : top + size, left : left + size])
            names.append(crop_name(name, k))
            labels.append(image_set.labels[index])
            boxes.append({"name": names[-1], "top": top, "left": left})
    return ImageSet(
        images=images,
        names=names,
        labels=np.asarray(labels),
        masks=None if image_set.masks is None else masks,
        source={
            **image_set.source,
            "crops": {"size": size, "per_image": per_image, "boxes": boxes},
        },
    )


# ------------------------------------------------------------------ shaping and format


def crop_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Centre-crop an (H, W, ...) array so both sides are multiples of ``multiple``."""
    h, w = image.shape[:2]
    new_h, new_w = h - h % multiple, w - w % multiple
    if new_h == 0 or new_w == 0:
        raise ValueError(f"a {h}x{w} image is smaller than the required multiple {multiple}")
    top, left = (h - new_h) // 2, (w - new_w) // 2
    return image[top : top + new_h, left : left + new_w]


def centre_square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def resize(image: np.ndarray, size: int, resample=Image.BICUBIC) -> np.ndarray:
    """Resize an (H, W, C) uint8 or (H, W) float image to ``size`` x ``size``."""
    if image.dtype == np.uint8:
        squeeze = image.shape[2] == 1
        pil = Image.fromarray(image[..., 0] if squeeze else image)
        out = np.asarray(pil.resize((size, size), resample), dtype=np.uint8)
        return out[..., None] if squeeze else out
    pil = Image.fromarray(image.astype(np.float32))
    return np.asarray(pil.resize((size, size), resample), dtype=np.float32)


def shape_images(
    image_set: ImageSet, multiple: int, size: int | None = None, square: bool = False
) -> ImageSet:
    """Make every image (and mask) the same shape: square crop, resize, crop to ``multiple``.

    ``multiple`` is 2^depth of the deepest network that will see the images. All images of
    a set must end with one shape (they are fitted as one batch); otherwise the error names
    the files and their shapes.
    """
    images, masks = [], []
    for index, image in enumerate(image_set.images):
        mask = None if image_set.masks is None else image_set.masks[index][0]
        if square or size:
            image = centre_square(image)
            mask = None if mask is None else centre_square(mask)
        if size:
            image = resize(image, size)
            mask = None if mask is None else (resize(mask, size, Image.NEAREST) > 0.5) * 1.0
        if min(image.shape[:2]) < multiple:
            raise ValueError(
                f"image {image_set.names[index]!r} is {image.shape[0]}x{image.shape[1]}, "
                f"smaller than the {multiple}x{multiple} the network needs"
            )
        images.append(crop_to_multiple(image, multiple))
        masks.append(None if mask is None else crop_to_multiple(mask, multiple)[None])
    shapes = {img.shape for img in images}
    if len(shapes) > 1:
        listing = ", ".join(
            f"{n}: {i.shape[0]}x{i.shape[1]}" for n, i in zip(image_set.names, images, strict=True)
        )
        raise ValueError(
            f"images of one set must share a shape after cropping; got {listing}. "
            "Set the dataset's 'size' to resize them to one square size."
        )
    return ImageSet(
        images=np.stack(images),
        names=image_set.names,
        labels=np.asarray(image_set.labels),
        masks=None if image_set.masks is None else np.stack(masks).astype(np.float32),
        source=image_set.source,
    )


def to_chw_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    return np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)), dtype=np.float32) / 255.0


def build_dataset(spec: dict, cifar10: dict) -> ImageSet:
    """The images of one named dataset of the config, shaped for batched fitting."""
    source = spec["source"]
    _check_crops(spec)
    if source == "cifar10":
        image_set = load_cifar10(
            spec["split"],
            int(spec["n"]),
            seed=int(cifar10.get("seed", 0)),
            source=cifar10.get("source", "auto"),
            path=cifar10.get("path"),
            resources=cifar10.get("resources", "resources/cifar10"),
        )
    elif source == "skimage":
        image_set = load_skimage_images(spec["names"])
    elif source == "folder":
        image_set = load_folder_images(
            spec["path"],
            spec.get("pattern", "*"),
            spec.get("mask_suffix", "_mask"),
            spec.get("grayscale", False),
            spec.get("names"),
        )
    else:
        raise ValueError(f"dataset source must be cifar10, skimage or folder; got {source!r}")
    if spec.get("crops"):
        image_set = crop_images(
            image_set, int(spec["crops"]["size"]), int(spec["crops"]["per_image"])
        )
    return shape_images(image_set, int(spec.get("multiple", 32)), spec.get("size"))


def _check_crops(spec: dict) -> None:
    """Crops keep the native resolution of natural images, which neither a resize (``size``)
    nor CIFAR-10's 32x32 images leave anything of."""
    if not spec.get("crops"):
        return
    if spec["source"] == "cifar10":
        raise ValueError(
            "dataset option 'crops' applies to skimage and folder sources, not cifar10"
        )
    if spec.get("size"):
        raise ValueError(
            f"dataset options 'crops' and 'size' exclude each other (size {spec['size']} "
            "resizes the whole image; crops keep its native resolution): drop one"
        )
