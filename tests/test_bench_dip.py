"""The DIP benchmark command runs end to end and its convolution bound is consistent.

Timings are not asserted (they belong to the benchmark); what is asserted is that every
convolution layer of the network is timed and that the CSV says what the README quotes.
"""

import importlib.util

import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dipddpm.dip.models import build_dip_net, resolve_params


@pytest.fixture(scope="module")
def bench_dip(root):
    spec = importlib.util.spec_from_file_location("bench_dip", root / "scripts" / "bench_dip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _conv_count(depth: int, channels: int, size: int) -> int:
    params = {"depth": depth, "channels_down": channels, "channels_up": channels}
    net = build_dip_net("skip", 3, (size, size), **resolve_params("skip", params))
    # PointwiseConv2d (the 1x1 layers) is a Conv2d too.
    return sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())


def test_bench_dip_times_every_convolution_and_writes_the_bound(bench_dip, tmp_path, capsys):
    out = tmp_path / "bench.csv"
    args = ["--k", "3", "--iters", "2", "--repeats", "1", "--single-fits", "2"]
    args += ["--depth", "2", "--channels", "8", "--size", "16", "--devices", "cpu"]
    assert bench_dip.main([*args, "--out", str(out)]) == 0

    frame = pd.read_csv(out).set_index("mode")
    assert list(frame.index) == ["single", "batched", "chunked"]
    assert frame["k"].tolist() == [1, 3, 3]
    # A net this small fits all three images in one default chunk.
    assert frame["chunk"].tolist() == [1, 3, 3]
    expected_layers = _conv_count(depth=2, channels=8, size=16)
    assert (frame["conv_layers"] == expected_layers).all()
    assert (frame["conv_s"] > 0).all()
    assert (frame["conv_gflop_per_s"] > 0).all()
    rate = frame["k"] / frame["conv_s"]
    assert frame["conv_bound_image_steps_per_s"].tolist() == pytest.approx(rate.tolist())
    assert frame["conv_share"].tolist() == pytest.approx(
        (frame["conv_s"] / frame["step_s_min"]).tolist()
    )
    printed = capsys.readouterr().out
    assert "cpu: batched/single speed-up" in printed
    assert "convolution bound" in printed


def test_bench_dip_without_bound_has_no_bound_columns(bench_dip, tmp_path):
    out = tmp_path / "bench.csv"
    args = ["--k", "2", "--iters", "1", "--repeats", "1", "--single-fits", "1", "--no-bound"]
    args += ["--depth", "1", "--channels", "4", "--size", "8", "--devices", "cpu"]
    assert bench_dip.main([*args, "--out", str(out)]) == 0
    assert "conv_s" not in pd.read_csv(out).columns


def test_conv_flops_match_torch_flop_counter(bench_dip):
    """The analytic count equals torch's FLOP counter over a whole step of the network
    (its counted ops are exactly the convolutions and the 1x1 matmuls), per image."""
    params = {"depth": 2, "channels_down": 8, "channels_up": 8}
    net = build_dip_net("skip", 3, (16, 16), **resolve_params("skip", params))
    z = torch.rand(1, 32, 16, 16)  # the DIP input needs no gradient
    with FlopCounterMode(display=False) as counter:
        net(z).sum().backward()
    cpu = torch.device("cpu")
    _, _, one_image = bench_dip.conv_seconds(params, 16, [0], 1, cpu)
    _, _, three_images = bench_dip.conv_seconds(params, 16, [0, 1, 2], 1, cpu)
    assert one_image == counter.get_total_flops()
    assert three_images == 3 * one_image


def test_chunked_mode_times_one_chunk_and_scales_to_k(bench_dip, tmp_path, monkeypatch):
    seen_seeds = []

    def fake_step_times(params, size, seeds, iters, device, conv_mode):
        seen_seeds.append(seeds)
        return [0.010, 0.020]

    monkeypatch.setattr(bench_dip, "default_chunk_size", lambda *args: 2)
    monkeypatch.setattr(bench_dip, "step_times", fake_step_times)
    monkeypatch.setattr(bench_dip, "conv_seconds", lambda *args: (0.005, 5, 10**9))
    out = tmp_path / "bench.csv"
    args = ["--k", "4", "--iters", "2", "--repeats", "1", "--modes", "chunked"]
    assert bench_dip.main([*args, "--devices", "cpu", "--out", str(out)]) == 0

    assert seen_seeds == [[0, 1]]  # one fitter of one chunk is timed
    row = pd.read_csv(out).iloc[0]
    assert (row["k"], row["chunk"]) == (4, 2)
    # Four images are two chunk steps: the timings, medians and bound double.
    assert row["step_s_min"] == pytest.approx(0.020)
    assert row["step_s_median"] == pytest.approx(0.030)
    assert row["image_steps_per_s"] == pytest.approx(200.0)
    assert row["conv_s"] == pytest.approx(0.010)
    assert row["conv_gflop_per_s"] == pytest.approx(200.0)  # per chunk: 1 GFLOP in 5 ms


def test_bench_dip_reports_the_overhead_share_of_one_run(bench_dip, tmp_path):
    out = tmp_path / "bench.csv"
    args = ["--k", "2", "--iters", "1", "--repeats", "1", "--modes", "batched", "--no-bound"]
    args += ["--depth", "1", "--channels", "4", "--size", "8", "--devices", "cpu"]
    assert bench_dip.main([*args, "--out", str(out)]) == 0
    row = pd.read_csv(out).iloc[0]
    assert row["fwd_bwd_s"] > 0 and row["iteration_s"] > 0
    assert row["overhead_share"] == pytest.approx(1 - row["fwd_bwd_s"] / row["iteration_s"])
    assert row["step_overhead_share"] < 1

    assert bench_dip.main([*args, "--no-overhead", "--out", str(out)]) == 0
    assert "overhead_share" not in pd.read_csv(out).columns


def test_overhead_seconds_times_the_network_a_step_and_an_iteration(bench_dip):
    params = {"depth": 1, "channels_down": 4, "channels_up": 4}
    seconds = bench_dip.overhead_seconds(params, 8, [0, 1], 2, torch.device("cpu"))
    assert set(seconds) == {"fwd_bwd_s", "step_s", "iteration_s"}
    assert all(0 < value < 10 for value in seconds.values())
