"""CifarNet: a small CIFAR-10 classifier whose penultimate features score generated images.

torch-fidelity's Inception weights cannot be fetched offline, so the generation metrics
(:mod:`dipddpm.genmetrics`) run on the features of this network instead. It is trained
once, deterministically, on the CPU and stored as a small weights file with its test
accuracy; a model below the accuracy floor is refused (:func:`check_accuracy_floor`),
since features of a classifier that has not learnt the classes say little about images.

Architecture (``width`` w, default 32; about 0.28 M parameters):
a stride-2 3x3 stem (3 -> w, 16x16), then two blocks of conv -> 2x2 max-pool -> BN ->
ReLU -> conv -> BN -> ReLU (w -> 2w at 8x8, 2w -> 4w at 4x4), global average pooling to
the 4w-dimensional feature vector (128 by default), and a linear 10-way head. The stem
downsamples at once because, on a 2-core CPU, full-resolution layers cost most of the time
and little of the accuracy.

Images are accepted in the repository's convention, float (N, 3, H, W) in [0, 1], or as
uint8 (N, H, W, 3) / (N, 3, H, W); float images are clipped to [0, 1] and rounded to
8-bit levels, so an array and its saved PNG give the same features.

Training defaults (:class:`TrainSettings`) were picked by a measurement on this repo's
2-core CPU: see that class's docstring.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .io import atomic_path

log = logging.getLogger("dipddpm")

NUM_CLASSES = 10
IMAGE_SIZE = 32
# Per-channel mean and std of the CIFAR-10 training split, applied inside the model so
# every caller passes plain [0, 1] images.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# The acceptance rule: >= 60 % test accuracy, measured on >= 2,000 test images.
ACCURACY_FLOOR = 0.60
MIN_TEST_IMAGES = 2000
WEIGHTS_FORMAT = "dipddpm-cifarnet/1"
CHECKPOINT_FORMAT = "dipddpm-cifarnet-resume/1"
CROP_PADDING = 4
CHANNELS_LAST = torch.channels_last
QUANTISE_CHUNK = 4096


class ClassifierBelowFloor(RuntimeError):
    """A trained classifier is not accurate enough, or was tested on too few images."""


# ----------------------------------------------------------------------------- model


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """conv -> pool -> BN -> ReLU -> conv -> BN -> ReLU: halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        *_conv_bn_relu(c_out, c_out),
    )


class CifarNet(nn.Module):
    """Small CNN for 32x32 RGB images; ``features`` gives the penultimate layer."""

    def __init__(self, width: int = 32, num_classes: int = NUM_CLASSES):
        super().__init__()
        if int(width) < 1:
            raise ValueError(f"width must be >= 1; got {width!r}")
        self.width = int(width)
        self.register_buffer("mean", torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))
        self.body = nn.Sequential(
            *_conv_bn_relu(3, width, stride=2),
            _block(width, 2 * width),
            _block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def features(self, images01: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim) penultimate activations of float (N, 3, H, W) images in [0, 1]."""
        return self.body((images01 - self.mean) / self.std)

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images01))


def parameter_count(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def build_model(width: int, seed: int) -> CifarNet:
    """A freshly initialised CifarNet; the initialisation depends on ``seed`` only."""
    # fork_rng: seeding the global generator here must not disturb the caller's stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return CifarNet(width)


# ------------------------------------------------------------------------ image input


def images_uint8_nchw(images: Any, name: str = "images") -> np.ndarray:
    """Any accepted image array as uint8 (N, 3, 32, 32); the error names ``name``.

    Accepted: float (N, C, H, W) in [0, 1] (the repository's convention; clipped and
    rounded to 8 bits), uint8 (N, H, W, C) or (N, C, H, W), with C = 3 or 1 (grey is
    repeated to RGB).
    """
    array = np.asarray(images)
    if array.ndim != 4:
        raise ValueError(f"{name} must be a 4-D image array (N, C, H, W); got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if array.shape[1] not in (1, 3) and array.shape[-1] in (1, 3):
        array = np.transpose(array, (0, 3, 1, 2))
    if array.shape[1] not in (1, 3) or array.shape[2:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{name} must hold 32x32 RGB images as (N, 3, 32, 32) or (N, 32, 32, 3); "
            f"got shape {np.shape(images)}"
        )
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{name} must be uint8 or float in [0, 1]; got dtype {array.dtype}")
        array = _quantise(array, name)
    if array.shape[1] == 1:
        array = np.repeat(array, 3, axis=1)
    return np.ascontiguousarray(array)


def _quantise(array: np.ndarray, name: str) -> np.ndarray:
    """Float images in [0, 1] as uint8, a chunk at a time: a 50,000-image float set would
    otherwise need several temporary copies of its 600 MB."""
    out = np.empty(array.shape, dtype=np.uint8)
    for start in range(0, len(array), QUANTISE_CHUNK):
        chunk = array[start : start + QUANTISE_CHUNK]
        if not np.isfinite(chunk).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        out[start : start + QUANTISE_CHUNK] = np.rint(np.clip(chunk, 0.0, 1.0) * 255.0)
    return out


def _as_float(batch_uint8: torch.Tensor) -> torch.Tensor:
    return batch_uint8.float().div_(255.0)


def check_labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    """Class ids 0..9 as int64, one per image."""
    array = np.asarray(labels)
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one per image); got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integer class ids; got dtype {array.dtype}")
    if n and (array.min() < 0 or array.max() >= NUM_CLASSES):
        raise ValueError(
            f"{name} must lie in 0..{NUM_CLASSES - 1}; got values from {array.min()} to "
            f"{array.max()} (-1 marks an image without a class)"
        )
    return array.astype(np.int64)


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainSettings:
    """How CifarNet is trained; every field is recorded with the weights.

    Defaults from a measurement on this repo's 2-core CPU (2 torch threads, niced, while
    other pipeline jobs kept the load average at 4-10, so about one core was free), all
    50,000 training images, seed 0, accuracy on the 10,000 test images:

    ======  =========  =========================
    epochs  accuracy   training wall time
    ======  =========  =========================
    2       72.4 %     409 s (406 s CPU)
    3       76.0 %     621 s (598 s CPU)
    5       80.6 %     1235 s (863 s CPU)
    ======  =========  =========================

    Two epochs clear the 60 % floor by 12 points in minutes; more epochs buy accuracy
    at a linear cost. SGD with Nesterov momentum under a one-cycle schedule is the usual
    fast recipe for BN networks on CIFAR; label smoothing and a random crop/flip keep a
    short run from over-fitting. Weights are bit-for-bit reproducible for the same torch
    build, CPU and thread count; another thread count may change the last bits.
    """

    epochs: int = 2
    batch_size: int = 256
    lr: float = 0.2  # peak of the one-cycle schedule
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.1
    width: int = 32
    augment: bool = True  # random 4-pixel-padded crop and horizontal flip
    seed: int = 0

    def __post_init__(self):
        for key in ("epochs", "batch_size", "width"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"classifier setting {key} must be >= 1; got {getattr(self, key)}")
        if not float(self.lr) > 0:
            raise ValueError(f"classifier setting lr must be > 0; got {self.lr}")
        if not 0 <= float(self.label_smoothing) < 1:
            raise ValueError(
                f"classifier setting label_smoothing must be in [0, 1); got {self.label_smoothing}"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown classifier settings {unknown}; known ones: {sorted(known)}")
        return cls(**values)


@dataclass
class TrainResult:
    """A trained model (in eval mode) and how its training went."""

    model: CifarNet
    settings: TrainSettings
    history: list[dict[str, float]]  # one row per epoch: loss, train accuracy, seconds
    seconds: float  # training time of this run plus that of the epochs it resumed from
    resumed_from_epoch: int = 0


def augment_batch(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the reflect-padded images and random horizontal flip, per image."""
    n, c, h, w = batch.shape
    padded = F.pad(batch, (CROP_PADDING,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    index = torch.arange(n)[:, None, None, None]
    channel = torch.arange(c)[None, :, None, None]
    return padded[index, channel, rows, cols]


def _new_training(settings: TrainSettings, steps_per_epoch: int, device: torch.device):
    # channels_last: about a third faster for these small convolutions on the CPU.
    model = build_model(settings.width, settings.seed).to(device, memory_format=CHANNELS_LAST)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        nesterov=True,
        weight_decay=settings.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=settings.lr,
        epochs=settings.epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=0.25,
    )
    # A generator of its own (not the global one) shuffles and augments, so a caller's
    # random draws between runs cannot change the result.
    generator = torch.Generator().manual_seed(settings.seed + 1)
    return model, optimizer, scheduler, generator


def _save_resume_point(path: Path, state: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def _load_resume_point(path: Path, settings: TrainSettings, data_sha256: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle, zip or EOF error all mean "not our file"
        raise ValueError(
            f"cannot read CifarNet resume checkpoint {path} ({type(err).__name__}: {err}); "
            "delete it to start over"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a CifarNet resume checkpoint ({CHECKPOINT_FORMAT})")
    if state["settings"] != settings.as_dict() or state["data_sha256"] != data_sha256:
        raise ValueError(
            f"resume checkpoint {path} was written for other settings or data "
            f"({state['settings']}); delete it to start over"
        )
    return state


def data_fingerprint(pixels: torch.Tensor, targets: torch.Tensor) -> str:
    """sha256 of the training images and labels, so a resume point fits only its data."""
    digest = hashlib.sha256(pixels.numpy().tobytes())
    digest.update(targets.numpy().tobytes())
    return digest.hexdigest()


def train_classifier(
    images: Any,
    labels: Any,
    *,
    settings: TrainSettings | None = None,
    device: str | torch.device = "cpu",
    resume_path: str | os.PathLike | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    progress: bool = True,
    **overrides: Any,
) -> TrainResult:
    """Train CifarNet on ``images`` (see :func:`images_uint8_nchw`) and class ids ``labels``.

    ``settings`` defaults to :class:`TrainSettings`; keyword ``overrides`` (``epochs=2``,
    ``seed=1``, ...) replace single fields. The result depends only on the settings and
    the data (for a fixed device and torch thread count): the seed fixes the
    initialisation, the order and the augmentation.

    ``resume_path``: after each epoch the full training state is written there
    (atomically); a later call with the same settings and data continues from it, and
    gives the same weights as an uninterrupted run. The file is left in place; the caller
    deletes it when done. ``on_epoch_end(epoch)`` is called after each epoch's state is
    saved (tests use it to simulate a kill).
    """
    settings = TrainSettings.from_dict({**(settings or TrainSettings()).as_dict(), **overrides})
    pixels = torch.from_numpy(images_uint8_nchw(images, "images"))
    targets = torch.from_numpy(check_labels(labels, len(pixels)))
    device = torch.device(device)
    steps_per_epoch = math.ceil(len(pixels) / settings.batch_size)
    model, optimizer, scheduler, generator = _new_training(settings, steps_per_epoch, device)
    history: list[dict[str, float]] = []
    start_epoch, seconds_before = 0, 0.0
    resume = Path(resume_path) if resume_path is not None else None
    fingerprint = data_fingerprint(pixels, targets) if resume else ""
    state = _load_resume_point(resume, settings, fingerprint) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        history, start_epoch = list(state["history"]), int(state["epoch"])
        seconds_before = float(state["seconds"])
        log.info("CifarNet: resuming after epoch %d from %s", start_epoch, resume)
    log.info(
        "CifarNet: training %d parameters on %d images, %s",
        parameter_count(model),
        len(pixels),
        settings.as_dict(),
    )
    started = time.perf_counter()
    for epoch in range(start_epoch, settings.epochs):
        row = _train_one_epoch(
            model, optimizer, scheduler, generator, pixels, targets, settings, device, progress
        )
        row = {"epoch": epoch + 1, **row}
        history.append(row)
        log.info("CifarNet epoch %d: %s", epoch + 1, row)
        if resume is not None:
            _save_resume_point(
                resume,
                {
                    "format": CHECKPOINT_FORMAT,
                    "settings": settings.as_dict(),
                    "data_sha256": fingerprint,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "history": history,
                    "seconds": seconds_before + time.perf_counter() - started,
                },
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    seconds = seconds_before + time.perf_counter() - started
    return TrainResult(model.eval(), settings, history, seconds, start_epoch)


def _train_one_epoch(
    model, optimizer, scheduler, generator, pixels, targets, settings, device, progress
) -> dict[str, float]:
    model.train()
    started = time.perf_counter()
    order = torch.randperm(len(pixels), generator=generator)
    loss_sum, correct = 0.0, 0
    batches = range(0, len(pixels), settings.batch_size)
    for start in tqdm(batches, desc="cifarnet", disable=not progress, leave=False):
        index = order[start : start + settings.batch_size]
        batch = _as_float(pixels[index])
        if settings.augment:
            batch = augment_batch(batch, generator)
        batch = batch.to(device, memory_format=CHANNELS_LAST)
        target = targets[index].to(device)
        logits = model(batch)
        loss = F.cross_entropy(logits, target, label_smoothing=settings.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += float(loss.detach()) * len(index)
        correct += int((logits.argmax(1) == target).sum())
    return {
        "loss": loss_sum / len(pixels),
        "train_accuracy": correct / len(pixels),
        "seconds": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------- inference


def _batches(pixels: np.ndarray, batch_size: int, desc: str, progress: bool) -> Iterator:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    for start in tqdm(
        range(0, len(pixels), batch_size), desc=desc, disable=not progress, leave=False
    ):
        yield _as_float(torch.from_numpy(pixels[start : start + batch_size]))


def features_and_predictions(
    model: CifarNet, images: Any, batch_size: int = 500, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(float64 (N, feature_dim) penultimate features, int64 (N,) predicted classes)."""
    pixels = images_uint8_nchw(images, "images")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, preds = [], []
    with torch.no_grad():
        for batch in _batches(pixels, batch_size, "cifarnet features", progress):
            feature = model.features(batch.to(device, memory_format=CHANNELS_LAST))
            feats.append(feature.cpu().double())
            preds.append(model.head(feature).argmax(1).cpu())
    model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(preds).numpy().astype(np.int64)


def features(model: CifarNet, images: Any, batch_size: int = 500, progress: bool = False):
    """float64 (N, feature_dim) penultimate features of ``images``."""
    return features_and_predictions(model, images, batch_size, progress)[0]


def predict(model: CifarNet, images: Any, batch_size: int = 500, progress: bool = False):
    """int64 (N,) predicted class ids of ``images``."""
    return features_and_predictions(model, images, batch_size, progress)[1]


def evaluate_accuracy(model: CifarNet, images: Any, labels: Any, batch_size: int = 500) -> float:
    """Share of ``images`` whose predicted class is ``labels``."""
    predicted = predict(model, images, batch_size)
    return float(np.mean(predicted == check_labels(labels, len(predicted))))


def check_test_size(n_test: int, min_test_images: int = MIN_TEST_IMAGES) -> None:
    """Raise :class:`ClassifierBelowFloor` when fewer than ``min_test_images`` are tested."""
    if int(n_test) < int(min_test_images):
        raise ClassifierBelowFloor(
            f"CifarNet must be tested on at least {min_test_images} images for its accuracy "
            f"to be trusted; the test set has n = {n_test}"
        )


def check_accuracy_floor(
    accuracy: float, floor: float, n_test: int, min_test_images: int = MIN_TEST_IMAGES
) -> None:
    """Raise :class:`ClassifierBelowFloor` unless ``accuracy`` >= ``floor`` on enough images."""
    check_test_size(n_test, min_test_images)
    if not float(accuracy) >= float(floor):
        raise ClassifierBelowFloor(
            f"CifarNet test accuracy {accuracy:.4f} on n = {n_test} images is below the floor "
            f"{floor:.2f}: its features would not be a meaningful generation metric. Train "
            "longer (classifier epochs) or check the training data and labels."
        )


# ------------------------------------------------------------------ weights on disk


def save_classifier(path: str | os.PathLike, model: CifarNet, meta: dict[str, Any]) -> str:
    """Write weights and ``meta`` (plain JSON-like values) atomically; returns the sha256."""
    state = {
        "format": WEIGHTS_FORMAT,
        "width": model.width,
        "feature_dim": model.feature_dim,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": plain_values(meta),
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return file_sha256(path)


def plain_values(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` as plain JSON types: ``torch.load(weights_only=True)`` refuses others."""
    return json.loads(json.dumps(meta, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def load_classifier(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[CifarNet, dict[str, Any]]:
    """(model in eval mode, its metadata) from a file written by :func:`save_classifier`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CifarNet weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle, zip or EOF error all mean "not our file"
        raise ValueError(
            f"cannot read CifarNet weights {path}: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(state, dict) or state.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path} is not a CifarNet weights file (format {WEIGHTS_FORMAT})")
    model = CifarNet(int(state["width"]))
    model.load_state_dict(state["state_dict"])
    return model.to(torch.device(device)).eval(), dict(state["meta"])


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
