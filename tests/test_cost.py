"""Cost accounting: the timing helpers run, and a method's cost is the calibrated arithmetic.

No timing is compared with another (the machine is shared): timings are only required to
be positive and finite. The arithmetic is checked on a hand-made calibration.
"""

import hashlib
import importlib.util
import math
import runpy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dipddpm import cost
from dipddpm.ddpm.diffusion import Diffusion
from dipddpm.ddpm.train import TrainConfig, build_run
from dipddpm.ddpm.unet import build_unet

TINY_SKIP = {
    "kind": "skip",
    "depth": 2,
    "channels_down": 4,
    "channels_up": 4,
    "skip_channels": 2,
    "input_channels": 4,
}
TINY_UNET = {"ch": 8}  # the tiny preset, narrower still
SHAPE = (3, 16, 16)

# A hand-made calibration: 0.5 s per DIP iteration, 2 s per network evaluation.
HAND = {
    "format": cost.CALIBRATION_FORMAT,
    "dip_iteration_s": {"skip": 0.5, "resnet": 0.25},
    "unet_evaluation_s": {"tiny": 2.0},
    "batch": 4,
    "threads": 1,
}


def _load_script(root, name):
    spec = importlib.util.spec_from_file_location(name, root / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_dip_iteration_is_positive_and_restores_threads():
    before = torch.get_num_threads()
    seconds = cost.time_dip_iteration(TINY_SKIP, SHAPE, batch=2, threads=1, repeats=1, warmup=1)
    assert math.isfinite(seconds) and seconds > 0
    assert torch.get_num_threads() == before


def test_time_dip_iteration_needs_a_kind():
    with pytest.raises(ValueError, match="kind"):
        cost.time_dip_iteration({"depth": 2}, SHAPE, batch=2, threads=1, repeats=1, warmup=0)


def test_time_unet_evaluation_is_positive_and_leaves_no_grad_mode_behind():
    seconds = cost.time_unet_evaluation(
        "tiny", SHAPE, batch=2, threads=1, repeats=1, warmup=1, overrides=TINY_UNET
    )
    assert math.isfinite(seconds) and seconds > 0
    assert torch.is_grad_enabled()


def test_sampling_chain_is_one_network_evaluation_per_step():
    model = cost.trained_like(build_unet("tiny", image_size=8, **TINY_UNET)).eval()
    x = torch.randn(2, 3, 8, 8)
    result = cost.sampling_chain(model, Diffusion("linear", 1000), x, 500, 1, sampler="ddim")
    assert result.nfe == 1
    assert result.images.shape == (2, 3, 8, 8)


def test_calibrate_times_every_arch_and_preset_and_round_trips(tmp_path):
    calibration = cost.calibrate(
        {"small": TINY_SKIP},
        {"tiny": TINY_UNET},
        SHAPE,
        batch=2,
        threads=1,
        repeats=1,
        warmup=1,
    )
    assert set(calibration["dip_iteration_s"]) == {"small"}
    assert set(calibration["unet_evaluation_s"]) == {"tiny"}
    timings = [*calibration["dip_iteration_s"].values()]
    timings += calibration["unet_evaluation_s"].values()
    assert all(math.isfinite(seconds) and seconds > 0 for seconds in timings)
    assert (calibration["batch"], calibration["threads"]) == (2, 1)
    assert calibration["image_shape"] == list(SHAPE)
    assert calibration["torch"] == torch.__version__
    assert calibration["machine"]["device"] == "cpu"
    assert calibration["machine"]["threads"] == 1
    assert calibration["presets"] == {"tiny": TINY_UNET}
    assert calibration["date"]

    path = tmp_path / "calibration.json"
    cost.save(path, calibration)
    loaded = cost.load(path)
    assert loaded == calibration
    # The id a sample row carries is the hash of the calibration file itself.
    file_hash = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert cost.calibration_id(loaded) == cost.calibration_id(calibration) == file_hash


def test_calibrate_accepts_a_list_of_preset_names_and_rejects_unknown_ones():
    with pytest.raises(ValueError, match="no-such-preset"):
        cost.calibrate({}, ["no-such-preset"], SHAPE, batch=1, threads=1)


def test_load_rejects_a_file_that_is_not_a_calibration(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"rows": []}')
    with pytest.raises(ValueError, match="not a cost calibration"):
        cost.load(path)


@pytest.mark.parametrize(
    ("arch", "preset", "dip_iters", "nfe", "k", "expected"),
    [
        ("skip", None, 400, 0, 1, 400 * 0.5),  # DIP alone
        (None, "tiny", 0, 25, 1, 25 * 2.0),  # DDPM alone
        ("skip", "tiny", 400, 10, 1, 400 * 0.5 + 10 * 2.0),  # DIP+DDPM, DIP-guided DDPM
        ("resnet", "tiny", 400, 10, 1, 400 * 0.25 + 10 * 2.0),
        # K-sample means: the prior is fitted once, only the chain runs k times.
        ("skip", "tiny", 400, 10, 8, 400 * 0.5 + 8 * 10 * 2.0),
        ("skip", None, 400, 0, 8, 400 * 0.5),
        (None, "tiny", 0, 25, 4, 4 * 25 * 2.0),
    ],
)
def test_method_seconds_is_the_calibrated_sum(arch, preset, dip_iters, nfe, k, expected):
    assert cost.method_seconds(HAND, arch, preset, dip_iters, nfe, k) == pytest.approx(expected)


def test_cost_columns_split_the_cost_and_name_the_calibration():
    columns = cost.cost_columns(HAND, "skip", "tiny", dip_iters=400, nfe=10, k=3)
    assert columns == {
        "dip_iters": 400,
        "nfe": 30,  # evaluations paid per image: 3 chains of 10
        "dip_seconds": pytest.approx(200.0),
        "ddpm_seconds": pytest.approx(60.0),
        "seconds_per_image": pytest.approx(260.0),
        "calibration": cost.calibration_id(HAND),
    }
    assert len(columns["calibration"]) == 12
    assert columns["seconds_per_image"] == cost.method_seconds(HAND, "skip", "tiny", 400, 10, 3)


def test_calibration_id_changes_with_the_numbers():
    other = {**HAND, "dip_iteration_s": {"skip": 0.6, "resnet": 0.25}}
    assert cost.calibration_id(other) != cost.calibration_id(HAND)


def test_a_missing_arch_is_named_in_the_error():
    with pytest.raises(KeyError) as caught:
        cost.method_seconds(HAND, "convdecoder", "tiny", 100, 10)
    message = str(caught.value)
    assert "DIP architecture 'convdecoder'" in message
    assert "['resnet', 'skip']" in message
    assert cost.calibration_id(HAND) in message


def test_a_missing_preset_is_named_in_the_error():
    with pytest.raises(cost.MissingCalibrationError, match="UNet preset 'ddpm-cifar10'"):
        cost.cost_columns(HAND, "skip", "ddpm-cifar10", 100, 10)


def test_an_unused_part_needs_no_calibration_entry():
    assert cost.method_seconds(HAND, "convdecoder", "tiny", 0, 5) == pytest.approx(10.0)
    assert cost.method_seconds(HAND, "skip", "ddpm-cifar10", 10, 0) == pytest.approx(5.0)


def test_a_used_part_needs_its_name():
    with pytest.raises(ValueError, match="UNet preset"):
        cost.method_seconds(HAND, "skip", None, 10, 5)


@pytest.mark.parametrize(
    ("dip_iters", "nfe", "k", "name"),
    [(-1, 10, 1, "dip_iters"), (10, -1, 1, "nfe"), (10, 10, 0, "k"), (10, 2.5, 1, "nfe")],
)
def test_counts_must_be_whole_and_non_negative(dip_iters, nfe, k, name):
    with pytest.raises(ValueError, match=name):
        cost.method_seconds(HAND, "skip", "tiny", dip_iters, nfe, k)


def test_bench_dip_steps_are_the_calibration_steps(root, monkeypatch):
    bench_dip = _load_script(root, "bench_dip")
    calls = []

    def fake(*args):
        calls.append(args)
        return [0.25]

    monkeypatch.setattr(bench_dip, "dip_step_seconds", fake)
    params = {"depth": 2, "channels_down": 4, "channels_up": 4}
    cpu = torch.device("cpu")
    assert bench_dip.step_times(params, 16, [0, 1], 3, cpu, "loop") == [0.25]
    assert calls == [("skip", params, (3, 16, 16), [0, 1], 3, 1, cpu, "loop")]


def test_bench_ddpm_times_with_the_shared_helpers(root, monkeypatch):
    bench_ddpm = _load_script(root, "bench_ddpm")
    timings = []

    def counting_timed(fn, device):
        seconds = cost.timed(fn, device)
        timings.append(seconds)
        return seconds

    monkeypatch.setattr(bench_ddpm, "timed", counting_timed)
    cpu = torch.device("cpu")
    model = cost.trained_like(build_unet("tiny", image_size=32, **TINY_UNET)).eval()
    rate = bench_ddpm.time_sampling(
        lambda: model, Diffusion("linear", 1000), cpu, 1, 1, False, False
    )
    config = TrainConfig(batch_size=2, unet_overrides=TINY_UNET, warmup=1)
    images = np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32)
    train = bench_ddpm.time_training(build_run(config, images, None, cpu), cpu, steps=1)
    assert len(timings) == 2
    assert rate > 0 and train > 0


def test_adapter_writes_a_loadable_calibration(root, tmp_path):
    from snakemake.iocontainers import Namedlist, Params

    out, log = tmp_path / "cost" / "calibration.json", tmp_path / "logs" / "calibrate.log"
    params = {"archs": {"small": TINY_SKIP}, "presets": {"tiny": TINY_UNET}}
    params |= {"image_shape": list(SHAPE), "batch": 2, "repeats": 1, "warmup": 0}
    params["device"] = "cpu"
    job = SimpleNamespace(
        params=Params(fromdict=params),
        threads=1,
        output=Namedlist([str(out)]),
        log=Namedlist([str(log)]),
    )
    runpy.run_path(str(root / "scripts" / "calibrate_cost.py"), {"snakemake": job})
    calibration = cost.load(out)
    assert set(calibration["dip_iteration_s"]) == {"small"}
    assert set(calibration["unet_evaluation_s"]) == {"tiny"}
    assert (calibration["batch"], calibration["threads"], calibration["repeats"]) == (2, 1, 1)
    assert "UNet tiny" in log.read_text()
