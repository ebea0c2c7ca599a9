"""Progressive-target supervision for DIP early stopping: targets, rules, the cell."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from dipddpm.earlystop import (
    CURVE_COLUMNS,
    STOP_VARIANTS,
    TABLE_COLUMNS,
    ProgressiveSureRule,
    discrepancy_stop,
    es_wmv_stop,
    fixed_budget_stop,
    oracle_stop,
    progressive_targets,
    run_earlystop_cell,
    stage_sigmas,
)
from dipddpm.operators import Operator

MICRO_ARCH = {
    "depth": 2,
    "channels_down": 8,
    "channels_up": 8,
    "skip_channels": 2,
    "input_channels": 8,
}


@pytest.mark.parametrize("schedule", ["linear", "cosine", "geometric"])
def test_stage_sigmas_decrease_from_sigma_max_to_zero(schedule):
    sigmas = stage_sigmas(schedule, 5, 0.4)
    assert sigmas.shape == (5,)
    assert sigmas[0] == pytest.approx(0.4)
    assert sigmas[-1] == 0.0
    assert np.all(np.diff(sigmas) < 0)


def test_stage_sigmas_values_and_errors():
    np.testing.assert_allclose(stage_sigmas("linear", 3, 0.2), [0.2, 0.1, 0.0])
    np.testing.assert_allclose(stage_sigmas("geometric", 4, 0.4), [0.4, 0.2, 0.1, 0.0])
    np.testing.assert_allclose(stage_sigmas("cosine", 3, 0.2), [0.2, 0.2 * math.sqrt(0.5), 0.0])
    assert stage_sigmas("cosine", 1, 0.3).tolist() == [0.0]
    with pytest.raises(ValueError, match="schedule"):
        stage_sigmas("quadratic", 3, 0.2)
    with pytest.raises(ValueError, match="sigma_max"):
        stage_sigmas("linear", 3, -0.1)
    with pytest.raises(ValueError, match="K"):
        stage_sigmas("linear", 0, 0.1)


@pytest.mark.parametrize("noise", ["fresh", "fixed"])
def test_targets_have_requested_noise_and_end_at_y(noise):
    y = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    sigmas = [0.3, 0.1, 0.02, 0.0]
    targets, unit = progressive_targets(y, sigmas, noise, torch.Generator().manual_seed(2))
    assert targets.shape == (4, 2, 3, 64, 64)
    for k, sigma in enumerate(sigmas[:-1]):
        std = float((targets[k] - y).std())
        assert std == pytest.approx(sigma, rel=0.03)
    assert torch.equal(targets[-1], y)
    if noise == "fixed":
        assert torch.equal(unit[0], unit[1])
    else:
        corr = float((unit[0] * unit[1]).mean())
        assert abs(corr) < 0.02


def test_targets_are_seeded_and_masked():
    y = torch.rand(1, 3, 32, 32)
    mask = (torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    a, _ = progressive_targets(y, [0.2, 0.0], "fresh", torch.Generator().manual_seed(5), mask)
    b, _ = progressive_targets(y, [0.2, 0.0], "fresh", torch.Generator().manual_seed(5), mask)
    assert torch.equal(a, b)
    unknown = mask.expand_as(y) == 0
    assert torch.equal(a[0][unknown], y[unknown])
    with pytest.raises(ValueError, match="noise"):
        progressive_targets(y, [0.1, 0.0], "sometimes")


def _curve(column: str, values) -> pd.DataFrame:
    return pd.DataFrame({"iteration": np.arange(1, len(values) + 1), column: values})


def test_fixed_budget_and_oracle():
    traj = _curve("psnr_clean_ema", [20.0, 25.0, 27.0, 26.0, 24.0])
    assert fixed_budget_stop(traj[["iteration"]], 3) == 3
    assert fixed_budget_stop(traj[["iteration"]], 99) == 5
    assert oracle_stop(traj) == 3
    assert oracle_stop(_curve("psnr_clean_ema", [math.nan] * 4)) == 4


def test_discrepancy_first_crossing():
    sigma = 0.1
    t = np.arange(1, 1001)
    loss = 0.5 * sigma**2 + 0.05 * np.exp(-t / 100)  # crosses sigma^2 where exp(-t/100) = 0.1
    expected = int(np.ceil(100 * math.log(10)))
    assert discrepancy_stop(_curve("loss", loss), sigma) == expected
    assert discrepancy_stop(_curve("loss", loss), sigma, tau=0.4) == 1000  # never: the end
    with pytest.raises(ValueError, match="loss"):
        discrepancy_stop(_curve("wmv", loss), sigma)


def test_es_wmv_stops_at_minimum_after_patience():
    t = np.arange(1, 2001, dtype=float)
    wmv = (t - 700.0) ** 2 + 1.0
    wmv[:99] = np.nan  # before the first full window
    assert es_wmv_stop(_curve("wmv", wmv), patience=200) == 700
    # Patience never runs out: the minimum over the run.
    assert es_wmv_stop(_curve("wmv", wmv), patience=5000) == 700
    rising = _curve("wmv", np.r_[np.nan, np.linspace(1.0, 2.0, 50)])
    assert es_wmv_stop(rising, patience=10) == 2


def test_progressive_rule_estimates_error_and_stops_when_the_last_noisy_stage_ends():
    """Synthetic outputs x_t = s + (1 - a_t) * b + a_t * e (bias b shrinking while the total
    noise e is absorbed): the probe-based estimate tracks the true error, its minimum is
    the true optimum's, stage_done fires ``patience`` iterations past it, and the
    stage_end stop is taken when the loop ends the stage (once per image)."""
    gen = torch.Generator().manual_seed(0)
    shape = (1, 3, 64, 64)
    signal = torch.rand(shape, generator=gen)
    bias = 0.2 * torch.randn(shape, generator=gen)
    sigma_task, sigma_k = 0.1, 0.2
    task_noise = sigma_task * torch.randn(shape, generator=gen)
    unit = torch.randn(shape, generator=gen)
    y = signal + task_noise
    op = Operator("denoise")
    rule = ProgressiveSureRule(sigma_task)
    target = y + sigma_k * unit
    total_noise = target - signal
    alphas = np.linspace(0.0, 1.0, 41)
    outputs = [signal + (1 - a) * bias + a * a * total_noise for a in alphas]
    rule.begin_stage(sigma_k, target, unit, outputs[0], op, final=False, last_noisy=True)
    true_err, est_err, done = [], [], []
    for x in outputs:
        r, e = rule.update(x)
        assert not rule.now_by_variant["stage_end"].any()
        true_err.append(float(((x - signal) ** 2).mean()))
        est_err.append(float(e[0]))
        done.append(bool(rule.stage_done(5)[0]))
    np.testing.assert_allclose(est_err, true_err, atol=2e-3)
    best = int(np.argmin(est_err))
    assert abs(best - int(np.argmin(true_err))) <= 1
    assert done.index(True) == best + 5  # 5 updates past the minimum (0-based index)
    assert rule.end_last_noisy(np.array([True])).tolist() == [True]
    assert rule.stopped.tolist() == [True]
    assert rule.end_last_noisy(np.array([True])).tolist() == [False]  # stops once


def test_rule_refuses_unknown_stop_variant_and_bad_sigma():
    with pytest.raises(ValueError, match="stop_stage"):
        ProgressiveSureRule(0.1, stop_stage="final")
    with pytest.raises(ValueError, match="sigma_task"):
        ProgressiveSureRule(float("nan"))


def _micro_problem(size: int = 16):
    gen = np.random.default_rng(3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = np.stack(
        [
            np.stack([0.5 + 0.3 * np.sin(5 * xx + c) * np.cos(3 * yy) for c in range(3)]),
            np.stack([(xx > 0.5) * 0.5 + 0.2 + 0.1 * c for c in range(3)]),
        ]
    ).astype(np.float32)
    sigma = 25 / 255
    observed = (clean + sigma * gen.standard_normal(clean.shape)).astype(np.float32)
    return clean, observed, sigma


def _micro_cell(clean, observed, sigma, **kw):
    args = dict(
        schedule="linear",
        K=3,
        sigma_max=0.3,
        noise="fresh",
        iters_per_stage=8,
        final_iters=24,
        baseline_params={"budgets": [5, 20], "patience": 5, "wmv_window": 4},
        rule_params={"stage_patience": 0},
        progress=False,
    )
    args.update(kw)
    return run_earlystop_cell(
        clean, observed, Operator("denoise"), sigma, "skip", MICRO_ARCH, [11, 12], **args
    )


def test_cell_end_to_end_table_and_curves():
    clean, observed, sigma = _micro_problem()
    res = _micro_cell(clean, observed, sigma)
    assert list(res.table.columns[: len(TABLE_COLUMNS)]) == TABLE_COLUMNS
    rules = set(res.table["rule"])
    assert rules == {
        "progressive",
        "progressive_oracle",
        "progressive_stage_length",
        "progressive_last_noisy",
        "fixed_5",
        "fixed_20",
        "discrepancy",
        "es_wmv",
        "oracle",
    }
    assert len(res.table) == 2 * len(rules)
    assert list(res.stage_curves.columns) == CURVE_COLUMNS
    assert len(res.stage_curves) == 2 * (8 + 8 + 24)
    assert res.outputs_at_stop.shape == clean.shape
    assert res.stops.shape == (2,)
    # Fixed stages of 8: the stop is where the last noisy stage (the second) ends.
    assert (res.stops == 16).all()
    table = res.table.set_index(["rule", "image"])
    assert np.isfinite(res.table["psnr"]).all() and np.isfinite(res.table["ssim"]).all()
    # The oracle is an upper bound on its own run; every row's gap is measured against it.
    assert (res.table["gap_db"] >= -1e-6).all()
    assert (table.loc["fixed_20", "stop_iter"] == 20).all()
    assert (table.loc["oracle", "extra_compute"] == 40 - table.loc["oracle", "stop_iter"]).all()
    assert (table.loc["progressive", "extra_compute"] == 0).all()
    curves = res.stage_curves
    expected = sigma**2 + curves["sigma_k"] ** 2
    np.testing.assert_allclose(curves["expected_residual"], expected)
    assert curves.loc[curves["stage"] == 2, "est_error"].isna().all()


def test_rule_never_reads_the_clean_image():
    clean, observed, sigma = _micro_problem()
    real = _micro_cell(clean, observed, sigma)
    blind = _micro_cell(np.full_like(clean, np.nan), observed, sigma)
    np.testing.assert_array_equal(real.stops, blind.stops)
    np.testing.assert_array_equal(real.outputs_at_stop, blind.outputs_at_stop)
    progressive = ["progressive"] + [f"progressive_{v}" for v in STOP_VARIANTS[1:]]
    for rule in [*progressive, "fixed_5", "discrepancy", "es_wmv"]:
        a = real.table[real.table["rule"] == rule]["stop_iter"].to_numpy()
        b = blind.table[blind.table["rule"] == rule]["stop_iter"].to_numpy()
        np.testing.assert_array_equal(a, b)
    assert blind.table.loc[blind.table["rule"] == "progressive", "psnr"].isna().all()


def test_cell_rejects_bad_parameters():
    clean, observed, sigma = _micro_problem()
    with pytest.raises(ValueError, match="rule_params"):
        _micro_cell(clean, observed, sigma, rule_params={"tau": 1.0})
    with pytest.raises(ValueError, match="seeds"):
        run_earlystop_cell(
            clean,
            observed,
            Operator("denoise"),
            sigma,
            "skip",
            MICRO_ARCH,
            [1],
            K=2,
            iters_per_stage=2,
            final_iters=2,
            progress=False,
        )


def test_cell_runs_inpainting_with_a_shared_mask():
    clean, _, sigma = _micro_problem()
    mask = (np.random.default_rng(0).random((1, 1, 16, 16)) > 0.3).astype(np.float32)
    noisy = clean + sigma * np.random.default_rng(1).standard_normal(clean.shape)
    observed = (noisy * mask).astype(np.float32)
    op = Operator("inpaint", mask=torch.from_numpy(mask))
    res = run_earlystop_cell(
        clean,
        observed,
        op,
        sigma,
        "skip",
        MICRO_ARCH,
        [1, 2],
        K=2,
        sigma_max=0.2,
        iters_per_stage=3,
        final_iters=5,
        baseline_params={"patience": 3, "wmv_window": 2},
        progress=False,
    )
    assert np.isfinite(res.table["psnr"]).all()
    assert res.stage_curves["residual"].gt(0).all()


def test_last_noisy_variant_stops_inside_the_last_noisy_stage():
    clean, observed, sigma = _micro_problem()
    res = _micro_cell(
        clean, observed, sigma, rule_params={"stop_stage": "last_noisy", "stage_patience": 0}
    )
    assert np.all((res.stops > 8) & (res.stops <= 16))
    row = res.table[res.table["rule"] == "progressive"]
    assert (row["decision_iter"] == 16).all()
    np.testing.assert_array_equal(row["extra_compute"], 16 - res.stops)
    curves = res.stage_curves[res.stage_curves["stage"] == 1]
    for i, stop in enumerate(res.stops):
        mine = curves[curves["image"] == i]
        assert int(mine.loc[mine["est_error"].idxmin(), "iteration"]) == stop


def _two_image_stage(gen, shape=(2, 3, 32, 32), sigma_task=0.1, sigma_k=0.2):
    signal = torch.rand(shape, generator=gen)
    bias = 0.2 * torch.randn(shape, generator=gen)
    unit = torch.randn(shape, generator=gen)
    target = signal + sigma_task * torch.randn(shape, generator=gen) + sigma_k * unit
    noise = target - signal
    # Image 0 absorbs the noise twice as fast as image 1: an earlier error minimum.
    speed = torch.tensor([2.0, 1.0]).view(2, 1, 1, 1)
    outputs = []
    for a in np.linspace(0.0, 1.0, 41):
        a = (a * speed).clamp(max=1.0)
        outputs.append(signal + (1 - a) * bias + a * a * noise)
    return target, unit, outputs


def test_stage_done_after_patience_past_each_images_error_minimum():
    target, unit, outputs = _two_image_stage(torch.Generator().manual_seed(7))
    rule = ProgressiveSureRule(0.1)
    rule.begin_stage(0.2, target, unit, outputs[0], Operator("denoise"), final=False)
    errs, done = [], []
    for x in outputs:
        errs.append(rule.update(x)[1])
        done.append(rule.stage_done(patience=4))
    errs, done = np.stack(errs), np.stack(done)
    best = errs.argmin(0)
    assert best[0] < best[1]
    for i in range(2):
        assert int(np.argmax(done[:, i])) == best[i] + 4  # iteration best+1+4, 0-based


def test_images_move_through_stages_independently():
    """Image 1 enters the final stage while image 0 is still in its noisy stage: each
    image's residual is taken against its own stage target."""
    target, unit, outputs = _two_image_stage(torch.Generator().manual_seed(8))
    y = target - 0.2 * unit
    op = Operator("denoise")
    rule = ProgressiveSureRule(0.1)
    rule.begin_stage(0.2, target, unit, outputs[0], op, final=False)
    for x in outputs[:30]:
        rule.update(x)
    rule.begin_stage(0.0, y, unit * 0, outputs[30], op, final=True, images=np.array([False, True]))
    resid, err = rule.update(outputs[30])
    expected = ((outputs[30] - torch.stack([target[0], y[1]])) ** 2).mean(dim=(1, 2, 3))
    np.testing.assert_allclose(resid, expected.numpy(), rtol=1e-5)
    assert math.isfinite(err[0]) and math.isnan(err[1])
    # Image 1's closed stage recorded its error minimum; image 0's stage is still open.
    assert np.isfinite(rule.best_stage_iters[0][1]) and math.isnan(rule.best_stage_iters[0][0])


def test_adaptive_stages_end_at_error_minimum_plus_patience():
    """Stage 0 is capped by iters_per_stage, the last noisy stage (1) by final_iters."""
    clean, observed, sigma = _micro_problem()
    patience = 3
    res = _micro_cell(
        clean, observed, sigma, iters_per_stage=6, rule_params={"stage_patience": patience}
    )
    curves = res.stage_curves
    for (i, k), group in curves[curves["stage"] < 2].groupby(["image", "stage"]):
        best = int(group.loc[group["est_error"].idxmin(), "stage_iter"])
        assert len(group) == min(6 if k == 0 else 24, best + patience), (i, k)
    ends = np.array(res.info["stage_ends"])
    final = curves[curves["stage"] == 2].groupby("image")["stage_iter"].max()
    assert (final == 24).all()  # the final stage always runs final_iters
    assert (ends[2] - ends[1] == 24).all()


def test_stage_length_variant_stops_after_the_last_noisy_stages_minimum():
    clean, observed, sigma = _micro_problem()
    res = _micro_cell(
        clean, observed, sigma, rule_params={"stop_stage": "stage_length", "stage_patience": 2}
    )
    curves = res.stage_curves[res.stage_curves["stage"] == 1]
    ends = np.array(res.info["stage_ends"])
    for i, stop in enumerate(res.stops):
        mine = curves[curves["image"] == i]
        best = int(mine.loc[mine["est_error"].idxmin(), "stage_iter"])
        assert stop == ends[1, i] + best
    row = res.table[res.table["rule"] == "progressive"]
    assert (row["extra_compute"] == 0).all()


def test_production_run_ends_once_every_image_has_stopped():
    from dipddpm.dip.fit import DIPFitter
    from dipddpm.earlystop import fit_progressive, stage_targets_for

    clean, observed, sigma = _micro_problem()
    obs, op = torch.from_numpy(observed), Operator("denoise")
    sigmas = stage_sigmas("linear", 3, 0.3)
    targets, noises = stage_targets_for(obs, op, [11, 12], sigmas, "fresh")
    runs = []
    for to_end in (True, False):
        fitter = DIPFitter("skip", MICRO_ARCH, clean.shape[1:], [11, 12])
        # Fixed stages: every image stops where its last noisy stage ends (iteration 16).
        rule = ProgressiveSureRule(sigma)
        runs.append(
            fit_progressive(
                fitter,
                obs,
                op,
                targets,
                noises,
                sigmas,
                rule,
                8,
                24,
                run_to_end=to_end,
                progress=False,
            )
        )
    full, short = runs
    np.testing.assert_array_equal(full.stops, short.stops)
    np.testing.assert_array_equal(full.outputs_at_stop, short.outputs_at_stop)
    assert short.total_iters == full.stops.max() == 16 < full.total_iters == 40


# ------------------------------------------------ the plain fit as a cell of its own

SPLIT_CELL = {
    "dataset": "micro",
    "task": "denoise-s25",
    "obs_seed": 0,
    "arch": "skip",
    "es_schedule": "linear",
    "stages": 3,
    "sigma_max": 50,
    "stage_patience": 20,
    "dip_seed": 11,
}
SPLIT_ES = {
    "budgets": [5, 20],
    "tau": 1.0,
    "wmv_window": 4,
    "wmv_patience": 5,
    "noise": "fresh",
    "iters_per_stage": 8,
    "final_iters": 24,
}
SPLIT_DIP = {"lr": 0.02, "reg_noise_std": 1 / 30, "exp_weight": 0.98, "backtrack": True}
# Not the variant's own length (its adaptive stages end where its fit says): the plain
# fit's length comes from the settings alone.
PLAIN_ITERS = 30
EARLYSTOP_FILES = ("earlystop.csv", "stage_curves.csv", "trajectory.csv", "outputs.npz")


@pytest.fixture(scope="module")
def split_cell(tmp_path_factory):
    """The pipeline's path on a micro observation: the plain cell's stage, then the
    variant cell's stage reading its files."""
    from dipddpm.io import save_json, save_npz
    from dipddpm.stages import earlystop as stage

    folder = tmp_path_factory.mktemp("split")
    clean, observed, _ = _micro_problem()
    observation = (folder / "degraded.npz", folder / "degraded.json")
    save_npz(observation[0], clean=clean, observed=observed, names=np.array(["a", "b"]))
    save_json(observation[1], {"kind": "denoise", "sigma": 25})
    arch = {"kind": "skip", **MICRO_ARCH}
    plain_cell = {k: SPLIT_CELL[k] for k in ("dataset", "task", "obs_seed", "arch", "dip_seed")}
    plain_es = {k: SPLIT_ES[k] for k in ("budgets", "tau", "wmv_window", "wmv_patience")}
    plain = [folder / name for name in ("baselines.csv", "plain_trajectory.csv", "plain.json")]
    stage.run_plain_cell(
        *observation,
        plain_cell,
        arch,
        SPLIT_DIP,
        {**plain_es, "plain_default_iters": PLAIN_ITERS},
        "cpu",
        1,
        *plain,
    )
    outs = [folder / name for name in (*EARLYSTOP_FILES, "params.json")]
    stage.run_cell(*observation, *plain, SPLIT_CELL, arch, SPLIT_DIP, SPLIT_ES, "cpu", 1, *outs)
    return {"folder": folder, "observation": observation, "plain": plain, "arch": arch}


def _as_computed(path, added=()) -> pd.DataFrame:
    """A cell's file as the library returned it: without the identity stamp, the columns
    the stage ``added`` and the timings."""
    from dipddpm import grid

    frame = grid.unstamp(pd.read_csv(path))
    return frame.drop(columns=[*added, "elapsed_s"], errors="ignore")


def test_the_split_cell_equals_the_composed_cell_bit_for_bit(split_cell):
    """The plain cell then the variant cell give the one-process cell's numbers exactly
    (timings aside), through their files."""
    import json

    from dipddpm.stages.earlystop import baseline_params

    clean, observed, _ = _micro_problem()
    composed = run_earlystop_cell(
        clean,
        observed,
        Operator("denoise"),
        25 / 255,
        "skip",
        MICRO_ARCH,
        [11, 11],
        schedule="linear",
        K=3,
        sigma_max=50 / 255,
        iters_per_stage=8,
        final_iters=24,
        baseline_params=baseline_params(SPLIT_ES),
        progress=False,
        plain_default_iters=PLAIN_ITERS,
        **SPLIT_DIP,
    )
    folder = split_cell["folder"]
    expected = {
        "earlystop.csv": composed.table,
        "stage_curves.csv": composed.stage_curves,
        "trajectory.csv": composed.trajectory.drop(columns="elapsed_s"),
    }
    for name, want in expected.items():
        added = ("stage", "device") if name == "earlystop.csv" else ()
        pd.testing.assert_frame_equal(_as_computed(folder / name, added), want, check_exact=True)
    saved = np.load(folder / "outputs.npz")
    np.testing.assert_array_equal(saved["outputs"], composed.outputs_at_stop)
    np.testing.assert_array_equal(saved["stops"], composed.stops)
    info = json.loads((folder / "params.json").read_text())["info"]
    assert info["plain_iters"] == PLAIN_ITERS
    untimed = {k: v for k, v in composed.info.items() if not k.endswith("_seconds")}
    assert {k: v for k, v in info.items() if not k.endswith("_seconds")} == untimed


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda cell, es: cell.update(dip_seed=12), "is the plain fit"),
        (lambda cell, es: es.update(budgets=[5]), "post-hoc settings"),
    ],
)
def test_a_cell_refuses_a_plain_fit_that_is_not_its_own(split_cell, tmp_path, edit, message):
    from dipddpm.stages import earlystop as stage

    cell, es = dict(SPLIT_CELL), dict(SPLIT_ES)
    edit(cell, es)
    outs = [tmp_path / name for name in (*EARLYSTOP_FILES, "params.json")]
    with pytest.raises(ValueError, match=message):
        stage.run_cell(
            *split_cell["observation"],
            *split_cell["plain"],
            cell,
            split_cell["arch"],
            SPLIT_DIP,
            es,
            "cpu",
            1,
            *outs,
        )
    assert not any(path.exists() for path in outs)


def test_a_cells_stage_patience_reaches_its_progressive_fit(split_cell, tmp_path):
    """The cell's stage_patience axis is the variant's rule parameter: 0 gives fixed-length
    noisy stages (each iters_per_stage long), 3 ends them at the error minimum + 3."""
    import json

    from dipddpm.stages import earlystop as stage

    ends = {}
    for patience in (0, 3):
        outs = [tmp_path / f"{patience}-{name}" for name in (*EARLYSTOP_FILES, "params.json")]
        cell = {**SPLIT_CELL, "stage_patience": patience}
        stage.run_cell(
            *split_cell["observation"],
            *split_cell["plain"],
            cell,
            split_cell["arch"],
            SPLIT_DIP,
            SPLIT_ES,
            "cpu",
            1,
            *outs,
        )
        ends[patience] = np.array(json.loads(outs[-1].read_text())["info"]["stage_ends"])
    np.testing.assert_array_equal(ends[0][:2], [[8, 8], [16, 16]])
    assert not np.array_equal(ends[3], ends[0])


def test_the_plain_fit_refuses_a_bad_default_length():
    from dipddpm.earlystop import run_plain_fit
    from dipddpm.earlystop.run import make_problem

    clean, observed, sigma = _micro_problem()
    problem = make_problem(
        clean, observed, Operator("denoise"), sigma, "skip", MICRO_ARCH, [1, 2], {}, "cpu", False, 1
    )
    for bad in (0, 2.5, True, None):
        with pytest.raises(ValueError, match="plain_default_iters"):
            run_plain_fit(problem, bad)
