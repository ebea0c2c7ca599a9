"""The plain fit for the post-hoc rules (issue 18): ES-WMV at several windows recorded along
one fit, a fit continued in segments equal to one long fit, and the plain fit run to every
image's PSNR peak + a patience under a hard cap."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from dipddpm.dip import fit_dip
from dipddpm.dip.recording import WindowVariance, wmv_column
from dipddpm.earlystop import es_wmv_stop, oracle_stop, run_earlystop_cell
from dipddpm.earlystop.loo import ES_WMV_PAPER, default_grids, score_candidates
from dipddpm.earlystop.past_peak import PEAK_COLUMNS, fit_past_peak, running_peaks
from dipddpm.operators import Operator

# 8x8 images and a one-level skip network: a fit peaks within ~40 steps, in ~5 ms a step.
MICRO = {"depth": 1, "channels_down": 8, "channels_up": 8, "input_channels": 4}
FIT = {"lr": 0.02, "exp_weight": 0.9, "progress": False}
SEEDS = [1, 2]
PATIENCE = 10


# Bit-identity comparisons hold for a fixed thread count (conftest's one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _images(k: int = 2, size: int = 8, sigma: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images and their noisy observations."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(k, 3, size // 4, size // 4, generator=g)
    clean = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    noisy = (clean + sigma * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return clean, noisy


def _fit(iters: int, **kw):
    clean, noisy = _images()
    args = {"clean": clean, **FIT, **kw}
    return fit_dip(noisy, Operator("denoise"), "skip", MICRO, SEEDS, iters=iters, **args)


def _without_timing(trajectory: pd.DataFrame) -> pd.DataFrame:
    return trajectory.drop(columns="elapsed_s").reset_index(drop=True)


# ------------------------------------------------------------ ES-WMV at several windows


def test_extra_windows_are_the_variance_of_the_last_raw_outputs():
    iters, windows = 24, (3, 4, 7)
    result = _fit(iters, snapshots=range(1, iters + 1), wmv_window=4, wmv_windows=windows)
    traj = result.trajectory
    assert [c for c in traj.columns if c.startswith("wmv")] == ["wmv", "wmv_3", "wmv_4", "wmv_7"]
    # The raw output of every step, as the fit saw it (float32 snapshots are exact copies).
    raw = np.stack([result.snapshots_raw[t] for t in range(1, iters + 1)]).astype(np.float64)
    for window in windows:
        for image in range(len(SEEDS)):
            got = traj.loc[traj["image"] == image, wmv_column(window)].to_numpy()
            expected = np.full(iters, np.nan)
            for t in range(window, iters + 1):
                expected[t - 1] = raw[t - window : t, image].var(axis=0).mean()
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
    # The window of the wmv column recorded twice is one computation: identical values.
    assert traj["wmv"].equals(traj["wmv_4"])


def test_extra_windows_leave_every_other_column_and_snapshot_unchanged():
    plain = _fit(20, snapshots=[7], wmv_window=4)
    extra = _fit(20, snapshots=[7], wmv_window=4, wmv_windows=(2, 9))
    columns = list(plain.trajectory.drop(columns="elapsed_s").columns)
    pd.testing.assert_frame_equal(
        _without_timing(plain.trajectory), _without_timing(extra.trajectory)[columns]
    )
    for t in (7, 20):
        assert np.array_equal(plain.snapshots[t], extra.snapshots[t])


def test_windows_share_one_history_and_match_lone_windows():
    g = torch.Generator().manual_seed(5)
    shared = WindowVariance(4, (2, 8, 6))
    lone = {w: WindowVariance(w) for w in (2, 4, 6, 8)}
    assert shared.history == 8 and shared._buffer is None
    base = torch.rand(2, 3, 5, 5, generator=g)
    for _ in range(41):
        frame = (base + 0.05 * torch.randn(base.shape, generator=g)).clamp(0, 1)
        shared.push(frame)
        for window in lone.values():
            window.push(frame)
        for w, window in lone.items():
            mine, theirs = shared.value(2, w), window.value(2)
            if w == 6:  # does not divide the history: its rebuilt sum may wrap around it
                torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=0, equal_nan=True)
            else:  # the very tensors a lone window sums
                assert torch.equal(mine.nan_to_num(-1.0), theirs.nan_to_num(-1.0)), w
    assert shared._buffer.shape[0] == 8  # one stored history for all four windows
    with pytest.raises(ValueError, match="window 5 is not recorded"):
        shared.value(2, 5)
    with pytest.raises(ValueError, match="wmv_windows must all be >= 1"):
        WindowVariance(4, (0,))


def _bowl(length: int) -> np.ndarray:
    """Noise variance with one minimum, at iteration 600."""
    t = np.arange(1, length + 1, dtype=float)
    return 0.01 * (1 + ((t - 600) / 100) ** 2)


def test_es_wmv_of_each_window_triggers_at_that_windows_minimum():
    # The variance over iterations t-W+1..t is least when the window is centred on the
    # bowl's minimum: at t = 600 + (W - 1) / 2, a different iteration for each window.
    length, windows = 1800, (50, 100, 200)
    gen = torch.Generator().manual_seed(0)
    signal = torch.rand((1, 3, 32, 32), generator=gen)
    wmv = WindowVariance(100, windows)
    values = {w: [] for w in windows}
    for v in _bowl(length):
        wmv.push(signal + math.sqrt(v) * torch.randn(signal.shape, generator=gen))
        for w in windows:
            values[w].append(float(wmv.value(1, w)[0]))
    traj = pd.DataFrame(
        {
            "image": 0,
            "iteration": np.arange(1, length + 1),
            "loss": 1.0,  # the discrepancy principle's column: never below sigma^2
            "psnr_clean_ema": 20.0,
            "sigma_task": 0.1,
            **{wmv_column(w): values[w] for w in windows},
        }
    )
    grids = default_grids(budgets=[100], taus=[1.0], windows=windows, patiences=[300])
    scores = score_candidates(traj, grids, ["image"]).set_index(["rule", "setting"])
    for w in windows:
        stop, decision = scores.loc[("es_wmv", f"patience=300 wmv_window={w}")].loc[
            ["stop_iter", "decision_iter"]
        ]
        assert abs(stop - (600 + (w - 1) / 2)) <= 10, w
        assert decision == stop + 300
    # The paper's untuned row (W = 100, P = 1000) reads the same wmv_100 column.
    paper = scores.loc[("es_wmv_paper", "patience=1000 wmv_window=100")]
    assert ES_WMV_PAPER == {"wmv_window": 100, "patience": 1000}
    assert paper["stop_iter"] == scores.loc[("es_wmv", "patience=300 wmv_window=100"), "stop_iter"]
    assert paper["decision_iter"] == paper["stop_iter"] + 1000 and not paper["tuned"]


def test_a_fits_window_columns_serve_the_loo_grid():
    result = _fit(30, wmv_window=4, wmv_windows=(3, 5))
    traj = result.trajectory.assign(sigma_task=0.2)
    grids = default_grids(budgets=[10], taus=[1.0], windows=(3, 4, 5), patiences=(2, 4))[:-1]
    scores = score_candidates(traj, grids, ["image"], wmv_window=4)
    es = scores[scores["rule"] == "es_wmv"].set_index(["image", "setting"])
    assert len(es) == 2 * 3 * 2
    for image, mine in traj.groupby("image"):
        for w in (3, 4, 5):
            # wmv_window=4 is the fit's own window: its wmv column; the others their own.
            column = "wmv" if w == 4 else wmv_column(w)
            for p in (2, 4):
                stop = es.loc[(image, f"patience={p} wmv_window={w}"), "stop_iter"]
                assert stop == es_wmv_stop(mine, patience=p, column=column)


# --------------------------------------------------------------- a fit in segments


@pytest.mark.parametrize("log_every", [1, 3])
def test_a_fit_in_segments_is_bit_identical_to_one_long_fit(log_every):
    ends = iter([7, 19, 30, 30])  # 7 and 19 round up to the log grid when it is 3
    segmented = _fit(40, snapshots=[5, 20], log_every=log_every, until=lambda _: next(ends))
    one = _fit(30, snapshots=[5, 20], log_every=log_every)
    assert segmented.iterations == one.iterations == 30
    pd.testing.assert_frame_equal(
        _without_timing(segmented.trajectory), _without_timing(one.trajectory)
    )
    assert sorted(segmented.snapshots) == sorted(one.snapshots) == [5, 20, 30]
    for t in one.snapshots:
        assert np.array_equal(segmented.snapshots[t], one.snapshots[t])
        assert np.array_equal(segmented.snapshots_raw[t], one.snapshots_raw[t])


# --------------------------------------------------------- to the peak + patience


def _first_past_peak(traj: pd.DataFrame, patience: int) -> int | None:
    """The first iteration at which every image is ``patience`` past its peak so far,
    written out step by step from a long trajectory."""
    frames = [f.sort_values("iteration") for _, f in traj.groupby("image")]
    for t in frames[0]["iteration"]:
        done = []
        for frame in frames:
            upto = frame[frame["iteration"] <= t]
            done.append(t - oracle_stop(upto) >= patience)
        if all(done):
            return int(t)
    return None


def test_running_peaks_are_the_oracle_stops_so_far():
    values = np.array([[1.0, np.nan], [3.0, np.nan], [3.0, np.nan], [2.0, np.nan]])
    assert running_peaks(np.array([10, 20, 30, 40]), values).tolist() == [20, -1]


def test_fit_runs_to_peak_plus_patience_and_flags_the_cap():
    long = _fit(80)
    stop = _first_past_peak(long.trajectory, PATIENCE)
    assert stop is not None and 2 * PATIENCE < stop < 80
    clean, noisy = _images()
    args = (noisy, Operator("denoise"), "skip", MICRO, SEEDS)
    run = fit_past_peak(*args, max_iters=80, patience_after_peak=PATIENCE, clean=clean, **FIT)
    assert run.result.iterations == stop
    # A prefix of the long fit, bit for bit: stopping changes nothing before the stop.
    prefix = long.trajectory[long.trajectory["iteration"] <= stop]
    pd.testing.assert_frame_equal(_without_timing(run.result.trajectory), _without_timing(prefix))
    peaks = run.peaks.set_index("image")
    assert list(run.peaks.columns) == PEAK_COLUMNS
    for image, traj in run.result.trajectory.groupby("image"):
        assert (
            peaks.loc[image, "peak_iter"]
            == oracle_stop(traj)
            == oracle_stop(prefix[prefix["image"] == image])
        )
    assert (peaks["ran_to"] == stop).all() and not peaks["hit_cap"].any()
    assert (stop >= peaks["peak_iter"] + PATIENCE).all()
    assert (stop == peaks["peak_iter"] + PATIENCE).any()  # the last image to get there

    # A cap below that: the run ends there, and only an image short of its peak +
    # patience is flagged.
    cap = stop - 3
    capped = fit_past_peak(*args, max_iters=cap, patience_after_peak=PATIENCE, clean=clean, **FIT)
    flags = capped.peaks.set_index("image")
    assert capped.result.iterations == cap and (flags["ran_to"] == cap).all()
    expected = cap < flags["peak_iter"] + PATIENCE
    assert flags["hit_cap"].equals(expected)
    assert flags["hit_cap"].any() and not flags["hit_cap"].all()


def test_fit_past_peak_is_deterministic():
    clean, noisy = _images()
    args = (noisy, Operator("denoise"), "skip", MICRO, SEEDS)
    kw = dict(max_iters=60, patience_after_peak=PATIENCE, clean=clean, chunk_size=1, **FIT)
    first, second = fit_past_peak(*args, **kw), fit_past_peak(*args, **kw)
    pd.testing.assert_frame_equal(
        _without_timing(first.result.trajectory), _without_timing(second.result.trajectory)
    )
    pd.testing.assert_frame_equal(first.peaks, second.peaks)
    for t in first.result.snapshots:  # NaN past an image's end (chunks end on their own)
        assert np.array_equal(first.result.snapshots[t], second.result.snapshots[t], equal_nan=True)


def test_chunks_stop_on_their_own_and_a_withheld_image_runs_to_the_cap():
    clean, noisy = _images()
    clean[1] = math.nan  # withheld: no PSNR, no peak
    args = (noisy, Operator("denoise"), "skip", MICRO, SEEDS)
    run = fit_past_peak(
        *args, max_iters=70, patience_after_peak=PATIENCE, clean=clean, chunk_size=1, **FIT
    )
    peaks = run.peaks.set_index("image")
    known, withheld = peaks.loc[0], peaks.loc[1]
    assert known["peak_known"] and not known["hit_cap"]
    assert known["ran_to"] == known["peak_iter"] + PATIENCE < 70
    assert not withheld["peak_known"] and withheld["hit_cap"]
    assert withheld["ran_to"] == withheld["peak_iter"] == 70  # the oracle's last iteration
    assert run.result.iterations == 70
    # Snapshots past the first image's end are NaN for it; each chunk's end is kept.
    assert np.isnan(run.result.snapshots[70][0]).all()
    assert np.isfinite(run.result.snapshots[70][1]).all()
    assert np.isfinite(run.result.snapshots[int(known["ran_to"])][0]).all()


def test_fit_past_peak_checks_its_arguments():
    clean, noisy = _images()
    args = (noisy, Operator("denoise"), "skip", MICRO, SEEDS)
    with pytest.raises(ValueError, match="max_iters must be an integer >= 1; got 0"):
        fit_past_peak(*args, max_iters=0, clean=clean)
    with pytest.raises(ValueError, match="patience_after_peak must be an integer >= 0"):
        fit_past_peak(*args, max_iters=10, patience_after_peak=-1, clean=clean)
    with pytest.raises(ValueError, match=r"min_iters \(20\) must not exceed max_iters \(10\)"):
        fit_past_peak(*args, max_iters=10, min_iters=20, clean=clean)


# ------------------------------------------------------------------- in the cell


def _micro_cell(baseline_params: dict):
    clean, noisy = _images(size=8)
    return run_earlystop_cell(
        clean.numpy(),
        noisy.numpy(),
        Operator("denoise"),
        0.2,
        "skip",
        MICRO,
        SEEDS,
        schedule="linear",
        K=2,
        sigma_max=0.2,
        iters_per_stage=4,
        final_iters=10,
        rule_params={"stage_patience": 0},
        baseline_params=baseline_params,
        lr=FIT["lr"],
        exp_weight=FIT["exp_weight"],
        progress=False,
    )


def test_cell_runs_the_plain_fit_past_every_peak_when_asked():
    params = {"budgets": [5], "patience": 4, "wmv_window": 3, "wmv_windows": [2, 5]}
    # Without the opt-in key the plain fit keeps its fixed length.
    fixed = _micro_cell(params)
    assert "plain_past_peak" not in fixed.info
    least = fixed.info["plain_iters"]
    assert fixed.trajectory["iteration"].max() == least < 2 * PATIENCE
    res = _micro_cell({**params, "run_past_peak": PATIENCE, "max_iters": 90})
    info = res.info["plain_past_peak"]
    assert info["patience"] == PATIENCE and info["max_iters"] == 90
    traj = res.trajectory
    assert {"wmv_2", "wmv_5"} <= set(traj.columns)
    for row in info["images"]:
        mine = traj[traj["image"] == row["image"]]
        assert row["ran_to"] == mine["iteration"].max() >= least
        assert row["peak_iter"] == oracle_stop(mine)
        assert row["hit_cap"] == (row["ran_to"] < row["peak_iter"] + PATIENCE)
        assert row["hit_cap"] or row["ran_to"] >= row["peak_iter"] + PATIENCE
    assert res.info["plain_iters"] == traj["iteration"].max()
    oracle = res.table[res.table["rule"] == "oracle"].set_index("image")
    for row in info["images"]:
        assert oracle.loc[row["image"], "stop_iter"] == row["peak_iter"]
        assert oracle.loc[row["image"], "decision_iter"] == row["ran_to"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_iters": 50}, "'max_iters' (50) caps a run past the peak; it needs 'run_past_peak'"),
        ({"run_past_peak": -1, "max_iters": 50}, "'run_past_peak' must be an integer >= 0"),
        ({"run_past_peak": 5}, "'max_iters' must be an integer >= 1 (the hard cap)"),
        ({"run_past_peak": 5, "max_iters": 50, "iters": 40}, "'iters' (40) fixes"),
        ({"run_past_peak": 5, "max_iters": 3}, "'max_iters' (3) is below the plain fit's"),
        ({"wmv_windows": 50}, "'wmv_windows' must be a list of windows; got 50"),
        ({"wmv_windows": [50, 0]}, "'wmv_windows' must hold integers >= 1; got [50, 0]"),
    ],
)
def test_cell_refuses_bad_plain_fit_settings_by_key(params, message):
    with pytest.raises(ValueError, match=re.escape(f"baseline_params {message}")):
        _micro_cell(params)
