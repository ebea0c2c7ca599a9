"""Example 1 analysis on synthetic tables whose answers are known: the split, tuning-only
choices, paired comparisons (chosen settings, equal NFE, equal seconds) with Holm, reasons for
what cannot be compared, steps-to-quality, diversity and the figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dipddpm import example1, grid, stats

TASK = "denoise-s25"
OBS = {"purpose": "restoration", "dataset": "cifar10-study", "task": TASK, "obs_seed": 0}
MODEL = {
    "train_dataset": "cifar10-train50k",
    "preset": "tiny",
    "schedule": "linear",
    "mode": "full",
    "t_max": 1000,
    "train_steps": 5000,
    "train_seed": 0,
    "ckpt": 5000,
}
TRUNCATED = {**MODEL, "mode": "truncated", "t_max": 150}
# TUNING is the split's stride: images 0, 4 and 8 tune, the other nine evaluate.
N_IMAGES, TUNING = 12, 4
N_TUNE = len(range(0, N_IMAGES, TUNING))
N_EVAL = N_IMAGES - N_TUNE
# Few resamples keep the file fast; the known answers below do not depend on the count.
N_BOOT = 2000


def _cell(method, identity, psnr, images=None, **columns):
    """Rows of one cell stamped as grid.stamp stamps them; a value is a scalar or a function
    of the image index."""
    images = list(range(N_IMAGES) if images is None else images)
    frame = pd.DataFrame({"image": images})
    for name, value in {"psnr": psnr, **columns}.items():
        frame[name] = [value(i) if callable(value) else value for i in images]
    for column, value in grid.full_identity(identity, method).items():
        frame[column] = value
    return frame


def dip_alone(iters, psnr, arch="skip", seconds=None, **columns):
    identity = {**OBS, "arch": arch, "iters": iters, "dip_seed": 0}
    cost = {}
    if seconds is not False:
        cost = {"seconds_per_image": iters * 0.01 if seconds is None else seconds, "nfe": 0}
    return _cell("dip", identity, psnr, stage="dip", **cost, **columns)


def combined(t0, steps, psnr, iters=400, k=1, lam=0, model=MODEL, seconds=None, **columns):
    """A DIP-started sampling cell: its chain runs min(steps, t0) steps, k times."""
    nfe = min(steps, t0) * k
    identity = {
        **OBS,
        **model,
        "arch": "skip",
        "iters": iters,
        "dip_seed": 0,
        "start": "dip",
        "t0": t0,
        "sampler": "ddim",
        "eta": 0.0,
        "steps": steps,
        "lam": lam,
        "window": 1.0 if lam else None,
        "k": k,
        "sample_seed": 0,
    }
    cost = {}
    if seconds is not False:
        cost = {"seconds_per_image": iters * 0.01 + nfe * 0.1 if seconds is None else seconds}
    method = "dip-guided" if lam else "dip+ddpm"
    return _cell(method, identity, psnr, stage="ddpm", nfe=nfe, t_start=t0, **cost, **columns)


def ddpm_obs(steps, psnr, t_start=57, t0="sigma", model=MODEL, **columns):
    nfe = min(steps, t_start)
    identity = {
        **OBS,
        **model,
        "start": "obs",
        "t0": t0,
        "sampler": "ddim",
        "eta": 0.0,
        "steps": steps,
        "lam": 0,
        "k": 1,
        "sample_seed": 0,
    }
    return _cell(
        "ddpm-obs",
        identity,
        psnr,
        stage="ddpm",
        nfe=nfe,
        t_start=t_start,
        seconds_per_image=nfe * 0.1,
        **columns,
    )


def _noise(key: int):
    """A fixed per-image perturbation (deterministic per key), so differences are not tied."""
    table = np.random.default_rng(key).normal(0.0, 0.3, N_IMAGES)
    return lambda i: float(table[i])


def _base(i):
    return 20.0 + i / 10


def _row(table, name_start):
    rows = table[table["name"].str.startswith(name_start)]
    assert len(rows) == 1, list(table["name"])
    return rows.iloc[0]


# ------------------------------------------------------------------------------ split


def test_split_takes_every_tuning_th_image_so_it_spans_the_classes():
    frame = dip_alone(100, 20.0, images=range(6))
    split = example1.split_images(frame, 2)
    assert split["split"].tolist() == ["tuning", "evaluation"] * 3
    assert set(example1.split_images(frame, 0)["split"]) == {"evaluation"}
    with pytest.raises(ValueError, match="non-negative"):
        example1.split_images(frame, -1)


# ---------------------------------------------------------------------------- settings


def test_choose_setting_picks_the_tuning_best_even_when_evaluation_disagrees():
    # t0=57 wins on the evaluation images and on all images together; t0=20 on tuning.
    frame = pd.concat(
        [
            combined(20, 10, lambda i: 25.0 if i % TUNING == 0 else 20.0),
            combined(57, 10, lambda i: 24.0 if i % TUNING == 0 else 30.0),
        ]
    )
    chosen = example1.choose_setting(frame, "dip+ddpm", TASK, TUNING)
    assert chosen["t0"] == "20"
    assert chosen["method"] == "dip+ddpm" and chosen["steps"] == "10"
    ranked = example1.rank_settings(frame, "dip+ddpm", TASK, TUNING)
    assert ranked["t0"].tolist() == ["20", "57"]
    assert ranked["tuning_mean"].tolist() == [25.0, 24.0]
    assert ranked["n_tuning_images"].iloc[0] == N_TUNE


def test_choose_setting_breaks_a_tie_towards_the_cheaper_setting():
    frame = pd.concat([dip_alone(200, 22.0, seconds=6.0), dip_alone(400, 22.0, seconds=3.0)])
    assert example1.choose_setting(frame, "dip", TASK, TUNING)["iters"] == "400"


def test_choose_setting_refuses_candidates_that_pool_cells():
    frame = pd.concat([combined(20, 10, 25.0, iters=100), combined(20, 10, 26.0, iters=400)])
    with pytest.raises(ValueError, match="pools cells"):
        example1.choose_setting(frame, "dip+ddpm", TASK, TUNING, over=("t0",))


def test_chosen_settings_has_one_row_per_method_and_task():
    frame = pd.concat([dip_alone(100, 20.0), combined(20, 10, 21.0), ddpm_obs(10, 19.0)])
    table = example1.chosen_settings(frame, TUNING)
    assert list(table.columns) == list(example1.SETTINGS_COLUMNS)
    assert table["method"].tolist() == ["dip", "ddpm-obs", "dip+ddpm"]
    assert table["n_candidates"].tolist() == [1, 1, 1]


# ------------------------------------------------------------------------- comparisons


def test_an_exact_one_db_gain_helps_and_the_rest_is_reported_not_computable():
    frame = pd.concat(
        [
            dip_alone(400, _base, seconds=False),
            combined(20, 10, lambda i: _base(i) + 1.0, seconds=False),
        ]
    )
    table = example1.primary_comparisons(frame, TUNING, n_boot=N_BOOT)
    assert list(table.columns) == list(example1.PRIMARY_COLUMNS)
    row = _row(table, "dip+ddpm vs dip (chosen")
    assert row["n"] == N_EVAL
    assert row["mean_diff"] == pytest.approx(1.0)
    assert row["ci_low"] == pytest.approx(1.0) and row["ci_low"] > 0
    assert row["verdict"] == stats.HELPS
    assert row["p_holm"] >= row["p"]
    assert row["setting_a"].startswith("method=dip+ddpm")
    assert "t0=20" in row["setting_a"] and "t0=none" in row["setting_b"]
    # Every other comparison is a row with its reason, never dropped.
    others = table[table["name"] != row["name"]]
    assert len(others) == 3
    assert not others["computable"].any()
    assert (others["verdict"] == example1.NOT_COMPUTABLE).all()
    seconds = _row(table, "dip+ddpm vs dip (equal seconds")
    assert "no calibrated seconds_per_image" in seconds["reason"]
    assert all("no DDPM-alone rows" in r for r in others["reason"] if "DDPM" in r)


def _family_frame():
    """DIP alone at 1 and 4 s, DIP+DDPM from a 100-iteration prior (1.1-2 s) and DDPM alone
    (0.1-5 s): every comparison is computable."""
    parts = [dip_alone(100, lambda i: _base(i) + _noise(1)(i))]
    parts.append(dip_alone(400, lambda i: _base(i) + 0.5 + _noise(2)(i)))
    for rank, steps in enumerate((1, 2, 5, 10)):
        for t0, gain in ((20, 1.0), (57, 0.0)):
            psnr = lambda i, g=gain, r=rank, s=steps: _base(i) + g + 0.2 * r + _noise(s)(i)
            parts.append(combined(t0, steps, psnr, iters=100, spread=0.05))
    for rank, steps in enumerate((1, 2, 5, 10, 25, 50)):
        parts.append(ddpm_obs(steps, lambda i, r=rank, s=steps: _base(i) + 0.1 * r + _noise(s)(i)))
    return pd.concat(parts, ignore_index=True)


def test_holm_is_applied_over_the_whole_family():
    table = example1.primary_comparisons(_family_frame(), TUNING, n_boot=N_BOOT)
    done = table[table["computable"]]
    assert len(done) >= 4
    assert set(done["match"]) == {"chosen", "equal NFE", "equal seconds"}
    assert (done["p_holm"] >= done["p"] - 1e-15).all()
    assert done["p_holm"].tolist() == pytest.approx(stats.holm(done["p"].tolist()))
    nfe = _row(table, "dip+ddpm vs ddpm-obs (equal NFE")
    chosen = example1.choose_setting(_family_frame(), "dip+ddpm", TASK, TUNING)
    assert f"steps={chosen['steps']}" in nfe["name"]
    assert nfe["nfe_a"] == nfe["nfe_b"]


def test_holm_families_can_be_split_by_column():
    frame = _family_frame()
    per_match = example1.primary_comparisons(frame, TUNING, n_boot=N_BOOT, holm_by=("match",))
    done = per_match[per_match["computable"]]
    for _, family in done.groupby("match"):
        assert family["p_holm"].tolist() == pytest.approx(stats.holm(family["p"].tolist()))


def test_interpolation_is_linear_in_log_seconds():
    assert example1.interpolate_log([1.0, 100.0], [20.0, 30.0], 10.0) == pytest.approx(25.0)
    values = example1.interpolate_log([1.0, 10.0, 100.0], [[0.0, 1.0], [10.0, 1.0], [0, 5]], 10)
    assert values.tolist() == pytest.approx([10.0, 1.0])
    with pytest.raises(ValueError, match="no extrapolation"):
        example1.interpolate_log([1.0, 100.0], [20.0, 30.0], 200.0)


def test_equal_seconds_compares_interpolated_curves_at_common_budgets():
    # DIP alone: 20 dB at 1 s, 30 dB at 10 s. DIP+DDPM: 27 dB at sqrt(10) s, 28 dB at 20 s.
    middle = math.sqrt(10.0)
    frame = pd.concat(
        [
            dip_alone(100, lambda i: _base(i)),
            dip_alone(1000, lambda i: _base(i) + 10.0),
            combined(20, 1, lambda i: _base(i) + 7.0, seconds=middle),
            combined(20, 2, lambda i: _base(i) + 8.0, seconds=20.0),
        ]
    )
    table = example1.primary_comparisons(frame, TUNING, n_boot=N_BOOT)
    seconds = table[table["name"].str.startswith("dip+ddpm vs dip (equal seconds")]
    # Only the combined curve's own points inside [sqrt(10), 10] s are budgets by default.
    assert seconds["budget_s"].tolist() == pytest.approx([middle])
    row = seconds.iloc[0]
    assert row["mean_diff"] == pytest.approx(7.0 - 5.0)
    assert "iters=100..1000" in row["setting_b"] and "steps=1 at" in row["setting_a"]

    explicit = example1.primary_comparisons(frame, TUNING, budgets=[5.0, 50.0], n_boot=N_BOOT)
    rows = explicit[explicit["name"].str.startswith("dip+ddpm vs dip (equal seconds")]
    w = (math.log(5.0) - math.log(middle)) / (math.log(20.0) - math.log(middle))
    expected = (7.0 + w) - 10.0 * math.log(5.0) / math.log(10.0)
    assert rows.iloc[0]["mean_diff"] == pytest.approx(expected)
    assert not rows.iloc[1]["computable"] and "outside" in rows.iloc[1]["reason"]


def test_comparisons_that_cannot_be_matched_say_why():
    frame = pd.concat(
        [
            dip_alone(100, _base),
            combined(20, 10, lambda i: _base(i) + 1.0, iters=400, model=TRUNCATED),
            ddpm_obs(10, _base),
        ]
    )
    table = example1.primary_comparisons(frame, TUNING, n_boot=N_BOOT)
    nfe = _row(table, "dip+ddpm vs ddpm-obs (equal NFE")
    assert not nfe["computable"] and "mode=truncated" in nfe["reason"]
    assert _row(table, "dip+ddpm vs dip (chosen")["computable"]


def test_costs_that_do_not_overlap_compare_the_nearest_points_and_say_what_it_means():
    frame = pd.concat(
        [
            dip_alone(100, _base),  # 1 s
            combined(20, 10, lambda i: _base(i) + 1.0, iters=400),  # 4 s prior + 1 s chain
        ]
    )
    table = example1.primary_comparisons(frame, TUNING, n_boot=N_BOOT)
    seconds = _row(table, "dip+ddpm vs dip (equal seconds")
    assert seconds["computable"] and "5 s vs 1 s, no common budget" in seconds["name"]
    assert seconds["mean_diff"] == pytest.approx(1.0)
    assert "costs 5x less" in seconds["note"] and "not a win at equal cost" in seconds["note"]


def test_equal_nfe_falls_back_to_the_best_setting_that_has_a_partner():
    frame = pd.concat(
        [
            dip_alone(400, _base),
            # Chosen (best on tuning): K = 4 chains, which DDPM alone from the observation
            # (deterministic) never runs.
            combined(20, 10, lambda i: _base(i) + 2.0, k=4),
            combined(20, 10, lambda i: _base(i) + 1.0 + _noise(3)(i)),
            ddpm_obs(10, _base),
        ]
    )
    table = example1.primary_comparisons(frame, TUNING, n_boot=N_BOOT)
    nfe = _row(table, "dip+ddpm vs ddpm-obs (equal NFE")
    assert nfe["computable"] and "k=1" in nfe["name"]
    assert "no equal-NFE ddpm-obs cell" in nfe["note"] and "k=4" in nfe["note"]
    assert nfe["mean_diff"] == pytest.approx(
        1.0 + np.mean([_noise(3)(i) for i in range(12) if i % 4])
    )


def test_generation_rows_are_ignored():
    restoration = pd.concat([dip_alone(400, _base), combined(20, 10, lambda i: _base(i) + 1)])
    generation = combined(57, 10, 99.0, seconds=False)
    generation["purpose"] = "generation"
    frame = pd.concat([restoration, generation], ignore_index=True)
    assert example1.choose_setting(frame, "dip+ddpm", TASK, TUNING)["t0"] == "20"
    with_gen = example1.primary_comparisons(frame, TUNING, n_boot=N_BOOT)
    without = example1.primary_comparisons(restoration, TUNING, n_boot=N_BOOT)
    pd.testing.assert_frame_equal(with_gen, without)
    with pytest.raises(ValueError, match="no restoration row"):
        example1.choose_setting(generation, "dip+ddpm", TASK, TUNING)


def test_a_side_pooling_two_cells_raises_stats_error():
    # DDPM alone holds two cells that differ in t0 only; the equal-NFE side does not pin it.
    frame = pd.concat(
        [
            dip_alone(100, _base),
            combined(20, 10, lambda i: _base(i) + 1.0, iters=100),
            ddpm_obs(10, _base, t0="sigma"),
            ddpm_obs(10, lambda i: _base(i) + 0.5, t0=57),
        ]
    )
    with pytest.raises(ValueError, match="pools cells"):
        example1.primary_comparisons(frame, TUNING, n_boot=N_BOOT)


# ------------------------------------------------------------------- steps to quality


def _ladder_frame():
    """Eight images, the even ones for tuning (stride 2). DDPM alone starts at step 10;
    DIP+DDPM at t0 = 20 has no 5-step cell and its full chain comes from its 25-step cell."""
    by_steps = {  # evaluation images 1, 3, 5, 7
        1: [20, 20, 20, 20],
        2: [26, 20, 20, 20],
        5: [26, 26, 20, 20],
        10: [24, 26, 26, 20],
    }
    parts = [
        ddpm_obs(s, lambda i, v=v: 20.0 if i % 2 == 0 else v[i // 2], t_start=10, images=range(8))
        for s, v in by_steps.items()
    ]
    for steps in (1, 2, 10, 25):
        psnr = lambda i, s=steps: 26.0 if (i == 1 and s >= 2) else 20.0
        parts.append(combined(20, steps, psnr, images=range(8)))
    return pd.concat(parts, ignore_index=True)


def test_quality_ladder_counts_shares_and_names_what_it_leaves_out():
    ladder = example1.quality_ladder(_ladder_frame(), 2, targets={TASK: 25.0})
    assert list(ladder.columns) == list(example1.LADDER_COLUMNS)
    obs = ladder[ladder["method"] == "ddpm-obs"].set_index("steps")
    assert obs.loc[[1, 2, 5, 10], "share"].tolist() == [0.0, 0.25, 0.5, 0.5]
    assert obs.loc[[1, 2, 5, 10], "n_reached_by"].tolist() == [0, 1, 2, 3]
    assert bool(obs.loc[10, "full_chain"])
    assert obs.loc[[25, 50, 100], "status"].tolist() == [example1.ABOVE_START] * 3
    assert "exceeds the start step 10" in obs.loc[25, "reason"]
    dip = ladder[ladder["method"] == "dip+ddpm"].set_index("steps")
    assert dip.loc[5, "status"] == example1.NOT_RUN
    assert bool(dip.loc[20, "full_chain"]) and dip.loc[20, "cell_steps"] == 25
    assert dip.loc[20, "nfe"] == 20


def test_steps_to_target_reports_a_median_or_a_censored_bound():
    ladder = example1.quality_ladder(_ladder_frame(), 2, targets={TASK: 25.0})
    table = example1.steps_to_target(ladder)
    assert list(table.columns) == list(example1.STEPS_TO_TARGET_COLUMNS)
    table = table.set_index("method")
    # DDPM alone: 3 of 4 images have reached 25 dB by step 10, more than half.
    assert table.loc["ddpm-obs", "median_steps"] == "10"
    assert table.loc["ddpm-obs", "nfe_at_median"] == 10
    assert not table.loc["ddpm-obs", "censored"]
    # DIP+DDPM: one image of four ever reaches it.
    assert table.loc["dip+ddpm", "median_steps"] == ">20"
    assert table.loc["dip+ddpm", "censored"]
    assert math.isnan(table.loc["dip+ddpm", "median_steps_value"])


def test_quality_target_is_dip_peak_on_evaluation_images_minus_half_a_db():
    frame = dip_alone(400, 20.0, peak_psnr=lambda i: 99.0 if i % TUNING == 0 else 30.0 + (i % 2))
    targets = example1.quality_targets(frame, TUNING)
    assert list(targets.columns) == list(example1.TARGET_COLUMNS)
    evaluation = [30.0 + (i % 2) for i in range(N_IMAGES) if i % TUNING]
    assert targets["target_psnr"].iloc[0] == pytest.approx(np.mean(evaluation) - 0.5)
    assert targets["n_images"].iloc[0] == N_EVAL


# -------------------------------------------------------------------------- diversity


def test_restoration_diversity_is_mean_spread_against_t0_for_several_chains():
    frame = pd.concat(
        [
            combined(20, 10, 21.0, k=4, spread=lambda i: 9.0 if i % TUNING == 0 else 0.1),
            combined(57, 10, 22.0, k=4, spread=lambda i: 9.0 if i % TUNING == 0 else 0.2),
            combined(57, 10, 22.0, k=1, spread=0.0),
        ]
    )
    table = example1.restoration_diversity(frame, TUNING)
    assert list(table.columns) == list(example1.DIVERSITY_COLUMNS)
    assert table["t0"].tolist() == ["20", "57"]
    assert table["k"].tolist() == ["4", "4"]
    assert table["spread_mean"].tolist() == pytest.approx([0.1, 0.2])
    assert (table["n_images"] == N_EVAL).all()


# ---------------------------------------------------------------------------- figures


def test_figure_tables_and_figures(tmp_path):
    from dipddpm import example1_figures

    frame = _family_frame()
    curves = example1.cost_curves(frame, TUNING)
    assert list(curves.columns) == list(example1.COST_CURVE_COLUMNS)
    assert set(curves["method"]) == {"dip", "ddpm-obs", "dip+ddpm"}
    assert (curves["n_images"] == N_EVAL).all()
    t0 = example1.t0_curves(frame, TUNING)
    assert t0[t0["method"] == "dip+ddpm"]["t0"].tolist() == ["20", "57"]
    assert t0[t0["method"] == "dip"]["t0"].tolist() == ["none"]
    for function, table, stem in (
        (example1_figures.pareto_figure, curves, "pareto"),
        (example1_figures.t0_figure, t0, "t0"),
        (example1_figures.pareto_figure, curves.iloc[0:0], "empty"),
    ):
        paths = function(table, tmp_path / stem)
        assert [p.suffix for p in paths] == [".png", ".pdf"]
        assert all(p.stat().st_size > 0 for p in paths)


def test_nfe_to_target_pairs_images_and_censors_at_a_lower_bound():
    from dipddpm import example1_steps

    frame = _ladder_frame()
    targets = pd.DataFrame([{"task": TASK, "target_psnr": 25.0, "reason": ""}])
    table = example1_steps.nfe_to_target_comparisons(frame, 2, targets, n_boot=500)
    assert list(table.columns) == list(example1_steps.COLUMNS)
    row = table.iloc[0]
    assert row["name"] == "dip+ddpm vs ddpm-obs (NFE to target)" and row["n"] == 4
    # DDPM alone: images 1, 3, 5 reach 25 dB at 2, 5 and 10 steps; image 7 never (censored
    # at 2 x 10). DIP+DDPM: image 1 at 2 steps, the others censored at 2 x 20.
    assert (row["n_reached_a"], row["n_censored_a"]) == (1, 3)
    assert (row["n_reached_b"], row["n_censored_b"]) == (3, 1)
    assert row["median_nfe_b"] == 7.5 and row["median_nfe_a"] == 40
    assert row["mean_log2_ratio"] == pytest.approx((0 + 3 + 2 + 1) / 4)
    assert row["p_holm"] >= row["p"]


def test_nfe_to_target_says_why_a_task_without_target_is_left_out():
    from dipddpm import example1_steps

    frame = _ladder_frame()
    targets = pd.DataFrame(columns=["task", "target_psnr", "reason"])
    table = example1_steps.nfe_to_target_comparisons(frame, 2, targets, n_boot=100)
    assert table.iloc[0]["reason"] == f"{TASK} has no PSNR target"


def test_ablations_change_one_axis_around_the_best_single_chain_setting():
    from dipddpm import example1_ablations

    frame = pd.concat(
        [
            combined(20, 10, lambda i: _base(i) + 1.0),  # the reference (k = 1, best)
            combined(20, 10, lambda i: _base(i) + 0.5 + _noise(1)(i) / 10, iters=200),
            combined(20, 10, lambda i: _base(i) + 1.5 + _noise(2)(i) / 10, lam=0.5),
            combined(20, 10, lambda i: _base(i) + 3.0, k=4),  # no neighbours: not a reference
            combined(20, 10, lambda i: _base(i) + 9.0, iters=200, k=4),  # two axes off
        ]
    )
    table = example1_ablations.ablation_table(frame, TUNING, n_boot=N_BOOT)
    assert list(table.columns) == list(example1_ablations.COLUMNS)
    rows = table.set_index("ablation")
    evaluation = [i for i in range(N_IMAGES) if i % TUNING]
    duration = rows.loc["prior duration"]
    assert duration["variant"] == "iters=200" and "iters=400" in duration["reference"]
    expected = -0.5 + np.mean([_noise(1)(i) / 10 for i in evaluation])
    assert duration["mean_diff"] == pytest.approx(expected) and duration["n"] == N_EVAL
    guidance = rows.loc["guidance"]
    assert guidance["variant"] == "method=dip-guided, lam=0.5, window=1"
    assert guidance["mean_diff"] == pytest.approx(
        0.5 + np.mean([_noise(2)(i) / 10 for i in evaluation])
    )
    assert "no evaluation cell differs" in rows.loc["sampler", "reason"]


def test_the_ablation_reference_is_the_setting_the_ablations_were_run_around():
    from dipddpm import example1_ablations

    frame = pd.concat(
        [
            combined(10, 10, lambda i: _base(i) + 2.0),  # tuning-best, but nothing around it
            combined(20, 10, lambda i: _base(i) + 1.0),
            combined(20, 10, lambda i: _base(i) + 0.5, iters=200),
        ]
    )
    table = example1_ablations.ablation_table(frame, TUNING, n_boot=N_BOOT)
    duration = table.set_index("ablation").loc["prior duration"]
    assert "t0=20" in duration["reference"] and duration["mean_diff"] == pytest.approx(-0.5)
    assert (table["p_holm"].dropna() >= table["p"].dropna()).all()
