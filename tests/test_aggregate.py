"""Aggregation over per-cell result files written the way the pipeline stages write them:
rows stamped with their cell's identity (grid.stamp), files at the grid's paths."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dipddpm import aggregate as agg
from dipddpm import grid
from dipddpm.io import save_csv, save_json

OBS = {"purpose": "restoration", "dataset": "cifar10-test", "task": "denoise-s25"}
MODEL = {
    "train_dataset": "cifar10-train",
    "preset": "tiny",
    "schedule": "linear",
    "train_steps": 300,
    "train_seed": 0,
    "ckpt": 300,
}
FULL = {**MODEL, "mode": "full", "t_max": 1000}
TRUNC = {**MODEL, "mode": "truncated", "t_max": 300}
SAMPLER = {"sampler": "ddim", "eta": 0, "lam": 0, "window": None, "k": 1}


def _metrics(psnrs, **columns):
    frame = pd.DataFrame({"image": range(len(psnrs)), "psnr": psnrs})
    frame["ssim"] = frame["psnr"] / 40.0
    for key, value in columns.items():
        frame[key] = value
    return frame


def _sample_cell(model, start, t0, steps, seed=0, **extra):
    prior = (
        {"arch": "skip", "iters": 400, "dip_seed": 0}
        if start == "dip"
        else {"arch": None, "iters": None, "dip_seed": None}
    )
    return {
        **OBS,
        "obs_seed": 0,
        **model,
        **prior,
        "start": start,
        "t0": t0,
        **SAMPLER,
        "steps": steps,
        "sample_seed": seed,
        **extra,
    }


@pytest.fixture
def cells(tmp_path, monkeypatch):
    """DIP cells of two seeds, DDPM cells of every method at two step counts and two models."""
    monkeypatch.chdir(tmp_path)
    paths = []

    def put(kind, cell, frame, method):
        path = tmp_path / kind.path(cell, "metrics.csv")
        save_csv(path, grid.stamp(frame, cell, method))
        paths.append(path)

    for seed, shift in ((0, 0.0), (1, 1.0)):
        dip = {**OBS, "obs_seed": 0, "arch": "skip", "dip_seed": seed}
        put(
            grid.DIP,
            dip,
            _metrics(
                [24 + shift, 26 + shift],
                stage="dip",
                iters=400,
                peak_psnr=27 + shift,
                peak_iter=300,
            ),
            "dip",
        )
    for steps, gain in ((10, 0.0), (50, 2.0)):
        ddpm = {"stage": "ddpm", "nfe": steps}
        put(
            grid.SAMPLE,
            _sample_cell(FULL, "noise", 1000, steps),
            _metrics([15 + gain, 17 + gain], **ddpm),
            "ddpm-noise",
        )
        put(
            grid.SAMPLE,
            _sample_cell(FULL, "obs", "sigma", steps),
            _metrics([20 + gain, 22 + gain], **ddpm),
            "ddpm-obs",
        )
        for t0, base in ((50, 26.0), (200, 23.0)):
            put(
                grid.SAMPLE,
                _sample_cell(FULL, "dip", t0, steps),
                _metrics([base + gain, base + gain + 1], **ddpm),
                "dip+ddpm",
            )
        # The truncated model from the same prior is a cell of its own: never pooled.
        put(
            grid.SAMPLE,
            _sample_cell(TRUNC, "dip", 50, steps),
            _metrics([base + gain + 5, base + gain + 6], **ddpm),
            "dip+ddpm",
        )
    return paths


def test_collect_reads_identity_from_the_rows_not_the_path(cells):
    frame = agg.collect(cells)
    assert len(frame) == 2 * 2 + 2 * 5 * 2
    assert set(grid.IDENTITY_COLUMNS) <= set(frame.columns)
    combo = frame[frame["method"] == "dip+ddpm"]
    assert sorted(combo["t0"].unique(), key=int) == ["50", "200"]
    assert (frame.loc[frame["method"] == "dip", "steps"] == "none").all()
    assert frame["cell"].nunique() == len(cells)


def test_collect_refuses_rows_without_identity(tmp_path):
    path = tmp_path / "metrics.csv"
    save_csv(path, pd.DataFrame({"image": [0], "psnr": [20.0]}))
    with pytest.raises(ValueError, match="lacks identity column"):
        agg.collect([path])


def test_collect_reports_missing_files(tmp_path):
    with pytest.raises(ValueError, match="not found: .*nope.csv"):
        agg.collect([tmp_path / "nope.csv"])
    assert agg.collect([]).empty


def test_summarise_mean_std_and_t_interval():
    frame = pd.DataFrame(
        {"g": ["a"] * 4 + ["b"], "v": [1.0, 2.0, 3.0, 4.0, 7.0], "image": [0, 1, 2, 3, 0]}
    )
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


def test_method_comparison_rows_name_their_cells_and_n_is_images_times_seeds(cells):
    table = agg.method_comparison(agg.collect(cells))
    dip = table[table["method"] == "dip"].iloc[0]
    assert dip["psnr_mean"] == pytest.approx(25.5)  # 2 images x 2 DIP seeds
    assert dip["psnr_n"] == 4 and dip["n_images"] == 2 and dip["dip_seeds"] == "0,1"
    ddpm = table[table["method"] != "dip"]
    assert (ddpm["psnr_n"] == 2).all()  # one seed each: n = images
    # Full and truncated models from the same prior and t0 are separate rows.
    t50 = ddpm[(ddpm["t0"] == "50") & (ddpm["steps"] == "50")]
    assert sorted(t50["mode"]) == ["full", "truncated"]
    assert t50.set_index("mode").loc["truncated", "psnr_mean"] == pytest.approx(30.5)
    assert not table.duplicated(["label", "steps", "iters"]).any()  # a label names a family
    assert "DIP+DDPM (t0=50, prior skip-i400) · truncated-t300 · ddim eta=0" in set(table["label"])


def test_a_row_can_never_pool_two_checkpoints(cells, tmp_path):
    """Two cells that differ only in an axis the table does not group by: refused."""
    frame = agg.collect(cells)
    pooled = frame.copy()
    pooled.loc[pooled["mode"] == "truncated", "mode"] = "full"
    pooled.loc[pooled["t_max"] == "300", "t_max"] = "1000"
    with pytest.raises(agg.PoolingError, match="differ in"):
        agg.method_comparison(pooled)


def test_generation_cells_are_kept_out_of_restoration_tables(cells):
    frame = agg.collect(cells)
    frame.loc[frame["t0"] == "200", "purpose"] = "generation"
    table = agg.method_comparison(frame)
    assert "200" not in set(table["t0"]) and set(table["purpose"]) == {"restoration"}


def test_steps_to_quality_table(cells):
    table = agg.steps_to_quality_table(agg.collect(cells), target_psnr=22.0)
    by = {(r["method"], r["t0"], r["mode"]): r for r in table.to_dict("records")}
    obs = by[("ddpm-obs", "sigma", "full")]
    assert obs["steps_to_target"] == 50 and obs["nfe_to_target"] == 50
    assert by[("dip+ddpm", "50", "full")]["steps_to_target"] == 10
    noise = by[("ddpm-noise", "1000", "full")]
    assert math.isnan(noise["steps_to_target"]) and noise["best_psnr"] == pytest.approx(18.0)


def test_fid_curves_and_earlystop_tables(tmp_path):
    fid_paths = []
    for steps, fid in ((10, 80.0), (50, 40.0)):
        cell = {
            **FULL,
            "purpose": "generation",
            "start": "noise",
            "t0": 1000,
            **SAMPLER,
            "steps": steps,
            "sample_seed": 0,
        }
        path = tmp_path / f"gen{steps}/fid.json"
        record = {"fid": fid, "kid_mean": fid / 1000, "kid_std": 0.001, "stage": "fid"}
        identity = grid.full_identity(cell, "ddpm-noise")
        save_json(
            path, {**record, "identity": identity, "available": True, "reason": "", "n_samples": 64}
        )
        fid_paths.append(path)
    fid = agg.fid_table(agg.collect_json(fid_paths))
    assert fid["steps"].tolist() == ["10", "50"]
    assert fid["fid"].tolist() == [80.0, 40.0]
    assert (fid["n_sets"] == 1).all() and fid["sample_seeds"].tolist() == ["0", "0"]

    curve_paths = []
    for model, psnrs in ((FULL, [10, 15, 21]), (TRUNC, [12, 20, 24])):
        path = tmp_path / f"train/{model['mode']}/curve.csv"
        curve = pd.DataFrame(
            {
                "step": [100, 200, 300],
                "loss": [0.3, 0.2, 0.1],
                "images_per_s": 50.0,
                "eval_psnr": psnrs,
            }
        )
        save_csv(path, grid.stamp(curve, {**model, "purpose": "training"}))
        curve_paths.append(path)
    conv = agg.training_convergence(agg.load_curves(curve_paths), 20.0).set_index("mode")
    assert conv.loc["full", "steps_to_target"] == 300
    assert conv.loc["truncated", "steps_to_target"] == 200
    assert conv.loc["truncated", "final_eval_psnr"] == 24
    assert conv.loc["full", "final_loss"] == pytest.approx(0.1)

    stop = pd.DataFrame(
        {
            "rule": ["wmv", "wmv", "patience", "patience"],
            "image": [0, 1, 0, 1],
            "gap_plain_db": [0.5, 1.5, 3.0, 2.0],
            "within_1db": [1, 0, 0, 0],
            "iter_gap": [10, 30, 400, 200],
        }
    )
    stop = grid.stamp(stop, {**OBS, "obs_seed": 0, "arch": "skip", "dip_seed": 0}, "earlystop")
    table = agg.earlystop_comparison(stop).set_index("rule")
    assert table.loc["wmv", "gap_plain_db_mean"] == pytest.approx(1.0)
    assert table.loc["wmv", "within_1db_mean"] == pytest.approx(0.5)


def test_code_versions_list_every_version_and_warn_when_they_differ(cells, caplog):
    frame = agg.collect(cells)
    assert len(agg.code_versions(frame)) == 1
    frame.loc[frame["method"] == "dip", "code_hash"] = "other"
    versions = agg.code_versions(frame)
    assert sorted(versions["cells"]) == [2, 10]
    assert "2 code versions" in caplog.text


def test_writers_produce_csv_markdown_and_all_cells(cells, tmp_path):
    frame = agg.collect(cells)
    tables = agg.build_tables(frame, target_psnr=22.0)
    written = agg.write_tables(tables, tmp_path / "tables")
    assert {p.name for p in written} >= {"method_comparison.csv", "method_comparison.md"}
    markdown = (tmp_path / "tables/method_comparison.md").read_text()
    assert "DIP+DDPM (t0=50" in markdown and "nan" not in markdown.lower()
    assert "No rows" in (tmp_path / "tables/earlystop.md").read_text()

    agg.write_all_cells(frame, tmp_path / "all_cells.csv")
    back = agg.collect([tmp_path / "all_cells.csv"])
    assert len(back) == len(frame)
    assert pd.read_csv(tmp_path / "all_cells.csv").columns[0] == "stage"


def test_an_all_digit_commit_is_one_version_across_csv_and_json_cells(cells, tmp_path):
    frame = agg.collect(cells)
    frame["code_commit"] = "1287910"
    save_csv(tmp_path / "all.csv", frame)
    fid = tmp_path / "fid.json"
    identity = grid.full_identity(_sample_cell(FULL, "noise", 1000, 10), "ddpm-noise")
    save_json(
        fid,
        {
            "identity": identity,
            "fid": 1.0,
            "code_commit": "1287910",
            "code_hash": frame["code_hash"].iloc[0],
        },
    )
    versions = agg.code_versions(agg.collect([tmp_path / "all.csv"]), agg.collect_json([fid]))
    assert len(versions) == 1


def test_an_axis_added_later_reads_as_none_for_cells_it_does_not_apply_to(tmp_path):
    cell = {
        "purpose": "restoration",
        "dataset": "d",
        "task": "denoise-s25",
        "obs_seed": 0,
        "arch": "skip",
        "dip_seed": 0,
    }
    path = tmp_path / grid.DIP.path(cell, "metrics.csv")
    row = grid.full_identity({**cell, "iters": 100}, "dip")
    old = {k: v for k, v in row.items() if k not in ("window", "k")}
    save_csv(path, pd.DataFrame([{**old, "image": 0, "psnr": 20.0}]))
    frame = agg.collect([path])
    assert frame.loc[0, "window"] == "none" and frame.loc[0, "k"] == "none"
    # An axis the cell's own path names cannot be missing.
    save_csv(path, pd.DataFrame([{**{k: v for k, v in old.items() if k != "arch"}, "image": 0}]))
    with pytest.raises(ValueError, match=r"lacks identity column\(s\) \['arch'\]"):
        agg.collect([path])
