"""Generation metrics on features and pixels: KID, Fréchet distance, diversity, distances
to a sample's prior and source, memorisation against a training set, class coverage.

Every function takes plain arrays: features (N, D) from any extractor (in the pipeline the
penultimate layer of :mod:`dipddpm.cifarnet`, hence the names ``kid_cifarnet`` and
``fid_cifarnet`` in the tables; neither is the Inception FID) and images as float
(N, C, H, W) in [0, 1].

Units: feature distances are Euclidean (L2) norms in feature space; pixel distances are
root-mean-square differences over all values of an image in [0, 1] (so 0.1 means an
average error of a tenth of the intensity range). Entropies are in nats (natural log), with
a variant normalised by log(number of classes) to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Subsets for KID: as torch-fidelity (100 subsets of at most 1000) but half of each set
# by default, see :func:`kid`.
KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000
KID_SEED = 2020
CI_LEVEL = 0.95
# Rows of the pool compared at once in nearest-neighbour search: 4096 x 500 float64
# distances is 16 MB, whatever the pool's size.
NN_CHUNK = 4096
# Relative size of the squared distance below which the Gram-matrix form is round-off.
ROUND_OFF = 1e-9
# The share of generated samples closer to the training set than this percentile of the
# held-out images' distances is the memorisation flag (see memorisation_summary).
BASELINE_PERCENTILE = 5.0


# ------------------------------------------------------------------------ validation


def as_features(values: Any, name: str) -> np.ndarray:
    """A finite, non-empty float64 (N, D) matrix; the error names ``name``."""
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) feature array; got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be numeric; got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def as_flat_images(values: Any, name: str) -> np.ndarray:
    """Images (N, ...) as a finite float32 (N, values per image) matrix."""
    array = np.asarray(values)
    if array.ndim < 2:
        raise ValueError(f"{name} must be an image array (N, C, H, W); got shape {array.shape}")
    if array.shape[0] == 0 or array[0].size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be numeric; got dtype {array.dtype}")
    flat = array.reshape(len(array), -1).astype(np.float32, copy=False)
    if not np.isfinite(flat).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return flat


def _same_width(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same dimension; got {a.shape[1]} and {b.shape[1]}"
        )


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must pair up one to one; got shapes {a.shape} and {b.shape}"
        )


# ------------------------------------------------------------------------------- KID


@dataclass(frozen=True)
class KidResult:
    """KID (unbiased MMD^2, cubic polynomial kernel) with a subset-bootstrap interval."""

    mean: float
    ci_low: float
    ci_high: float
    std: float
    n_a: int
    n_b: int
    subset_a: int
    subset_b: int
    n_subsets: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3, the kernel of Binkowski et al. (2018)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between samples ``x`` (m, d) and ``y`` (n, d); m, n >= 2.

    The within-set means leave out the diagonal (k(x_i, x_i)), which is what makes the
    estimate unbiased: it is ~0, and may be slightly negative, for two samples of one
    distribution.
    """
    m, n = len(x), len(y)
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * polynomial_kernel(x, y).mean())


def kid_subset_sizes(n_a: int, n_b: int, subset_size: int | None) -> tuple[int, int]:
    """Subset size on each side: half of each set (at most 1000) unless given."""
    if subset_size is None:
        return min(KID_MAX_SUBSET_SIZE, n_a // 2), min(KID_MAX_SUBSET_SIZE, n_b // 2)
    if int(subset_size) < 2:
        raise ValueError(f"subset_size must be >= 2; got {subset_size}")
    return min(int(subset_size), n_a), min(int(subset_size), n_b)


def kid(
    features_a: Any,
    features_b: Any,
    subset_size: int | None = None,
    n_subsets: int = KID_SUBSETS,
    seed: int = KID_SEED,
) -> KidResult:
    """Kernel Inception Distance on any features, averaged over random subsets.

    Each of ``n_subsets`` draws takes a subset of each set without replacement and
    computes the unbiased MMD^2; the result is their mean, their standard deviation and
    the 2.5 and 97.5 percentiles (the 95 % interval).

    Subset size: by default half of each set, at most 1000 (the sides may differ; the
    estimator allows it). Half-samples are what make the percentile interval an interval
    for the full-set value: a half-sample drawn from n items has about the variance of an
    independent sample of n (the half-sampling rule), whereas subsets of all n items would
    all be the same set and show no spread. An explicit ``subset_size`` is used on both
    sides (capped at each n), like torch-fidelity's ``kid_subset_size``.
    """
    a = as_features(features_a, "features_a")
    b = as_features(features_b, "features_b")
    _same_width(a, b, "features_a", "features_b")
    if len(a) < 4 or len(b) < 4:
        raise ValueError(
            f"KID needs at least 4 items per set (two per half-sample); got "
            f"features_a n={len(a)}, features_b n={len(b)}"
        )
    if int(n_subsets) < 1:
        raise ValueError(f"n_subsets must be >= 1; got {n_subsets}")
    m_a, m_b = kid_subset_sizes(len(a), len(b), subset_size)
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            mmd2_unbiased(
                a[rng.choice(len(a), m_a, replace=False)],
                b[rng.choice(len(b), m_b, replace=False)],
            )
            for _ in range(int(n_subsets))
        ]
    )
    tail = 100.0 * (1.0 - CI_LEVEL) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return KidResult(
        mean=float(values.mean()),
        ci_low=float(low),
        ci_high=float(high),
        std=float(values.std()),
        n_a=len(a),
        n_b=len(b),
        subset_a=m_a,
        subset_b=m_b,
        n_subsets=int(n_subsets),
    )


# ------------------------------------------------------------------ Fréchet distance

FRECHET_TOO_FEW = "n < d"


@dataclass(frozen=True)
class FrechetResult:
    """Fréchet distance of two Gaussians fitted to features; NaN and a reason if unfit."""

    value: float
    reason: str  # "" when computed; "n < d" when a set has no more items than dimensions
    n_a: int
    n_b: int
    dim: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def frechet_distance(features_a: Any, features_b: Any) -> FrechetResult:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), as FID does on its features.

    Computed only when both sets have more items than the feature dimension d: with
    n <= d a covariance matrix is singular and the distance mostly measures n, so the
    result is NaN with reason ``"n < d"``.
    """
    a = as_features(features_a, "features_a")
    b = as_features(features_b, "features_b")
    _same_width(a, b, "features_a", "features_b")
    dim = a.shape[1]
    if min(len(a), len(b)) <= dim:
        return FrechetResult(math.nan, FRECHET_TOO_FEW, len(a), len(b), dim)
    mean_gap = float(np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    trace_term = np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt_product(cov_a, cov_b)
    return FrechetResult(float(mean_gap + trace_term), "", len(a), len(b), dim)


def trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """tr((A B)^(1/2)) for symmetric PSD A, B, as tr((A^(1/2) B A^(1/2))^(1/2)).

    The symmetric form has real, non-negative eigenvalues, so no complex square root
    (scipy's sqrtm) and no imaginary round-off to discard.
    """
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    inner = root_a @ cov_b @ root_a
    eigen = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sum(np.sqrt(np.clip(eigen, 0.0, None))))


# ------------------------------------------------------------------------ distances


def pairwise_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``x`` and ``y`` (float64).

    Computed through the Gram matrix (|x|^2 + |y|^2 - 2 x.y), whose round-off would make
    identical rows about 1e-8 apart; pairs that close are recomputed from their
    difference, so identical rows are exactly 0 apart.
    """
    x, y = x.astype(np.float64, copy=False), y.astype(np.float64, copy=False)
    norms_x, norms_y = (x * x).sum(1)[:, None], (y * y).sum(1)[None, :]
    squared = norms_x + norms_y - 2.0 * x @ y.T
    distances = np.sqrt(np.clip(squared, 0.0, None))
    rows, cols = np.nonzero(squared <= ROUND_OFF * (norms_x + norms_y))
    for start in range(0, len(rows), NN_CHUNK):
        r, c = rows[start : start + NN_CHUNK], cols[start : start + NN_CHUNK]
        distances[r, c] = np.linalg.norm(x[r] - y[c], axis=1)
    return distances


def _mean_pairwise(rows: np.ndarray, scale: float) -> float:
    """Mean distance over the pairs i < j of ``rows``, divided by ``scale``."""
    n = len(rows)
    total = 0.0
    for start in range(0, n, NN_CHUNK):
        block = pairwise_distances(rows[start : start + NN_CHUNK], rows)
        # Only pairs with j > i: the row index within the whole set is start + r.
        upper = np.arange(start, start + len(block))[:, None] < np.arange(n)[None, :]
        total += float(block[upper].sum())
    return total / (n * (n - 1) / 2) / scale


def mean_pairwise_feature_distance(features: Any, name: str = "features") -> float:
    """Mean L2 distance between all pairs of feature vectors; 0 for identical ones."""
    rows = as_features(features, name)
    if len(rows) < 2:
        raise ValueError(f"{name} needs at least 2 items for a pairwise distance; got {len(rows)}")
    return _mean_pairwise(rows, 1.0)


def mean_pairwise_pixel_distance(images: Any, name: str = "images") -> float:
    """Mean pixel RMS distance between all pairs of images; 0 for identical ones."""
    rows = as_flat_images(images, name)
    if len(rows) < 2:
        raise ValueError(f"{name} needs at least 2 images for a pairwise distance; got {len(rows)}")
    return _mean_pairwise(rows, math.sqrt(rows.shape[1]))


def paired_pixel_rms(images_a: Any, images_b: Any) -> np.ndarray:
    """Per-pair pixel RMS distance between ``images_a[i]`` and ``images_b[i]``."""
    a = as_flat_images(images_a, "images_a").astype(np.float64)
    b = as_flat_images(images_b, "images_b").astype(np.float64)
    _same_shape(a, b, "images_a", "images_b")
    return np.sqrt(np.mean((a - b) ** 2, axis=1))


def paired_feature_distance(features_a: Any, features_b: Any) -> np.ndarray:
    """Per-pair L2 distance between ``features_a[i]`` and ``features_b[i]``."""
    a = as_features(features_a, "features_a")
    b = as_features(features_b, "features_b")
    _same_shape(a, b, "features_a", "features_b")
    return np.linalg.norm(a - b, axis=1)


def diversity_per_group(features: Any, images: Any) -> dict[str, float]:
    """Mean pairwise feature and pixel distance within each group, averaged over groups.

    ``features`` (G, S, D) and ``images`` (G, S, C, H, W): S samples of each of G groups,
    e.g. S sample seeds from each of G DIP priors, so that the spread measures what the
    sampler adds to one prior rather than how the priors differ. S >= 2.
    """
    feats = np.asarray(features)
    pixels = np.asarray(images)
    if feats.ndim != 3 or pixels.ndim < 3:
        raise ValueError(
            f"features must be (groups, samples, D) and images (groups, samples, C, H, W); "
            f"got shapes {feats.shape} and {pixels.shape}"
        )
    if feats.shape[:2] != pixels.shape[:2]:
        raise ValueError(
            f"features and images must have the same (groups, samples); got "
            f"{feats.shape[:2]} and {pixels.shape[:2]}"
        )
    feature = [mean_pairwise_feature_distance(f, f"features[{g}]") for g, f in enumerate(feats)]
    pixel = [mean_pairwise_pixel_distance(p, f"images[{g}]") for g, p in enumerate(pixels)]
    return {
        "feature": float(np.mean(feature)),
        "pixel": float(np.mean(pixel)),
        "groups": int(feats.shape[0]),
        "per_group": int(feats.shape[1]),
    }


# -------------------------------------------------------------------- memorisation


def _nearest(queries: np.ndarray, pool: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(L2 distance, index) of each query's nearest pool row; both already validated.

    The pool is scanned ``chunk`` rows at a time (converted to float64 a chunk at a time),
    so a 50,000-image pool needs len(queries) x chunk distances in memory, not the whole
    matrix. The winning distance is recomputed directly, so an exact copy has distance
    exactly 0 (the Gram-matrix form leaves round-off of about 1e-6).
    """
    if int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    best = np.full(len(queries), np.inf)
    index = np.zeros(len(queries), dtype=np.int64)
    rows = np.arange(len(queries))
    for start in range(0, len(pool), int(chunk)):
        distances = pairwise_distances(queries, pool[start : start + int(chunk)])
        local = distances.argmin(axis=1)
        closest = distances[rows, local]
        closer = closest < best
        best[closer] = closest[closer]
        index[closer] = start + local[closer]
    gaps = queries.astype(np.float64) - pool[index].astype(np.float64)
    return np.linalg.norm(gaps, axis=1), index


def nearest_feature_neighbours(
    queries: Any, pool: Any, chunk: int = NN_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """(L2 distance, pool index) of each query feature vector's nearest pool vector."""
    q, p = as_features(queries, "queries"), as_features(pool, "pool")
    _same_width(q, p, "queries", "pool")
    return _nearest(q, p, chunk)


def nearest_pixel_neighbours(
    queries: Any, pool: Any, chunk: int = NN_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """(pixel RMS distance, pool index) of each query image's nearest pool image."""
    q, p = as_flat_images(queries, "queries"), as_flat_images(pool, "pool")
    _same_width(q, p, "queries", "pool")
    distance, index = _nearest(q, p, chunk)
    return distance / math.sqrt(q.shape[1]), index


def memorisation_summary(generated_nn: Any, baseline_nn: Any) -> dict[str, float]:
    """Compare generated samples' nearest-training-image distances with held-out real ones.

    ``baseline_nn``: the same distance for real images the generator never saw (held-out
    test images), i.e. how close a new image typically is to the training set.
    Returns the medians, their ratio (< 1: samples sit closer to the training set than new
    real images do) and the share of samples closer than the baseline's 5th percentile
    (about 0.05 when nothing is copied; 1 when every sample is a near copy), plus the share
    at distance 0 (exact copies).
    """
    gen = np.asarray(generated_nn, dtype=np.float64)
    base = np.asarray(baseline_nn, dtype=np.float64)
    for name, values in (("generated_nn", gen), ("baseline_nn", base)):
        if values.ndim != 1 or len(values) == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array; got shape {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    base_median = float(np.median(base))
    threshold = float(np.percentile(base, BASELINE_PERCENTILE))
    return {
        "gen_median": float(np.median(gen)),
        "baseline_median": base_median,
        "median_ratio": float(np.median(gen) / base_median) if base_median > 0 else math.nan,
        "baseline_p5": threshold,
        "share_below_baseline_p5": float(np.mean(gen < threshold)),
        "share_exact_copies": float(np.mean(gen == 0.0)),
        "n_gen": len(gen),
        "n_baseline": len(base),
    }


# ---------------------------------------------------------------------- coverage


def class_coverage_entropy(predictions: Any, num_classes: int = 10) -> dict[str, float]:
    """Entropy of the predicted-class histogram, in nats and normalised by log(classes).

    0 when every sample is predicted as one class; log(num_classes) (normalised: 1) when
    the classes are equally frequent.
    """
    labels = np.asarray(predictions)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"predictions must be a non-empty 1-D array; got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"predictions must be integer class ids; got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"predictions must lie in 0..{num_classes - 1}; got {labels.min()}..{labels.max()}"
        )
    share = np.bincount(labels, minlength=num_classes) / len(labels)
    present = share[share > 0]
    entropy = float(-(present * np.log(present)).sum()) + 0.0  # + 0.0: no "-0.0"
    return {
        "entropy_nats": entropy,
        "entropy_normalised": entropy / math.log(num_classes),
        "classes_present": int(len(present)),
    }
