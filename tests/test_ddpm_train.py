"""Training: exact resume, checkpoints, curve, truncated mode, loading for sampling."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from dipddpm.ddpm.checkpoint import (
    KEPT_DIR,
    PROGRESS_FILE,
    RESUME_FILE,
    kept_path,
    restore_rng,
    rng_state,
)
from dipddpm.ddpm.sample import noise_start, sample
from dipddpm.ddpm.train import batch_indices, checkpoint_steps_done, load_model, train
from dipddpm.grid import checkpoint_name

MICRO = {"ch": 8, "ch_mult": (1, 2), "attn": (4,), "norm_groups": 4}


def data(n: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 8, 8), dtype=np.float32)


def run(out_dir, **kwargs) -> pd.DataFrame:
    settings = dict(
        preset="tiny",
        unet_overrides=MICRO,
        schedule="linear",
        T=50,
        steps=6,
        batch_size=5,
        lr=1e-3,
        ema_decay=0.99,
        grad_clip=1.0,
        checkpoint_steps=[3, 6],
        seed=7,
        device="cpu",
        eval_images=data(4, seed=1),
        eval_every=3,
        warmup=2,
        resume_every=2,
        progress=False,
    )
    settings.update(kwargs)
    return train(data(), out_dir, **settings)


def assert_same_state(a: dict, b: dict) -> None:
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    for pa, pb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        for name in pa:
            assert torch.equal(pa[name], pb[name]), f"optimizer {name} differs"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    curve = run(out)
    return out, curve


@pytest.mark.parametrize("killed_after", [3, 5])
def test_resume_after_a_kill_reaches_the_same_weights(tmp_path, uninterrupted, killed_after):
    """Killed after 3 steps resumes from the step-3 checkpoint; after 5, from resume.pt (step 4)."""
    full_dir, full_curve = uninterrupted
    partial = run(tmp_path, stop_after=killed_after)
    assert len(partial) == killed_after
    resumed = run(tmp_path)
    want = torch.load(full_dir / "resume.pt", weights_only=True)
    got = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert got["step"] == want["step"] == 6
    assert_same_state(got, want)
    assert torch.equal(
        torch.load(tmp_path / checkpoint_name(6), weights_only=True)["model"]["conv_out.weight"],
        want["model"]["conv_out.weight"],
    )
    # The curve is complete and its losses match the uninterrupted run's.
    assert resumed["step"].tolist() == list(range(1, 7))
    np.testing.assert_array_equal(resumed["loss"].to_numpy(), full_curve["loss"].to_numpy())


def test_checkpoints_and_curve_are_written(uninterrupted):
    out, curve = uninterrupted
    assert checkpoint_steps_done(out) == [3, 6]
    on_disk = pd.read_csv(out / "curve.csv")
    assert on_disk["step"].tolist() == list(range(1, 7))
    for column in (
        "loss",
        "images_per_s",
        "elapsed_s",
        "lr",
        "psnr_mean",
        "ema_psnr_mean",
        "psnr_t50",
    ):
        assert column in on_disk.columns
    evaluated = on_disk.dropna(subset=["psnr_mean"])["step"].tolist()
    assert evaluated == [3, 6]
    assert np.isfinite(curve["loss"]).all() and (curve["images_per_s"] > 0).all()
    state = torch.load(out / checkpoint_name(3), weights_only=True)
    assert {"model", "ema", "optimizer", "rng", "step", "config", "curve"} <= set(state)
    assert state["step"] == 3 and len(state["curve"]) == 3
    # No temporary files left behind; the only hidden entry is the kept resume state.
    assert [p.name for p in out.glob(".*")] == [KEPT_DIR]
    assert not list((out / KEPT_DIR).glob(".*"))


def test_same_seed_same_weights_different_seed_different(tmp_path, uninterrupted):
    full_dir, _ = uninterrupted
    run(tmp_path / "a", steps=3, checkpoint_steps=[3])
    run(tmp_path / "b", steps=3, checkpoint_steps=[3], seed=8)
    want = torch.load(full_dir / checkpoint_name(3), weights_only=True)["model"]["conv_in.weight"]
    same = torch.load(tmp_path / "a" / checkpoint_name(3), weights_only=True)["model"]
    other = torch.load(tmp_path / "b" / checkpoint_name(3), weights_only=True)["model"]
    assert torch.equal(same["conv_in.weight"], want)
    assert not torch.equal(other["conv_in.weight"], want)


def test_batches_cover_each_epoch_once():
    seen = torch.cat([batch_indices(12, 4, seed=1, step=k) for k in range(3)])
    assert sorted(seen.tolist()) == list(range(12))
    assert torch.equal(batch_indices(12, 5, 1, 2), batch_indices(12, 5, 1, 2))


def test_truncated_mode_records_t_max_and_evaluates_within_it(tmp_path):
    curve = run(tmp_path, mode="truncated", t_max=10, steps=3, checkpoint_steps=[3])
    state = torch.load(tmp_path / checkpoint_name(3), weights_only=True)
    assert state["config"]["mode"] == "truncated" and state["config"]["t_max"] == 10
    psnr_columns = [c for c in curve.columns if c.startswith("psnr_t")]
    assert max(int(c.removeprefix("psnr_t")) for c in psnr_columns) == 10


def test_bad_mode_settings_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="t_max"):
        run(tmp_path, mode="truncated")
    with pytest.raises(ValueError, match="t_max"):
        run(tmp_path, mode="full", t_max=10)
    with pytest.raises(ValueError, match="mode"):
        run(tmp_path, mode="partial")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train(data() * 3, tmp_path, unet_overrides=MICRO, steps=1, progress=False)


def test_rerun_with_deleted_checkpoints_rewrites_them(tmp_path, uninterrupted):
    """Snakemake deletes a rerun job's outputs but not resume.pt; the checkpoints must come
    back, identical to the first run's."""
    full_dir, _ = uninterrupted
    run(tmp_path)
    for k in (3, 6):
        (tmp_path / checkpoint_name(k)).unlink()
    run(tmp_path)
    for k in (3, 6):
        got = torch.load(tmp_path / checkpoint_name(k), weights_only=True)
        want = torch.load(full_dir / checkpoint_name(k), weights_only=True)
        assert_same_state(got, want)


def test_load_model_gives_the_ema_weights_ready_to_sample(uninterrupted):
    out, _ = uninterrupted
    model, diffusion, meta = load_model(out / checkpoint_name(6), "cpu")
    state = torch.load(out / checkpoint_name(6), weights_only=True)
    assert meta["step"] == 6 and meta["weights"] == "ema" and diffusion.T == 50
    assert not model.training
    assert torch.equal(model.conv_in.weight, state["ema"]["conv_in.weight"])
    raw, _, _ = load_model(out / checkpoint_name(6), "cpu", ema=False)
    assert torch.equal(raw.conv_in.weight, state["model"]["conv_in.weight"])
    gen = torch.Generator().manual_seed(0)
    result = sample(
        model, diffusion, noise_start((2, 3, 8, 8), gen), 50, 5, generator=gen, progress=False
    )
    assert result.images.shape == (2, 3, 8, 8) and result.nfe == 5
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(out / "missing.pt")


def test_every_checkpoint_loads_with_weights_only(uninterrupted):
    """No pickled numpy objects: RNG states are tensors and plain values."""
    out, _ = uninterrupted
    paths = [out / RESUME_FILE, *(out / checkpoint_name(k) for k in (3, 6))]
    paths += [kept_path(out, k) for k in (3, 6)]
    for path in paths:
        state = torch.load(path, weights_only=True)
        assert state["step"] in (3, 6) and isinstance(state["rng"]["torch"], torch.Tensor)
        assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)


def test_rng_state_survives_a_weights_only_round_trip():
    np.random.seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian, part of numpy's state
    torch.manual_seed(4)
    buffer = io.BytesIO()
    torch.save(rng_state(torch.device("cpu")), buffer)
    want = np.random.standard_normal(4), np.random.random(4), torch.rand(4)
    restore_rng(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True), torch.device("cpu"))
    got = np.random.standard_normal(4), np.random.random(4), torch.rand(4)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert torch.equal(got[2], want[2])


def test_a_checkpoint_that_pickles_numpy_is_refused_with_a_reason(tmp_path):
    path = tmp_path / checkpoint_name(1)
    torch.save({"model": {}, "ema": {}, "config": {}, "step": 1, "rng": np.zeros(3)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_model(path)


def test_the_curve_appears_only_when_training_is_complete(tmp_path):
    """A killed run leaves no curve.csv (an output); its progress lies in .resume/."""
    run(tmp_path, stop_after=5)
    assert not (tmp_path / "curve.csv").exists()
    assert pd.read_csv(tmp_path / KEPT_DIR / PROGRESS_FILE)["step"].tolist() == [1, 2, 3, 4]
    run(tmp_path)
    assert pd.read_csv(tmp_path / "curve.csv")["step"].tolist() == list(range(1, 7))


def test_a_checkpoint_lost_everywhere_is_trained_again(tmp_path, uninterrupted):
    """Without its kept link either, a deleted checkpoint caps the resume point."""
    full_dir, _ = uninterrupted
    run(tmp_path, stop_after=5)
    (tmp_path / checkpoint_name(3)).unlink()
    kept_path(tmp_path, 3).unlink()
    run(tmp_path)
    for k in (3, 6):
        got = torch.load(tmp_path / checkpoint_name(k), weights_only=True)
        assert_same_state(got, torch.load(full_dir / checkpoint_name(k), weights_only=True))


def test_a_run_trained_with_another_config_is_not_resumed(tmp_path):
    """Changed settings (a config edit, or another library version) start over instead of
    continuing the old weights, and give what a fresh run gives."""
    images = np.random.default_rng(0).random((8, 3, 32, 32)).astype(np.float32)
    common = dict(preset="tiny", T=20, steps=4, batch_size=2, checkpoint_steps=[2, 4], seed=0)
    train(images, tmp_path / "cell", lr=1e-3, **common)
    train(images, tmp_path / "cell", lr=5e-4, **common)
    train(images, tmp_path / "fresh", lr=5e-4, **common)
    got = torch.load(tmp_path / "cell" / checkpoint_name(4), weights_only=True)
    want = torch.load(tmp_path / "fresh" / checkpoint_name(4), weights_only=True)
    for key, value in want["model"].items():
        assert torch.equal(got["model"][key], value), key
