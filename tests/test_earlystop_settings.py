"""The early-stopping cell's settings: unknown keys are refused, dip.backtrack is honoured."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
import yaml

from dipddpm import grid
from dipddpm.dip import fit
from dipddpm.earlystop import RULE_DEFAULTS, baseline_defaults, evaluate_baselines
from dipddpm.earlystop import run_earlystop_cell as real_cell
from dipddpm.io import save_json, save_npz
from dipddpm.operators import Operator
from dipddpm.stages import earlystop as stage

MICRO_ARCH = {
    "depth": 2,
    "channels_down": 8,
    "channels_up": 8,
    "skip_channels": 2,
    "input_channels": 8,
}


def _images(n: int = 2, size: int = 16):
    clean = np.random.default_rng(0).uniform(0.2, 0.8, (n, 3, size, size)).astype(np.float32)
    noise = np.random.default_rng(1).standard_normal(clean.shape)
    return clean, (clean + 0.1 * noise).astype(np.float32)


def _cell(**kw):
    clean, observed = _images()
    return real_cell(
        clean,
        observed,
        Operator("denoise"),
        0.1,
        "skip",
        MICRO_ARCH,
        [1, 2],
        K=2,
        iters_per_stage=2,
        final_iters=3,
        progress=False,
        **kw,
    )


def test_unknown_rule_params_key_is_named_with_the_allowed_keys():
    allowed = sorted(RULE_DEFAULTS)
    with pytest.raises(ValueError) as caught:
        _cell(rule_params={"tau": 1.0, "stage_patience": 0})
    assert str(caught.value) == f"unknown rule_params key(s) ['tau']; allowed: {allowed}"


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_a_bad_stage_patience_is_refused_before_any_fit(bad):
    with pytest.raises(ValueError, match="stage_patience must be an integer >= 0"):
        _cell(rule_params={"stage_patience": bad})


def test_the_default_stage_patience_is_the_grids_and_the_schemas(root):
    schema = yaml.safe_load((root / "workflow/schemas/config.schema.yaml").read_text())
    block = schema["properties"]["earlystop"]["properties"]["grid"]["items"]["properties"]
    assert RULE_DEFAULTS["stage_patience"] == grid.DEFAULT_STAGE_PATIENCE == 20
    assert block["patience"]["default"] == [grid.DEFAULT_STAGE_PATIENCE]


def test_unknown_baseline_params_key_is_named_with_the_allowed_keys():
    allowed = sorted(baseline_defaults())
    assert {"budgets", "tau", "patience", "wmv_window", "iters", "ssim_every"} <= set(allowed)
    with pytest.raises(ValueError) as caught:
        _cell(baseline_params={"budget": [5]})
    assert str(caught.value) == f"unknown baseline_params key(s) ['budget']; allowed: {allowed}"
    traj = pd.DataFrame({"image": 0, "iteration": [1, 2], "psnr_clean_ema": [20.0, 21.0]})
    with pytest.raises(ValueError, match=r"\['window'\]"):
        evaluate_baselines(traj, {}, np.zeros((1, 3, 4, 4)), 0.1, {"window": 3})


@pytest.mark.parametrize("backtrack", [True, False])
def test_backtrack_reaches_the_progressive_and_the_plain_fit(monkeypatch, backtrack):
    seen = []
    original = fit.DIPFitter.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("backtrack"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(fit.DIPFitter, "__init__", spy)
    _cell(backtrack=backtrack, baseline_params={"patience": 2, "wmv_window": 2})
    assert len(seen) >= 2  # the progressive fitter, then the plain fit's
    assert seen == [backtrack] * len(seen)


def test_default_backtrack_is_the_fitters_and_the_configs(root):
    cell_default = inspect.signature(real_cell).parameters["backtrack"].default
    fitter_default = inspect.signature(fit.DIPFitter).parameters["backtrack"].default
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    assert cell_default is fitter_default is config["dip"]["backtrack"] is True


class _Called(Exception):
    pass


ES = {
    "noise": "fresh",
    "iters_per_stage": 5,
    "final_iters": 5,
    "budgets": [5],
    "tau": 1.0,
    "wmv_window": 3,
    "wmv_patience": 4,
}
DIP = {"lr": 0.01, "reg_noise_std": 1 / 30, "exp_weight": 0.99, "backtrack": False}
CELL = {
    "dataset": "d",
    "task": "denoise-s25",
    "obs_seed": 0,
    "arch": "skip",
    "dip_seed": 3,
    "es_schedule": "cosine",
    "stages": 3,
    "sigma_max": 50,
    "stage_patience": 20,
}


def _observation(tmp_path):
    clean, observed = _images(1)
    save_npz(tmp_path / "degraded.npz", clean=clean, observed=observed, names=np.array(["a"]))
    save_json(tmp_path / "params.json", {"kind": "denoise", "sigma": 25})
    return tmp_path / "degraded.npz", tmp_path / "params.json"


def _recording(calls):
    def record(problem, *args, **kwargs):
        calls.append(problem.fitter_args)
        raise _Called

    return record


def test_plain_stage_passes_dip_backtrack_to_the_plain_fit(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(stage, "run_plain_fit", _recording(calls))
    outs = [tmp_path / name for name in ("b.csv", "tr.csv", "p.json")]
    plain = {**ES, "plain_default_iters": 5}
    with pytest.raises(_Called):
        stage.run_plain_cell(
            *_observation(tmp_path), CELL, {"kind": "skip"}, DIP, plain, "cpu", 1, *outs
        )
    assert calls[0]["backtrack"] is False


def test_variant_stage_passes_dip_backtrack_to_the_variant(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(stage, "run_training_variant", _recording(calls))
    one_image = pd.DataFrame({"image": [0]})
    monkeypatch.setattr(
        stage, "load_plain_cell", lambda *a: stage.PlainFitResult(one_image, one_image, {})
    )
    plain = [tmp_path / name for name in ("b.csv", "tr.csv", "p.json")]
    outs = [tmp_path / name for name in ("t.csv", "c.csv", "tr.csv", "o.npz", "o.json")]
    with pytest.raises(_Called):
        stage.run_cell(
            *_observation(tmp_path), *plain, CELL, {"kind": "skip"}, DIP, ES, "cpu", 1, *outs
        )
    assert calls[0]["backtrack"] is False
