"""DDPM-guided DIP in the pipeline (issue 18): the grid's guided cells, the config checks of
``earlystop.guided``, the cell's stage on a tiny DDPM and the summary's paired numbers."""

from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from snakemake.utils import validate

from dipddpm import grid
from dipddpm.cifarnet import build_model, save_classifier
from dipddpm.config import ConfigError, load_schema, validate_config
from dipddpm.ddpm.unet import build_unet
from dipddpm.earlystop.guided import COST_COLUMNS, FORMS, GUIDED_DEFAULTS
from dipddpm.earlystop.guided_summary import (
    REMOVES,
    STILL_NEEDED,
    stopping_verdict,
    summarise,
)
from dipddpm.earlystop.table import TABLE_COLUMNS
from dipddpm.io import load_json, save_json, save_npz
from dipddpm.stages import earlystop_guided as stage

SCHEMA = "workflow/schemas/config.schema.yaml"
GUIDED = {
    "datasets": ["cifar10-test"],
    "tasks": ["denoise-s25"],
    "archs": ["skip", "resnet"],
    "iters": 5,
    "forms": ["red", "mix"],
    "lams": [0, 0.5, 1],
    "mode": "truncated",
}


@pytest.fixture(scope="module")
def schema(root):
    return load_schema(root / SCHEMA)


@pytest.fixture
def config(root):
    """The default config with a guided section, two observation and two DIP seeds."""
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config["earlystop"]["guided"] = copy.deepcopy(GUIDED)
    config["observation_seeds"] = [0, 1]
    config["dip"]["seeds"] = [0, 3]
    return config


def _error(config, schema) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, schema)
    return str(info.value)


# --------------------------------------------------------------------------- the cells


def test_lam_zero_is_one_plain_cell_and_every_guided_cell_names_its_model(config, schema):
    validate_config(copy.deepcopy(config), schema)
    cells = grid.guided_cells(config)
    # 2 archs x (lam 0 once + 2 forms x 2 lams) x 2 observation seeds x 2 DIP seeds.
    assert len(cells) == 2 * (1 + 2 * 2) * 2 * 2
    plain = [c for c in cells if c["guide_lam"] == "0"]
    assert len(plain) == 2 * 2 * 2 and {c["guide_form"] for c in plain} == {"none"}
    assert {(c["guide_form"], c["guide_lam"]) for c in cells} == {
        ("none", "0"),
        *((form, lam) for form in ("red", "mix") for lam in ("0.5", "1")),
    }
    model = {"mode": "truncated", "t_max": "300", "ckpt": "300", "train_seed": "0"}
    assert all(c[k] == v for c in cells for k, v in model.items())
    assert set(cells[0]) == set(grid.GUIDED.axes)


def test_guided_cells_have_one_path_each_that_maps_back(config):
    cells = grid.guided_cells(config)
    paths = [grid.GUIDED.path(cell) for cell in cells]
    assert len(set(paths)) == len(paths)
    pattern = re.escape(grid.GUIDED.template).replace(r"\{", "{").replace(r"\}", "}")
    regex = pattern.format(
        **{a: f"(?P<{a}>{grid.wildcard_constraints()[a]})" for a in grid.GUIDED.axes}
    )
    for cell, path in zip(cells, paths, strict=True):
        assert grid.parse(path) == cell and grid.kind_of(f"{path}/x.csv") is grid.GUIDED
        match = re.fullmatch(regex, path)
        assert match and match.groupdict() == cell
    observations = grid.observation_cells(config)
    assert {grid.observation_of(c)["obs_seed"] for c in cells} == {"0", "1"}
    assert all(grid.observation_of(c) in observations for c in cells)


@pytest.mark.parametrize(("axis", "bad"), [("guide_lam", "0.50"), ("guide_form", "both")])
def test_new_axes_refuse_other_spellings(axis, bad):
    assert not re.fullmatch(grid.wildcard_constraints()[axis], bad)


def test_a_config_without_guided_has_no_guided_cells(root):
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    assert grid.guided_cells(config) == []


def test_the_chain_of_the_ddpm_alone_is_example_1s_sampler(config):
    chain = grid.guided_chain(config)
    assert chain == {
        "start": "obs",
        "t0": "sigma",
        "sampler": "ddim",
        "eta": "0",
        "steps": "25",
        "sample_seed": "0",
    }


def test_a_cell_is_given_only_the_settings_of_its_form(root, config):
    validate(config, str(root / SCHEMA))  # fills in the defaults, as the workflow does
    given = {
        cell["guide_form"]: stage.cell_settings(config, cell)
        for cell in grid.guided_cells(config)
        if cell["arch"] == "resnet"
    }
    tiles = {"iters": 5, "tile": 32, "stride": 16}
    assert given["red"]["guided"] == {**tiles, "guidance_sigma": 0.05}
    assert given["mix"]["guided"] == tiles
    assert given["none"]["guided"] == {**tiles, "chain": grid.guided_chain(config)}
    assert given["none"]["arch"] == config["dip"]["archs"]["resnet"]
    assert set(given["none"]["dip"]) == {"lr", "reg_noise_std", "exp_weight", "backtrack"}


# ------------------------------------------------------------------------ config checks


def test_schema_defaults_are_the_variants(schema):
    spec = schema["properties"]["earlystop"]["properties"]["guided"]["properties"]
    for key in ("guidance_sigma", "tile", "stride"):
        assert spec[key]["default"] == GUIDED_DEFAULTS[key]
    assert tuple(spec["forms"]["items"]["enum"]) == FORMS


def _set(path: str, value):
    def change(config):
        section = config
        *parents, last = path.split(".")
        for key in parents:
            section = section[key]
        section[last] = value

    return change


def _perc_without_classifier(config):
    config["earlystop"]["guided"]["forms"] = ["red", "perc"]
    config["metrics"].pop("classifier", None)


def _add_mode(config):
    config["ddpm"]["modes"].append({"mode": "truncated", "t_max": 500})


def _deep_arch(config):
    config["dip"]["archs"]["deep"] = {"kind": "skip", "depth": 5}
    config["earlystop"]["guided"]["archs"] = ["deep"]


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (
            _set("earlystop.guided.datasets", ["cifar-test"]),
            "earlystop.guided.datasets",
            "did you mean",
        ),
        (_set("earlystop.guided.tasks", ["denoise-s26"]), "earlystop.guided.tasks", "not defined"),
        (_set("earlystop.guided.archs", ["skp"]), "earlystop.guided.archs", "did you mean"),
        (_set("earlystop.guided.tasks", ["sr-x2"]), "earlystop.guided.tasks", "not denoising"),
        (_set("earlystop.guided.mode", "prior-x"), "earlystop.guided.mode", "not defined"),
        (_set("earlystop.guided.lams", [0.5]), "earlystop.guided.lams", "must include 0"),
        (_set("earlystop.guided.lams", [0, 0.0, 0.5]), "earlystop.guided.lams", "more than once"),
        (_set("earlystop.guided.lams", [0, 2]), "earlystop.guided.lams", "exceed 1"),
        (_set("earlystop.guided.lams", [0, -1]), "earlystop.guided.lams[1]", "out of range"),
        (_set("earlystop.guided.forms", ["red", "tv"]), "earlystop.guided.forms[1]", "not allowed"),
        (_set("earlystop.guided.stride", 40), "earlystop.guided.stride", "exceeds"),
        (_perc_without_classifier, "earlystop.guided.forms", "metrics.classifier"),
        (_set("earlystop.guided.ckpt", 200), "earlystop.guided.ckpt", "ddpm.checkpoints"),
        (
            _set("earlystop.guided.guidance_sigma", 2),
            "earlystop.guided.guidance_sigma",
            "beyond t_max 300",
        ),
        (
            _set("ddpm.modes", [{"mode": "truncated", "t_max": 20}]),
            "earlystop.guided.tasks",
            "beyond t_max 20",
        ),
        (_add_mode, "earlystop.guided.mode", "give earlystop.guided.t_max"),
        (_set("earlystop.guided.t_max", 400), "earlystop.guided.t_max", "is not the t_max"),
        (
            _set("earlystop.out", "results/earlystop/guided/x"),
            "earlystop.out",
            "inside the guided cells",
        ),
        (_set("earlystop.guided.unknown", 1), "earlystop.guided", "unknown key"),
        (_deep_arch, "dip.archs.deep.depth", "earlystop.guided"),
    ],
)
def test_each_bad_guided_setting_is_refused_by_its_key(config, schema, change, key, words):
    change(config)
    message = _error(config, schema)
    assert f"'{key}" in message
    assert words in message


def test_two_truncated_modes_are_told_apart_by_t_max(config, schema):
    _add_mode(config)
    config["earlystop"]["guided"]["t_max"] = 500
    validate_config(copy.deepcopy(config), schema)
    assert {c["t_max"] for c in grid.guided_cells(config)} == {"500"}


# ----------------------------------------------------------------------------- the stage

UNET = {"ch": 8, "ch_mult": [1, 2], "attn": [4], "image_size": 8, "norm_groups": 4}
MICRO_ARCH = {
    "kind": "skip",
    "depth": 2,
    "channels_down": 8,
    "channels_up": 8,
    "skip_channels": 2,
    "input_channels": 8,
}
DIP = {"lr": 0.01, "reg_noise_std": 0.0333, "exp_weight": 0.99, "backtrack": True}
CHAIN = {"start": "obs", "t0": "sigma", "sampler": "ddim", "eta": "0", "steps": "3"}
MODEL = {
    "train_dataset": "cifar10-train",
    "preset": "tiny",
    "schedule": "linear",
    "mode": "full",
    "t_max": "100",
    "train_steps": "1",
    "train_seed": "0",
    "ckpt": "1",
}


@pytest.fixture(scope="module")
def cell_inputs(tmp_path_factory):
    """A tiny randomly initialised DDPM checkpoint (T = 100) and a two-image 32x32
    sigma-25 observation, as the pipeline writes them."""
    folder = tmp_path_factory.mktemp("guided")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_unet("tiny", **UNET)
        torch.nn.init.normal_(model.conv_out.weight, std=0.05)  # eps = 0 otherwise
    config = {"preset": "tiny", "unet": UNET, "schedule": "linear", "T": 100}
    config |= {"prediction": "eps", "mode": "full", "t_max": 100}
    ckpt = folder / "step.pt"
    torch.save({"ema": model.state_dict(), "config": config, "step": 1}, ckpt)
    yy, xx = np.mgrid[0:32, 0:32] / 32
    clean = np.stack(
        [
            np.stack([0.5 + 0.3 * np.sin(5 * xx + c) * np.cos(3 * yy) for c in range(3)]),
            np.stack([(xx > 0.5) * 0.5 + 0.2 + 0.1 * c for c in range(3)]),
        ]
    ).astype(np.float32)
    noise = np.random.default_rng(0).standard_normal(clean.shape)
    observed = (clean + 25 / 255 * noise).astype(np.float32)
    names = np.array(["waves", "edge"])
    save_npz(folder / "degraded.npz", names=names, clean=clean, observed=observed)
    save_json(folder / "params.json", {"task": "denoise-s25", "kind": "denoise", "sigma": 25})
    return folder, ckpt


def _run_cell(folder, ckpt, form: str, lam: str, classifier=None):
    cell = {
        "dataset": "cifar10-test",
        "task": "denoise-s25",
        "obs_seed": "0",
        "arch": "micro",
        "guide_form": form,
        "guide_lam": lam,
        **MODEL,
        "dip_seed": "0",
    }
    guided = {"iters": 5, "tile": 32, "stride": 16}
    if form == "red":
        guided["guidance_sigma"] = 0.05
    if form == "none":
        guided["chain"] = {**CHAIN, "sample_seed": "0"}
    out = folder / f"{form}-{lam}"
    stage.run_cell(
        folder / "degraded.npz",
        folder / "params.json",
        ckpt,
        cell,
        MICRO_ARCH,
        DIP,
        guided,
        device="cpu",
        threads=1,
        out_table=out / "guided.csv",
        out_trajectory=out / "trajectory.csv",
        out_json=out / "params.json",
        classifier=classifier,
    )
    return out


def test_the_plain_cell_writes_its_fit_and_the_ddpm_alone(cell_inputs):
    folder, ckpt = cell_inputs
    out = _run_cell(folder, ckpt, "none", "0")
    table = stage.read_rows(out / "guided.csv")
    assert set(TABLE_COLUMNS + COST_COLUMNS + ["stop", "seconds", "name"]) <= set(table.columns)
    assert set(grid.IDENTITY_COLUMNS) <= set(table.columns)
    fit = table[table["method"] == "dip"]
    assert sorted(fit["stop"]) == ["final", "final", "peak", "peak"]
    assert (fit[fit["stop"] == "final"]["stop_iter"] == 5).all()
    assert (fit["unet_evals"] == 0).all() and (fit["sampler"] == "none").all()
    alone = table[table["method"].isin(["ddpm-x0", "ddpm-obs"])].set_index(["method", "image"])
    assert len(alone) == 4 and (alone["stop"] == "none").all()
    chain = alone.loc["ddpm-obs"]
    assert (chain["sampler"] == "ddim").all() and (chain["steps"] == "3").all()
    assert (chain["unet_evals"] == 3).all() and (alone.loc["ddpm-x0"]["unet_evals"] == 1).all()
    assert (alone.loc["ddpm-x0"]["steps"] == "none").all()
    assert (alone["t_start"] > 0).all() and np.isfinite(alone["psnr"]).all()
    assert list(table["name"].unique()) == ["waves", "edge"]
    record = load_json(out / "params.json")
    assert record["info"]["unet_evals_total"] == 0 and record["info"]["ddpm_alone"]["steps"] == "3"
    trajectory = pd.read_csv(out / "trajectory.csv")
    assert len(trajectory) == 2 * 5 and (trajectory["guide_form"] == "none").all()


def test_a_red_cell_guides_with_the_checkpoint_and_counts_its_unet(cell_inputs):
    folder, ckpt = cell_inputs
    out = _run_cell(folder, ckpt, "red", "0.5")
    table = stage.read_rows(out / "guided.csv")
    assert set(table["method"]) == {"ddpm-guided-dip"} and len(table) == 4
    assert (table["unet_evals_per_step"] == 1).all()  # one 32x32 tile per image
    final = table[table["stop"] == "final"]
    np.testing.assert_array_equal(final["unet_evals"], 5)
    assert (table["guide_form"] == "red").all() and (table["guide_lam"] == "0.5").all()
    assert load_json(out / "params.json")["info"]["t_guidance"] >= 1


def test_a_perc_cell_reads_the_classifier_and_refuses_to_run_without_it(cell_inputs):
    folder, ckpt = cell_inputs
    weights = folder / "cifarnet.pt"
    save_classifier(weights, build_model(width=4, seed=0).eval(), {"accuracy": 0.1})
    with pytest.raises(ValueError, match="needs the classifier's weights"):
        _run_cell(folder, ckpt, "perc", "0.5")
    out = _run_cell(folder, ckpt, "perc", "0.5", classifier=weights)
    table = stage.read_rows(out / "guided.csv")
    assert set(table["method"]) == {"ddpm-guided-dip"} and (table["guide_form"] == "perc").all()
    assert (table["unet_evals"] == 1).all()  # D(y), one 32x32 tile per image, once
    info = load_json(out / "params.json")["info"]
    assert info["classifier"] == str(weights) and info["classifier_evals_per_step"] == 2


# --------------------------------------------------------------------------- the summary


def _synthetic_rows() -> pd.DataFrame:
    """2 images x 2 observation seeds x 2 DIP seeds; plain DIP (lam 0) and red at 0.5.
    Plain: final = peak - 2 - image; guided: final = plain final + 1 + obs seed, peak =
    guided final + 0.1 (DIP seeds differ by +-0.5, which their mean cancels)."""
    rows = []
    for image, obs, dseed in np.ndindex(2, 2, 2):
        jitter = 0.5 if dseed else -0.5
        plain_peak = 30.0 + image + jitter
        plain_final = plain_peak - 2 - image
        guided_final = plain_final + 1 + obs
        unit = {"image": image, "obs_seed": str(obs), "dip_seed": str(dseed)}
        for form, lam, method, final, peak, evals in (
            ("none", "0", "dip", plain_final, plain_peak, 0),
            ("red", "0.5", "ddpm-guided-dip", guided_final, guided_final + 0.1, 1),
        ):
            for stop, psnr in (("final", final), ("peak", peak)):
                rows.append(
                    {
                        **unit,
                        "guide_form": form,
                        "guide_lam": lam,
                        "method": method,
                        "stop": stop,
                        "psnr": psnr,
                        "ssim": psnr / 100,
                        "stop_iter": 50,
                        "unet_evals_per_step": evals,
                        "seconds": 2.0,
                    }
                )
        for method, psnr in (("ddpm-x0", plain_peak - 0.5), ("ddpm-obs", plain_peak + 1)):
            rows.append(
                {
                    **unit,
                    "guide_form": "none",
                    "guide_lam": "0",
                    "method": method,
                    "stop": "none",
                    "psnr": psnr,
                    "ssim": psnr / 100,
                    "t_start": 7,
                    "chain_steps": 3,
                    "unet_evals": 3,
                    "seconds": 0.5,
                }
            )
    frame = pd.DataFrame(rows)
    frame["dataset"], frame["task"], frame["arch"] = "cifar10-test", "denoise-s25", "skip"
    return grid.stamp(frame, {})


def test_the_summary_pairs_per_image_and_observation_seed():
    summary, comparisons, ddpm = summarise(_synthetic_rows())
    assert list(summary["guide_lam"]) == ["0", "0.5"] and (summary["n"] == 4).all()
    plain, red = summary.iloc[0], summary.iloc[1]
    assert plain["final_minus_peak_db"] == pytest.approx(-2.5)  # -2 - image, images 0 and 1
    assert plain["stopping_verdict"] == STILL_NEEDED and np.isnan(plain["minus_plain_final_db"])
    assert red["final_minus_peak_db"] == pytest.approx(-0.1)
    assert red["stopping_verdict"] == REMOVES
    assert red["minus_plain_final_db"] == pytest.approx(1.5)  # 1 + obs seed
    assert red["minus_plain_peak_db"] == pytest.approx(1.5 - 2.5)
    # Against the DDPM alone (x0 = plain peak - 0.5): -0.5 - image + obs seed, mean -0.5.
    assert red["minus_ddpm_x0_db"] == pytest.approx(-0.5)
    assert np.isnan(plain["minus_ddpm_x0_db"])
    assert red["unet_evals_per_step"] == 1 and red["dip_seeds"] == "0 1"
    assert red["psnr_final"] == pytest.approx(30.5 - 2.5 + 1.5)
    row = comparisons[
        (comparisons["guide_lam"] == "0.5")
        & (comparisons["comparison"] == "final - plain final")
        & (comparisons["value"] == "psnr")
    ].iloc[0]
    assert row["n"] == 4 and row["ci_low"] == pytest.approx(1.0) and row["verdict"] == "helps"
    alone = ddpm.set_index("method")
    assert (alone["n"] == 4).all()
    assert alone.loc["ddpm-x0", "psnr_minus_plain_peak"] == pytest.approx(-0.5)
    assert alone.loc["ddpm-obs", "psnr_minus_plain_peak"] == pytest.approx(1.0)
    assert alone.loc["ddpm-obs", "unet_evals_per_image"] == 3


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [(-0.3, -0.1, REMOVES), (0.0, 0.0, REMOVES), (-0.8, -0.2, STILL_NEEDED)],
)
def test_the_stopping_verdict(low, high, verdict):
    assert stopping_verdict(low, high) == verdict


def test_the_summary_stage_writes_every_table(tmp_path):
    tables = []
    for lam, rows in _synthetic_rows().groupby("guide_lam"):
        path = tmp_path / f"cell-{lam}.csv"
        rows.to_csv(path, index=False)
        tables.append(path)
    out = {name: tmp_path / f"guided_{name}.csv" for name in ("summary", "comparisons", "ddpm")}
    stage.summarise_earlystop_guided(
        tables,
        out_summary=out["summary"],
        out_comparisons=out["comparisons"],
        out_ddpm=out["ddpm"],
        out_markdown=tmp_path / "guided.md",
    )
    summary = pd.read_csv(out["summary"])
    assert len(summary) == 2 and (summary["n"] == 4).all()
    text = (tmp_path / "guided.md").read_text()
    assert "+1.50 [+1.00, +2.00]" in text and "ddpm-obs" in text
