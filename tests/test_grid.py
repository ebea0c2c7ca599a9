"""The experimental design owns cell identity: expansion, one path per cell, paths that map
back to their identity, and no path pattern spelled anywhere else."""

from __future__ import annotations

import copy
import re
from collections import Counter

import pytest

from dipddpm import grid
from dipddpm.config import load_config


def load(root, name: str) -> dict:
    return load_config(root / "config" / name, root / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture(scope="module")
def default(root):
    return load(root, "config.yaml")


@pytest.fixture(scope="module")
def paper(root):
    return load(root, "paper.yaml")


@pytest.fixture(scope="module")
def study(root):
    return load(root, "study.yaml")


def test_default_config_expands_to_the_documented_cells(default):
    cells = grid.cells(default)
    counts = {kind: len(found) for kind, found in cells.items()}
    # 4 archs on denoising + skip on inpainting and SR, plus the generation prior.
    assert counts["dip"] == 7
    assert counts["train"] == 2
    # Each model (full; truncated, t_max 300): DDPM alone from the observation and 3 t0 x
    # (lam 0, 0.5) at 2 step counts = 14 (no chain from noise: denoising is never scored
    # on a generation); convergence at ckpt 150: 2; generation: 3.
    assert counts["sample"] == 33
    assert counts["generate"] == 2 and counts["earlystop"] == 2
    purposes = Counter(c["purpose"] for c in cells["sample"])
    assert purposes == {"restoration": 30, "generation": 3}
    assert not [
        c for c in cells["sample"] if c["purpose"] == "restoration" and c["start"] == "noise"
    ]


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "study.yaml"])
def test_every_cell_has_one_path_that_maps_back_to_its_identity(root, name):
    config = load(root, name)
    for kind_name, found in grid.cells(config).items():
        kind = grid.KINDS[kind_name]
        paths = [kind.path(cell) for cell in found]
        assert len(set(paths)) == len(paths), f"two {kind_name} cells share a path"
        for cell, path in zip(found, paths, strict=True):
            assert grid.parse(path) == cell
            assert grid.kind_of(f"{path}/x.csv") is kind
            # The wildcard pattern Snakemake matches accepts exactly the canonical values.
            pattern = re.escape(kind.template).replace(r"\{", "{").replace(r"\}", "}")
            regex = pattern.format(
                **{a: f"(?P<{a}>{grid.wildcard_constraints()[a]})" for a in kind.axes}
            )
            match = re.fullmatch(regex, path)
            assert match and match.groupdict() == cell


def test_paper_config_scales_every_axis(paper):
    cells = grid.cells(paper)
    assert len(cells["dip"]) > 90 and len(cells["sample"]) > 700
    assert {c["obs_seed"] for c in cells["dip"]} == {"0", "1", "2"}
    assert {c["dip_seed"] for c in cells["dip"]} == {"0"}


def test_no_cell_asks_a_truncated_model_for_a_start_it_never_trained(paper, default, study):
    for config in (default, paper, study):
        for cell in grid.sample_cells(config):
            start = (
                grid.sigma_matched_step(config, cell["task"])
                if cell["t0"] == "sigma"
                else int(cell["t0"])
            )
            assert start <= int(cell["t_max"]), cell


def test_study_config_has_the_scale_example_1_needs(study):
    cells = grid.cells(study)
    images = study["data"]["datasets"][study["ddpm"]["sample"]["dataset"]]["n"]
    assert images >= 32
    sigmas = {
        study["tasks"][t]["sigma"] for t in grid.sample_tasks(study) if "sigma" in study["tasks"][t]
    }
    assert len(sigmas) >= 3
    restoration = [c for c in cells["sample"] if c["purpose"] == "restoration"]
    denoising = {(c["task"], c["obs_seed"]) for c in restoration if c["task"].startswith("denoise")}
    assert len(denoising) >= 3 * 2  # 3 sigmas x 2 observation seeds
    assert {grid.task_kind(study, c["task"]) for c in restoration} == {"denoise", "inpaint", "sr"}
    # The prior's architecture and duration are axes of the sample cells.
    priors = {(c["arch"], c["iters"]) for c in restoration if c["start"] == "dip"}
    assert len({a for a, _ in priors}) >= 2 and len({i for _, i in priors}) >= 3
    assert len(study["ddpm"]["checkpoints"]) >= 6
    assert all(study["ddpm"]["steps"] >= 5000 for _ in cells["train"])


def test_starts_a_model_cannot_serve_are_left_out_by_name(study):
    config = copy.deepcopy(study)
    config["ddpm"]["sample"]["t0"] = [57, 300]
    left = grid.left_out_cells(config)
    reasons = {(r["mode"], r["start"], r["t0"]) for r in left}
    assert ("truncated", "dip", "300") in reasons and ("truncated", "noise", "1000") in reasons
    # Denoising never starts from noise: nothing to leave out there.
    assert not [r for r in left if r["task"].startswith("denoise") and r["start"] == "noise"]
    assert all(r["mode"] == "truncated" for r in left)
    assert all("t_max 150" in r["reason"] for r in left)
    cells = grid.sample_cells(config)
    assert not [c for c in cells if c["mode"] == "truncated" and c["t0"] == "300"]
    assert [c for c in cells if c["mode"] == "full" and c["t0"] == "300"]


def test_seeds_are_three_separate_axes(default):
    config = copy.deepcopy(default)
    config["observation_seeds"] = [0, 1]
    config["dip"]["seeds"] = [0]
    config["ddpm"]["sample"]["seeds"] = [0, 1, 2, 3]
    cells = grid.sample_cells(config)
    one_prior = [
        c
        for c in cells
        if c["start"] == "dip" and c["t0"] == "100" and c["obs_seed"] == "0"
        and c["mode"] == "full" and c["steps"] == "25" and c["lam"] == "0" and c["ckpt"] == "300"
    ]  # fmt: skip
    # Four samples from the same prior (same observation, same DIP seed).
    assert sorted(c["sample_seed"] for c in one_prior) == ["0", "1", "2", "3"]
    assert {grid.DIP.path(grid.prior_of(c)) for c in one_prior} == {
        grid.DIP.path(grid.prior_of(one_prior[0]))
    }
    assert {c["obs_seed"] for c in grid.dip_cells(config)} == {"0", "1"}


@pytest.mark.parametrize(
    "value, spelled", [(0, "0"), (0.5, "0.5"), (1.0, "1"), ("00", "0"), (None, "none")]
)
def test_canonical_values(value, spelled):
    assert grid.canonical(value) == spelled


@pytest.mark.parametrize("axis, bad", [("obs_seed", "00"), ("lam", "."), ("lam", "0.50"),
                                       ("eta", "1.0"), ("t0", "01")])  # fmt: skip
def test_wildcards_refuse_non_canonical_spellings(axis, bad):
    assert not re.fullmatch(grid.wildcard_constraints()[axis], bad)


def test_a_row_carries_every_identity_column(default):
    import pandas as pd

    cell = grid.sample_cells(default)[0]
    frame = grid.stamp(pd.DataFrame({"image": [0, 1], "psnr": [1.0, 2.0]}), cell, "ddpm-obs")
    assert set(grid.IDENTITY_COLUMNS) <= set(frame.columns)
    assert {"code_commit", "code_hash"} <= set(frame.columns)
    assert frame["es_schedule"].eq("none").all() and frame["method"].eq("ddpm-obs").all()


# Spelled in pieces so that this file does not match its own patterns.
TILDE = "~"
SEGMENT = re.compile(r"[A-Za-z0-9_]" + TILDE + r"[A-Za-z0-9_<{]|" + TILDE + r"\{")


def test_no_path_pattern_is_spelled_outside_the_grid_module(root):
    """Every key-value path segment and every wildcard segment lives in the grid package."""
    files = [
        *root.glob("Snakefile"),
        *root.glob("workflow/**/*.smk"),
        *root.glob("workflow/profiles/**/*.yaml"),
        *root.glob("scripts/**/*.py"),
        *root.glob("tests/**/*.py"),
    ]
    offenders = []
    for path in files:
        if path.parent == root / "scripts" / "dipddpm" / "grid":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if SEGMENT.search(line):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not offenders, "path patterns outside the grid package:\n" + "\n".join(offenders)


def test_sample_blocks_are_a_union_of_small_products(study):
    cells = grid.sample_cells(study)
    s25 = [c for c in cells if c["task"] == "denoise-s25" and c["start"] == "dip"]
    # The ladder block: every step count, only on sigma 25.
    assert {c["steps"] for c in s25} == {"1", "2", "5", "10", "25", "50", "100"}
    other = [c for c in cells if c["task"] == "denoise-s50" and c["start"] == "dip"]
    assert {c["steps"] for c in other} == {"25"}
    # The architecture x duration block is on sigma 25 only.
    assert {c["arch"] for c in other} == {"skip"} and {c["arch"] for c in s25} == {
        "skip",
        "encdec",
    }
    # A cell two blocks share is one cell.
    paths = [grid.SAMPLE.path(c) for c in cells]
    assert len(paths) == len(set(paths))
    # t0 = 0 is the prior itself: one step count, one chain, never guided.
    zero = [c for c in cells if c["start"] == "dip" and c["t0"] == "0"]
    assert zero and all(c["k"] == "1" and c["lam"] == "0" for c in zero)
    assert len({c["steps"] for c in zero}) == 1
    # K-sample means only where chains differ (never from the observation with DDIM eta 0).
    assert not [c for c in cells if c["start"] == "obs" and c["eta"] == "0" and c["k"] != "1"]
    assert [c for c in cells if c["start"] == "dip" and c["k"] == "4"]


def test_the_prior_training_part_is_its_own_models_and_cells(study):
    """Issue 19's comparison: four models of one shorter training length, every checkpoint
    sampled from the held-out DIP priors, without changing a main-model or Example 1 cell."""
    without = copy.deepcopy(study)
    del without["prior_training"]
    assert grid.sample_cells(without) == grid.sample_cells(study)
    assert grid.train_cells(without) == grid.train_cells(study)

    part = study["prior_training"]
    train = grid.prior_training_train_cells(study)
    assert {c["mode"] for c in train} == {"full", "truncated", "prior-p0.5", "prior-ramp"}
    assert {c["train_steps"] for c in train} == {str(part["steps"])}
    assert grid.training_runs(study) == {
        study["ddpm"]["steps"]: study["ddpm"]["checkpoints"],
        part["steps"]: part["checkpoints"],
    }
    assert len(part["checkpoints"]) >= 6

    cells = grid.prior_training_sample_cells(study)
    assert cells and {c["start"] for c in cells} == {"dip"}
    for mode in ("full", "truncated", "prior-p0.5", "prior-ramp"):
        ckpts = {c["ckpt"] for c in cells if c["mode"] == mode and c["t0"] == "57"}
        assert ckpts == {str(s) for s in part["checkpoints"]}
    # Every model restores the same observations from the same stored priors.
    keys = {(c["dataset"], c["task"], c["obs_seed"], c["iters"]) for c in cells}
    assert keys == {("cifar10-study", "denoise-s25", o, "400") for o in ("0", "1")}
    # The training priors: one DIP cell of training images, never a restoration prior.
    training = [c for c in grid.dip_cells(study) if c["purpose"] == "training"]
    assert [c["dataset"] for c in training] == ["cifar10-train512"]


def test_earlystop_datasets_expand_every_block_on_each_dataset(default):
    """``earlystop.datasets`` runs the grid on each dataset; ``dataset`` is the list of one."""
    one = grid.earlystop_cells(default)
    several = copy.deepcopy(default)
    del several["earlystop"]["dataset"]
    several["earlystop"]["datasets"] = ["cifar10-test", "astronaut"]
    cells = grid.earlystop_cells(several)
    assert len(cells) == 2 * len(one)
    assert [c for c in cells if c["dataset"] == "cifar10-test"] == one
    on_astronaut = [c for c in cells if c["dataset"] == "astronaut"]
    assert [{**c, "dataset": "cifar10-test"} for c in on_astronaut] == one
    observations = grid.observation_cells(several)
    assert {"dataset": "astronaut", "task": "denoise-s25", "obs_seed": "0"} in observations
    assert len({grid.EARLYSTOP.path(c) for c in cells}) == len(cells)


def test_cells_differing_only_in_the_variant_share_one_plain_fit(default, study):
    """The plain fit's cell has no variant axis: the default's two schedules read one, the
    study's ablations one per dataset and architecture."""
    cosine, geometric = grid.earlystop_cells(default)
    assert (cosine["es_schedule"], geometric["es_schedule"]) == ("cosine", "geometric")
    path = grid.EARLYSTOP_PLAIN.path(grid.plain_fit_of(cosine), "baselines.csv")
    assert grid.EARLYSTOP_PLAIN.path(grid.plain_fit_of(geometric), "baselines.csv") == path
    assert grid.cells(default)["earlystop_plain"] == [grid.plain_fit_of(cosine)]
    assert grid.kind_of(path) is grid.EARLYSTOP_PLAIN
    assert grid.parse(path) == grid.plain_fit_of(cosine)
    ablations = grid.earlystop_ablation_cells(study)
    plain = {grid.EARLYSTOP_PLAIN.path(grid.plain_fit_of(c)) for c in ablations}
    pairs = {(c["dataset"], c["arch"]) for c in ablations}
    assert len(plain) == len(pairs) == 4 < len(ablations)


def test_the_plain_fit_runs_the_configs_longest_progressive_fit(default, study):
    # config.yaml: 4 noisy stages of 40 and a final 400 (budgets at most 400).
    assert grid.earlystop_plain_iters(default) == 560
    # study.yaml: the ablations' 10 stages, 9 x 100 + 1500, for the grid's cells too.
    assert grid.earlystop_plain_iters(study) == 2400
    budget = copy.deepcopy(default)
    budget["earlystop"]["budgets"] = [200, 1000]
    assert grid.earlystop_plain_iters(budget) == 1000
    schedules = copy.deepcopy(default)
    schedules["earlystop"]["grid"][0]["schedules"] = ["linear"]
    assert grid.earlystop_plain_iters(schedules) == 560


def test_a_generation_setting_pools_its_sample_seeds_in_one_folder(default):
    config = copy.deepcopy(default)
    config["ddpm"]["sample"]["seeds"] = [0, 1, 2]
    for kind, count in ((grid.SAMPLE, 3), (grid.GENERATE, 2)):
        settings = grid.generation_settings(config, kind)
        assert len(settings) == count  # the default's, now three seeds each
        for setting in settings:
            cells = grid.setting_cells(config, kind, setting)
            assert [c["sample_seed"] for c in cells] == ["0", "1", "2"]
            assert {grid.setting_path(kind, c) for c in cells} == {grid.setting_path(kind, setting)}
            path = grid.setting_path(kind, setting, grid.GENERATION_SCORES)
            assert path.endswith(f"/{grid.GENERATION_SCORES}")
            assert grid.parse(path) == setting | {"sample_seed": grid.POOLED_SEEDS}
            assert grid.kind_of(path) is kind
            # No seed is spelled `all`: a setting's folder is never a cell's.
            assert path not in {
                kind.path(c, grid.GENERATION_SCORES) for c in grid.cells(config)[kind.name]
            }
            pattern = re.escape(grid.setting_file(kind, grid.GENERATION_SCORES))
            regex = (
                pattern.replace(r"\{", "{")
                .replace(r"\}", "}")
                .format(**{a: f"(?P<{a}>{grid.wildcard_constraints()[a]})" for a in kind.axes})
            )
            match = re.fullmatch(regex, path)
            assert match and match.groupdict() == setting
    assert not re.fullmatch(grid.wildcard_constraints()["sample_seed"], grid.POOLED_SEEDS)


def test_generation_settings_are_the_dip_started_generation_cells_and_those_from_noise(default):
    dip = grid.generation_settings(default, grid.SAMPLE)
    assert {s["purpose"] for s in dip} == {"generation"} and {s["start"] for s in dip} == {"dip"}
    assert {s["t0"] for s in dip} == {"300", "600"}
    assert {s["steps"] for s in grid.generation_settings(default, grid.GENERATE)} == {"10", "25"}
    with pytest.raises(ValueError, match="no sample_seed axis"):
        grid.setting_path(grid.DIP, grid.dip_cells(default)[0])
    with pytest.raises(ValueError, match="not generation cells"):
        grid.generation_settings(default, grid.TRAIN)
    with pytest.raises(ValueError, match="no sample generation cell"):
        grid.setting_cells(
            default, grid.SAMPLE, grid.setting_of(grid.SAMPLE, grid.sample_cells(default)[0])
        )


def test_a_setting_row_names_its_pooled_seeds(default):
    setting = grid.generation_settings(default, grid.SAMPLE)[0]
    row = grid.setting_identity(setting, "dip+ddpm")
    assert list(row) == list(grid.IDENTITY_COLUMNS)
    assert row["sample_seed"] == grid.POOLED_SEEDS and row["es_schedule"] == grid.NONE
    assert row["method"] == "dip+ddpm" and row["t0"] == setting["t0"]
