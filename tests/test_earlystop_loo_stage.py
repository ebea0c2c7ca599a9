"""The early-stopping cell's new plain-fit keys and the leave-one-image-out summary stage on
synthetic cells: one case per plain fit, photos held out with all their crops, every rule
scored against the same oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dipddpm import grid
from dipddpm.earlystop.loo import score_candidates
from dipddpm.io import save_csv, save_json
from dipddpm.stages import earlystop as stage
from dipddpm.stages import earlystop_loo as loo_stage

ES = {
    "budgets": [10, 30],
    "tau": 1.0,
    "wmv_window": 5,
    "wmv_patience": 5,
    "iters_per_stage": 3,
    "final_iters": 10,
    "noise": "fresh",
}
SETTINGS = {
    "budgets": [10, 30],
    "wmv_window": 5,
    "wmv_patience": 5,
    "wmv_windows": [8],
    "loo_taus": [0.5, 1.0],
    "loo_patiences": [3, 6],
}
SIGMA = 25.0


# ----------------------------------------------------------------------- the cell's keys


def test_a_cell_without_the_new_keys_gets_todays_baseline_params():
    assert stage.baseline_params(ES) == {
        "budgets": [10, 30],
        "tau": 1.0,
        "wmv_window": 5,
        "patience": 5,
    }


def test_the_new_keys_reach_the_plain_fit():
    params = stage.baseline_params({**ES, "run_past_peak": 20, "max_iters": 60, "wmv_windows": [8]})
    assert params["run_past_peak"] == 20 and params["max_iters"] == 60
    assert params["wmv_windows"] == [8]


def test_peaks_are_named_after_their_images():
    info = {"plain_past_peak": {"images": [{"image": 1, "peak_iter": 3}]}}
    stage.name_peaks(info, np.array(["a#crop0", "a#crop1"]))
    assert info["plain_past_peak"]["images"][0]["name"] == "a#crop1"
    stage.name_peaks({}, np.array(["a"]))  # a fixed-length fit records no peaks


@pytest.mark.parametrize(
    "name, photo",
    [
        ("astronaut#crop1", "astronaut"),
        ("inpainting_kate#crop12", "inpainting_kate"),
        ("cifar10-jpeg/test/cat/0269.jpg", "cifar10-jpeg/test/cat/0269.jpg"),
        ("odd#crop01", "odd#crop01"),  # no crop_name spells it
        ("odd#cropx", "odd#cropx"),
    ],
)
def test_a_crop_belongs_to_its_photo(name, photo):
    assert loo_stage.photo_of(name) == photo


# ------------------------------------------------------------------- synthetic cells


def _trajectory(images: int, length: int, shift: float) -> pd.DataFrame:
    """Per image a PSNR peak at 25 + 2 i + shift, a falling residual and a variance bowl."""
    rows = []
    for i in range(images):
        t = np.arange(1, length + 1)
        centre = 25 + 2 * i + shift
        wmv = (t - centre + 3) ** 2 + 1.0
        rows.append(
            pd.DataFrame(
                {
                    "image": i,
                    "iteration": t,
                    "loss": (SIGMA / 255) ** 2 * (0.5 + 2.0 * np.exp(-t / (10 + 5 * i))),
                    "psnr_clean": 0.0,
                    "psnr_clean_ema": 30 - ((t - centre) / 10.0) ** 2,
                    "wmv": np.r_[[np.nan] * 4, wmv[4:]],
                    "wmv_8": np.r_[[np.nan] * 7, wmv[7:] + 0.5],
                    "elapsed_s": 0.01 * t,
                    "window": "none",  # a stamped identity column the stage must ignore
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _table(images: int) -> pd.DataFrame:
    rows = []
    for i in range(images):
        for rule, stop in (("progressive", 20 + i), ("progressive_oracle", 24)):
            rows.append(
                {
                    "run": "progressive",
                    "rule": rule,
                    "image": i,
                    "stop_iter": stop,
                    "decision_iter": stop + 2,
                    "psnr": 28.0 - 0.1 * i,
                    "gap_db": 0.5,
                }
            )
        rows.append({"run": "plain", "rule": "oracle", "image": i, "stop_iter": 25, "psnr": 30})
    return pd.DataFrame(rows)


def _write_cell(
    dataset: str, schedule: str, length: int, shift: float, names, peaks=None, patience=20
):
    cell = {
        "dataset": dataset,
        "task": "denoise-s25",
        "obs_seed": 0,
        "arch": "skip",
        "es_schedule": schedule,
        "stages": 2,
        "sigma_max": 50,
        "stage_patience": patience,
        "dip_seed": 0,
    }
    identity = grid.EARLYSTOP.identity(cell)
    observation = grid.OBSERVATION.path(grid.observation_of(identity), "params.json")
    save_json(observation, {"kind": "denoise", "sigma": SIGMA, "names": list(names)})
    info = {"progressive_seconds": 2.0, "progressive_iters": 40}
    if peaks is not None:
        info["plain_past_peak"] = peaks
    files = {
        "trajectory": grid.EARLYSTOP.path(identity, "trajectory.csv"),
        "table": grid.EARLYSTOP.path(identity, "earlystop.csv"),
        "params": grid.EARLYSTOP.path(identity, "params.json"),
        "observation": observation,
    }
    save_csv(files["trajectory"], _trajectory(len(names), length, shift))
    save_csv(files["table"], _table(len(names)))
    save_json(files["params"], {**identity, "info": info})
    return files


def _capped_peaks(names) -> dict:
    images = [
        {"image": i, "peak_iter": 25, "peak_psnr": 30.0, "ran_to": 40, "hit_cap": i == 1}
        | {"peak_known": True, "name": name}
        for i, name in enumerate(names)
    ]
    return {"patience": 20, "max_iters": 40, "images": images}


@pytest.fixture
def summary(tmp_path, monkeypatch):
    """Photos a and b, two crops each, in two datasets; dataset a has two cells (two
    schedules) on one plain fit, the cosine cell's run the longer one."""
    monkeypatch.chdir(tmp_path)
    names_a, names_b = ["a#crop0", "a#crop1"], ["b#crop0", "b#crop1"]
    cells = [
        _write_cell("set-a", "linear", 45, 0.0, names_a),
        _write_cell("set-a", "cosine", 60, 0.0, names_a, _capped_peaks(names_a)),
        _write_cell("set-b", "cosine", 60, 9.0, names_b, _capped_peaks(names_b)),
    ]
    return _summarise(cells, tmp_path), cells


def loo_stage_tables() -> list[str]:
    return ["cases", "summary", "summary_by_task", "comparisons", "choices", "plain_peaks"]


def _summarise(cells, folder) -> dict[str, pd.DataFrame]:
    outputs = {name: folder / f"loo_{name}.csv" for name in loo_stage_tables()}
    loo_stage.summarise_earlystop_loo(
        [c["trajectory"] for c in cells],
        [c["table"] for c in cells],
        [c["params"] for c in cells],
        [c["observation"] for c in cells],
        settings=SETTINGS,
        **{f"out_{name}": path for name, path in outputs.items()},
    )
    return {name: pd.read_csv(path) for name, path in outputs.items()}


def test_cells_of_two_stage_patiences_are_two_progressive_rules(tmp_path, monkeypatch):
    """Their names spell the patience (one patience alone keeps the names without it), so
    their cases are never pooled; the one plain fit they share is counted once."""
    monkeypatch.chdir(tmp_path)
    names = ["a#crop0", "b#crop0"]
    cells = [_write_cell("set-a", "cosine", 60, 0.0, names, patience=p) for p in (20, 5)]
    table = _summarise(cells, tmp_path)["summary"].set_index("rule")
    rules = [f"progressive cosine K=2 smax=50 spat={p}" for p in (20, 5)]
    assert set(rules) <= set(table.index)
    assert (table.loc[[*rules, "oracle"], "n_cases"] == 2).all()


def test_every_rule_is_reported_once_per_case(summary):
    tables, _ = summary
    table = tables["summary"].set_index("rule")
    posthoc = ["fixed", "discrepancy", "es_wmv", "es_wmv_untuned", "oracle"]
    progressive = ["progressive linear K=2 smax=50", "progressive cosine K=2 smax=50"]
    assert list(table.index) == posthoc + progressive
    # Four crops; the two set-a cells share one plain fit, counted once.
    assert (table.loc[posthoc, "n_cases"] == 4).all()
    assert (table.loc[posthoc, "n_images"] == 2).all()  # photos, each held out in turn
    # The linear schedule ran on set-a only: its own rows, never the cosine cell's.
    assert table.loc["progressive linear K=2 smax=50", ["n_cases", "n_images"]].tolist() == [2, 1]
    assert table.loc["oracle", "mean_gap_plain_db"] == 0
    assert table.loc["es_wmv", "tuned"] and not table.loc["es_wmv_untuned", "tuned"]
    assert table.loc["es_wmv_untuned", "settings"] == "patience=5 wmv_window=5 (2/2 photos)"
    expected = ["mean_gap_db", "share_within_0_5db", "share_within_1db", "mean_seconds_to_stop"]
    assert set(expected) <= set(table.columns)
    assert list(tables["summary_by_task"]["task"].unique()) == ["denoise-s25"]


def test_the_longest_run_of_a_plain_fit_stands_for_it(summary):
    tables, _ = summary
    cases = tables["cases"]
    assert (cases.loc[cases["dataset"] == "set-a", "last_iter"] == 60).all()


def test_a_photo_is_held_out_with_all_its_crops(summary):
    """With two photos, a's setting is the best one on b's two crops alone."""
    tables, cells = summary
    loaded = loo_stage.load_cells(
        [c["trajectory"] for c in cells],
        [c["table"] for c in cells],
        [c["params"] for c in cells],
        [c["observation"] for c in cells],
    )
    scores = score_candidates(
        loo_stage.plain_trajectories(loaded),
        loo_stage.rule_grids(SETTINGS),
        loo_stage.CASE_COLUMNS,
        sigma_column=loo_stage.SIGMA_COLUMN,
        wmv_window=SETTINGS["wmv_window"],
    )
    choices = tables["choices"].set_index(["rule", "photo"])
    for rule in ("fixed", "discrepancy", "es_wmv"):
        on_b = scores[(scores["rule"] == rule) & (scores["photo"] == "b")]
        means = on_b.groupby(["setting_index", "setting"])["gap_plain_db"].mean()
        best = means.idxmin()
        assert choices.loc[(rule, "a"), "setting"] == best[1]
        assert choices.loc[(rule, "a"), "train_objective"] == pytest.approx(means[best])
    assert set(choices.index.get_level_values("photo")) == {"a", "b"}


def test_progressive_rows_are_scored_against_the_plain_oracle(summary):
    tables, _ = summary
    cases = tables["cases"]
    rows = cases[cases["rule"] == "progressive cosine K=2 smax=50"]
    np.testing.assert_allclose(rows["gap_plain_db"], rows["oracle_psnr"] - rows["psnr"])
    np.testing.assert_allclose(rows["seconds_to_stop"], rows["stop_iter"] * 2.0 / 40)
    assert not rows["tuned"].any()


def test_comparisons_are_against_es_wmv_and_the_oracle(summary):
    tables, _ = summary
    comparisons = tables["comparisons"]
    assert set(comparisons["b"]) == {"es_wmv_untuned", "es_wmv", "oracle"}
    rules = set(tables["summary"]["rule"])
    for reference in ("es_wmv_untuned", "es_wmv", "oracle"):
        mine = comparisons[comparisons["b"] == reference]
        assert set(mine["a"]) == rules - {reference}
    # Pairs on every photo, but the linear schedule's, which ran on photo a only.
    on_one_photo = comparisons["name"].str.startswith("progressive linear")
    assert (comparisons.loc[on_one_photo, "n"] == 1).all()
    both = comparisons[~on_one_photo]
    assert (both["n"] == 2).all() and (both["n_cases"] == 4).all()
    assert both[["ci_low", "ci_high", "p_holm", "mdd"]].notna().all().all()
    assert comparisons["note"].str.contains("too few for significance").all()


def test_the_cap_is_reported_per_cell_and_image(summary):
    tables, _ = summary
    peaks = tables["plain_peaks"]
    assert len(peaks) == 6  # three cells of two images
    linear = peaks[peaks["es_schedule"] == "linear"]
    assert linear["hit_cap"].isna().all() and linear["run_past_peak"].isna().all()
    capped = peaks[peaks["es_schedule"] == "cosine"].set_index(["dataset", "image"])
    assert capped["hit_cap"].tolist() == [False, True, False, True]
    assert (capped["run_past_peak"] == 20).all() and (capped["max_iters"] == 40).all()
    assert set(peaks["photo"]) == {"a", "b"}
