"""Generation metrics: KID, Fréchet distance, diversity, distances, memorisation, coverage,
and the scoring stage that writes them for one setting.

Features come from a fixed, randomly initialised CifarNet (seeded, no training), which is
deterministic and sensitive enough to noise and blur for these checks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from dipddpm import cifarnet, genmetrics
from dipddpm.io import save_npz
from dipddpm.stages.generation_metrics import cache_features, score_generation

N_IMAGES = 120


def smooth_images(n: int, seed: int) -> np.ndarray:
    """float32 (n, 3, 32, 32) in [0, 1]: upsampled random 4x4 colour fields."""
    coarse = torch.from_numpy(np.random.default_rng(seed).random((n, 3, 4, 4), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear")
    return smooth.numpy()


def add_noise(images: np.ndarray, sigma: float) -> np.ndarray:
    noise = np.random.default_rng(7).standard_normal(images.shape).astype(np.float32)
    return np.clip(images + sigma * noise, 0, 1)


def box_blur(images: np.ndarray, radius: int) -> np.ndarray:
    if radius == 0:
        return images
    size = 2 * radius + 1
    kernel = torch.full((3, 1, size, size), 1.0 / size**2)
    padded = torch.nn.functional.pad(torch.from_numpy(images), (radius,) * 4, mode="replicate")
    return torch.nn.functional.conv2d(padded, kernel, groups=3).numpy()


@pytest.fixture(scope="module")
def reference():
    return smooth_images(N_IMAGES, seed=0)


@pytest.fixture(scope="module")
def extractor(reference):
    """A seeded random CifarNet whose batch-norm statistics are those of ``reference``.

    At initialisation each layer shrinks its input, so features would be near zero;
    measured statistics give them unit scale, as training would.
    """
    model = cifarnet.build_model(width=8, seed=0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration pass
    with torch.no_grad():
        model.train()(torch.from_numpy(reference))
    return model.eval()


def test_kid_of_a_set_against_itself_is_about_zero(extractor, reference):
    feats = cifarnet.features(extractor, reference)
    same = genmetrics.kid(feats, feats)
    slightly_noisy = cifarnet.features(extractor, add_noise(reference, 0.05))
    # Slightly negative: half-samples of one set share items, which the unbiased
    # estimator counts against the within-set terms.
    assert abs(same.mean) < 0.1 * genmetrics.kid(feats, slightly_noisy).mean
    assert same.ci_low <= 0 <= same.ci_high


@pytest.mark.parametrize(
    ("degrade", "levels"), [(add_noise, [0.0, 0.05, 0.1, 0.2, 0.4]), (box_blur, [0, 1, 2, 4])]
)
def test_kid_rises_monotonically_with_graded_degradation(extractor, reference, degrade, levels):
    feats = cifarnet.features(extractor, reference)
    values = [
        genmetrics.kid(feats, cifarnet.features(extractor, degrade(reference, level))).mean
        for level in levels
    ]
    assert np.all(np.diff(values) > 0), values


def test_kid_result_reports_sizes_and_an_interval_around_the_mean():
    rng = np.random.default_rng(0)
    result = genmetrics.kid(rng.normal(size=(50, 8)), rng.normal(0.5, size=(300, 8)), seed=1)
    assert (result.n_a, result.n_b, result.subset_a, result.subset_b) == (50, 300, 25, 150)
    assert result.ci_low <= result.mean <= result.ci_high and result.mean > 0
    assert result.n_subsets == genmetrics.KID_SUBSETS
    again = genmetrics.kid(rng.normal(size=(50, 8)), rng.normal(0.5, size=(300, 8)), 10)
    assert (again.subset_a, again.subset_b) == (10, 10)


def test_mmd_matches_the_definition_term_by_term():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / 20
    assert genmetrics.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy)


def test_frechet_distance_matches_the_closed_form():
    a = np.random.default_rng(2).normal(size=(400, 6))
    result = genmetrics.frechet_distance(a, 2 * a + 3)
    # b = 2a + 3: mean gap mu_a + 3, S_b = 4 S_a, (S_a S_b)^(1/2) = 2 S_a.
    cov_trace = np.trace(np.cov(a, rowvar=False))
    expected = np.sum((a.mean(axis=0) + 3) ** 2) + cov_trace + 4 * cov_trace - 4 * cov_trace
    assert result.value == pytest.approx(expected, rel=1e-9)
    assert result.reason == "" and (result.n_a, result.n_b, result.dim) == (400, 400, 6)
    assert abs(genmetrics.frechet_distance(a, a).value) < 1e-8


@pytest.mark.parametrize("n", [5, 8])
def test_frechet_distance_is_nan_when_n_does_not_exceed_d(n):
    rng = np.random.default_rng(3)
    result = genmetrics.frechet_distance(rng.normal(size=(n, 8)), rng.normal(size=(100, 8)))
    assert math.isnan(result.value) and result.reason == "n < d"


def test_diversity_of_identical_samples_is_zero():
    image = smooth_images(1, seed=4)[0]
    identical = np.broadcast_to(image, (3, 4, *image.shape))
    feats = np.broadcast_to(np.arange(5.0), (3, 4, 5))
    result = genmetrics.diversity_per_group(feats, identical)
    assert result == {"feature": 0.0, "pixel": 0.0, "groups": 3, "per_group": 4}


def test_pairwise_distances_have_known_values():
    black, white = np.zeros((1, 3, 2, 2)), np.ones((1, 3, 2, 2))
    grey = np.full((1, 3, 2, 2), 0.5)
    # Pairs: black-white 1, black-grey 0.5, white-grey 0.5.
    images = np.concatenate([black, white, grey])
    assert genmetrics.mean_pairwise_pixel_distance(images) == pytest.approx(2 / 3)
    feats = np.array([[0.0, 0.0], [3.0, 4.0]])
    assert genmetrics.mean_pairwise_feature_distance(feats) == pytest.approx(5.0)
    np.testing.assert_allclose(genmetrics.paired_pixel_rms(images, images[::-1]), [0.5, 0, 0.5])
    np.testing.assert_allclose(genmetrics.paired_feature_distance(feats, feats[::-1]), [5, 5])


def test_an_exact_copy_of_a_training_image_has_nearest_neighbour_distance_zero():
    pool = smooth_images(50, seed=5)
    queries = np.concatenate([pool[[7, 31]], smooth_images(3, seed=6)])
    distance, index = genmetrics.nearest_pixel_neighbours(queries, pool, chunk=8)
    assert distance[0] == 0.0 and distance[1] == 0.0
    assert list(index[:2]) == [7, 31] and np.all(distance[2:] > 0)
    flat_q, flat_p = queries.reshape(5, -1).astype(np.float64), pool.reshape(50, -1)
    brute = np.sqrt(((flat_q[:, None] - flat_p[None]) ** 2).mean(axis=2)).min(axis=1)
    np.testing.assert_allclose(distance, brute, rtol=1e-6)


def test_memorisation_summary_flags_copies_and_passes_new_images():
    rng = np.random.default_rng(8)
    pool = rng.normal(size=(400, 4))
    baseline, _ = genmetrics.nearest_feature_neighbours(rng.normal(size=(200, 4)), pool)
    fresh, _ = genmetrics.nearest_feature_neighbours(rng.normal(size=(200, 4)), pool)
    copies, _ = genmetrics.nearest_feature_neighbours(pool[:50], pool)
    honest = genmetrics.memorisation_summary(fresh, baseline)
    copied = genmetrics.memorisation_summary(copies, baseline)
    assert 0.8 < honest["median_ratio"] < 1.25 and honest["share_below_baseline_p5"] < 0.15
    assert copied["median_ratio"] == 0.0 and copied["share_below_baseline_p5"] == 1.0
    assert copied["share_exact_copies"] == 1.0 and honest["share_exact_copies"] == 0.0


def test_coverage_entropy_of_one_class_is_zero_and_of_all_classes_is_log10():
    one = genmetrics.class_coverage_entropy(np.full(30, 4))
    assert one["entropy_nats"] == 0.0 and one["entropy_normalised"] == 0.0
    uniform = genmetrics.class_coverage_entropy(np.tile(np.arange(10), 7))
    assert uniform["entropy_nats"] == pytest.approx(math.log(10))
    assert uniform["entropy_normalised"] == pytest.approx(1.0)
    assert uniform["classes_present"] == 10


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: genmetrics.kid(np.zeros((0, 4)), np.zeros((5, 4))), "features_a is empty"),
        (lambda: genmetrics.kid(np.zeros((5, 4)), np.zeros((5, 3))), "same dimension"),
        (lambda: genmetrics.kid(np.zeros(5), np.zeros((5, 4))), "features_a must be a 2-D"),
        (
            lambda: genmetrics.frechet_distance(np.ones((9, 2)), np.full((9, 2), np.nan)),
            "features_b contains",
        ),
        (lambda: genmetrics.mean_pairwise_pixel_distance(np.zeros((1, 3, 2, 2))), "at least 2"),
        (lambda: genmetrics.paired_pixel_rms(np.zeros((2, 3)), np.zeros((3, 3))), "pair up"),
        (lambda: genmetrics.class_coverage_entropy(np.array([], int)), "non-empty"),
        (lambda: genmetrics.class_coverage_entropy(np.array([0, 12])), r"0\.\.9"),
        (lambda: genmetrics.memorisation_summary([1.0], [np.nan]), "baseline_nn contains NaN"),
    ],
)
def test_bad_inputs_raise_errors_that_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- stage


@pytest.fixture(scope="module")
def stage_inputs(tmp_path_factory, extractor):
    """Weights, a reference set, DIP priors, their sources and a memorisation pool."""
    folder = tmp_path_factory.mktemp("generation")
    weights = folder / "cifarnet.pt"
    cifarnet.save_classifier(weights, extractor, {"accuracy": 0.5})
    sources = smooth_images(6, seed=10)
    pool = np.concatenate([sources, smooth_images(30, seed=11)])
    files = {
        "weights": weights,
        "reference": folder / "reference.npz",
        "prior": folder / "prior.npz",
        "source": folder / "source.npz",
        "train": folder / "train.npz",
        "heldout": folder / "heldout.npz",
    }
    save_npz(files["reference"], images=smooth_images(40, seed=12), labels=np.zeros(40, int))
    save_npz(files["prior"], it100=add_noise(sources, 0.1).astype(np.float16))
    save_npz(files["source"], images=sources)
    save_npz(files["train"], images=pool)
    save_npz(files["heldout"], images=smooth_images(20, seed=13))
    return folder, files, sources


def _write_samples(folder, sets) -> list:
    paths = []
    for seed, samples in enumerate(sets):
        paths.append(folder / f"samples_{seed}.npz")
        save_npz(paths[-1], samples=samples)
    return paths


def test_score_generation_of_source_copies_has_known_answers(stage_inputs):
    folder, files, sources = stage_inputs
    samples = _write_samples(folder, [sources, sources])
    out = folder / "copies.csv"
    row = score_generation(
        samples,
        files["reference"],
        files["weights"],
        out,
        identity={"method": "dip+ddpm", "t0": 200},
        prior_npz=files["prior"],
        prior_iters=100,
        source_npz=files["source"],
        train_npz=files["train"],
        heldout_npz=files["heldout"],
        threads=1,
    )
    table = pd.read_csv(out)
    assert len(table) == 1 and list(table.columns[:2]) == ["method", "t0"]
    assert row["kid_cifarnet_n_gen"] == 12 and row["kid_cifarnet_n_ref"] == 40
    assert row["kid_cifarnet_ci_low"] <= row["kid_cifarnet"] <= row["kid_cifarnet_ci_high"]
    assert math.isnan(row["fid_cifarnet"]) and row["fid_cifarnet_reason"] == "n < d"
    assert row["diversity_within_prior_feature"] == 0.0
    assert row["diversity_within_prior_pixel_rms"] == 0.0
    assert row["diversity_all_pixel_rms"] > 0
    assert row["dist_source_pixel_rms"] == 0.0 and row["dist_source_feature"] == 0.0
    assert 0.05 < row["dist_prior_pixel_rms"] < 0.15 and row["dist_prior_feature"] > 0
    assert row["memo_pixel_gen_median"] == 0.0 and row["memo_pixel_share_exact_copies"] == 1.0
    assert row["memo_pixel_share_below_baseline_p5"] == 1.0
    assert 0 <= row["coverage_entropy_normalised"] <= 1
    assert table["fid_cifarnet_reason"].iloc[0] == "n < d"


def test_score_generation_without_priors_or_pool_leaves_those_columns_nan(stage_inputs):
    folder, files, _ = stage_inputs
    samples = _write_samples(folder, [smooth_images(10, seed=20)])
    row = score_generation(samples, files["reference"], files["weights"], folder / "noise.csv")
    assert row["n_seeds"] == 1 and np.isfinite(row["kid_cifarnet"])
    assert math.isnan(row["diversity_within_prior_feature"]) and row["diversity_all_feature"] > 0
    assert math.isnan(row["dist_prior_pixel_rms"]) and math.isnan(row["memo_pixel_median_ratio"])


def test_cached_reference_features_give_the_same_kid(stage_inputs):
    folder, files, _ = stage_inputs
    samples = _write_samples(folder, [smooth_images(10, seed=21)])
    cached = folder / "reference_features.npz"
    cache_features(files["reference"], files["weights"], cached)
    from_images = score_generation(samples, files["reference"], files["weights"], folder / "a.csv")
    from_cache = score_generation(samples, cached, files["weights"], folder / "b.csv")
    assert from_cache["kid_cifarnet"] == from_images["kid_cifarnet"]


def test_reference_features_of_another_classifier_are_refused(stage_inputs):
    folder, files, _ = stage_inputs
    other = folder / "other.pt"
    cifarnet.save_classifier(other, cifarnet.build_model(width=8, seed=1), {})
    cached = folder / "other_features.npz"
    cache_features(files["reference"], other, cached)
    samples = _write_samples(folder, [smooth_images(10, seed=22)])
    with pytest.raises(ValueError, match="another classifier"):
        score_generation(samples, cached, files["weights"], folder / "c.csv")


def test_misaligned_prior_is_refused(stage_inputs):
    folder, files, _ = stage_inputs
    samples = _write_samples(folder, [smooth_images(5, seed=23)])
    with pytest.raises(ValueError, match="prior.*must match one seed's samples"):
        score_generation(
            samples,
            files["reference"],
            files["weights"],
            folder / "d.csv",
            prior_npz=files["prior"],
            prior_iters=100,
        )
