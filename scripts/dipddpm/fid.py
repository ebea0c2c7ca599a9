"""FID and KID through torch-fidelity's InceptionV3 feature extractor.

The reference side (e.g. a CIFAR-10 test subset) is computed once by
:func:`reference_stats` and cached as an npz with the pool features and their mean and
covariance; :func:`fid_kid` then only runs Inception on the samples.

Weights: an explicit ``weights`` path is used as is and never replaced by a download (so
tests and offline clusters never touch the network). With ``weights=None`` the file in the
torch hub cache is used when present, otherwise torch-fidelity's download is tried. When
no weights can be had the functions do not fail: they return / write
``available=False`` with the reason, and the report states it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dipddpm.device import pick_device
from dipddpm.io import load_npz, save_npz

FEATURE_LAYER = "2048"
EXTRACTOR_NAME = "inception-v3-compat"
KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000
KID_SEED = 2020


class FeaturesUnavailable(RuntimeError):
    """No Inception weights could be loaded; the message says why."""


def _resolve_device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else pick_device(device)


def default_weights_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def _cached_download_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(default_weights_url()).name


def load_extractor(weights: str | os.PathLike | None, device: torch.device):
    """torch-fidelity's InceptionV3 on ``device`` in eval mode, or FeaturesUnavailable."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FeaturesUnavailable(f"Inception weights file not found: {path}")
        weights_path = str(path)
    elif _cached_download_path().is_file():
        weights_path = str(_cached_download_path())
    else:
        weights_path = None  # torch-fidelity downloads into the torch hub cache
    try:
        extractor = FeatureExtractorInceptionV3(
            EXTRACTOR_NAME, [FEATURE_LAYER], feature_extractor_weights_path=weights_path
        )
    except Exception as error:  # noqa: BLE001 - any load failure means "no FID", not a crash
        where = weights_path or f"{default_weights_url()} (cache {_cached_download_path()})"
        raise FeaturesUnavailable(
            f"could not load Inception weights from {where}: {type(error).__name__}: {error}. "
            "Without internet, set metrics.inception_weights in the config to a local copy "
            "of that file."
        ) from error
    return extractor.to(device).eval()


def _to_uint8_rgb(images01) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(images01, dtype=np.float32))
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"FID expects images of shape (N, 1 or 3, H, W) in [0, 1]; got {tuple(images.shape)}"
        )
    if images.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images; got {images.shape[0]}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return torch.round(images.clamp(0, 1) * 255).to(torch.uint8)


def inception_features(
    images01,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 32,
    progress: bool = False,
    extractor=None,
) -> np.ndarray:
    """(N, 2048) float32 pool features of images in [0, 1] (raises FeaturesUnavailable)."""
    pixels = _to_uint8_rgb(images01)
    device = _resolve_device(device)
    extractor = extractor if extractor is not None else load_extractor(weights, device)
    chunks = []
    with torch.no_grad():
        for start in tqdm(
            range(0, len(pixels), batch_size), desc="inception", disable=not progress
        ):
            (features,) = extractor(pixels[start : start + batch_size].to(device))
            chunks.append(features.cpu())
    return torch.cat(chunks).numpy().astype(np.float32)


def _statistics(features: np.ndarray) -> dict[str, np.ndarray]:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    stats = fid_features_to_statistics(torch.from_numpy(features))
    return {"mu": stats["mu"].astype(np.float64), "sigma": stats["sigma"].astype(np.float64)}


def reference_stats(
    images01,
    out_path: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute and cache the reference side of FID/KID as an npz at ``out_path``.

    The npz holds ``features`` (N, 2048), ``mu``, ``sigma`` and ``available``; when no
    weights can be loaded it holds ``available=False`` and ``reason`` instead, so the
    pipeline target exists and every FID cell reports the same reason.
    Returns a small summary dict (available, n, reason).
    """
    try:
        features = inception_features(images01, weights, device, batch_size, progress)
    except FeaturesUnavailable as error:
        save_npz(out_path, available=np.array(False), reason=np.array(str(error)))
        return {"available": False, "reason": str(error), "n": 0}
    stats = _statistics(features)
    save_npz(out_path, available=np.array(True), features=features, **stats)
    return {"available": True, "reason": "", "n": int(len(features))}


def _load_reference(reference) -> np.ndarray | None:
    """Reference features from an npz path; None when the argument is images instead."""
    if not isinstance(reference, str | os.PathLike):
        return None
    path = Path(reference)
    if not path.is_file():
        raise ValueError(f"FID reference statistics file not found: {path}")
    data = load_npz(path)
    if not bool(data.get("available", np.array(True))):
        raise FeaturesUnavailable(f"reference statistics unavailable: {data['reason']}")
    if "features" not in data:
        raise ValueError(f"FID reference file {path} has no 'features' array")
    return data["features"]


def kid_subset_size(n_samples: int, n_reference: int) -> int:
    """torch-fidelity's default (1000) shrunk to what both sides can provide."""
    return int(min(KID_MAX_SUBSET_SIZE, n_samples, n_reference))


def fid_kid(
    samples01,
    reference,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 32,
    kid_subsets: int = KID_SUBSETS,
    seed: int = KID_SEED,
    progress: bool = True,
) -> dict[str, Any]:
    """FID and KID of ``samples01`` (N, C, H, W in [0, 1]) against ``reference``.

    ``reference`` is an npz written by :func:`reference_stats` or an image batch.
    Returns ``fid, kid_mean, kid_std, kid_subset_size, n_samples, n_reference,
    available=True, reason=""``; when no Inception weights can be loaded it returns
    ``available=False`` with the reason and NaN metrics instead of raising.
    """
    _to_uint8_rgb(samples01)  # reject bad shapes before the slow model load
    n_samples = int(np.shape(samples01)[0])
    try:
        ref_features = _load_reference(reference)
        device = _resolve_device(device)
        extractor = load_extractor(weights, device)
        if ref_features is None:
            ref_features = inception_features(
                reference, device=device, batch_size=batch_size, extractor=extractor
            )
        features = inception_features(
            samples01, device=device, batch_size=batch_size, progress=progress, extractor=extractor
        )
    except FeaturesUnavailable as error:
        return {
            "fid": float("nan"),
            "kid_mean": float("nan"),
            "kid_std": float("nan"),
            "kid_subset_size": 0,
            "n_samples": n_samples,
            "n_reference": 0,
            "available": False,
            "reason": str(error),
        }
    return fid_kid_from_features(features, ref_features, kid_subsets=kid_subsets, seed=seed)


def fid_kid_from_features(
    features: np.ndarray,
    ref_features: np.ndarray,
    kid_subsets: int = KID_SUBSETS,
    seed: int = KID_SEED,
) -> dict[str, Any]:
    """FID/KID with torch-fidelity's statistics functions on precomputed features."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    from torch_fidelity.metric_kid import (
        KEY_METRIC_KID_MEAN,
        KEY_METRIC_KID_STD,
        kid_features_to_metric,
    )

    fid = fid_statistics_to_metric(_statistics(features), _statistics(ref_features), False)
    subset = kid_subset_size(len(features), len(ref_features))
    kid = kid_features_to_metric(
        torch.from_numpy(features),
        torch.from_numpy(ref_features),
        kid_subsets=kid_subsets,
        kid_subset_size=subset,
        rng_seed=seed,
        verbose=False,
    )
    return {
        "fid": float(next(iter(fid.values()))),
        "kid_mean": float(kid[KEY_METRIC_KID_MEAN]),
        "kid_std": float(kid[KEY_METRIC_KID_STD]),
        "kid_subset_size": subset,
        "n_samples": int(len(features)),
        "n_reference": int(len(ref_features)),
        "available": True,
        "reason": "",
    }
