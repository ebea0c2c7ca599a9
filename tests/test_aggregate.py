"""Aggregation over per-cell result files written the way the pipeline stages write them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dipddpm import aggregate as agg
from dipddpm.io import save_csv, save_json


def _metrics(psnrs, **params):
    frame = pd.DataFrame({"image": range(len(psnrs)), "psnr": psnrs})
    frame["ssim"] = frame["psnr"] / 40.0
    for key, value in params.items():
        frame[key] = value
    return frame


@pytest.fixture
def cells(tmp_path):
    """Two DIP cells, DDPM cells of every method at two step counts, FID, curves, stops."""
    root = tmp_path / "results"
    paths = []

    def put(rel, frame):
        path = root / rel / "metrics.csv"
        save_csv(path, frame)
        paths.append(path)

    common = {"dataset": "cifar10", "task": "denoise"}
    for seed, shift in ((0, 0.0), (1, 1.0)):
        dip = dict(stage="dip", method="dip", arch="unet", iters=500, seed=seed)
        put(f"dip/seed={seed}", _metrics([24 + shift, 26 + shift], **dip, **common,
            peak_psnr=27 + shift, peak_iter=300))  # fmt: skip
    for steps, gain in ((10, 0.0), (50, 2.0)):
        put(f"noise/{steps}", _metrics([15 + gain, 17 + gain], stage="ddpm", method="ddpm-noise",
            steps=steps, nfe=steps, seed=0, **common))  # fmt: skip
        put(f"obs/{steps}", _metrics([20 + gain, 22 + gain], stage="ddpm", method="ddpm-obs",
            steps=steps, nfe=steps, seed=0, **common))  # fmt: skip
        for t0, base in ((0.2, 26.0), (0.5, 23.0)):
            # t0 comes from the folder name only: the collector must add it as a number.
            put(f"combo/t0={t0}/{steps}", _metrics([base + gain, base + gain + 1], stage="ddpm",
                method="dip+ddpm", steps=steps, nfe=steps, arch="unet", iters=500, seed=0,
                **common))  # fmt: skip
    return root, paths


def test_collect_unions_params_and_reads_folder_params(cells):
    _, paths = cells
    frame = agg.collect(paths)
    assert len(frame) == 2 * 2 + 2 * 2 * 2 + 2 * 2 * 2
    assert {"stage", "method", "arch", "iters", "steps", "nfe", "t0", "cell"} <= set(frame)
    combo = frame[frame["method"] == "dip+ddpm"]
    assert sorted(combo["t0"].unique()) == [0.2, 0.5]
    assert frame.loc[frame["method"] == "dip", "steps"].isna().all()
    assert frame["cell"].nunique() == len(paths)


def test_collect_reports_missing_files(tmp_path):
    with pytest.raises(ValueError, match="not found: .*nope.csv"):
        agg.collect([tmp_path / "nope.csv"])
    assert agg.collect([]).empty


def test_summarise_mean_std_and_t_interval():
    frame = pd.DataFrame({"g": ["a"] * 4 + ["b"], "v": [1.0, 2.0, 3.0, 4.0, 7.0]})
    table = agg.summarise(frame, ["g"], ["v"]).set_index("g")
    assert table.loc["a", "v_mean"] == pytest.approx(2.5)
    assert table.loc["a", "v_std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert table.loc["a", "v_n"] == 4
    half = stats.t.ppf(0.975, 3) * np.std([1, 2, 3, 4], ddof=1) / 2
    assert table.loc["a", "v_ci_low"] == pytest.approx(2.5 - half)
    assert table.loc["a", "v_ci_high"] == pytest.approx(2.5 + half)
    # A single observation has a mean but no interval.
    assert table.loc["b", "v_mean"] == 7.0
    assert math.isnan(table.loc["b", "v_ci_low"])


def test_method_comparison_labels_and_pools_seeds(cells):
    _, paths = cells
    table = agg.method_comparison(agg.collect(paths))
    dip = table[table["label"] == "DIP alone"].iloc[0]
    assert dip["psnr_mean"] == pytest.approx(25.5)  # images x seeds pooled
    assert dip["psnr_n"] == 4
    labels = table["label"].unique().tolist()
    assert labels == ["DIP alone", "DDPM from noise", "DDPM from observation",
                      "DIP+DDPM (t0=0.2)", "DIP+DDPM (t0=0.5)"]  # fmt: skip
    best_combo = table[(table["label"] == "DIP+DDPM (t0=0.2)") & (table["steps"] == 50)]
    assert best_combo["psnr_mean"].iloc[0] == pytest.approx(28.5)


def test_steps_to_quality_table(cells):
    _, paths = cells
    table = agg.steps_to_quality_table(agg.collect(paths), target_psnr=22.0).set_index("label")
    assert table.loc["DDPM from observation", "steps_to_target"] == 50
    assert table.loc["DDPM from observation", "nfe_to_target"] == 50
    assert table.loc["DIP+DDPM (t0=0.2)", "steps_to_target"] == 10
    assert math.isnan(table.loc["DDPM from noise", "steps_to_target"])
    assert table.loc["DDPM from noise", "best_psnr"] == pytest.approx(18.0)


def test_fid_curves_and_earlystop_tables(tmp_path):
    fid_paths = []
    for steps, fid in ((10, 80.0), (50, 40.0)):
        path = tmp_path / f"fid/method=ddpm-noise/steps={steps}/fid.json"
        record = {"fid": fid, "kid_mean": fid / 1000, "kid_std": 0.001, "stage": "fid"}
        save_json(path, {**record, "available": True, "reason": "", "n_samples": 64})
        fid_paths.append(path)
    fid = agg.fid_table(agg.collect_json(fid_paths))
    assert fid["steps"].tolist() == [10, 50]
    assert fid["fid"].tolist() == [80.0, 40.0]
    assert set(fid["label"]) == {"DDPM from noise"}

    curve_paths = []
    for mode, t_max, psnrs in (("full", 1000, [10, 15, 21]), ("truncated", 200, [12, 20, 24])):
        path = tmp_path / f"train/mode={mode}/t_max={t_max}/curve.csv"
        save_csv(path, pd.DataFrame({"step": [100, 200, 300], "loss": [0.3, 0.2, 0.1],
                                     "images_per_s": 50.0, "eval_psnr": psnrs}))  # fmt: skip
        curve_paths.append(path)
    conv = agg.training_convergence(agg.load_curves(curve_paths), 20.0).set_index("mode")
    assert conv.loc["full", "steps_to_target"] == 300
    assert conv.loc["truncated", "steps_to_target"] == 200
    assert conv.loc["truncated", "final_eval_psnr"] == 24
    assert conv.loc["full", "final_loss"] == pytest.approx(0.1)

    stop = pd.DataFrame({"rule": ["wmv", "wmv", "patience", "patience"],
                         "gap_db": [0.5, 1.5, 3.0, 2.0], "within_1db": [1, 0, 0, 0],
                         "iter_gap": [10, 30, 400, 200]})  # fmt: skip
    table = agg.earlystop_comparison(stop).set_index("rule")
    assert table.loc["wmv", "gap_db_mean"] == pytest.approx(1.0)
    assert table.loc["wmv", "within_1db_mean"] == pytest.approx(0.5)


def test_load_curves_requires_mode_and_t_max(tmp_path):
    path = tmp_path / "curve.csv"
    save_csv(path, pd.DataFrame({"step": [1], "loss": [0.5], "images_per_s": [1.0],
                                 "eval_psnr": [np.nan]}))  # fmt: skip
    with pytest.raises(ValueError, match="'mode'"):
        agg.load_curves([path])
    curves = agg.load_curves([path], params={"mode": "full", "t_max": 1000})
    assert curves["t_max"].iloc[0] == 1000


def test_writers_produce_csv_markdown_and_all_cells(cells, tmp_path):
    _, paths = cells
    frame = agg.collect(paths)
    tables = agg.build_tables(frame, target_psnr=22.0)
    written = agg.write_tables(tables, tmp_path / "tables")
    assert {p.name for p in written} >= {"method_comparison.csv", "method_comparison.md"}
    markdown = (tmp_path / "tables/method_comparison.md").read_text()
    assert "DIP+DDPM (t0=0.2)" in markdown and "nan" not in markdown.lower()
    assert "No rows" in (tmp_path / "tables/earlystop.md").read_text()

    agg.write_all_cells(frame, tmp_path / "all_cells.csv")
    back = pd.read_csv(tmp_path / "all_cells.csv")
    assert len(back) == len(frame)
    assert back.columns[0] == "stage"
