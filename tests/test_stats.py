"""Paired statistics on known answers: seed averaging, bootstrap, Wilcoxon, Holm, refusals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from dipddpm import grid, stats

OBS = {"purpose": "restoration", "dataset": "cifar10-test", "task": "denoise-s25"}
DIP = {**OBS, "arch": "unet", "iters": 2000}
DDPM = {**OBS, "train_dataset": "cifar10-train", "preset": "tiny", "mode": "full", "ckpt": 300}
# Few resamples keep the file fast; the known answers below do not depend on the count.
N_BOOT = 2000


def _rows(cell, method, psnrs, **seeds):
    """Per-image rows of one cell, stamped the way grid.stamp stamps them."""
    identity = grid.full_identity({**cell, **seeds}, method)
    frame = pd.DataFrame({"image": range(len(psnrs)), "psnr": psnrs})
    frame["ssim"] = frame["psnr"] / 40.0
    for column, value in identity.items():
        frame[column] = value
    return frame


def _two_methods(gain, n=10):
    """DIP at 20 dB on n images and a DDPM cell at 20 + gain dB on the same images."""
    base = 20.0 + np.arange(n) / 10
    return pd.concat(
        [_rows(DIP, "dip", base, dip_seed=0), _rows(DDPM, "ddpm-obs", base + gain, sample_seed=0)]
    )


# ------------------------------------------------------------------------- seed averaging


def test_per_image_means_average_the_seeds_of_each_image():
    frame = pd.concat(
        [
            _rows(DIP, "dip", [10.0, 20.0], dip_seed=0),
            _rows(DIP, "dip", [12.0, 20.0], dip_seed=1),
        ]
    )
    means = stats.per_image_means(frame, "psnr", ["method"])
    assert list(means.columns) == ["method", "image", "psnr", "n_averaged"]
    assert means["psnr"].tolist() == [11.0, 20.0]
    assert means["n_averaged"].tolist() == [2, 2]


def test_per_image_means_keep_a_missing_value_visible():
    frame = _rows(DIP, "dip", [10.0, math.nan], dip_seed=0)
    frame = pd.concat([frame, _rows(DIP, "dip", [12.0, 20.0], dip_seed=1)])
    means = stats.per_image_means(frame, "psnr", [])
    assert means["psnr"].iloc[0] == 11.0
    assert math.isnan(means["psnr"].iloc[1])


def test_seeds_are_averaged_before_differencing_and_n_counts_images():
    a = pd.concat(
        [
            _rows(DDPM, "ddpm-obs", [21.0, 22.0, 23.0], sample_seed=0),
            _rows(DDPM, "ddpm-obs", [23.0, 22.0, 25.0], sample_seed=1),
        ]
    )
    b = _rows(DIP, "dip", [20.0, 20.0, 20.0], dip_seed=0)
    pairs = stats.paired_differences(
        pd.concat([a, b]), "psnr", {"method": "ddpm-obs"}, {"method": "dip"}
    )
    assert list(pairs.columns) == ["dataset", "task", "image", "a", "b", "difference"]
    assert pairs["difference"].tolist() == [2.0, 2.0, 4.0]
    assert stats.paired_comparison(pairs, n_boot=N_BOOT).n == 3


def test_filters_compare_canonical_spellings():
    frame = _two_methods(gain=1.0)
    pairs = stats.paired_differences(
        frame, "psnr", {"method": "ddpm-obs", "ckpt": 300}, {"method": "dip", "iters": 2000.0}
    )
    assert len(pairs) == 10


# ------------------------------------------------------------------------------ verdicts


@pytest.mark.parametrize(("gain", "expected"), [(1.0, stats.HELPS), (-1.0, stats.HURTS)])
def test_a_constant_difference_has_a_point_interval(gain, expected):
    frame = _two_methods(gain)
    pairs = stats.paired_differences(frame, "psnr", {"method": "ddpm-obs"}, {"method": "dip"})
    result = stats.paired_comparison(pairs, n_boot=N_BOOT)
    assert result.n == 10
    assert result.mean_diff == pytest.approx(gain)
    assert (result.ci_low, result.ci_high) == pytest.approx((gain, gain))
    assert result.verdict == expected


def test_symmetric_differences_show_no_measurable_difference():
    result = stats.paired_comparison([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], n_boot=N_BOOT)
    assert result.mean_diff == 0.0
    assert result.ci_low < 0 < result.ci_high
    assert result.verdict == stats.NO_DIFFERENCE


def test_lower_is_better_turns_a_negative_difference_into_help():
    result = stats.paired_comparison([-1.0] * 10, n_boot=N_BOOT, higher_is_better=False)
    assert result.verdict == stats.HELPS


def test_one_image_claims_nothing():
    result = stats.paired_comparison([5.0], n_boot=N_BOOT)
    assert math.isnan(result.ci_low) and math.isnan(result.mdd)
    assert result.verdict == stats.NO_DIFFERENCE


def test_missing_differences_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        stats.paired_comparison([1.0, math.nan, 2.0])


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_is_the_percentile_of_resampled_means():
    values = np.random.default_rng(1).normal(0.3, 1.0, size=25)
    result = stats.paired_comparison(values, level=0.9, n_boot=N_BOOT, seed=7)
    draws = np.random.default_rng(7).integers(0, len(values), size=(N_BOOT, len(values)))
    expected = np.percentile(values[draws].mean(axis=1), [5.0, 95.0])
    assert (result.ci_low, result.ci_high) == pytest.approx(tuple(expected), abs=0, rel=1e-12)


def test_bootstrap_is_deterministic_for_a_seed():
    values = np.random.default_rng(2).normal(0.0, 1.0, size=15)
    first = stats.paired_comparison(values, n_boot=N_BOOT, seed=3)
    again = stats.paired_comparison(values, n_boot=N_BOOT, seed=3)
    other = stats.paired_comparison(values, n_boot=N_BOOT, seed=4)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_bootstrap_blocks_bound_memory_for_many_images(monkeypatch):
    monkeypatch.setattr(stats, "BOOT_BLOCK_ELEMENTS", 64)
    values = np.random.default_rng(5).normal(1.0, 0.1, size=20)
    low, high = stats.bootstrap_ci(values, 0.95, 500, seed=0)
    assert low < values.mean() < high


# ------------------------------------------------------------------------------ Wilcoxon


def test_wilcoxon_exact_p_and_the_floor_of_five_images():
    result = stats.paired_comparison([1.0, 2.0, 3.0, 4.0, 5.0], n_boot=N_BOOT)
    assert result.p_method == stats.EXACT
    assert result.p == pytest.approx(0.0625)
    assert result.p == pytest.approx(scipy_stats.wilcoxon([1, 2, 3, 4, 5]).pvalue)
    assert result.min_p_reachable == pytest.approx(2 / 32)
    assert result.significance_reachable is False


def test_six_images_can_reach_significance():
    result = stats.paired_comparison([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], n_boot=N_BOOT)
    assert result.min_p_reachable == pytest.approx(2 / 64)
    assert result.significance_reachable is True
    assert result.p == pytest.approx(2 / 64)


def test_ties_and_zeros_use_the_normal_approximation():
    values = [0.0, 1.0, 1.0, 2.0, -0.5, 3.0]
    result = stats.paired_comparison(values, n_boot=N_BOOT)
    assert result.p_method == stats.NORMAL
    expected = scipy_stats.wilcoxon(values, method="asymptotic").pvalue
    assert result.p == pytest.approx(expected)


def test_all_zero_differences_carry_no_evidence():
    result = stats.paired_comparison([0.0] * 8, n_boot=N_BOOT)
    assert (result.p, result.p_method) == (1.0, stats.ALL_ZERO)
    assert result.verdict == stats.NO_DIFFERENCE


def test_minimum_detectable_difference_is_about_2_8_standard_errors():
    values = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    result = stats.paired_comparison(values, n_boot=N_BOOT)
    standard_error = values.std(ddof=1) / math.sqrt(len(values))
    assert result.mdd == pytest.approx(2.8 * standard_error, rel=0.01)


# ---------------------------------------------------------------------------------- Holm


def test_holm_textbook_example():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06.
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_is_monotone_in_the_raw_order_and_capped_at_one():
    raw = [0.4, 0.9, 0.8, 0.001, 0.3]
    adjusted = stats.holm(raw)
    in_raw_order = [adjusted[i] for i in np.argsort(raw)]
    assert in_raw_order == sorted(in_raw_order)
    assert max(adjusted) == 1.0
    assert all(a >= p for a, p in zip(adjusted, raw, strict=True))


def test_holm_levels_tighten_the_interval_of_the_smallest_p():
    assert stats.holm_levels([0.01, 0.04, 0.03, 0.005]) == pytest.approx(
        [1 - 0.05 / 3, 1 - 0.05 / 1, 1 - 0.05 / 2, 1 - 0.05 / 4]
    )
    assert stats.holm_levels([0.02, 0.02]) == pytest.approx([1 - 0.05 / 2] * 2)


def test_apply_holm_widens_intervals_and_adjusts_p():
    strong = stats.paired_comparison(np.linspace(0.5, 1.5, 12), n_boot=N_BOOT)
    null = stats.paired_comparison([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], n_boot=N_BOOT)
    corrected = stats.apply_holm([strong, null])
    assert [c.p_holm for c in corrected] == pytest.approx(stats.holm([strong.p, null.p]))
    assert corrected[0].level == pytest.approx(1 - 0.05 / 2)
    assert corrected[0].ci_low <= strong.ci_low and corrected[0].ci_high >= strong.ci_high
    assert [c.verdict for c in corrected] == [stats.HELPS, stats.NO_DIFFERENCE]


def test_apply_holm_stops_claiming_after_the_first_failure():
    # Nineteen small gains and one large loss: a small Wilcoxon p, but an interval over 0.
    outlier = stats.paired_comparison([1.0] * 19 + [-40.0], n_boot=N_BOOT)
    # All positive but one: a larger p, and an interval clear of 0 at any level used here.
    steady = stats.paired_comparison([-0.1, *np.linspace(0.5, 1.5, 9)], n_boot=N_BOOT)
    assert outlier.p < steady.p and outlier.verdict == stats.NO_DIFFERENCE
    corrected = stats.apply_holm([outlier, steady])
    assert corrected[1].ci_low > 0
    assert corrected[1].verdict == stats.NO_DIFFERENCE


# ------------------------------------------------------------------------------ refusals


def test_a_side_that_pools_two_checkpoints_is_refused():
    frame = pd.concat(
        [
            _two_methods(gain=1.0),
            _rows({**DDPM, "ckpt": 600}, "ddpm-obs", [22.0] * 10, sample_seed=0),
        ]
    )
    with pytest.raises(ValueError, match=r"pools cells that differ in \{'ckpt'"):
        stats.paired_differences(frame, "psnr", {"method": "ddpm-obs"}, {"method": "dip"})
    pairs = stats.paired_differences(
        frame, "psnr", {"method": "ddpm-obs", "ckpt": 600}, {"method": "dip"}
    )
    assert len(pairs) == 10


def test_sides_without_a_shared_image_are_refused():
    frame = pd.concat(
        [
            _rows(DIP, "dip", [20.0, 21.0], dip_seed=0),
            _rows(DDPM, "ddpm-obs", [22.0, 23.0], sample_seed=0).assign(image=[5, 6]),
        ]
    )
    with pytest.raises(ValueError, match="share no"):
        stats.paired_differences(frame, "psnr", {"method": "ddpm-obs"}, {"method": "dip"})


def test_a_selection_with_no_row_or_repeated_rows_is_refused():
    frame = _two_methods(gain=1.0)
    with pytest.raises(ValueError, match="selects no row"):
        stats.paired_differences(frame, "psnr", {"method": "dip-guided"}, {"method": "dip"})
    doubled = pd.concat([frame, _rows(DIP, "dip", [20.0] * 10, dip_seed=0)])
    with pytest.raises(ValueError, match="repeat the same"):
        stats.paired_differences(doubled, "psnr", {"method": "ddpm-obs"}, {"method": "dip"})


# --------------------------------------------------------------------------------- table


def test_comparison_table_has_one_row_per_comparison_and_value():
    frame = pd.concat(
        [_two_methods(gain=1.0), _rows({**DDPM, "ckpt": 600}, "ddpm-obs", [20.0] * 10)]
    )
    comparisons = {
        "DDPM vs DIP": ({"method": "ddpm-obs", "ckpt": 300}, {"method": "dip"}),
        "checkpoint 600 vs 300": ({"ckpt": 600}, {"ckpt": 300}),
    }
    table = stats.comparison_table(frame, comparisons, values=("psnr", "ssim"), n_boot=N_BOOT)
    assert list(table.columns) == list(stats.TABLE_COLUMNS)
    assert table[["name", "value"]].values.tolist() == [
        ["DDPM vs DIP", "psnr"],
        ["DDPM vs DIP", "ssim"],
        ["checkpoint 600 vs 300", "psnr"],
        ["checkpoint 600 vs 300", "ssim"],
    ]
    assert table["p_holm"].tolist() == pytest.approx(stats.holm(table["p"].tolist()))
    assert set(table["verdict"]) <= set(stats.VERDICTS)
    assert (table["n"] == 10).all()
    uncorrected = stats.comparison_table(frame, comparisons, n_boot=N_BOOT, holm_correct=False)
    assert uncorrected["p_holm"].isna().all()
    assert (uncorrected["level"] == 0.95).all()
