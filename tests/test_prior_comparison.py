"""Issue 19's comparison tables: images seen and seconds per checkpoint (the training
priors' cost on the prior-trained models only), per-image pairing against the truncated
model with observation seeds averaged, steps to a common target, one Holm family."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dipddpm import prior_comparison as pc
from dipddpm.stages.prior_comparison import section


@pytest.fixture(autouse=True)
def fewer_bootstrap_draws(monkeypatch):
    """The verdicts here are far from the CI edges; 1,000 draws keep the tests quick."""
    monkeypatch.setattr(pc, "N_BOOT", 1000)


MODES = {"truncated": ("150", 0.0), "full": ("1000", 0.0), "prior-p0.5": ("150", 0.5)}
IMAGES = 12


def samples(ckpts=(100, 200), ladder=(25,), t0s=(57,), offsets=None) -> pd.DataFrame:
    """Per-image rows: PSNR = 20 + image/10 + mode offset + checkpoint gain (+ steps gain),
    with observation-seed noise that averages out per image."""
    offsets = offsets or {m: o for m, (_, o) in MODES.items()}
    rng = np.random.default_rng(0)
    rows = []
    for mode, (t_max, _) in MODES.items():
        for ckpt in ckpts:
            for t0 in t0s:
                for steps in ladder:
                    for image in range(IMAGES):
                        for obs, sign in (("0", 1), ("1", -1)):
                            jitter = 0.05 * rng.standard_normal() if mode == "full" else 0.0
                            psnr = 20 + image / 10 + offsets[mode] + ckpt / 1000
                            psnr += min(steps, 10) / 10 + sign * 0.3 + jitter
                            rows.append(
                                dict(
                                    dataset="cifar10-study",
                                    task="denoise-s25",
                                    image=image,
                                    obs_seed=obs,
                                    mode=mode,
                                    t_max=t_max,
                                    ckpt=str(ckpt),
                                    t0=str(t0),
                                    steps=str(steps),
                                    sampler="ddim",
                                    eta="0",
                                    iters="400",
                                    arch="skip",
                                    lam="0",
                                    k="1",
                                    sample_seed="0",
                                    psnr=psnr,
                                    ssim=0.5 + psnr / 100,
                                )
                            )
    return pd.DataFrame(rows)


def curves(ckpts=(100, 200)) -> pd.DataFrame:
    rows = [
        dict(mode=mode, step=step, elapsed_s=step * 0.5, ema_psnr_t57=25 + step / 100)
        for mode in MODES
        for step in range(50, max(ckpts) + 1, 50)
    ]
    return pd.DataFrame(rows)


def test_convergence_rows_count_images_seen_and_the_priors_cost_on_prior_models_only():
    table = pc.convergence_table(samples(), curves(), {"prior-p0.5": 300.0}, 64, 57, 25)
    assert list(table["mode"].unique()) == ["truncated", "full", "prior-p0.5"]
    row = table[(table["mode"] == "prior-p0.5") & (table["ckpt"] == 200)].iloc[0]
    assert row["images_seen"] == 200 * 64
    assert row["train_seconds"] == 100.0 and row["prior_seconds"] == 300.0
    assert row["total_seconds"] == 400.0
    assert row["probe_psnr_t57"] == pytest.approx(27.0)
    # Observation seeds (+-0.3 dB) average out: n counts images, the difference is exact.
    assert row["n_images"] == IMAGES and row["obs_seeds"] == "0,1"
    assert row["psnr_diff"] == pytest.approx(0.5)
    assert row["psnr_verdict"] == "helps"
    truncated = table[table["mode"] == "truncated"]
    assert (truncated["prior_seconds"] == 0).all() and truncated["psnr_diff"].isna().all()


def test_a_prior_trained_model_without_its_fit_seconds_is_refused():
    with pytest.raises(ValueError, match=r"no DIP fit seconds for prior-trained \['prior-p0.5'\]"):
        pc.convergence_table(samples(), curves(), {}, 64, 57, 25)


def test_without_the_reference_model_nothing_is_compared():
    frame = samples()
    frame = frame[frame["mode"] != "truncated"]
    with pytest.raises(ValueError, match="no 'truncated' model"):
        pc.restoration_table(frame, 200)


def test_restoration_pairs_each_setting_against_the_reference_at_the_same_setting():
    frame = samples(ckpts=(200,), ladder=(1, 5, 25), t0s=(33, 57))
    table = pc.restoration_table(frame, 200)
    assert len(table) == len(MODES) * 2 * 3
    prior = table[table["mode"] == "prior-p0.5"]
    assert np.allclose(prior["psnr_diff"], 0.5)
    full = table[table["mode"] == "full"]
    assert (full["psnr_verdict"] == "no measurable difference").all()


def test_steps_to_quality_uses_the_reference_best_as_a_common_target():
    frame = samples(ckpts=(200,), ladder=(1, 2, 5, 10, 25))
    steps = pc.steps_to_quality(pc.restoration_table(frame, 200), 57).set_index("mode")
    # Reference best = 10 steps or more (gain saturates at 10): target = that - 0.1 dB.
    assert steps.loc["truncated", "steps_to_target"] == 10
    # 0.5 dB ahead, the prior-trained model reaches the same target with 5 steps.
    assert steps.loc["prior-p0.5", "steps_to_target"] == 5
    assert steps.loc["prior-p0.5", "steps_to_own_best"] == 10


def test_steps_to_quality_says_when_a_model_never_reaches_the_target():
    frame = samples(
        ckpts=(200,), ladder=(1, 25), offsets={"truncated": 0, "full": -2, "prior-p0.5": 0}
    )
    steps = pc.steps_to_quality(pc.restoration_table(frame, 200), 57).set_index("mode")
    assert pd.isna(steps.loc["full", "steps_to_target"])


def test_the_headline_is_one_holm_family_with_a_verdict_per_model():
    table = pc.headline(samples(), {"ckpt": 200, "t0": 57, "steps": 25})
    assert set(table["name"]) == {"full - truncated", "prior-p0.5 - truncated"}
    assert set(table["value"]) == {"psnr", "ssim"}
    assert table["p_holm"].notna().all()
    prior = table[(table["name"] == "prior-p0.5 - truncated") & (table["value"] == "psnr")]
    assert prior["verdict"].item() == "helps" and prior["n"].item() == IMAGES
    text = pc.answer(table)
    assert "prior-p0.5 vs truncated: +0.50 dB" in text and f"n = {IMAGES} images" in text


def test_the_section_states_the_answer_first_and_every_table():
    frame = samples(ckpts=(100, 200), ladder=(5, 25))
    restoration = pc.restoration_table(frame, 200)
    tables = {
        "convergence": pc.convergence_table(frame, curves(), {"prior-p0.5": 30.0}, 64, 57, 25),
        "restoration": restoration,
        "steps_to_quality": pc.steps_to_quality(restoration, 57),
        "headline": pc.headline(frame, {"ckpt": 200, "t0": 57, "steps": 25}),
        "training_priors": pd.DataFrame(
            [
                dict(
                    mode="prior-p0.5",
                    dataset="cifar10-train512",
                    task="denoise-s25",
                    arch="skip",
                    iters=400,
                    n_images=512,
                    prior_psnr=27.1,
                    observation_psnr=20.2,
                    fit_seconds=30.0,
                )
            ]
        ),
    }
    text = section(tables)
    lines = text.splitlines()
    assert lines[2].startswith("**Answer**") and "helps" in lines[2]
    assert "512 cifar10-train512 images" in text and "fitted in 30 s" in text
    assert "| prior-p0.5 | 200 | 12,800 | 100 + 30 |" in text
