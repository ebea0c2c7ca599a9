"""Generation metrics stage: train the CifarNet classifier once; score generated sample sets.

:func:`train_classifier_stage` is the cached classifier target: it trains on a prepared
CIFAR-10 dataset, tests on another, and writes the weights and a JSON record only when the
accuracy floor is met (otherwise it raises and writes nothing).

:func:`score_generation` turns one setting's generated samples (one ``samples.npz`` per
sample seed) into a one-row CSV: ``kid_cifarnet`` with its interval, ``fid_cifarnet`` (or
NaN and "n < d"), diversity, distances to the DIP prior and the source image, class
coverage and memorisation against the DDPM's training images.

Inputs are the repository's npz files: prepared datasets (``images`` float32 (N, 3, 32,
32) in [0, 1], ``labels``, ``names``; see :mod:`dipddpm.stages.data`), degraded sets
(``clean``), sample sets (``samples``; :mod:`dipddpm.stages.ddpm`) and DIP prior cells
(snapshots ``it<iters>``; :func:`dipddpm.stages.dip.load_prior`).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import cifarnet, genmetrics
from ..io import atomic_path, load_json, load_npz, save_csv, save_json, save_npz
from ..version import code_version

log = logging.getLogger("dipddpm")

FEATURE_BATCH = 500


# ---------------------------------------------------------------------------- inputs


def read_images(npz, role: str) -> np.ndarray:
    """The images of a prepared dataset (``images``) or a degraded set (``clean``)."""
    data = load_npz(npz)
    for key in ("images", "clean", "samples"):
        if key in data:
            return data[key]
    raise ValueError(
        f"{role} file {npz} holds no images: expected an array 'images', 'clean' or "
        f"'samples'; it has {sorted(data)}"
    )


def read_labelled_images(npz, role: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, names) of a prepared CIFAR-10 dataset; every image needs a class."""
    data = load_npz(npz)
    missing = [key for key in ("images", "labels") if key not in data]
    if missing:
        raise ValueError(
            f"{role} file {npz} lacks {missing}: a prepared CIFAR-10 dataset "
            "(rule prepare_dataset, source cifar10) is needed"
        )
    labels = data["labels"]
    if len(labels) and labels.min() < 0:
        raise ValueError(
            f"{role} file {npz} has images without a class (label -1): only CIFAR-10 "
            "datasets carry the labels a classifier needs"
        )
    names = data.get("names", np.array([f"{i}" for i in range(len(labels))]))
    return data["images"], labels, names


def names_in(npzs: Sequence) -> set[str]:
    """Every image name stored in the given prepared datasets."""
    found: set[str] = set()
    for npz in npzs:
        data = load_npz(npz)
        if "names" not in data:
            raise ValueError(f"{npz} has no 'names' array to exclude images by")
        found.update(str(name) for name in data["names"])
    return found


# ------------------------------------------------------------------------ training


def train_classifier_stage(
    train_images_npz,
    test_images_npz,
    out_weights,
    out_json,
    *,
    settings: dict | None = None,
    floor: float = cifarnet.ACCURACY_FLOOR,
    min_test_images: int = cifarnet.MIN_TEST_IMAGES,
    exclude_npzs: Sequence = (),
    threads: int = 2,
    resume_path=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train CifarNet, test it, and write the weights and ``out_json`` only if it passes.

    ``settings``: :class:`dipddpm.cifarnet.TrainSettings` fields to override (epochs,
    batch_size, lr, seed, ...). ``exclude_npzs``: prepared datasets whose images (matched
    by name) are left out of the training set, e.g. the generation sources, when they must
    be disjoint from the classifier's data. ``resume_path``: where each epoch's training
    state is kept so a killed job resumes (deleted at the end, pass or fail).

    Raises :class:`dipddpm.cifarnet.ClassifierBelowFloor` when the test set has fewer than
    ``min_test_images`` images (before training) or the accuracy is below ``floor``; then
    neither output exists. Returns the record written to ``out_json``.
    """
    test_images, test_labels, _ = read_labelled_images(test_images_npz, "classifier test")
    cifarnet.check_test_size(len(test_labels), min_test_images)
    images, labels, names = read_labelled_images(train_images_npz, "classifier training")
    keep = _kept(names, exclude_npzs)
    images, labels = images[keep], labels[keep]
    torch.set_num_threads(max(1, int(threads)))
    trained = cifarnet.train_classifier(
        images,
        labels,
        settings=cifarnet.TrainSettings.from_dict(settings or {}),
        resume_path=resume_path,
        progress=progress,
    )
    try:
        accuracy = cifarnet.evaluate_accuracy(trained.model, test_images, test_labels)
        log.info(
            "CifarNet: test accuracy %.4f on %d images after %.0f s of training",
            accuracy,
            len(test_labels),
            trained.seconds,
        )
        cifarnet.check_accuracy_floor(accuracy, floor, len(test_labels), min_test_images)
        record = {
            "accuracy": accuracy,
            "n_test": len(test_labels),
            "n_train": len(labels),
            "n_excluded": int((~keep).sum()),
            "floor": float(floor),
            "min_test_images": int(min_test_images),
            "seconds": trained.seconds,
            "resumed_from_epoch": trained.resumed_from_epoch,
            "threads": torch.get_num_threads(),
            "feature_dim": trained.model.feature_dim,
            "parameters": cifarnet.parameter_count(trained.model),
            "settings": trained.settings.as_dict(),
            "history": trained.history,
            "train_images": str(train_images_npz),
            "test_images": str(test_images_npz),
            "torch": str(torch.__version__),
        }
        _write_classifier(out_weights, out_json, trained.model, record)
    finally:
        if resume_path is not None:
            Path(resume_path).unlink(missing_ok=True)
    return record


def _kept(names: np.ndarray, exclude_npzs: Sequence) -> np.ndarray:
    if not exclude_npzs:
        return np.ones(len(names), dtype=bool)
    excluded = names_in(exclude_npzs)
    keep = np.array([str(name) not in excluded for name in names])
    log.info("CifarNet: %d training images left out (in %s)", (~keep).sum(), list(exclude_npzs))
    return keep


def _write_classifier(out_weights, out_json, model, record: dict) -> None:
    """Weights, then the JSON; a failed JSON write takes the weights with it."""
    record["sha256"] = cifarnet.save_classifier(out_weights, model, dict(record))
    try:
        save_json(out_json, {**record, **code_version()})
    except BaseException:
        Path(out_weights).unlink(missing_ok=True)
        raise


def store_classifier(weights, record_json, stored_weights, stored_json) -> None:
    """Copy the trained classifier and its record into the store (a committed folder),
    after checking that the record names these weights."""
    if weights is None:
        raise ValueError(
            f"{stored_weights} was a stored copy, so the workflow did not ask for its "
            "training: delete the stored file (not force the rule) to retrain it"
        )
    record = load_json(record_json)
    if record.get("sha256") != cifarnet.file_sha256(weights):
        raise ValueError(f"{record_json} does not describe {weights} (sha256 differs)")
    with atomic_path(stored_weights) as tmp:
        shutil.copyfile(weights, tmp)
    save_json(stored_json, record)
    log.info("stored the classifier (accuracy %.3f) as %s", record["accuracy"], stored_weights)


# ------------------------------------------------------------------------- features


def cache_features(images_npz, classifier_weights, out_npz, batch_size: int = FEATURE_BATCH):
    """CifarNet features and predictions of a prepared image set, kept for reuse.

    The npz holds ``features``, ``predictions``, ``names`` (when the input has them) and
    the classifier's ``sha256``; :func:`score_generation` accepts it as its reference.
    """
    model, _ = cifarnet.load_classifier(classifier_weights)
    images = read_images(images_npz, "feature source")
    feats, preds = cifarnet.features_and_predictions(model, images, batch_size, progress=True)
    names = load_npz(images_npz).get("names")
    extra = {} if names is None else {"names": names}
    sha = cifarnet.file_sha256(classifier_weights)
    save_npz(out_npz, features=feats, predictions=preds, sha256=np.array(sha), **extra)


def reference_features(reference, model, weights_sha: str, batch_size: int) -> np.ndarray:
    """Features of the reference set from a :func:`cache_features` npz or an image npz."""
    data = load_npz(reference)
    if "features" not in data:
        return cifarnet.features(model, read_images(reference, "reference"), batch_size)
    cached_sha = str(data.get("sha256", ""))
    if cached_sha != weights_sha:
        raise ValueError(
            f"reference features {reference} were computed with another classifier "
            f"(sha256 {cached_sha[:12] or 'unknown'}, now {weights_sha[:12]}); recompute them"
        )
    return data["features"]


def read_sample_sets(sample_npzs: Sequence) -> np.ndarray:
    """(seeds, N, C, H, W) samples, one ``samples.npz`` per seed, aligned by index."""
    if not sample_npzs:
        raise ValueError("sample_npzs is empty: give at least one samples.npz")
    sets = []
    for npz in sample_npzs:
        data = load_npz(npz)
        if "samples" not in data:
            raise ValueError(f"{npz} has no 'samples' array; it has {sorted(data)}")
        sets.append(data["samples"])
    shapes = {s.shape for s in sets}
    if len(shapes) > 1:
        listing = ", ".join(f"{npz}: {s.shape}" for npz, s in zip(sample_npzs, sets, strict=True))
        raise ValueError(f"sample sets of one setting must share a shape; got {listing}")
    return np.stack(sets)


# -------------------------------------------------------------------------- scoring


def score_generation(
    sample_npzs: Sequence,
    reference,
    classifier_weights,
    out_csv,
    *,
    identity: dict | None = None,
    prior_npz=None,
    prior_iters: int | None = None,
    source_npz=None,
    train_npz=None,
    heldout_npz=None,
    shared_starts: bool = True,
    kid_subset_size: int | None = None,
    kid_subsets: int = genmetrics.KID_SUBSETS,
    kid_seed: int = genmetrics.KID_SEED,
    threads: int = 2,
    batch_size: int = FEATURE_BATCH,
) -> dict[str, Any]:
    """Score one setting's samples; writes a one-row CSV and returns the row.

    ``sample_npzs``: one ``samples.npz`` per sample seed of the same setting, the i-th
    sample of each drawn from the same start (prior i). ``reference``: real images (a
    prepared dataset npz) or their cached features (:func:`cache_features`).
    ``prior_npz``/``prior_iters``: the DIP cell the samples started from;
    ``source_npz``: the clean images the priors were fitted to (prepared or degraded
    set), aligned with the samples. ``train_npz``: the DDPM's training images (the
    memorisation pool); ``heldout_npz``: real images the DDPM never saw (the baseline).
    ``shared_starts``: whether sample i of every seed starts from the same prior (False
    for samples from pure noise, whose within-prior diversity is then NaN).
    Parts without their inputs are NaN; ``identity`` columns come first in the row.
    """
    started = time.perf_counter()
    torch.set_num_threads(max(1, int(threads)))
    model, meta = cifarnet.load_classifier(classifier_weights)
    sha = cifarnet.file_sha256(classifier_weights)
    samples = read_sample_sets(sample_npzs)
    seeds, per_seed = samples.shape[:2]
    flat = samples.reshape(seeds * per_seed, *samples.shape[2:])
    feats, preds = cifarnet.features_and_predictions(model, flat, batch_size)
    ref = reference_features(reference, model, sha, batch_size)
    row: dict[str, Any] = {**(identity or {}), "n_seeds": seeds, "n_per_seed": per_seed}
    row.update(_kid_columns(feats, ref, kid_subset_size, kid_subsets, kid_seed))
    row.update(_fid_columns(feats, ref))
    row.update(_diversity_columns(feats.reshape(seeds, per_seed, -1), samples, shared_starts))
    row.update(_coverage_columns(preds))
    prior = _load_aligned_prior(prior_npz, prior_iters, samples)
    source = _load_aligned(source_npz, samples, "source")
    row.update(_distance_columns("prior", model, prior, samples, feats, batch_size))
    row.update(_distance_columns("source", model, source, samples, feats, batch_size))
    row.update(_memorisation_columns(model, flat, feats, train_npz, heldout_npz, batch_size))
    row.update(
        {
            "classifier_accuracy": meta.get("accuracy", math.nan),
            "classifier_sha256": sha[:12],
            "feature_dim": model.feature_dim,
            "score_seconds": time.perf_counter() - started,
            "stage": "generation_metrics",
            **code_version(),
        }
    )
    save_csv(out_csv, pd.DataFrame([row]))
    log.info(
        "kid_cifarnet %.5f [%.5f, %.5f] on %d samples vs %d reference images",
        row["kid_cifarnet"],
        row["kid_cifarnet_ci_low"],
        row["kid_cifarnet_ci_high"],
        row["kid_cifarnet_n_gen"],
        row["kid_cifarnet_n_ref"],
    )
    return row


def _kid_columns(feats, ref, subset_size, n_subsets, seed) -> dict[str, Any]:
    result = genmetrics.kid(feats, ref, subset_size=subset_size, n_subsets=n_subsets, seed=seed)
    return {
        "kid_cifarnet": result.mean,
        "kid_cifarnet_ci_low": result.ci_low,
        "kid_cifarnet_ci_high": result.ci_high,
        "kid_cifarnet_std": result.std,
        "kid_cifarnet_n_gen": result.n_a,
        "kid_cifarnet_n_ref": result.n_b,
        "kid_cifarnet_subset_gen": result.subset_a,
        "kid_cifarnet_subset_ref": result.subset_b,
        "kid_cifarnet_subsets": result.n_subsets,
    }


def _fid_columns(feats, ref) -> dict[str, Any]:
    result = genmetrics.frechet_distance(feats, ref)
    return {"fid_cifarnet": result.value, "fid_cifarnet_reason": result.reason}


def _diversity_columns(
    grouped_feats: np.ndarray, samples: np.ndarray, shared_starts: bool = True
) -> dict[str, Any]:
    """Within-prior spread (across seeds, needs >= 2 and a start the seeds share) and the
    spread of all samples."""
    seeds, per_seed = samples.shape[:2]
    within = {"feature": math.nan, "pixel": math.nan}
    if seeds >= 2 and shared_starts:
        # Groups are priors: sample i of every seed, so swap to (priors, seeds, ...).
        within = genmetrics.diversity_per_group(
            np.swapaxes(grouped_feats, 0, 1), np.swapaxes(samples, 0, 1)
        )
    flat_feats = grouped_feats.reshape(seeds * per_seed, -1)
    flat = samples.reshape(seeds * per_seed, *samples.shape[2:])
    overall = len(flat) >= 2
    low, high = _half_sample_interval(flat_feats)
    return {
        "diversity_within_prior_feature": within["feature"],
        "diversity_within_prior_pixel_rms": within["pixel"],
        "diversity_all_feature": (
            genmetrics.mean_pairwise_feature_distance(flat_feats) if overall else math.nan
        ),
        "diversity_all_feature_ci_low": low,
        "diversity_all_feature_ci_high": high,
        "diversity_all_pixel_rms": (
            genmetrics.mean_pairwise_pixel_distance(flat) if overall else math.nan
        ),
    }


def _half_sample_interval(
    feats: np.ndarray, n_subsets: int = genmetrics.KID_SUBSETS, seed: int = genmetrics.KID_SEED
) -> tuple[float, float]:
    """95 % interval of the mean pairwise feature distance from half-samples, as for KID
    (a half-sample of n items varies about as much as an independent sample of n)."""
    half = len(feats) // 2
    if half < 2:
        return math.nan, math.nan
    distances = genmetrics.pairwise_distances(feats, feats)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(n_subsets)):
        pick = rng.choice(len(feats), half, replace=False)
        block = distances[np.ix_(pick, pick)]
        values.append((block.sum() - np.trace(block)) / (half * (half - 1)))
    tail = 100.0 * (1.0 - genmetrics.CI_LEVEL) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def _coverage_columns(preds: np.ndarray) -> dict[str, Any]:
    coverage = genmetrics.class_coverage_entropy(preds, cifarnet.NUM_CLASSES)
    return {
        "coverage_entropy_nats": coverage["entropy_nats"],
        "coverage_entropy_normalised": coverage["entropy_normalised"],
        "coverage_classes_present": coverage["classes_present"],
    }


def _load_aligned_prior(prior_npz, prior_iters, samples: np.ndarray) -> np.ndarray | None:
    if prior_npz is None:
        return None
    if prior_iters is None:
        raise ValueError(f"prior_npz {prior_npz} given without prior_iters (which snapshot)")
    from .dip import load_prior

    prior = load_prior(prior_npz, int(prior_iters))
    return _check_aligned(prior, samples, f"prior {prior_npz}")


def _load_aligned(npz, samples: np.ndarray, role: str) -> np.ndarray | None:
    if npz is None:
        return None
    return _check_aligned(read_images(npz, role), samples, f"{role} {npz}")


def _check_aligned(images: np.ndarray, samples: np.ndarray, what: str) -> np.ndarray:
    if images.shape != samples.shape[1:]:
        raise ValueError(
            f"{what} has shape {images.shape}; it must match one seed's samples "
            f"{samples.shape[1:]} (image i is sample i's start)"
        )
    return images


def _distance_columns(role, model, targets, samples, feats, batch_size) -> dict[str, Any]:
    """Mean pixel RMS and feature distance of every sample to its own prior or source."""
    names = (f"dist_{role}_pixel_rms", f"dist_{role}_feature")
    if targets is None:
        return dict.fromkeys(names, math.nan)
    seeds = samples.shape[0]
    repeated = np.concatenate([targets] * seeds)
    target_feats = np.concatenate([cifarnet.features(model, targets, batch_size)] * seeds)
    pixel = genmetrics.paired_pixel_rms(samples.reshape(repeated.shape), repeated)
    feature = genmetrics.paired_feature_distance(feats, target_feats)
    return {names[0]: float(pixel.mean()), names[1]: float(feature.mean())}


MEMORISATION_KEYS = ("gen_median", "baseline_median", "median_ratio", "share_below_baseline_p5")


def _memorisation_columns(model, flat, feats, train_npz, heldout_npz, batch_size):
    """Nearest-training-image distances of the samples vs of held-out real images."""
    columns = [f"memo_{space}_{key}" for space in ("pixel", "feature") for key in MEMORISATION_KEYS]
    columns.append("memo_pixel_share_exact_copies")
    if train_npz is None or heldout_npz is None:
        return dict.fromkeys(columns, math.nan)
    pool = read_images(train_npz, "memorisation pool")
    heldout = read_images(heldout_npz, "memorisation baseline")
    pool_feats = cifarnet.features(model, pool, batch_size)
    heldout_feats = cifarnet.features(model, heldout, batch_size)
    pixel = genmetrics.memorisation_summary(
        genmetrics.nearest_pixel_neighbours(flat, pool)[0],
        genmetrics.nearest_pixel_neighbours(heldout, pool)[0],
    )
    feature = genmetrics.memorisation_summary(
        genmetrics.nearest_feature_neighbours(feats, pool_feats)[0],
        genmetrics.nearest_feature_neighbours(heldout_feats, pool_feats)[0],
    )
    row = {f"memo_pixel_{key}": pixel[key] for key in MEMORISATION_KEYS}
    row.update({f"memo_feature_{key}": feature[key] for key in MEMORISATION_KEYS})
    row["memo_pixel_share_exact_copies"] = pixel["share_exact_copies"]
    return row


# -------------------------------------------------------------------------- summary


def summarise_generation(score_csvs: Sequence, out_csv) -> pd.DataFrame:
    """Every setting's row (:func:`score_generation`) in one table, in the given order;
    a setting with columns another lacks (e.g. no prior) reads NaN there."""
    if not score_csvs:
        raise ValueError("no generation scores to summarise: give at least one CSV")
    table = pd.concat([pd.read_csv(path) for path in score_csvs], ignore_index=True)
    save_csv(out_csv, table)
    log.info("summarised %d generation settings into %s", len(table), out_csv)
    return table


# -------------------------------------------------------------------------- section


def report_generation(
    scores_csv,
    cell_jsons: Sequence,
    prior_metrics_csvs: Sequence,
    classifier_json,
    out_curves,
    out_figure,
    out_section,
    *,
    settings: dict,
    sample_npzs: Sequence,
    prior_npzs: Sequence,
    source_npz,
    out_samples,
) -> pd.DataFrame:
    """The part's curves table, figures and section, from the summary of every setting's
    scores, each generation cell's ``params.json``, the priors' DIP ``metrics.csv`` and
    the classifier's record. ``out_figure``: the curves' PNG (a PDF goes next to it);
    ``out_samples``: the sample grid (:func:`write_sample_grid`, from the cells'
    ``sample_npzs``, the priors' DIP outputs ``prior_npzs`` and their ``source_npz``)."""
    from .. import generation_report
    from ..io import save_text

    scores = pd.read_csv(scores_csv, dtype={c: str for c in generation_report.SETTING_COLUMNS})
    records = [load_json(path) for path in cell_jsons]
    priors = [pd.read_csv(path) for path in prior_metrics_csvs]
    prior_metrics = pd.concat(priors, ignore_index=True) if priors else pd.DataFrame()
    curves = generation_report.curves_table(scores, records, prior_metrics)
    comparisons = generation_report.equal_nfe_comparisons(curves)
    save_csv(out_curves, curves)
    figure = Path(out_figure)
    generation_report.curves_figure(curves, figure.with_suffix(""))
    cells = dict(zip(cell_jsons, records, strict=True))
    priors_of = dict(zip(prior_metrics_csvs, priors, strict=True))
    note = write_sample_grid(out_samples, cells, sample_npzs, priors_of, prior_npzs, source_npz)
    section = generation_report.generation_section(
        curves,
        comparisons,
        load_json(classifier_json),
        settings,
        figure=figure.name,
        samples_figure=Path(out_samples).name,
        samples_note=note,
    )
    save_text(out_section, section)
    log.info("generation section: %d settings, %d equal-NFE pairs", len(curves), len(comparisons))
    return curves


def write_sample_grid(
    out_png,
    cells: dict,
    sample_npzs: Sequence,
    prior_metrics: dict,
    prior_npzs: Sequence,
    source_npz,
) -> str:
    """The sample grid (:func:`dipddpm.generation_report.samples_figure`) of the settings
    :func:`~dipddpm.generation_report.sample_grid_cells` picks; returns its caption's
    description (:func:`~dipddpm.generation_report.sample_grid_note`).

    ``cells``: each generation cell's ``params.json`` path and record; its samples are the
    ``samples.npz`` of ``sample_npzs`` in the same folder. ``prior_metrics``: each prior's
    DIP ``metrics.csv`` path and table, which names the prior whose snapshots the
    ``output.npz`` of ``prior_npzs`` in its folder holds. ``source_npz``: the images the
    priors were fitted to, aligned with every DIP-started cell's samples."""
    from .. import generation_report as report
    from ..example1_qualitative import image_label, spread

    samples_in = {Path(path).parent: path for path in sample_npzs}
    rows = []
    for path, record in cells.items():
        nfe = record.get("chain_nfe", record.get("nfe"))
        samples = str(samples_in.get(Path(path).parent, ""))
        rows.append({**record["identity"], "nfe": nfe, "samples": samples})
    dip, noise = report.sample_grid_cells(pd.DataFrame(rows))
    source = read_images(source_npz, "generation source")
    names = load_npz(source_npz).get("names")
    sets = [np.stack([_samples(cell) for _, cell in group.iterrows()]) for group in dip]
    shown = spread(range(min([len(source), *(s.shape[1] for s in sets)])), report.GRID_ROWS)
    groups = []
    if dip:
        first = dip[0].iloc[0]
        prior = _prior_of(first, prior_metrics, prior_npzs)
        groups += [
            report.GridGroup("source", ("training image",), source[None, shown]),
            report.GridGroup("DIP prior", (f"{first['iters']} it",), prior[None, shown]),
        ]
    for group, samples in zip(dip, sets, strict=True):
        head = group.iloc[0]
        title = f"t0 = {head['t0']}, {int(head['_nfe'])} NFE"
        if head["iters"] != dip[0].iloc[0]["iters"]:
            title += f", {head['iters']}-it prior"
        seeds = tuple(f"seed {seed}" for seed in group["sample_seed"])
        groups.append(report.GridGroup(title, seeds, samples[:, shown]))
    width = sum(len(g.columns) for g in groups) or 8
    from_noise = [
        (f"{int(group.iloc[0]['_nfe'])} NFE", _first_samples(group, width)) for group in noise
    ]
    labels = [image_label(i, None if names is None else str(names[i])) for i in shown]
    report.samples_figure(groups, from_noise, labels, out_png)
    return report.sample_grid_note(dip, noise, len(shown), len(source))


def _samples(cell: pd.Series) -> np.ndarray:
    if not cell["samples"]:
        raise ValueError(
            f"the sample grid shows the cell {cell['method']} t0={cell['t0']} "
            f"seed {cell['sample_seed']}, but no samples.npz sits beside its params.json"
        )
    return read_images(cell["samples"], "generation samples")


def _first_samples(group: pd.DataFrame, count: int) -> np.ndarray:
    """The first ``count`` samples of a setting, seed after seed."""
    taken = []
    for _, cell in group.iterrows():
        taken.extend(_samples(cell)[: count - len(taken)])
        if len(taken) >= count:
            break
    return np.stack(taken)


def _prior_of(cell: pd.Series, prior_metrics: dict, prior_npzs: Sequence) -> np.ndarray:
    """The DIP prior a DIP-started cell starts from: the snapshot at its ``iters`` of the
    prior whose metrics name the cell's data, task, observation, architecture and seed."""
    from .. import grid
    from .dip import load_prior

    keys = ["purpose", "dataset", "task", "obs_seed", "arch", "dip_seed"]
    wanted = tuple(grid.canonical(cell[k]) for k in keys)
    outputs = {Path(path).parent: path for path in prior_npzs}
    for path, metrics in prior_metrics.items():
        if metrics.empty or Path(path).parent not in outputs or set(keys) - set(metrics):
            continue
        row = metrics.iloc[0]
        if tuple(grid.canonical(row[k]) for k in keys) == wanted:
            return load_prior(outputs[Path(path).parent], int(cell["iters"]))
    named = ", ".join(f"{k} {v}" for k, v in zip(keys, wanted, strict=True))
    raise ValueError(f"no DIP output.npz among the generation priors for {named}")
