"""CifarNet: deterministic training, resume, features, the accuracy floor and its stage.

Everything runs on a tiny network (width 8) and tiny synthetic data: ten classes, each a
colour with noise, which a few epochs learn. The real floor (60 % on >= 2,000 CIFAR-10
test images) is checked by the pipeline's rule, not here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dipddpm import cifarnet
from dipddpm.io import save_npz
from dipddpm.stages.generation_metrics import store_classifier, train_classifier_stage

TINY = {"epochs": 4, "batch_size": 20, "lr": 0.1, "width": 8, "seed": 2}
PER_CLASS = 16


def colour_classes(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32, 3) images: class c is a fixed colour plus pixel noise."""
    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(99).integers(20, 236, (cifarnet.NUM_CLASSES, 3))
    labels = np.repeat(np.arange(cifarnet.NUM_CLASSES), per_class)
    noise = rng.normal(0, 12, (len(labels), 32, 32, 3))
    images = np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels


@pytest.fixture(scope="module")
def data():
    return colour_classes(PER_CLASS, seed=0)


@pytest.fixture(scope="module")
def trained(data):
    return cifarnet.train_classifier(*data, progress=False, **TINY)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_training_learns_the_synthetic_classes(trained):
    images, labels = colour_classes(4, seed=1)
    # Chance is 0.1; a few dozen steps get most colours right.
    assert cifarnet.evaluate_accuracy(trained.model, images, labels) >= 0.6
    assert len(trained.history) == TINY["epochs"]
    assert trained.settings.width == 8 and trained.model.feature_dim == 32


def test_same_seed_gives_the_same_weights_bit_for_bit(data, trained):
    again = cifarnet.train_classifier(*data, progress=False, **TINY)
    assert _same_weights(trained.model, again.model)
    other = cifarnet.train_classifier(*data, progress=False, **{**TINY, "seed": 4})
    assert not _same_weights(trained.model, other.model)


def test_training_does_not_touch_the_global_random_stream(data):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    cifarnet.train_classifier(*data, progress=False, **{**TINY, "epochs": 1})
    assert torch.equal(torch.rand(3), expected)


class Killed(Exception):
    pass


def test_resume_after_a_kill_gives_the_uninterrupted_weights(data, trained, tmp_path):
    resume = tmp_path / "resume.pt"

    def kill_after_first_epoch(epoch: int) -> None:
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        cifarnet.train_classifier(
            *data, progress=False, resume_path=resume, on_epoch_end=kill_after_first_epoch, **TINY
        )
    assert resume.is_file()
    resumed = cifarnet.train_classifier(*data, progress=False, resume_path=resume, **TINY)
    assert resumed.resumed_from_epoch == 1
    assert _same_weights(resumed.model, trained.model)


def test_resume_point_of_other_settings_or_data_is_refused(data, tmp_path):
    resume = tmp_path / "resume.pt"
    one_epoch = {**TINY, "epochs": 1}
    cifarnet.train_classifier(*data, progress=False, resume_path=resume, **one_epoch)
    with pytest.raises(ValueError, match="other settings or data"):
        cifarnet.train_classifier(*data, progress=False, resume_path=resume, **TINY)
    images, labels = data
    with pytest.raises(ValueError, match="other settings or data"):
        cifarnet.train_classifier(
            images[::-1], labels[::-1], progress=False, resume_path=resume, **one_epoch
        )


def test_features_and_predictions_accept_both_layouts(trained, data):
    images, _ = data
    floats = np.transpose(images, (0, 3, 1, 2)).astype(np.float32) / 255.0
    feats, preds = cifarnet.features_and_predictions(trained.model, images, batch_size=7)
    assert feats.shape == (len(images), 32) and feats.dtype == np.float64
    assert preds.shape == (len(images),) and preds.dtype == np.int64
    np.testing.assert_array_equal(cifarnet.features(trained.model, floats), feats)
    np.testing.assert_array_equal(cifarnet.predict(trained.model, floats), preds)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 3, 16, 16), np.float32), "32x32"),
        (np.zeros((3, 32, 32), np.float32), "4-D"),
        (np.zeros((0, 3, 32, 32), np.float32), "empty"),
        (np.full((1, 3, 32, 32), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images_are_refused_by_name(trained, images, message):
    with pytest.raises(ValueError, match=f"^images .*{message}"):
        cifarnet.features(trained.model, images)


def test_bad_labels_are_refused(data):
    images, labels = data
    with pytest.raises(ValueError, match="labels"):
        cifarnet.train_classifier(images, labels[:-1], progress=False, **TINY)
    with pytest.raises(ValueError, match="-1 marks"):
        cifarnet.train_classifier(images, labels - 1, progress=False, **TINY)


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match="unknown classifier settings.*'epoch'"):
        cifarnet.TrainSettings.from_dict({"epoch": 2})


def test_accuracy_floor_names_accuracy_floor_and_n():
    cifarnet.check_accuracy_floor(0.61, 0.60, 2000)
    with pytest.raises(cifarnet.ClassifierBelowFloor, match=r"0\.5500.*n = 2500.*0\.60"):
        cifarnet.check_accuracy_floor(0.55, 0.60, 2500)
    with pytest.raises(cifarnet.ClassifierBelowFloor, match="at least 2000.*n = 1999"):
        cifarnet.check_accuracy_floor(0.99, 0.60, 1999)
    with pytest.raises(cifarnet.ClassifierBelowFloor):
        cifarnet.check_accuracy_floor(float("nan"), 0.60, 5000)


def test_weights_round_trip_with_metadata(trained, data, tmp_path):
    path = tmp_path / "cifarnet.pt"
    sha = cifarnet.save_classifier(path, trained.model, {"accuracy": 0.9, "n_test": 40})
    model, meta = cifarnet.load_classifier(path)
    assert meta == {"accuracy": 0.9, "n_test": 40}
    assert sha == cifarnet.file_sha256(path)
    np.testing.assert_array_equal(
        cifarnet.features(model, data[0]), cifarnet.features(trained.model, data[0])
    )


def test_missing_or_foreign_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        cifarnet.load_classifier(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt"):
        cifarnet.load_classifier(junk)


# --------------------------------------------------------------------------- stage


def _prepared(path, images_uint8, labels):
    """A dataset npz as rule prepare_dataset writes it."""
    names = np.array([f"cifar10-jpeg/train/c{label}/{i:04d}.jpg" for i, label in enumerate(labels)])
    save_npz(
        path,
        images=np.transpose(images_uint8, (0, 3, 1, 2)).astype(np.float32) / 255.0,
        labels=labels.astype(np.int64),
        names=names,
    )
    return path


@pytest.fixture()
def stage_files(tmp_path, data):
    train = _prepared(tmp_path / "train.npz", *data)
    test = _prepared(tmp_path / "test.npz", *colour_classes(4, seed=1))
    out = tmp_path / "out"
    return train, test, out / "cifarnet.pt", out / "cifarnet.json"


def test_stage_writes_weights_and_record(stage_files):
    train, test, weights, record_json = stage_files
    record = train_classifier_stage(
        train,
        test,
        weights,
        record_json,
        settings=TINY,
        floor=0.3,
        min_test_images=40,
        threads=1,
        progress=False,
    )
    written = json.loads(record_json.read_text())
    assert written["accuracy"] == record["accuracy"] >= 0.3
    assert written["n_test"] == 40 and written["n_train"] == 10 * PER_CLASS
    assert written["settings"]["epochs"] == TINY["epochs"] and written["seconds"] > 0
    assert written["sha256"] == cifarnet.file_sha256(weights)
    assert cifarnet.load_classifier(weights)[1]["accuracy"] == record["accuracy"]

    # The store keeps the weights with their record, and refuses a record of other weights.
    stored = weights.parent / "store" / "cifarnet.pt"
    store_classifier(weights, record_json, stored, stored.with_suffix(".json"))
    assert cifarnet.file_sha256(stored) == written["sha256"]
    assert json.loads(stored.with_suffix(".json").read_text()) == written
    record_json.write_text(json.dumps({**written, "sha256": "0" * 64}))
    with pytest.raises(ValueError, match="does not describe"):
        store_classifier(weights, record_json, stored, stored.with_suffix(".json"))
    with pytest.raises(ValueError, match="was a stored copy"):
        store_classifier(None, None, stored, stored.with_suffix(".json"))


def test_stage_refuses_a_model_below_the_floor_and_leaves_no_output(stage_files):
    train, test, weights, record_json = stage_files
    resume = weights.parent / "resume.pt"
    with pytest.raises(cifarnet.ClassifierBelowFloor, match="below the floor 1.01"):
        train_classifier_stage(
            train,
            test,
            weights,
            record_json,
            settings=TINY,
            floor=1.01,
            min_test_images=40,
            threads=1,
            resume_path=resume,
            progress=False,
        )
    leftovers = list(weights.parent.iterdir()) if weights.parent.exists() else []
    assert leftovers == []


def test_stage_refuses_too_few_test_images_before_training(stage_files):
    train, test, weights, record_json = stage_files
    with pytest.raises(cifarnet.ClassifierBelowFloor, match="at least 2000.*n = 40"):
        train_classifier_stage(train, test, weights, record_json, settings=TINY, progress=False)
    assert not weights.exists() and not record_json.exists()


def test_stage_leaves_out_excluded_images(stage_files, tmp_path, data):
    train, test, weights, record_json = stage_files
    images, labels = data
    excluded = _prepared(tmp_path / "sources.npz", images[:5], labels[:5])
    record = train_classifier_stage(
        train,
        test,
        weights,
        record_json,
        settings={**TINY, "epochs": 1},
        floor=0.0,
        min_test_images=40,
        exclude_npzs=[excluded],
        threads=1,
        progress=False,
    )
    assert record["n_excluded"] == 5 and record["n_train"] == 10 * PER_CLASS - 5


def test_stage_needs_labelled_images(stage_files, tmp_path, data):
    train, test, weights, record_json = stage_files
    unlabelled = _prepared(tmp_path / "natural.npz", data[0][:40], np.full(40, -1))
    with pytest.raises(ValueError, match="natural.npz.*without a class"):
        train_classifier_stage(
            train,
            unlabelled,
            weights,
            record_json,
            settings=TINY,
            min_test_images=40,
            progress=False,
        )
