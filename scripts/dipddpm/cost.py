"""Calibrated compute cost of the methods of Example 1, in seconds per image.

Wall times of pipeline jobs cannot be compared: jobs share the CPU with each other and
with whatever else runs, at different batch sizes and thread counts. So each method's cost
is computed from ONE calibration instead: at a fixed batch size and thread count, one DIP
iteration of every architecture and one UNet evaluation of every preset are timed once,
and a method's cost is a count of those units (DIP iterations, network evaluations) times
their calibrated seconds. The counts are exact (they are the method's definition), so the
comparison between methods does not depend on what else the machine ran during each job.

The timing helpers here are the ones the performance benches (scripts/bench_dip.py,
scripts/bench_ddpm.py) use, so a bench and a calibration time the same code.

Timings keep the fastest of ``repeats``: on a shared machine the fastest run is the least
disturbed one, and disturbances only ever add time.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .ddpm.diffusion import Diffusion
from .ddpm.sample import SampleResult, sample
from .ddpm.unet import build_unet, unet_config
from .device import describe_device, pick_device, use_deterministic_kernels
from .dip.fit import DIPFitter
from .io import load_json, save_json
from .operators import Operator

log = logging.getLogger("dipddpm")

__all__ = [
    "CALIBRATION_FORMAT",
    "MissingCalibrationError",
    "calibrate",
    "calibration_id",
    "cost_columns",
    "dip_fitter",
    "dip_step_seconds",
    "load",
    "method_seconds",
    "sampling_chain",
    "save",
    "time_dip_iteration",
    "time_unet_evaluation",
    "timed",
    "torch_threads",
    "trained_like",
]

CALIBRATION_FORMAT = 1
# Example 1 samples with DDIM (config ddpm.sample.sampler); the per-step update costs next
# to nothing beside the network, so the sampler barely moves the number.
DEFAULT_SAMPLER = "ddim"
REQUIRED_KEYS = ("format", "dip_iteration_s", "unet_evaluation_s", "batch", "threads")


# --- Timing primitives (shared with the benches) --------------------------------------------


def synchronize(device: torch.device) -> None:
    # CUDA kernels run asynchronously: without this a timer stops before the work is done.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``fn()`` takes on ``device``, its queued GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (None: as set), restoring the count after."""
    before = torch.get_num_threads()
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1; got {threads}")
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _deterministic_like_a_dip_job() -> Iterator[None]:
    # run_dip_cell fits with deterministic algorithms, which may pick slower kernels (on
    # CUDA); the calibration must pay what the job pays.
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    use_deterministic_kernels()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def _device(device: str | torch.device) -> torch.device:
    return pick_device(device) if isinstance(device, str) else torch.device(device)


def _shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive sides; got {shape}")
    return shape


def _check_counts(batch: int, repeats: int, warmup: int) -> None:
    if batch < 1 or repeats < 1 or warmup < 0:
        raise ValueError(
            f"need batch >= 1, repeats >= 1 and warmup >= 0; got {batch}, {repeats}, {warmup}"
        )


# --- DIP ------------------------------------------------------------------------------------


def dip_fitter(
    kind: str,
    params: dict | None,
    image_shape: Sequence[int],
    seeds: Sequence[int],
    device: str | torch.device = "cpu",
    conv_mode: str = "auto",
) -> tuple[DIPFitter, torch.Tensor]:
    """A batched fitter over len(seeds) images and a denoising observation for it."""
    device = _device(device)
    shape = _shape(image_shape)
    g = torch.Generator().manual_seed(0)
    observed = torch.rand(len(seeds), *shape, generator=g).to(device)
    fitter = DIPFitter(kind, params, shape, list(seeds), device=device, conv_mode=conv_mode)
    return fitter, observed


def dip_step_seconds(
    kind: str,
    params: dict | None,
    image_shape: Sequence[int],
    seeds: Sequence[int],
    repeats: int,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    conv_mode: str = "auto",
) -> list[float]:
    """Seconds of each of ``repeats`` DIP steps of one fitter over len(seeds) images, after
    ``warmup`` untimed steps.

    A step is ``DIPFitter.step``, the one a fit runs: forward, loss, backward, Adam step,
    backtracking and output EMA for the whole batch. A fit's bookkeeping between steps
    (trajectory rows, snapshots) depends on how often it logs, not on the method, and is
    left out.
    """
    fitter, observed = dip_fitter(kind, params, image_shape, seeds, device, conv_mode)
    operator = Operator("denoise")
    for _ in range(warmup):
        fitter.step(observed, operator)
    step = lambda: fitter.step(observed, operator)
    return [timed(step, fitter.device) for _ in range(repeats)]


def time_dip_iteration(
    arch_config: Mapping[str, Any],
    image_shape: Sequence[int],
    batch: int,
    threads: int | None,
    repeats: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
) -> float:
    """Seconds per image of one DIP iteration of ``arch_config`` fitted ``batch`` at a time.

    ``arch_config`` is a named architecture of the config (``dip.archs.<name>``): ``kind``
    plus its hyperparameters. The fastest of ``repeats`` batched steps, divided by ``batch``.
    """
    _check_counts(batch, repeats, warmup)
    if "kind" not in arch_config:
        raise ValueError(f"arch_config needs a 'kind'; got keys {sorted(arch_config)}")
    kind = arch_config["kind"]
    params = {k: v for k, v in arch_config.items() if k != "kind"}
    with torch_threads(threads), _deterministic_like_a_dip_job():
        times = dip_step_seconds(
            kind, params, image_shape, range(batch), repeats, warmup, device=device
        )
    return min(times) / batch


# --- DDPM -----------------------------------------------------------------------------------


@torch.no_grad()
def trained_like(model: nn.Module) -> nn.Module:
    """Perturb every weight, so that no layer is still zero as after our initialisation;
    a sampling job loads trained weights."""
    gen = torch.Generator().manual_seed(0)
    for param in model.parameters():
        param.add_(torch.randn(param.shape, generator=gen), alpha=0.02)
    return model


def sampling_chain(
    model: nn.Module,
    diffusion: Diffusion,
    x_start: torch.Tensor,
    t_start: int,
    steps: int,
    sampler: str = "ddpm",
    bf16: bool = False,
    seed: int = 0,
) -> SampleResult:
    """What a sampling job runs after loading its network: :func:`sample` from ``x_start``
    (bf16 autocast when asked), without a progress bar."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        return sample(
            model, diffusion, x_start, t_start, steps, sampler, generator=gen, progress=False
        )


def _sampling_unet(
    preset: str, overrides: Mapping[str, Any], image_shape: tuple[int, int, int], device
) -> nn.Module:
    # As training builds it (image_size from the images) and a job loads it: eval mode,
    # no gradients, trained-looking weights.
    kwargs = {"image_size": image_shape[-1], "in_channels": image_shape[0], **overrides}
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays untouched
        torch.manual_seed(0)
        model = trained_like(build_unet(preset, **kwargs))
    return model.to(device).eval().requires_grad_(False)


def time_unet_evaluation(
    preset: str,
    image_shape: Sequence[int],
    batch: int,
    threads: int | None,
    repeats: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
    sampler: str = DEFAULT_SAMPLER,
) -> float:
    """Seconds per image of one network evaluation of UNet ``preset`` on ``batch`` images.

    Each timing is a one-step chain through :func:`sample` (eval mode, no gradient, the
    sampler's update included): exactly one network evaluation of the batch. The fastest
    of ``repeats``, divided by ``batch``. ``overrides`` are the preset's UNet overrides.
    """
    _check_counts(batch, repeats, warmup)
    shape = _shape(image_shape)
    dev = _device(device)
    diffusion = Diffusion("linear", 1000)
    t_start = diffusion.T // 2
    with torch_threads(threads):
        model = _sampling_unet(preset, overrides or {}, shape, dev)
        x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
        chain = lambda: sampling_chain(model, diffusion, x, t_start, 1, sampler)
        for _ in range(warmup):
            chain()
        times = [timed(chain, dev) for _ in range(repeats)]
    return min(times) / batch


# --- Calibration ----------------------------------------------------------------------------


def _preset_overrides(presets: Sequence[str] | Mapping[str, Any]) -> dict[str, dict]:
    if isinstance(presets, str):
        presets = [presets]
    if isinstance(presets, Mapping):
        table = {name: dict(over or {}) for name, over in presets.items()}
    else:
        table = {name: {} for name in presets}
    for name, over in table.items():
        unet_config(name, **over)  # an unknown preset or override fails before any timing
    return table


def _cpu_model() -> str:
    # platform.processor() is empty on most Linux systems; /proc/cpuinfo names the model.
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as stream:
        for line in stream:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _machine(device: torch.device) -> dict[str, Any]:
    info = describe_device(device)
    info["cpu_model"] = _cpu_model()
    info["cpu_count"] = os.cpu_count()
    # A busy machine makes every timing slower; the load says how much to trust them.
    with contextlib.suppress(OSError):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return info


def calibrate(
    archs: Mapping[str, Mapping[str, Any]],
    presets: Sequence[str] | Mapping[str, Any],
    image_shape: Sequence[int],
    batch: int,
    threads: int,
    repeats: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Time one DIP iteration per architecture and one UNet evaluation per preset.

    ``archs`` maps names to architecture configs (``dip.archs``); ``presets`` lists UNet
    preset names, or maps them to their UNet overrides. All timings share ``image_shape``,
    ``batch`` and ``threads``. The result (JSON-ready) holds seconds per image of a DIP
    iteration (``dip_iteration_s``) and of a network evaluation (``unet_evaluation_s``),
    what was timed and where.
    """
    shape = _shape(image_shape)
    table = _preset_overrides(presets)
    dev = _device(device)
    dip, unet = {}, {}
    with torch_threads(threads):
        machine = _machine(dev)
        for name, config in archs.items():
            dip[name] = time_dip_iteration(config, shape, batch, None, repeats, warmup, dev)
            log.info("DIP %s: %.3g s per image-iteration (batch %d)", name, dip[name], batch)
        for name, over in table.items():
            unet[name] = time_unet_evaluation(name, shape, batch, None, repeats, warmup, dev, over)
            log.info("UNet %s: %.3g s per image-evaluation (batch %d)", name, unet[name], batch)
    return {
        "format": CALIBRATION_FORMAT,
        "dip_iteration_s": dip,
        "unet_evaluation_s": unet,
        "archs": {name: dict(config) for name, config in archs.items()},
        "presets": table,
        "image_shape": list(shape),
        "batch": int(batch),
        "threads": int(threads),
        "repeats": int(repeats),
        "warmup": int(warmup),
        "statistic": "min",
        "device": dev.type,
        "torch": torch.__version__,
        "machine": machine,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def merge(calibrations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One calibration from several made with the same batch, threads and image shape (one
    file per architecture and per preset, so editing one architecture re-times only it)."""
    if not calibrations:
        raise ValueError("merge: no calibrations given")
    first = calibrations[0]
    for key in ("batch", "threads", "image_shape", "device", "format"):
        values = {json.dumps(c.get(key)) for c in calibrations}
        if len(values) > 1:
            raise ValueError(f"merge: calibrations differ in {key!r} ({sorted(values)})")
    merged = dict(first)
    for key in ("dip_iteration_s", "unet_evaluation_s", "archs", "presets"):
        merged[key] = {name: v for c in calibrations for name, v in c.get(key, {}).items()}
    merged["date"] = sorted(str(c.get("date")) for c in calibrations)[-1]
    return merged


def _canonical(calibration: Mapping[str, Any]) -> str:
    # The exact text save_json writes: the id of a dict equals the hash of its file.
    return json.dumps(calibration, indent=2, sort_keys=True) + "\n"


def calibration_id(calibration: Mapping[str, Any]) -> str:
    """Short id of a calibration: the first 12 hex digits of the sha256 of its JSON file."""
    return hashlib.sha256(_canonical(calibration).encode()).hexdigest()[:12]


def save(path, calibration: Mapping[str, Any]) -> None:
    """Write a calibration as JSON, atomically."""
    save_json(path, dict(calibration))


def load(path) -> dict[str, Any]:
    """Read a calibration written by :func:`save`; reject files that are not one."""
    calibration = load_json(path)
    if not isinstance(calibration, dict):
        raise ValueError(f"{path} is not a cost calibration (not a JSON object)")
    missing = [key for key in REQUIRED_KEYS if key not in calibration]
    if missing:
        raise ValueError(f"{path} is not a cost calibration (missing {missing})")
    if calibration["format"] != CALIBRATION_FORMAT:
        raise ValueError(
            f"{path} is a format {calibration['format']} calibration; this code reads format "
            f"{CALIBRATION_FORMAT}: run the calibration again"
        )
    return calibration


# --- Cost of a method -----------------------------------------------------------------------


class MissingCalibrationError(KeyError):
    """The calibration did not time an architecture or preset a cost needs."""

    def __str__(self) -> str:
        # KeyError would show the message quoted, as if it were the missing key.
        return str(self.args[0])


def _unit_seconds(calibration: Mapping[str, Any], table: str, name: str | None, what: str):
    if name is None:
        raise ValueError(f"the cost counts {what} work (a count > 0) but names no {what}")
    times = calibration[table]
    if name not in times:
        raise MissingCalibrationError(
            f"calibration {calibration_id(calibration)} has no {what} {name!r} (it timed "
            f"{sorted(times) or 'none'}); add it to the calibration and run it again"
        )
    return float(times[name])


def _count(name: str, value: int, least: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < least:
        raise ValueError(f"{name} must be an integer >= {least}; got {value!r}")
    return int(value)


def cost_columns(
    calibration: Mapping[str, Any],
    arch: str | None,
    preset: str | None,
    dip_iters: int,
    nfe: int,
    k: int = 1,
) -> dict[str, Any]:
    """The cost columns of a sample row: calibrated seconds per image of its method.

    ``dip_iters`` DIP iterations fit the prior ONCE per image (0: no DIP, ``arch`` unused);
    ``nfe`` network evaluations make ONE sampling chain (0: no DDPM, ``preset`` unused);
    ``k`` chains are run per image for a K-sample mean. Only the chain is repeated, so
    only the DDPM part is multiplied by k:

        dip_seconds  = dip_iters * dip_iteration_s[arch]
        ddpm_seconds = k * nfe * unet_evaluation_s[preset]
        seconds_per_image = dip_seconds + ddpm_seconds

    The ``nfe`` column is the evaluations paid per image, k * nfe (= the chain's NFE when
    k = 1), so ddpm_seconds = nfe column x seconds per evaluation. ``calibration`` is the
    calibration's id (:func:`calibration_id`).
    """
    dip_iters = _count("dip_iters", dip_iters, 0)
    nfe = _count("nfe", nfe, 0)
    k = _count("k", k, 1)
    dip = 0.0
    if dip_iters:
        dip = dip_iters * _unit_seconds(calibration, "dip_iteration_s", arch, "DIP architecture")
    ddpm = 0.0
    if nfe:
        ddpm = k * nfe * _unit_seconds(calibration, "unet_evaluation_s", preset, "UNet preset")
    return {
        "dip_iters": dip_iters,
        "nfe": k * nfe,
        "dip_seconds": dip,
        "ddpm_seconds": ddpm,
        "seconds_per_image": dip + ddpm,
        "calibration": calibration_id(calibration),
    }


def method_seconds(
    calibration: Mapping[str, Any],
    arch: str | None,
    preset: str | None,
    dip_iters: int,
    nfe: int,
    k: int = 1,
) -> float:
    """Calibrated seconds per image of a method: ``dip_iters * dip_iteration_s[arch] +
    k * nfe * unet_evaluation_s[preset]`` (see :func:`cost_columns`).

    DIP alone: nfe = 0. DDPM alone: dip_iters = 0. DIP+DDPM and DIP-guided DDPM: both; the
    prior is fitted once whatever k, only the chain is repeated k times.
    """
    return cost_columns(calibration, arch, preset, dip_iters, nfe, k)["seconds_per_image"]
