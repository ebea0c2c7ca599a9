"""Issue 17's generation part: the ddpm.generation extension (steps, seeds, prior
durations and samples from noise as axes, defaults that keep today's cells), and the
part's curves table, figure and section on a synthetic score table."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import yaml

from dipddpm import generation_report, grid, study_report, templates
from dipddpm.config import ConfigError, load_config, load_schema, validate_config
from dipddpm.grid import design

SCHEMA = "workflow/schemas/config.schema.yaml"


@pytest.fixture(scope="module")
def schema(root):
    return load_schema(root / SCHEMA)


@pytest.fixture(scope="module")
def raw(root) -> dict:
    return yaml.safe_load((root / "config" / "config.yaml").read_text())


def _load(root, tmp_path, config: dict) -> dict:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path, root / SCHEMA)


def _paths(kind, cells) -> list[str]:
    return [kind.path(cell) for cell in cells]


# --------------------------------------------------------------------------- config


def test_defaults_keep_todays_cells(root, tmp_path, raw):
    default = _load(root, tmp_path, raw)
    cells = design.generation_sample_cells(default)
    sample = default["ddpm"]["sample"]
    # One step count, ddpm.sample's seeds, the longest ddpm.sample prior: today's grid.
    assert {c["steps"] for c in cells} == {"25"}
    assert {c["sample_seed"] for c in cells} == {str(s) for s in sample["seeds"]}
    assert {c["iters"] for c in cells} == {str(sample["prior_iters"])}
    assert design.generation_noise_cells(default) == grid.generate_cells(default)
    assert design.generate_count(default, grid.generate_cells(default)[0]) == sample["generate"]
    # Spelling the defaults out changes no cell, path or order.
    spelled = copy.deepcopy(raw)
    spelled["ddpm"]["generation"].update(
        steps=[25], seeds=list(sample["seeds"]), prior_iters=400, obs_seeds=[0]
    )
    explicit = _load(root, tmp_path, spelled)
    for kind in ("sample", "dip", "generate", "observation"):
        assert grid.cells(explicit)[kind] == grid.cells(default)[kind], kind
    assert grid.sample_cells(explicit) == grid.sample_cells(default)


def test_steps_seeds_and_prior_durations_are_axes(root, tmp_path, raw):
    config = copy.deepcopy(raw)
    config["ddpm"]["generation"].update(
        steps=[10, 25, 50], seeds=[0, 1, 2, 3], prior_iters=[100, 400]
    )
    full = _load(root, tmp_path, config)
    cells = design.generation_sample_cells(full)
    # t0 300 and 600 on the full model, 300 on the truncated one (t_max 300).
    assert len(cells) == 3 * 3 * 4 * 2
    settings = grid.generation_settings(full, grid.SAMPLE)
    assert len(settings) == 3 * 3 * 2
    assert all(len(grid.setting_cells(full, grid.SAMPLE, s)) == 4 for s in settings)
    assert {c["iters"] for c in cells} == {"100", "400"}
    # One DIP fit serves both durations.
    assert len(design.generation_dip_cells(full)) == 1
    assert len(set(_paths(grid.SAMPLE, cells))) == len(cells)


def test_noise_block_and_own_part(root, tmp_path, raw):
    config = copy.deepcopy(raw)
    config["ddpm"]["sample"]["generate"] = 0
    classifier = {"train": "cifar10-train", "test": "cifar10-ref", "min_test_images": 500}
    config["metrics"]["classifier"] = classifier
    config["ddpm"]["generation"].update(
        noise={"generate": 128, "steps": [10, 100], "seeds": [0, 1]}, own_part=True
    )
    full = _load(root, tmp_path, config)
    noise = design.generation_noise_cells(full)
    assert len(noise) == 2 * 2 and {c["mode"] for c in noise} == {"full"}
    assert grid.generate_cells(full) == []
    assert all(design.generate_count(full, c) == 128 for c in noise)
    assert len(grid.generation_settings(full, grid.GENERATE)) == 2
    # A part of its own: Example 1's grid and DIP fits lose the generation cells, the
    # listing of every cell keeps them.
    assert not [c for c in grid.sample_cells(full) if c["purpose"] == "generation"]
    assert not [c for c in grid.dip_cells(full) if c["purpose"] == "generation"]
    assert [c for c in grid.cells(full)["sample"] if c["purpose"] == "generation"]
    assert grid.cells(full)["generate"] == noise
    # Noise steps and seeds default to the generation ones.
    config["ddpm"]["generation"]["noise"] = {"generate": 8}
    config["ddpm"]["generation"].update(steps=[10, 50], seeds=[3])
    defaults = design.generation_noise(_load(root, tmp_path, config))
    assert defaults == {"generate": 8, "steps": [10, 50], "seeds": [3]}


def test_the_study_part_leaves_the_other_parts_alone(root):
    study = load_config(root / "config" / "study.yaml", root / SCHEMA)
    without = copy.deepcopy(study)
    del without["ddpm"]["generation"]
    assert grid.sample_cells(without) == grid.sample_cells(study)
    assert grid.dip_cells(without) == grid.dip_cells(study)
    # Every compared setting pools 4 seeds of 128 samples: >= 500 samples each.
    for kind in (grid.SAMPLE, grid.GENERATE):
        for setting in grid.generation_settings(study, kind):
            assert len(grid.setting_cells(study, kind, setting)) == 4
    sources = study["data"]["datasets"][study["ddpm"]["generation"]["dataset"]]["n"]
    assert (
        4 * sources >= 500
        and design.generate_count(study, design.generation_noise_cells(study)[0]) == 128
    )


@pytest.mark.parametrize(
    "key, edit",
    [
        ("ddpm.generation.prior_iters", lambda g: g.update(prior_iters=[150])),
        ("ddpm.generation.steps", lambda g: g.update(steps=[10, 10])),
        ("ddpm.generation.seeds", lambda g: g.update(seeds=[1, 1])),
        ("ddpm.generation.noise.steps", lambda g: g.update(noise={"generate": 4, "steps": [5, 5]})),
        ("ddpm.generation.noise.generate", lambda g: g.update(noise={"generate": 99})),
        ("ddpm.generation.steps", lambda g: g.update(steps=[0])),
        ("ddpm.generation.noise", lambda g: g.update(noise={"generate": 4, "count": 2})),
        ("ddpm.generation", lambda g: g.update(prior_iter=400)),
        ("ddpm.generation.own_part", lambda g: g.update(own_part=True)),
    ],
)
def test_bad_values_are_refused_with_the_key_named(raw, schema, key, edit):
    config = copy.deepcopy(raw)
    edit(config["ddpm"]["generation"])
    with pytest.raises(ConfigError) as info:
        validate_config(config, schema)
    assert f"'{key}" in str(info.value), str(info.value)


def test_noise_needs_a_full_model(raw, schema):
    config = copy.deepcopy(raw)
    config["ddpm"]["modes"] = [{"mode": "truncated", "t_max": 300}]
    config["ddpm"]["generation"]["noise"] = {"generate": 16}
    with pytest.raises(ConfigError, match="'ddpm.generation.noise' asks for samples from noise"):
        validate_config(config, schema)


def test_the_study_and_paper_configs_pass(root, schema):
    for name in ("study.yaml", "paper.yaml"):
        validate_config(yaml.safe_load((root / "config" / name).read_text()), schema)


# --------------------------------------------------------------------------- report

MODEL = dict(train_dataset="cifar10-train50k", preset="tiny", schedule="linear")
MODEL |= dict(train_steps="5000", train_seed="0", ckpt="5000", sampler="ddim", eta="0")


def _identity(start: str, steps: int, t0: int, iters: int | None) -> dict:
    cell = dict(MODEL, mode="full", t_max="1000", start=start, t0=t0, steps=steps)
    cell |= dict(purpose="generation", lam=0, k=1)
    if start == "dip":
        cell |= dict(dataset="gen", task="denoise-s5", obs_seed=0, arch="skip")
        cell |= dict(iters=iters, dip_seed=0)
    method = "dip+ddpm" if start == "dip" else "ddpm-noise"
    return grid.full_identity(cell, method)


# (start, NFE, t0, iters, KID, its std, diversity, distance to source)
SETTINGS = [
    ("noise", 10, 1000, None, 0.0500, 0.0020, 9.00, math.nan),
    ("noise", 50, 1000, None, 0.0300, 0.0010, 9.50, math.nan),
    ("dip", 10, 300, 400, 0.0200, 0.0010, 7.25, 0.0512),
    ("dip", 50, 300, 400, 0.0290, 0.0015, 8.75, 0.0623),
]


@pytest.fixture
def synthetic():
    scores, records, priors = [], [], []
    for start, nfe, t0, iters, kid, std, div, source in SETTINGS:
        identity = _identity(start, nfe, t0, iters)
        row = {**identity, "sample_seed": grid.POOLED_SEEDS, "n_seeds": 4, "n_per_seed": 128}
        row |= dict(kid_cifarnet=kid, kid_cifarnet_std=std)
        row |= dict(kid_cifarnet_ci_low=kid - 2 * std, kid_cifarnet_ci_high=kid + 2 * std)
        row |= dict(diversity_all_feature=div, diversity_all_feature_ci_low=div - 0.1)
        row |= dict(diversity_all_feature_ci_high=div + 0.1, dist_source_pixel_rms=source)
        row |= dict(coverage_entropy_normalised=0.9 if start == "dip" else 0.95)
        row |= dict(coverage_classes_present=10, memo_pixel_baseline_median=0.0871)
        row |= dict(memo_pixel_median_ratio=1.1, memo_pixel_share_below_baseline_p5=0.04)
        scores.append(row)
        for seed in range(4):
            record = {"identity": {**identity, "sample_seed": str(seed)}}
            if start == "dip":
                record |= {"chain_nfe": nfe, "wall_seconds": 12.8 * nfe / 10}
            else:
                record |= {"nfe": nfe, "seconds": 12.8 * nfe / 10, "n": 128}
            records.append(record)
    for image in range(128):
        for it, seconds in ((100, 64.0), (400, 256.0)):
            priors.append(
                dict(purpose="generation", dataset="gen", task="denoise-s5", obs_seed=0)
                | dict(arch="skip", dip_seed=0, iters=it, image=image, seconds=seconds)
            )
    scores = pd.DataFrame(scores).astype({c: str for c in generation_report.SETTING_COLUMNS})
    return scores, records, pd.DataFrame(priors)


def test_the_curves_table_joins_scores_timings_and_priors(synthetic):
    curves = generation_report.curves_table(*synthetic)
    assert list(curves["arm"]) == ["noise", "noise", "dip", "dip"]
    assert list(curves["nfe"]) == [10, 50, 10, 50]
    dip = curves[curves["arm"] == "dip"].iloc[1]
    # 64 s per cell of 128 images; the 400-iteration prior took 256 s for 128 images.
    assert dip["sample_seconds_per_image"] == pytest.approx(64.0 / 128)
    assert dip["dip_seconds_per_image"] == pytest.approx(2.0)
    assert dip["seconds_per_image_with_prior"] == pytest.approx(2.5)
    assert dip["dip_seconds_per_sample"] == pytest.approx(0.5)
    assert dip["n_samples"] == 512
    assert math.isnan(curves.iloc[0]["seconds_per_image_with_prior"])


def test_equal_nfe_comparisons_and_the_section(synthetic):
    curves = generation_report.curves_table(*synthetic)
    comparisons = generation_report.equal_nfe_comparisons(curves)
    assert list(comparisons["nfe"]) == [10, 50]
    first = comparisons.iloc[0]
    assert first["kid_diff"] == pytest.approx(-0.03)
    half = 1.959963984540054 * math.hypot(0.001, 0.002)
    assert first["kid_diff_ci_high"] == pytest.approx(-0.03 + half)
    assert first["kid_verdict"] == "lower" and first["diversity_verdict"] == "lower"
    assert comparisons.iloc[1]["kid_verdict"] == "not resolved"
    settings = {
        "dataset": "gen",
        "dataset_spec": {"n": 128},
        "task": "denoise-s5",
        "task_spec": {"kind": "denoise", "sigma": 5},
        "prior_arch": "skip",
        "dip_iters": 600,
        "T": 1000,
        "schedule": "linear",
        "sampler": "ddim",
        "eta": 0.0,
        "train_dataset": "cifar10-train50k",
        "reference": "cifar10-ref",
        "reference_spec": {"n": 1000},
        "noise_per_seed": 128,
    }
    classifier = {"accuracy": 0.8123, "n_test": 2000, "feature_dim": 128}
    text = generation_report.generation_section(curves, comparisons, classifier, settings)
    assert not templates.PLACEHOLDER.search(text)
    assert "81.2 %" in text and "cifar10-ref" in text
    answer = [p for p in text.split("\n\n") if p.startswith("**Answer**")]
    assert len(answer) == 1
    answer = answer[0]
    # Known numbers: KID of both arms at 50 NFE with their intervals, the difference at
    # 10 NFE is resolved (1 of 2 lower), the distances to source vs the baseline.
    assert "lower KID than generation from noise in 1 of 2" in answer
    assert "0.0300 [0.0280, 0.0320]" in answer and "0.0290 [0.0260, 0.0320]" in answer
    assert "0.0512" in answer and "0.0623" in answer and "0.0871" in answer
    assert "they are variations of their sources" in answer
    assert "0.900 to 0.900" in answer and "0.950 to 0.950" in answer
    # The study report's abstract reads it.
    assert study_report._answer_paragraph(text, "**Generation**: ").startswith(
        "**Generation**: At equal NFE"
    )


def test_the_figure_is_written(synthetic, tmp_path):
    curves = generation_report.curves_table(*synthetic)
    paths = generation_report.curves_figure(curves, tmp_path / "generation_curves")
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.stat().st_size > 1000 for p in paths)
    empty = generation_report.curves_figure(pd.DataFrame(), tmp_path / "empty")
    assert all(p.exists() for p in empty)


def test_a_run_without_samples_from_noise_says_so(synthetic):
    scores, records, priors = synthetic
    dip_only = scores[scores["start"] == "dip"]
    curves = generation_report.curves_table(dip_only, records, priors)
    comparisons = generation_report.equal_nfe_comparisons(curves)
    assert comparisons.empty
    text = generation_report.answer(curves, comparisons)
    assert text.startswith("**Answer**:") and "no samples from noise" in text
