"""Leave-one-image-out tuning, ES-WMV on a known variance minimum, one trajectory for all
post-hoc rules, and the per-rule summary on cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats

from dipddpm.dip.recording import WindowVariance
from dipddpm.earlystop import POSTHOC_RULES, RULE_COLUMNS, es_wmv_stop, evaluate_baselines, loo
from dipddpm.earlystop.loo import (
    ES_WMV_PAPER,
    RuleGrid,
    compare_rules,
    default_grids,
    leave_one_image_out,
    score_candidates,
    summarise_rules,
)

# --------------------------------------------------------------------------- ES-WMV


def _variance_schedule(length: int = 3000) -> np.ndarray:
    """Noise variance of synthetic outputs: a bowl with its minimum at iteration 600, then,
    after iteration 2000, a fall to a ten times lower floor from 2600 to the end."""
    t = np.arange(1, length + 1, dtype=float)
    bowl = 0.01 * (1 + ((t - 600) / 300) ** 2)
    late = t > 2000
    bowl[late] = np.interp(t[late], [2000, 2600], [bowl[1999], 0.001])
    return bowl


def _wmv_trajectory(variance: np.ndarray, window: int = 100) -> pd.DataFrame:
    """The windowed moving variance (the fit's own WindowVariance) of outputs
    ``signal + sqrt(variance_t) * noise_t``."""
    gen = torch.Generator().manual_seed(0)
    signal = torch.rand((1, 3, 16, 16), generator=gen)
    wmv = WindowVariance(window)
    values = []
    for v in variance:
        wmv.push(signal + math.sqrt(v) * torch.randn(signal.shape, generator=gen))
        values.append(float(wmv.value(1)[0]))
    return pd.DataFrame({"iteration": np.arange(1, len(variance) + 1), "wmv": values})


def test_es_wmv_triggers_at_a_known_variance_minimum():
    traj = _wmv_trajectory(_variance_schedule())
    # The window over iterations t-99..t is centred on the bowl's minimum near t = 650.
    rule = POSTHOC_RULES["es_wmv"](0.1, {"patience": ES_WMV_PAPER["patience"]})
    stops = rule.labelled_stops(traj[list(RULE_COLUMNS["es_wmv"])])
    stop, decision = stops["es_wmv"]
    assert abs(stop - 650) <= 75
    # It triggered: it committed patience later, long before the run's deeper minimum ...
    assert decision == stop + 1000 < 2000
    assert traj.loc[traj["wmv"].idxmin(), "iteration"] > 2700
    # ... which a patience longer than the gap between the minima does find instead.
    assert es_wmv_stop(traj, patience=2500) > 2700
    # The windows before the first full one are undefined and skipped.
    assert traj["wmv"].iloc[:99].isna().all() and np.isfinite(traj["wmv"].iloc[99:]).all()


# ----------------------------------------------------------------- one trajectory for all


def _spy_on_rules(monkeypatch) -> list[tuple[str, pd.DataFrame]]:
    reads: list[tuple[str, pd.DataFrame]] = []
    for name, cls in POSTHOC_RULES.items():
        original = cls.labelled_stops

        def spy(self, traj, _name=name, _original=original):
            reads.append((_name, traj))
            return _original(self, traj)

        monkeypatch.setattr(cls, "labelled_stops", spy)
    return reads


def _trajectory(images: int = 2, length: int = 60, sigma: float = 0.1) -> pd.DataFrame:
    rows = []
    for i in range(images):
        t = np.arange(1, length + 1)
        rows.append(
            pd.DataFrame(
                {
                    "image": i,
                    "iteration": t,
                    "loss": sigma**2 * (0.5 + 2.0 * np.exp(-t / (10 + 5 * i))),
                    "wmv": np.r_[[np.nan] * 4, (t[4:] - 20 - 3 * i) ** 2 + 1.0],
                    "psnr_clean_ema": 30 - ((t - 25 - 2 * i) / 10.0) ** 2,
                    "elapsed_s": 0.01 * t,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_every_posthoc_rule_reads_the_same_trajectory(monkeypatch):
    reads = _spy_on_rules(monkeypatch)
    trajectory = _trajectory()
    clean = np.zeros((2, 3, 8, 8), dtype=np.float32)
    params = {"budgets": [10, 30], "patience": 5, "wmv_window": 5}
    evaluate_baselines(trajectory, {60: clean}, clean, 0.1, params)
    assert [name for name, _ in reads] == list(POSTHOC_RULES) * 2  # each once per image
    for i, image_reads in enumerate([reads[: len(POSTHOC_RULES)], reads[len(POSTHOC_RULES) :]]):
        mine = trajectory[trajectory["image"] == i]
        for name, frame in image_reads:
            # Same rows (the trajectory's own labels) and the trajectory's values.
            assert list(frame.columns) == list(RULE_COLUMNS[name])
            assert frame.index.equals(mine.index)
            pd.testing.assert_frame_equal(frame, mine[list(RULE_COLUMNS[name])])


def test_every_candidate_reads_its_cases_one_trajectory(monkeypatch):
    reads = _spy_on_rules(monkeypatch)
    trajectory = _trajectory().assign(sigma_task=0.1, wmv_5=lambda f: f["wmv"])
    grids = default_grids(budgets=[10, 30], taus=[1.0], windows=[5], patiences=[5, 10])
    grids[-1] = RuleGrid("es_wmv_paper", "es_wmv", ({"wmv_window": 5, "patience": 5},), False)
    score_candidates(trajectory, grids, ["image"], wmv_window=5)
    per_image = sum(len(g.settings) for g in grids)
    assert len(reads) == 2 * per_image
    for i in range(2):
        mine = trajectory[trajectory["image"] == i]
        for _, frame in reads[i * per_image : (i + 1) * per_image]:
            assert frame.index.equals(mine.index)
            np.testing.assert_array_equal(frame["iteration"], mine["iteration"])


# ------------------------------------------------------------------------- scoring cases


def test_candidates_are_scored_against_the_plain_oracle():
    trajectory = _trajectory().assign(
        sigma_task=0.1, wmv_50=lambda f: f["wmv"], wmv_100=lambda f: f["wmv"].shift(3)
    )
    grids = default_grids(budgets=[10, 30], taus=[1.0, 0.4], windows=[50, 100], patiences=[5])
    scores = score_candidates(trajectory, grids, ["image"])
    assert len(scores) == 2 * (2 + 2 + 2 + 1)
    rows = scores.set_index(["image", "rule", "setting"])
    assert rows.loc[(0, "fixed", "budgets=10"), "stop_iter"] == 10
    assert rows.loc[(0, "discrepancy", "tau=0.4"), "stop_iter"] == 60  # never: the end
    # loss <= sigma^2 where 2 exp(-t/10) <= 0.5: t >= 10 ln 4
    assert rows.loc[(0, "discrepancy", "tau=1"), "stop_iter"] == math.ceil(10 * math.log(4))
    assert rows.loc[(0, "es_wmv", "patience=5 wmv_window=50"), "stop_iter"] == 20
    assert rows.loc[(1, "es_wmv", "patience=5 wmv_window=100"), "stop_iter"] == 26
    assert rows.loc[(1, "es_wmv_paper", "patience=1000 wmv_window=100"), "stop_iter"] == 26
    assert (scores["oracle_iter"] == 25 + 2 * scores["image"]).all()
    np.testing.assert_allclose(scores["gap_plain_db"], scores["oracle_psnr"] - scores["psnr"])
    np.testing.assert_allclose(scores["seconds_to_stop"], 0.01 * scores["stop_iter"])
    assert (scores["gap_plain_db"] >= 0).all() and (scores["last_iter"] == 60).all()
    with pytest.raises(ValueError, match="needs a trajectory column 'wmv_200'"):
        score_candidates(trajectory, default_grids([10], [1.0], windows=[200]), ["image"])


def test_grids_are_checked():
    with pytest.raises(ValueError, match="unknown post-hoc rule 'nope'"):
        RuleGrid("x", "nope", ({},))
    with pytest.raises(ValueError, match="untuned and must have one setting"):
        RuleGrid("x", "es_wmv", ({"patience": 5}, {"patience": 6}), tuned=False)
    with pytest.raises(ValueError, match=r"unknown grid 'x' setting key\(s\) \['window'\]"):
        RuleGrid("x", "es_wmv", ({"window": 5},))
    with pytest.raises(ValueError, match="sigma_task"):
        score_candidates(_trajectory(), default_grids([10], [1.0]), ["image"])


# -------------------------------------------------------------------- leave one image out

IMAGES = ["A", "B", "C", "D"]
# Gap to the oracle per image for the two settings of the tuned rule "r": B, C and D
# prefer s0, A by far s1. Pooled with A's values, s1 would win for A; without them s0 does.
GAPS_R = {"A": (10.0, 0.0), "B": (0.2, 0.5), "C": (0.2, 0.5), "D": (0.2, 0.5)}


def _scores(gaps_r=GAPS_R) -> pd.DataFrame:
    """Two seeds per image; the tuned rule "r" (settings s0, s1) and the untuned "paper",
    whose gap is k + seed for the k-th image. The oracle PSNR is 30 dB, its stop 150."""
    rows = []
    for k, image in enumerate(IMAGES):
        for seed in (0, 1):
            case = {"image": image, "seed": seed, "oracle_iter": 150, "oracle_psnr": 30.0}
            case["last_iter"] = 1000
            for index, gap in enumerate(gaps_r[image]):
                rows.append(
                    {
                        **case,
                        "rule": "r",
                        "setting": f"s{index}",
                        "setting_index": index,
                        "tuned": True,
                        "stop_iter": 100 * (index + 1),
                        "psnr": 30.0 - gap,
                    }
                )
            rows.append(
                {
                    **case,
                    "rule": "paper",
                    "setting": "w",
                    "setting_index": 0,
                    "tuned": False,
                    "stop_iter": 300,
                    "psnr": 30.0 - (k + seed),
                }
            )
    frame = pd.DataFrame(rows)
    frame["decision_iter"] = frame["stop_iter"]
    frame["gap_plain_db"] = frame["oracle_psnr"] - frame["psnr"]
    frame["gap_db"] = frame["gap_plain_db"]
    return frame


def _chosen(result: pd.DataFrame, rule: str = "r") -> dict[str, str]:
    rows = result[result["rule"] == rule].drop_duplicates("image")
    return dict(zip(rows["image"], rows["setting"], strict=True))


def test_the_held_out_image_does_not_decide_its_own_setting():
    result = leave_one_image_out(_scores())
    # Without A: s0 (0.2) beats s1 (0.5). Without B: s0 (10 + 0.2 + 0.2) / 3 loses to s1
    # (0 + 0.5 + 0.5) / 3, and likewise without C or D.
    assert _chosen(result) == {"A": "s0", "B": "s1", "C": "s1", "D": "s1"}
    r = result[result["rule"] == "r"].set_index(["image", "seed"])
    assert r.loc[("A", 0), "gap_plain_db"] == 10.0  # A's own value at the chosen setting
    assert r.loc[("B", 1), "gap_plain_db"] == 0.5
    assert r.loc[("A", 0), "train_objective"] == pytest.approx(0.2)
    assert r.loc[("B", 0), "train_objective"] == pytest.approx(1.0 / 3.0)


def test_the_held_out_images_values_never_change_its_choice():
    base = _chosen(leave_one_image_out(_scores()))["A"]
    rng = np.random.default_rng(0)
    for _ in range(20):
        gaps = dict(GAPS_R, A=tuple(rng.uniform(-50, 50, 2)))
        assert _chosen(leave_one_image_out(_scores(gaps)))["A"] == base


def test_the_chooser_is_only_handed_the_other_images():
    seen = []

    def spy(train, group, objective):
        seen.append(set(train[group]))
        return loo.choose_setting(train, group, objective)

    leave_one_image_out(_scores(), chooser=spy)
    assert seen == [set(IMAGES) - {held_out} for held_out in IMAGES]


def test_untuned_rules_are_reported_as_they_are_and_the_oracle_is_added():
    result = leave_one_image_out(_scores())
    paper = result[result["rule"] == "paper"]
    assert len(paper) == 8 and paper["train_objective"].isna().all()
    oracle = result[result["rule"] == "oracle"]
    assert len(oracle) == 8 and (oracle["gap_plain_db"] == 0).all()
    assert (oracle["stop_iter"] == 150).all() and (oracle["decision_iter"] == 1000).all()
    with pytest.raises(ValueError, match="needs two images or more"):
        leave_one_image_out(_scores()[lambda f: f["image"] == "A"])


# ------------------------------------------------------------------------------ summary


def test_summary_on_a_known_answer():
    summary = summarise_rules(leave_one_image_out(_scores())).set_index("rule")
    r = summary.loc["r"]
    # Chosen gaps: A 10 (s0, stop 100); B, C, D 0.5 (s1, stop 200); two seeds each.
    assert (r["n_cases"], r["n_images"]) == (8, 4)
    assert r["mean_gap_plain_db"] == pytest.approx((2 * 10 + 6 * 0.5) / 8)
    assert r["median_gap_plain_db"] == 0.5 and r["mean_gap_db"] == r["mean_gap_plain_db"]
    assert r["share_within_0_5db"] == 0.75 and r["share_within_1db"] == 0.75
    assert r["mean_stop_iter"] == 175.0 and r["median_stop_iter"] == 200
    paper = summary.loc["paper"]  # gaps 0, 1, 1, 2, 2, 3, 3, 4
    assert paper["mean_gap_plain_db"] == pytest.approx(2.0)
    assert paper["share_within_0_5db"] == pytest.approx(1 / 8)
    assert paper["share_within_1db"] == pytest.approx(3 / 8)
    assert summary.loc["oracle", "mean_gap_plain_db"] == 0.0
    assert summary.loc["oracle", "share_within_0_5db"] == 1.0


def test_rule_comparisons_pair_cases_average_seeds_and_resample_images():
    results = leave_one_image_out(_scores())
    table = compare_rules(
        results, ["image", "seed"], references=("paper", "oracle"), holm_correct=False
    ).set_index("name")
    assert set(table.index) == {"r - paper", "oracle - paper", "r - oracle", "paper - oracle"}
    # Per image (seeds averaged): paper's gap k + 0.5; r's 10, 0.5, 0.5, 0.5.
    paper_vs_oracle = np.array([0.5, 1.5, 2.5, 3.5])
    row = table.loc["paper - oracle"]
    assert (row["n"], row["n_cases"]) == (4, 8)
    assert row["mean_diff"] == pytest.approx(2.0)
    assert row["ci_low"] <= 2.0 <= row["ci_high"] and row["level"] == 0.95
    factor = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    expected_mdd = factor * np.std(paper_vs_oracle, ddof=1) / 2.0
    assert row["mdd"] == pytest.approx(expected_mdd)
    # 4 images: the smallest exact two-sided p is 2 / 2^4 > 0.05.
    assert row["min_p_reachable"] == pytest.approx(0.125) and not row["significance_reachable"]
    assert "too few for significance" in row["note"] and f"{expected_mdd:.3g}" in row["note"]
    r_vs_paper = table.loc["r - paper"]
    assert r_vs_paper["mean_diff"] == pytest.approx(
        np.mean([10 - 0.5, 0.5 - 1.5, 0.5 - 2.5, 0.5 - 3.5])
    )
    corrected = compare_rules(results, ["image", "seed"], references=("paper",))
    assert corrected["p_holm"].notna().all()
    with pytest.raises(ValueError, match=r"reference rule\(s\) \['es_wmv_paper'\]"):
        compare_rules(results, ["image", "seed"])
