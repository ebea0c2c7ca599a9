"""The DIP benchmark command runs end to end and its convolution bound is consistent.

Timings are not asserted (they belong to the benchmark); what is asserted is that every
convolution layer of the network is timed and that the CSV says what the README quotes.
"""

import importlib.util

import pandas as pd
import pytest
import torch

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
