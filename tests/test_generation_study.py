"""Issue 17's generation part: the ddpm.generation extension (steps, seeds, prior
durations and samples from noise as axes, defaults that keep today's cells), and the
part's curves table, figure and section on a synthetic score table."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from dipddpm import generation_report, grid, study_report, templates
from dipddpm.config import ConfigError, load_config, load_schema, validate_config
from dipddpm.grid import design
from dipddpm.io import save_npz
from dipddpm.stages.generation_metrics import report_generation, write_sample_grid

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
    ],
)
def test_bad_values_are_refused_with_the_key_named(raw, schema, key, edit):
    config = copy.deepcopy(raw)
    edit(config["ddpm"]["generation"])
    with pytest.raises(ConfigError) as info:
        validate_config(config, schema)
    assert f"'{key}" in str(info.value), str(info.value)


def test_own_part_needs_the_classifier(raw, schema):
    """Only the generation part's scores would build its cells, and they need the
    classifier (the default config has one: the study's stored weights)."""
    config = copy.deepcopy(raw)
    config["ddpm"]["generation"]["own_part"] = True
    validate_config(copy.deepcopy(config), schema)
    del config["metrics"]["classifier"]
    with pytest.raises(ConfigError, match="'ddpm.generation.own_part' is true"):
        validate_config(config, schema)


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


SECTION = {
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
CLASSIFIER = {"accuracy": 0.8123, "n_test": 2000, "feature_dim": 128}


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
    text = generation_report.generation_section(curves, comparisons, CLASSIFIER, SECTION)
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


def _abstract(text: str) -> str:
    return text.split("## Abstract")[1].split("\n## ")[0]


def test_the_study_abstract_gains_one_generation_sentence(synthetic, tmp_path):
    absent = study_report.render_study_report(tmp_path, "0", {})
    assert "**Generation**" not in _abstract(absent)
    assert "`make study PART=generation`" in _abstract(absent)
    curves = generation_report.curves_table(*synthetic)
    comparisons = generation_report.equal_nfe_comparisons(curves)
    folder = tmp_path / "generation"
    folder.mkdir()
    curves.to_csv(folder / "generation_curves.csv", index=False)
    section = generation_report.generation_section(curves, comparisons, CLASSIFIER, SECTION)
    (folder / "generation.md").write_text(section)
    text = study_report.render_study_report(tmp_path, "0", {})
    abstract = _abstract(text)
    assert "`make study PART=generation`" not in abstract
    sentence = abstract[abstract.index("**Generation**") :].strip()
    # One sentence (numbers have no space after their point), read from the table: KID
    # with its interval of both arms at 50 NFE, the verdicts and the copying verdict.
    assert sentence.endswith(".") and ". " not in sentence
    assert "512 samples per setting" in sentence
    assert (
        "at 50 NFE, KID is 0.0300 [0.0280, 0.0320] from noise and, from the 400-iteration "
        "DIP priors, 0.0290 [0.0260, 0.0320] at t0 = 300 (difference not resolved)"
    ) in sentence
    assert "lower KID in 1, the higher in 0 and neither in 1" in sentence
    assert "(pixel RMS 0.0512 to 0.0623)" in sentence and "(0.0871)" in sentence
    assert "variations of their sources" in sentence and "0.040 to 0.040" in sentence
    # The section follows with both figures, their links valid from the study root.
    assert "](generation/generation_curves.png)" in text
    assert "](generation/generation_samples.png)" in text
    # Without the curves table the abstract quotes the section's answer paragraph.
    (folder / "generation_curves.csv").unlink()
    text = study_report.render_study_report(tmp_path, "0", {})
    assert "**Generation**: At equal NFE" in _abstract(text)


# Sample grid: 6 sources of 32x32 pixels; DIP-started cells at two t0, two prior
# durations and two step counts, two seeds each; from noise at two NFE, two seeds.
GRID_T0, GRID_ITERS, GRID_STEPS, GRID_SEEDS = (150, 300), (100, 400), (10, 50), (0, 1)


def _cell(folder, identity: dict, record: dict, samples: np.ndarray) -> str:
    folder.mkdir(parents=True)
    save_npz(folder / "samples.npz", samples=samples)
    (folder / "params.json").write_text(json.dumps({"identity": identity, **record}))
    return str(folder / "params.json")


@pytest.fixture
def grid_inputs(tmp_path):
    rng = np.random.default_rng(0)
    source = rng.random((6, 3, 32, 32), dtype=np.float32)
    names = np.array([f"cifar10-jpeg/train/{c}/{i:04d}.jpg" for i, c in enumerate("aabbcc")])
    save_npz(tmp_path / "source.npz", images=source, names=names)
    prior = tmp_path / "dip"
    prior.mkdir()
    save_npz(prior / "output.npz", it100=source[::-1] / 2, it400=source.astype(np.float16))
    rows = [
        dict(purpose="generation", dataset="gen", task="denoise-s5", obs_seed=0)
        | dict(arch="skip", dip_seed=0, iters=it, image=i, seconds=1.0)
        for it in GRID_ITERS
        for i in range(6)
    ]
    pd.DataFrame(rows).to_csv(prior / "metrics.csv", index=False)
    cells = []
    for t0 in GRID_T0:
        for iters in GRID_ITERS:
            for steps in GRID_STEPS:
                for seed in GRID_SEEDS:
                    identity = _identity("dip", steps, t0, iters) | {"sample_seed": str(seed)}
                    record = {"chain_nfe": steps, "wall_seconds": 1.0}
                    noisy = source + rng.normal(0, t0 / 1000, source.shape)
                    folder = tmp_path / f"dip-{t0}-{iters}-{steps}-{seed}"
                    cells.append(_cell(folder, identity, record, noisy.astype(np.float32)))
    for steps in GRID_STEPS:
        for seed in GRID_SEEDS:
            identity = _identity("noise", steps, 1000, None) | {"sample_seed": str(seed)}
            record = {"nfe": steps, "seconds": 1.0, "n": 8}
            samples = rng.random((8, 3, 32, 32), dtype=np.float32)
            cells.append(_cell(tmp_path / f"noise-{steps}-{seed}", identity, record, samples))
    records = {path: json.loads(Path(path).read_text()) for path in cells}
    return dict(
        cells=records,
        sample_npzs=[path.replace("params.json", "samples.npz") for path in cells],
        prior_metrics={str(prior / "metrics.csv"): pd.read_csv(prior / "metrics.csv")},
        prior_npzs=[str(prior / "output.npz")],
        source_npz=tmp_path / "source.npz",
    ), source


def test_the_sample_grid_picks_the_longest_prior_and_most_steps_per_t0(grid_inputs):
    inputs, _ = grid_inputs
    rows = [
        {**r["identity"], "nfe": r.get("chain_nfe", r.get("nfe")), "samples": ""}
        for r in inputs["cells"].values()
    ]
    dip, noise = generation_report.sample_grid_cells(pd.DataFrame(rows))
    assert [g["t0"].tolist() for g in dip] == [["150", "150"], ["300", "300"]]
    assert all(g["iters"].tolist() == ["400", "400"] for g in dip)
    assert all(g["steps"].tolist() == ["50", "50"] for g in dip)
    assert all(g["sample_seed"].tolist() == ["0", "1"] for g in dip)
    assert [g["_nfe"].tolist() for g in noise] == [[10, 10], [50, 50]]


def test_the_sample_grid_is_drawn_pixel_for_pixel_and_deterministic(grid_inputs, tmp_path):
    inputs, source = grid_inputs
    first = tmp_path / "a" / "generation_samples.png"
    note = write_sample_grid(first, **inputs)
    assert "its 400-iteration DIP prior" in note and "2 sample seeds" in note
    assert "each t0 (150, 300; 50 NFE" in note and "at each NFE (10, 50)" in note
    second = tmp_path / "b" / "generation_samples.png"
    write_sample_grid(second, **inputs)
    assert first.read_bytes() == second.read_bytes()
    assert first.stat().st_size <= generation_report.GRID_MAX_BYTES
    pixels = np.asarray(Image.open(first).convert("RGB"))
    # 6 image columns of 96 pixels (scale 3) in 4 groups (source, prior, two t0 of two
    # seeds): 112 label margin + 576 + 2 pads of 3 + 3 gaps of 14 + 6 edge; 4 source rows
    # and 2 rows from noise below a 62-pixel head and a 34-pixel block heading.
    assert pixels.shape == (62 + 4 * 96 + 3 * 3 + 34 + 2 * 96 + 3 + 6, 742, 3)
    # The first row shows source image 0 (rows spread over 6 images: 0, 2, 3, 5), each
    # pixel a 3x3 block; the prior (float16) sits one column and a gap to the right.
    expected = np.rint(np.transpose(source[0], (1, 2, 0)) * 255).astype(np.uint8)
    shown = pixels[62 : 62 + 96 : 3, 112 : 112 + 96 : 3]
    assert np.array_equal(shown, expected)
    assert np.array_equal(pixels[62:158:3, 113:209:3], expected)
    stored = source[0].astype(np.float16).astype(np.float32)
    prior = np.rint(np.transpose(stored, (1, 2, 0)) * 255)
    left = 112 + 96 + 14
    assert np.array_equal(pixels[62:158:3, left : left + 96 : 3], prior.astype(np.uint8))
    empty = generation_report.samples_figure([], [], [], tmp_path / "empty.png")
    assert empty.stat().st_size > 1000


def test_the_stage_writes_the_grid_and_the_section_shows_it(synthetic, grid_inputs, tmp_path):
    inputs, _ = grid_inputs
    scores, classifier = tmp_path / "generation.csv", tmp_path / "cifarnet.json"
    synthetic[0].to_csv(scores, index=False)
    classifier.write_text(json.dumps(CLASSIFIER))
    out = tmp_path / "out"
    report_generation(
        scores,
        list(inputs["cells"]),
        list(inputs["prior_metrics"]),
        classifier,
        out / "generation_curves.csv",
        out / "generation_curves.png",
        out / "generation.md",
        settings=SECTION,
        sample_npzs=inputs["sample_npzs"],
        prior_npzs=inputs["prior_npzs"],
        source_npz=inputs["source_npz"],
        out_samples=out / "generation_samples.png",
    )
    section = (out / "generation.md").read_text()
    assert "](generation_curves.png)" in section and "](generation_samples.png)" in section
    assert "Top: 4 of the 6 source images" in section and "What to see" in section
    assert Image.open(out / "generation_samples.png").size == (742, 690)
