"""FID/KID through torch-fidelity's real InceptionV3 path, with test-made weights.

The weights file is a Kaiming-initialised InceptionV3 saved in the state-dict format
torch-fidelity loads: real architecture, real loading code, no network.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dipddpm import fid as fidmod

N_IMAGES = 16


@pytest.fixture(scope="module")
def weights(inception_weights):
    return inception_weights


@pytest.fixture(scope="module")
def clean_images():
    rng = np.random.default_rng(0)
    # Smooth random images: low-frequency content so that noise is a visible change.
    coarse = rng.random((N_IMAGES, 3, 4, 4)).astype(np.float32)
    return np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)


@pytest.fixture(scope="module")
def reference(weights, clean_images, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref_stats.npz"
    summary = fidmod.reference_stats(
        clean_images, path, weights=weights, device="cpu", progress=False
    )
    assert summary == {"available": True, "reason": "", "n": N_IMAGES}
    return path


def _noisy(images, sigma, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(images + sigma * rng.standard_normal(images.shape), 0, 1).astype(np.float32)


@pytest.mark.slow
def test_reference_file_holds_features_and_statistics(reference):
    data = np.load(reference)
    assert bool(data["available"])
    assert data["features"].shape == (N_IMAGES, 2048)
    assert data["mu"].shape == (2048,)
    assert data["sigma"].shape == (2048, 2048)
    np.testing.assert_allclose(data["mu"], data["features"].mean(axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fid_of_identical_sets_is_near_zero_and_grows_with_noise(weights, clean_images, reference):
    same = fidmod.fid_kid(clean_images, reference, weights=weights, device="cpu", progress=False)
    assert same["available"] is True
    assert abs(same["fid"]) < 1e-3
    # KID subsets must fit into the few samples we have; the size is recorded.
    assert same["kid_subset_size"] == N_IMAGES
    assert same["n_samples"] == same["n_reference"] == N_IMAGES

    noisy = [
        fidmod.fid_kid(
            _noisy(clean_images, sigma), reference, weights=weights, device="cpu", progress=False
        )
        for sigma in (0.05, 0.2, 0.5)
    ]
    fids = [result["fid"] for result in noisy]
    print("FID(X, X) =", same["fid"], "FID at sigma 0.05/0.2/0.5 =", fids)
    print("KID(X, X) =", same["kid_mean"], "KID =", [r["kid_mean"] for r in noisy])
    assert 1e-3 < fids[0] < fids[1] < fids[2]
    # KID draws independent subsets, so KID(X, X) is only near zero relative to real shifts.
    assert abs(same["kid_mean"]) < 0.1 * noisy[2]["kid_mean"]


@pytest.mark.slow
def test_reference_given_as_images_matches_cached_reference(weights, clean_images, reference):
    noisy = _noisy(clean_images[:8], 0.2)
    from_file = fidmod.fid_kid(noisy, reference, weights=weights, device="cpu", progress=False)
    from_images = fidmod.fid_kid(noisy, clean_images, weights=weights, device="cpu", progress=False)
    assert from_file["kid_subset_size"] == 8
    assert from_images["fid"] == pytest.approx(from_file["fid"], rel=1e-6)
    assert from_images["kid_mean"] == pytest.approx(from_file["kid_mean"], rel=1e-6)


def test_missing_weights_give_unavailable_with_reason(tmp_path, clean_images):
    bogus = tmp_path / "no-such-inception.pth"
    result = fidmod.fid_kid(clean_images[:4], clean_images[:4], weights=bogus, device="cpu")
    assert result["available"] is False
    assert str(bogus) in result["reason"]
    assert np.isnan(result["fid"])

    ref_path = tmp_path / "ref.npz"
    summary = fidmod.reference_stats(clean_images[:4], ref_path, weights=bogus, device="cpu")
    assert summary["available"] is False
    # Every FID cell built on an unavailable reference reports the same reason.
    from_ref = fidmod.fid_kid(clean_images[:4], ref_path, weights=bogus, device="cpu")
    assert from_ref["available"] is False
    assert str(bogus) in from_ref["reason"]


def test_corrupt_weights_file_gives_unavailable(tmp_path, clean_images):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a state dict")
    result = fidmod.fid_kid(clean_images[:4], clean_images[:4], weights=corrupt, device="cpu")
    assert result["available"] is False
    assert "could not load Inception weights" in result["reason"]


def test_bad_shapes_are_rejected_with_a_clear_message(weights):
    with pytest.raises(ValueError, match="FID expects images"):
        fidmod.fid_kid(np.zeros((4, 32, 32)), np.zeros((4, 3, 32, 32)), weights=weights)


def test_default_weights_offline_give_unavailable_without_crashing(
    tmp_path, clean_images, monkeypatch
):
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    # An empty hub cache forces torch-fidelity's download, which must fail fast here.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    result = fidmod.fid_kid(clean_images[:4], clean_images[:4], weights=None, device="cpu")
    assert result["available"] is False
    assert fidmod.default_weights_url() in result["reason"]
