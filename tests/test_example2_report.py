"""Example 2's report section: its numbers on a synthetic leave-one-image-out table, and the
whole section (refits, checks, figures) on a tiny real cell built by the library's stages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dipddpm import example2_report as report
from dipddpm import grid, templates
from dipddpm.earlystop.loo import ORACLE
from dipddpm.io import load_npz, save_csv, save_npz
from dipddpm.stages import data as data_stage
from dipddpm.stages import earlystop as earlystop_stage
from dipddpm.stages import earlystop_loo as loo_stage
from dipddpm.stages import example2_report as stage

# ------------------------------------------------------------ synthetic loo table

PHOTOS = ["p0", "p1", "p2", "p3", "p4"]
PROGRESSIVE = "progressive geometric K=5 smax=50"
# Known gaps per rule, one per case (5 photos x 2 crops = 10 cases).
GAPS = {
    "fixed": [0.1, 0.2, 0.3, 0.4, 0.45, 0.49, 0.5, 0.6, 1.2, 2.0],  # 7 of 10 within 0.5 dB
    "discrepancy": [0.1, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.5, 2.0, 3.0],  # 1 within 0.5, 7 in 1
    loo_stage.TUNED_ES_WMV: [0.6 + 0.1 * k for k in range(10)],  # none within 0.5 dB
    loo_stage.UNTUNED_ES_WMV: [3.0 + 0.5 * k for k in range(10)],
    PROGRESSIVE: [0.0] * 6 + [0.7] * 4,  # 6 of 10 within 0.5 dB
}


def synthetic_cases(gaps=GAPS, photos=PHOTOS) -> pd.DataFrame:
    rows = []
    for rule, values in {**gaps, ORACLE: [0.0] * 10}.items():
        for case, gap in enumerate(values[: 2 * len(photos)]):
            photo = photos[case // 2]
            rows.append(
                {
                    "dataset": "natural",
                    "task": "denoise-s25",
                    "obs_seed": 0,
                    "arch": "skip",
                    "dip_seed": 0,
                    "photo": photo,
                    "name": f"{photo}#crop{case % 2}",
                    "rule": rule,
                    "setting": "",
                    "setting_index": 0,
                    "tuned": rule in ("fixed", "discrepancy", loo_stage.TUNED_ES_WMV),
                    "stop_iter": 100 + case,
                    "decision_iter": 100 + case,
                    "psnr": 30.0 - gap,
                    "oracle_iter": 100,
                    "oracle_psnr": 30.0,
                    "gap_plain_db": gap,
                    "gap_db": gap,
                    "seconds_to_stop": 1.0,
                }
            )
    return pd.DataFrame(rows)


def test_the_shares_and_the_within_sentence_follow_the_gaps():
    cases = synthetic_cases()
    summary = loo_stage.rule_summary(cases)
    shares = summary.set_index("rule")
    assert shares.loc["fixed", "share_within_0_5db"] == pytest.approx(0.7)
    assert shares.loc["discrepancy", "share_within_0_5db"] == pytest.approx(0.1)
    assert shares.loc["discrepancy", "share_within_1db"] == pytest.approx(0.7)
    assert report.within_sentence(summary) == (
        "fixed (70 % of cases) is within 0.5 dB of the plain-DIP oracle on at least 70 % of cases."
    )
    table = report.rule_table(summary, report.gap_intervals(cases), _no_ssim()).set_index("rule")
    assert table.loc["fixed", "within 0.5 dB"] == "70 %"
    assert table.loc["discrepancy", "within 1 dB"] == "70 %"
    assert table.loc[PROGRESSIVE, "within 0.5 dB"] == "60 %"
    assert table.loc["fixed", "mean gap (dB)"] == pytest.approx(np.mean(GAPS["fixed"]))
    assert table.loc["fixed", "n photos"] == 5 and table.loc["fixed", "n cases"] == 10
    # The interval is that of the per-photo means (balanced here): it brackets their mean.
    low, high = (float(v) for v in table.loc["fixed", "95 % CI"].strip("[]").split(","))
    assert low < np.mean(GAPS["fixed"]) < high
    assert table.loc[ORACLE, "95 % CI"] == "-"


def test_the_sentence_says_plainly_when_no_rule_is_close_enough():
    worse = {**GAPS, "fixed": [g + 0.6 for g in GAPS["fixed"]]}
    summary = loo_stage.rule_summary(synthetic_cases(worse))
    assert report.within_sentence(summary) == (
        "No rule is within 0.5 dB of the plain-DIP oracle on 70 % of cases or more; the "
        f"closest is {PROGRESSIVE} (60 % of cases)."
    )


def test_too_few_photographs_give_the_minimum_detectable_difference():
    cases = synthetic_cases(photos=PHOTOS[:3])
    comparisons = loo_stage.rule_comparisons(cases)
    text = report.comparison_table(comparisons)
    assert "n too small" in text and "minimum detectable difference" in text
    assert f"{PROGRESSIVE} - {loo_stage.UNTUNED_ES_WMV}" in text
    answer = report.answer(loo_stage.rule_summary(cases), comparisons, [PROGRESSIVE])
    assert f"against {loo_stage.UNTUNED_ES_WMV}: " in answer
    assert "n = 3 images is too few for significance" in answer


def _no_ssim() -> pd.DataFrame:
    return pd.DataFrame({"rule": [], "ssim": []})


@pytest.mark.parametrize(
    "names, chosen",
    [
        (["a#crop1", "a#crop0", "b#crop0", "b#crop1"], [1, 2]),
        (["c", "a#crop0", "a#crop2"], [0, 1]),
    ],
)
def test_the_example_images_are_each_photographs_first_crop(names, chosen):
    assert report.example_images(names) == chosen


def test_the_example_fits_are_the_lowest_noise_seed_and_observation_per_dataset():
    cells = [
        _cell(d, t, o, s, sched)
        for d in ("b", "a")
        for t in ("denoise-s50", "denoise-s25")
        for o in (1, 0)
        for s in (0,)
        for sched in ("geometric", "cosine")
    ]
    chosen = report.example_cells(cells, {"denoise-s25": 25, "denoise-s50": 50})
    assert [(c["dataset"], c["task"], c["obs_seed"], c["es_schedule"]) for c in chosen] == [
        ("a", "denoise-s25", "0", "cosine"),
        ("a", "denoise-s25", "0", "geometric"),
        ("b", "denoise-s25", "0", "cosine"),
        ("b", "denoise-s25", "0", "geometric"),
    ]
    assert [c["es_schedule"] for c in report.progressive_examples(chosen)] == ["cosine"] * 2
    assert report.example_cells(cells[::-1], {"denoise-s25": 25, "denoise-s50": 50}) == chosen


def _cell(dataset, task, obs, seed, schedule) -> dict:
    return grid.EARLYSTOP.identity(
        {
            "dataset": dataset,
            "task": task,
            "obs_seed": obs,
            "arch": "skip",
            "es_schedule": schedule,
            "stages": 2,
            "sigma_max": 50,
            "stage_patience": 20,
            "dip_seed": seed,
        }
    )


def test_the_refit_check_refuses_a_mismatching_trajectory():
    cell = pd.DataFrame({"image": [0, 0, 1], "iteration": [1, 2, 1], "psnr": [10.0, 11.0, 12.0]})
    assert report.check_reproduced(cell, cell, "psnr", "fit") == 0
    off = cell.assign(psnr=cell["psnr"] + [0, 0.002, 0])
    with pytest.raises(ValueError, match="fit does not reproduce its cell.*iteration 2"):
        report.check_reproduced(off, cell, "psnr", "fit")
    longer = pd.concat([cell, pd.DataFrame({"image": [0], "iteration": [3], "psnr": [9.0]})])
    with pytest.raises(ValueError, match="no 'psnr' at image 0, iteration 3"):
        report.check_reproduced(longer, cell, "psnr", "fit")


def test_the_progressive_refit_replays_the_cells_backtracking_resets():
    # Stage ends (K = 3 stages x 2 images): the noisy stages' ends are the resets.
    assert stage.cell_resets(np.array([[3, 5], [0, 7], [9, 9]])) == {3, 5, 7}

    class Fitter:
        iteration = 0

        def __init__(self):
            self.calls = []

        def reset_backtracking(self):
            self.calls.append(("reset", self.iteration))

        def step(self, observed, operator):
            self.iteration += 1
            self.calls.append(("step", self.iteration))

    fitter = Fitter()
    replayed = stage.CellResets(fitter, {2})
    for _ in range(4):
        replayed.step(None, None)
    # The cell reset after iteration 2, before the third step; the rest is the fitter's.
    assert fitter.calls == [("step", 1), ("step", 2), ("reset", 2), ("step", 3), ("step", 4)]
    assert replayed.iteration == 4


def test_the_template_has_a_value_for_every_placeholder(section):
    assert "{{" not in section
    assert {"answer", "rules", "refit"} <= templates.placeholders(templates.template("example2"))


# ------------------------------------------------------------------- a tiny real cell

ARCH = {"kind": "skip", "depth": 2, "channels_down": 4, "channels_up": 4, "skip_channels": 2}
DIP = {"lr": 0.01, "reg_noise_std": 0.0333, "exp_weight": 0.99, "backtrack": True}
ES = {
    "iters_per_stage": 3,
    "final_iters": 8,
    "noise": "fresh",
    "budgets": [5, 10],
    "tau": 1.0,
    "wmv_window": 3,
    "wmv_patience": 4,
    "wmv_windows": [5],
    "run_past_peak": 8,
    "max_iters": 40,
}
SETTINGS = {
    "budgets": [5, 10],
    "wmv_window": 3,
    "wmv_patience": 4,
    "wmv_windows": [5],
    "loo_taus": [0.8, 1.0],
    "loo_patiences": [4, 8],
    "iters_per_stage": 3,
    "final_iters": 8,
    "noise": "fresh",
    "exp_weight": 0.99,
}
CELL = {
    "dataset": "tiny",
    "task": "denoise-s25",
    "obs_seed": "0",
    "arch": "skip",
    "es_schedule": "geometric",
    "stages": "2",
    "sigma_max": "50",
    "stage_patience": "20",
    "dip_seed": "0",
}
NAMES = ["a#crop0", "a#crop1", "b#crop0", "b#crop1", "c#crop1", "c#crop0"]
LOO = ["cases", "summary", "summary_by_task", "comparisons", "choices", "plain_peaks"]


def _files(name: str) -> str:
    return grid.EARLYSTOP.path(CELL, name)


def _observation(name: str) -> str:
    return grid.OBSERVATION.path(grid.observation_of(CELL), name)


def _plain(name: str) -> str:
    return grid.EARLYSTOP_PLAIN.path(grid.plain_fit_of(CELL), name)


# The plain fit's default length as the pipeline sets it: (2 - 1) x 3 + 8.
PLAIN_ES = {
    **{key: ES[key] for key in ("budgets", "tau", "wmv_window", "wmv_patience")},
    **{key: ES[key] for key in ("wmv_windows", "run_past_peak", "max_iters")},
    "plain_default_iters": 11,
}
PLAIN_FILES = ("baselines.csv", "trajectory.csv", "params.json")


def _loo(name: str) -> str:
    return f"{grid.RESULTS}/earlystop/loo_{name}.csv"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One real early-stopping cell (6 crops of 3 photographs, 16x16) with its loo tables,
    built by the library's stages; the working directory while the fixture sets it up."""
    root = tmp_path_factory.mktemp("example2")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        save_npz("clean.npz", images=_images(), names=np.array(NAMES))
        task = {"kind": "denoise", "sigma": 25}
        data_stage.degrade_dataset(
            "clean.npz",
            "denoise-s25",
            task,
            0,
            _observation("degraded.npz"),
            _observation("params.json"),
            "preview.png",
        )
        earlystop_stage.run_plain_cell(
            _observation("degraded.npz"),
            _observation("params.json"),
            grid.plain_fit_of(CELL),
            ARCH,
            DIP,
            PLAIN_ES,
            "cpu",
            1,
            *[_plain(name) for name in PLAIN_FILES],
        )
        earlystop_stage.run_cell(
            _observation("degraded.npz"),
            _observation("params.json"),
            *[_plain(name) for name in PLAIN_FILES],
            cell=CELL,
            arch=ARCH,
            dip=DIP,
            es=ES,
            device="cpu",
            threads=1,
            out_table=_files("earlystop.csv"),
            out_curves=_files("stage_curves.csv"),
            out_trajectory=_files("trajectory.csv"),
            out_npz=_files("outputs.npz"),
            out_json=_files("params.json"),
        )
        loo_stage.summarise_earlystop_loo(
            [_files("trajectory.csv")],
            [_files("earlystop.csv")],
            [_files("params.json")],
            [_observation("params.json")],
            SETTINGS,
            *[_loo(name) for name in LOO],
        )
        yield root


def _images() -> np.ndarray:
    """Smooth ramps with a little texture, one per crop."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.2, 0.8, 16, dtype=np.float32)
    images = [
        (0.5 + 0.1 * i) * ramp[None, :, None]
        + 0.3 * ramp[None, None, :]
        + 0.05 * rng.random((3, 16, 16))
        for i in range(len(NAMES))
    ]
    return np.clip(np.stack(images), 0, 1).astype(np.float32)


def _refit_plain(out: str) -> pd.DataFrame:
    return stage.refit_plain(
        _loo("cases"),
        [_files("trajectory.csv")],
        [_files("earlystop.csv")],
        [_files("params.json")],
        [_observation("params.json")],
        [_observation("degraded.npz")],
        DIP,
        1,
        f"{out}.npz",
        f"{out}.csv",
    )


@pytest.fixture(scope="module")
def section(workdir) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        _refit_plain("plain")
        stage.refit_progressive(
            [_files("params.json")],
            [_files("stage_curves.csv")],
            [_files("outputs.npz")],
            [_observation("degraded.npz")],
            DIP,
            1,
            "progressive.npz",
            "progressive.csv",
        )
        return stage.write_example2(
            {name: _loo(name) for name in LOO if name != "choices"},
            [_files("trajectory.csv")],
            [_files("earlystop.csv")],
            [_files("params.json")],
            [_observation("params.json")],
            [_files("stage_curves.csv")],
            ("plain.npz", "plain.csv"),
            ("progressive.npz", "progressive.csv"),
            SETTINGS,
            "section/example2.md",
            *[f"section/figures/example2_{name}.png" for name in ("curves", "gaps", "crops")],
        )


def test_the_refits_reproduce_their_cell(workdir, section):
    plain = pd.read_csv(workdir / "plain.csv")
    # The first crop of each photograph, wherever it lies in the observation.
    assert list(plain.drop_duplicates("example")["name"]) == ["a#crop0", "b#crop0", "c#crop0"]
    assert (plain["max_abs_diff_db"] == 0).all() and (plain["output_diff_db"] < 1e-3).all()
    cases = pd.read_csv(workdir / _loo("cases"))
    a0 = cases[(cases["name"] == "a#crop0") & ~cases["rule"].str.startswith("progressive")]
    assert set(plain.loc[plain["name"] == "a#crop0", "stop_iter"]) == set(a0["stop_iter"])
    outputs = load_npz(workdir / "plain.npz")["outputs"]
    assert outputs.shape == (len(plain), 3, 16, 16)
    progressive = pd.read_csv(workdir / "progressive.csv")
    assert (progressive["max_abs_diff_db"] == 0).all()
    assert list(progressive["point"][:2]) == ["stage 0 end", "stop"]
    saved = load_npz(workdir / _files("outputs.npz"))
    stop = progressive[(progressive["name"] == "a#crop0") & (progressive["point"] == "stop")]
    assert int(stop["iteration"].iloc[0]) == int(saved["stops"][0])


def test_a_refit_that_does_not_reproduce_its_cell_is_refused(workdir, section, monkeypatch):
    monkeypatch.chdir(workdir)
    trajectory = pd.read_csv(_files("trajectory.csv"))
    tampered = trajectory.copy()
    tampered.loc[(tampered["image"] == 2) & (tampered["iteration"] == 3), "psnr_clean_ema"] += 0.01
    try:
        save_csv(_files("trajectory.csv"), tampered)
        with pytest.raises(ValueError, match="does not reproduce its cell.*image 2, iteration 3"):
            _refit_plain("tampered")
    finally:
        save_csv(_files("trajectory.csv"), trajectory)


def test_the_section_is_filled_and_its_figures_written(workdir, section):
    assert "{{" not in section
    assert "### Answer" in section and "| fixed " in section
    assert "within 0.5 dB of the plain-DIP oracle" in section
    assert "6 cases: 6 images (crops of 3 photographs" in section
    assert "bit for bit" in section
    for name in ("curves", "gaps", "crops"):
        assert (workdir / "section" / "figures" / f"example2_{name}.png").stat().st_size > 1000
        assert f"(figures/example2_{name}.png)" in section
    assert (workdir / "section" / "example2.md").read_text() == section


def test_a_comparison_without_a_note_reads_no_nan():
    from dipddpm.example2_report import comparison_phrase

    row = pd.Series(
        {"b": "oracle", "mean_diff": 0.47, "ci_low": 0.39, "ci_high": 0.59}
        | {"significance_reachable": True, "verdict": "hurts", "p_holm": 0.0586}
        | {"note": float("nan")}
    )
    text = comparison_phrase(row)
    assert text == "against oracle: +0.47 dB [+0.39, +0.59], hurts (Holm p = 0.0586)"
    assert "nan" not in comparison_phrase(row.drop("note"))
