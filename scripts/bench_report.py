"""Regenerate the README's performance table from the benches: ``make bench``.

Runs the benches through their Python functions with the fixed settings of ``FULL``
below (one torch thread, CPU, the ``tiny`` and ``ddpm-cifar10`` presets, the DIP cases of
the study and of the paper) and collects one table:

- ours vs diffusers (``scripts/bench_ddpm.py``): DDPM training and sampling images/s of
  our UNet and of diffusers' ``UNet2DModel`` built to the same size, each row with both
  sides' parameters and FLOPs per network evaluation (which must match); target: ours at
  least 1.2x as fast;
- ours vs deepinv: one DIP iteration of deepinv's ``DeepImagePrior`` loop with its
  ``ConvDecoder`` against ours with our ``convdecoder`` (same image size, channels and
  layers, batch 1), timed in turn in one run; the output lists what differs;
- DIP overhead share (``scripts/bench_dip.py``): the share of a fit iteration spent
  outside the network's forward+backward; targets: < 25 % at 32x32 (the study's skip net,
  batched), < 10 % at 128x128 (the paper's skip net);
- batched DIP fitting vs one image at a time vs the convolution bound (the rate if all
  but the convolutions were free); target: at least 85 % of the bound reached.

It writes ``performance.csv`` and ``performance.md`` to ``--out-dir`` (default
results/summary/bench/), next to the benches' own rows (``bench_ddpm.csv``,
``bench_dip.csv``, ``dip_deepinv.csv``), and rewrites the README between the markers
``<!-- bench:start -->`` and ``<!-- bench:end -->``. Run it on an idle machine: it takes
several minutes.

    python scripts/bench_report.py
    python scripts/bench_report.py --quick --out-dir /tmp/bench   # smoke test, README untouched

``--quick`` runs tiny shapes (seconds) and never touches the README.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import importlib.util
import math
import os
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from dipddpm.cost import dip_fitter, timed, torch_threads
from dipddpm.dip.defaults import DIP_DEFAULTS
from dipddpm.dip.models import build_dip_net, dip_input_shape, resolve_params
from dipddpm.io import atomic_path, save_csv

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
DIFFUSERS_TARGET = 1.2  # ours / diffusers images/s, training and sampling
BOUND_TARGET = 0.85  # batched image-steps/s / convolution bound
NOT_INSTALLED = "not installed"

COLUMNS = [
    "comparison",
    "case",
    "metric",
    "ours",
    "reference",
    "reference_value",
    "ratio",
    "params_ours",
    "params_reference",
    "gflops_ours",
    "gflops_reference",
    "same_size",
    "target",
    "met",
    "note",
    "cpu",
    "cores",
    "threads",
    "torch",
    "date",
    "load_average_start",
]


@dataclass(frozen=True)
class DipCase:
    """A skip-net DIP fitting case of bench_dip.py: batch sizes ``batches`` (1: one image
    at a time only) on ``size`` x ``size`` images, with its overhead-share target."""

    name: str
    size: int
    depth: int
    channels: int
    batches: tuple[int, ...]
    overhead_target: float
    single_fits: int = 8


@dataclass(frozen=True)
class Settings:
    threads: int
    presets: tuple[str, ...]
    ddpm_batch: int  # 0: bench_ddpm's default (32 for tiny, 8 for ddpm-cifar10 on the CPU)
    ddpm_train_steps: int
    ddpm_sample_steps: int
    ddpm_repeats: int
    dip_cases: tuple[DipCase, ...]
    dip_iters: int
    dip_repeats: int
    # (image side, layers, channels) of the convdecoder compared with deepinv's.
    deepinv_cases: tuple[tuple[int, int, int], ...]
    deepinv_repeats: int
    notes: tuple[str, ...] = field(default=())


FULL = Settings(
    threads=1,
    presets=("tiny", "ddpm-cifar10"),
    ddpm_batch=0,
    ddpm_train_steps=5,
    ddpm_sample_steps=5,
    ddpm_repeats=3,
    dip_cases=(
        DipCase("study: skip depth 3, 64 ch, 32x32", 32, 3, 64, (8, 32), 0.25),
        DipCase("paper: skip depth 5, 128 ch, 128x128", 128, 5, 128, (1,), 0.10, 1),
    ),
    dip_iters=5,
    dip_repeats=2,
    deepinv_cases=((32, 4, 64), (128, 4, 64)),
    deepinv_repeats=5,
)
QUICK = Settings(
    threads=1,
    presets=("tiny",),
    ddpm_batch=2,
    ddpm_train_steps=1,
    ddpm_sample_steps=1,
    ddpm_repeats=1,
    dip_cases=(
        DipCase("study stand-in: skip depth 2, 8 ch, 16x16", 16, 2, 8, (2, 4), 0.25, 1),
        DipCase("paper stand-in: skip depth 2, 8 ch, 16x16", 16, 2, 8, (1,), 0.10, 1),
    ),
    dip_iters=1,
    dip_repeats=1,
    deepinv_cases=((16, 2, 8),),
    deepinv_repeats=2,
    notes=("QUICK SMOKE RUN: tiny shapes, not the README's settings; numbers mean nothing",),
)


def script(name: str) -> ModuleType:
    """A sibling bench script as a module (scripts/ is no package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- Where it ran ---------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as stream:
        for line in stream:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_info(threads: int) -> dict[str, Any]:
    """Machine, threads, torch, date and the load average when the run starts."""
    load = "n/a"
    with contextlib.suppress(OSError):
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_start": load,
    }


# --- Ours vs diffusers ----------------------------------------------------------------------


def ddpm_rows(settings: Settings) -> pd.DataFrame:
    """bench_ddpm.py's table (CPU, fp32) for the presets: ours and, when importable, diffusers."""
    bench_ddpm = script("bench_ddpm")
    args = argparse.Namespace(
        device="cpu",
        presets=list(settings.presets),
        batch=settings.ddpm_batch,
        train_steps=settings.ddpm_train_steps,
        sample_steps=settings.ddpm_sample_steps,
        repeats=settings.ddpm_repeats,
        compile=False,
        no_diffusers=False,
    )
    return bench_ddpm.run(args)


def _same_size(params: tuple, flops: tuple) -> str:
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (*params, *flops)):
        return ""
    if params[0] != params[1]:
        return "no"
    return "yes" if flops[0] == flops[1] else "params only"


def diffusers_summary(table: pd.DataFrame, presets: tuple[str, ...]) -> list[dict]:
    rows = []
    speeds = {
        "DDPM training": ("train_img_per_s", "training images/s (optimisation step, AdamW, EMA)"),
        "DDPM sampling": ("sample_img_per_s", "sampling images/s (model load + DDPM chain)"),
    }
    for preset in presets:
        sides = table[(table.preset == preset) & (table.variant == "fp32")].set_index("impl")
        ours = sides.loc["ours"]
        theirs = sides.loc["diffusers"] if "diffusers" in sides.index else None
        for comparison, (column, metric) in speeds.items():
            row = {
                "comparison": f"{comparison} vs diffusers",
                "case": f"{preset}, batch {int(ours['batch'])}",
                "metric": metric,
                "ours": float(ours[column]),
                "params_ours": int(ours["params"]),
                "gflops_ours": ours["flops_per_eval"] / 1e9,
                "target": f">= {DIFFUSERS_TARGET}x diffusers",
            }
            if comparison == "DDPM sampling":
                row["note"] = f"{int(ours['sample_steps'])}-step chain"
            if theirs is None:
                row |= {
                    "reference": f"diffusers UNet2DModel ({NOT_INSTALLED})",
                    "met": "n/a",
                    "note": "diffusers not installed: pip install -e '.[bench]'",
                }
            else:
                ratio = float(ours[column]) / float(theirs[column])
                params = (int(ours["params"]), int(theirs["params"]))
                flops = (int(ours["flops_per_eval"]), int(theirs["flops_per_eval"]))
                same = _same_size(params, flops)
                met = "yes" if ratio >= DIFFUSERS_TARGET else "no"
                row |= {
                    "reference": "diffusers UNet2DModel, same size",
                    "reference_value": float(theirs[column]),
                    "ratio": ratio,
                    "params_reference": params[1],
                    "gflops_reference": flops[1] / 1e9,
                    "same_size": same,
                    "met": met if same == "yes" else f"{met} (SIZES DIFFER)",
                }
            rows.append(row)
    return rows


# --- Ours vs deepinv ------------------------------------------------------------------------


def load_deepinv() -> tuple[ModuleType | None, str]:
    """deepinv and its version, or None and why not."""
    try:
        import deepinv
        from deepinv.models import ConvDecoder, DeepImagePrior  # noqa: F401
        from deepinv.physics import Denoising  # noqa: F401
    except ImportError as error:
        return None, f"{NOT_INSTALLED} ({error})"
    return deepinv, getattr(deepinv, "__version__", "?")


def _flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops()


def deepinv_differences(layers: int) -> list[str]:
    """What differs between the two DIP iterations timed (also in the output)."""
    return [
        f"network, both {layers} 3x3 conv+ReLU+BatchNorm layers and a 1x1 output conv (same "
        "parameters): ours upsamples x2 (bilinear) before every 3x3 conv from an input "
        f"1/{2**layers} of the image side; deepinv's ConvDecoder upsamples (nearest) before "
        f"all but its last 3x3 conv, from 1/{2 ** (layers - 1)} of the side, so its last two "
        "convs both run at full size (more FLOPs, see the FLOPs columns)",
        "layers: ours reflection padding, BatchNorm on batch statistics only and a sigmoid "
        "output; deepinv zero padding, BatchNorm that also updates running statistics, no "
        "output activation",
        f"input: ours uniform noise x 0.1 plus fresh N(0, {DIP_DEFAULTS.reg_noise_std}^2) "
        "noise every step (reg-noise); deepinv a fixed N(0, 1) input",
        "our step (DIPFitter.step, what a job runs): forward, per-image MSE summed, backward, "
        f"Adam (lr {DIP_DEFAULTS.lr}), plus the PSNR to the observation, the backtracking "
        f"check and good-state swap, the output EMA ({DIP_DEFAULTS.exp_weight}) and the "
        "stacked layers of the batched engine (at K = 1); our fit iteration adds fit_dip's "
        "per-step logging (trajectory row, ES-WMV window); deepinv's loop "
        "(DeepImagePrior.forward): forward, MSE through physics.A, zero_grad, backward, Adam "
        "(lr 0.01), nothing else",
        "the 'DIP network vs deepinv (same loop)' rows time our network (as our fitter stacks "
        "it) in deepinv's loop body: only the networks differ",
    ]


def deepinv_comparison(
    size: int, layers: int, channels: int, repeats: int, device: torch.device
) -> dict[str, Any]:
    """Seconds of one DIP iteration, ours and deepinv's, batch 1, timed in turn.

    Ours: ``DIPFitter.step`` (``step_s``), a ``fit_dip`` iteration (``iteration_s``) and our
    network in deepinv's loop body (``ours_plain_loop_s``); deepinv: its loop body
    (``deepinv_s``, the lines of ``DeepImagePrior.forward``'s loop) and, as a check, a whole
    ``DeepImagePrior.forward`` call of ``repeats`` iterations per iteration
    (``deepinv_forward_s``, which also draws z, builds Adam and runs a last forward).
    """
    bench_dip = script("bench_dip")
    from deepinv.models import ConvDecoder, DeepImagePrior
    from deepinv.physics import Denoising

    params = {"layers": layers, "channels": channels}
    shape = (3, size, size)
    timings = bench_dip.overhead_timings(
        "convdecoder", params, shape, [0], device, calls=repeats + 2
    )
    timings.pop("fwd_bwd_s")

    # Our network in deepinv's loop body.
    plain, observed = dip_fitter("convdecoder", params, shape, [0], device)
    plain_adam = torch.optim.Adam(plain.net.parameters(), lr=DIP_DEFAULTS.lr)

    def ours_plain_loop() -> None:
        error = torch.nn.functional.mse_loss(plain.net(plain.inputs), observed)
        plain_adam.zero_grad()
        error.backward()
        plain_adam.step()

    # deepinv: same parameters as ours (see deepinv_differences).
    side = size // 2 ** (layers - 1)
    torch.manual_seed(0)
    generator = ConvDecoder(
        img_size=shape, in_size=(side, side), layers=layers, channels=channels
    ).to(device)
    untrained = copy.deepcopy(generator)
    z_shape = (channels, side, side)
    dip = DeepImagePrior(generator, img_size=z_shape, iterations=repeats, learning_rate=0.01)
    physics = Denoising()
    y = observed.to(device)
    z = torch.randn(z_shape, device=device).unsqueeze(0)
    adam = torch.optim.Adam(dip.generator.parameters(), lr=dip.lr)

    def deepinv_loop() -> None:  # the body of DeepImagePrior.forward's loop
        x = dip.generator(z)
        error = dip.loss(y=y, x_net=x, physics=physics)
        adam.zero_grad()
        error.backward()
        adam.step()

    timings |= {"ours_plain_loop_s": ours_plain_loop, "deepinv_s": deepinv_loop}
    with torch.enable_grad():
        best = bench_dip.fastest(timings, repeats, device)
        check = DeepImagePrior(untrained, img_size=z_shape, iterations=repeats, learning_rate=0.01)
        best["deepinv_forward_s"] = timed(lambda: check(y, physics), device) / repeats

    ours_net = build_dip_net(
        "convdecoder", 3, (size, size), **resolve_params("convdecoder", params)
    )
    ours_in = torch.zeros(dip_input_shape("convdecoder", params, (size, size)))
    return best | {
        "size": size,
        "layers": layers,
        "channels": channels,
        "params_ours": sum(p.numel() for p in ours_net.parameters()),
        "params_deepinv": sum(p.numel() for p in untrained.parameters()),
        "flops_ours": _flops(ours_net.train(), ours_in),
        "flops_deepinv": _flops(copy.deepcopy(untrained).train(), torch.zeros(1, *z_shape)),
    }


def deepinv_summary(results: list[dict], version: str) -> list[dict]:
    rows = []
    for r in results:
        side, layers = f"{r['size']}x{r['size']}", r["layers"]
        case = f"convdecoder {side}, {layers} layers, {r['channels']} ch, batch 1"
        if "deepinv_s" not in r:
            rows.append(
                {
                    "comparison": "DIP iteration vs deepinv",
                    "case": case,
                    "metric": "seconds per iteration",
                    "ours": r.get("step_s", math.nan),
                    "reference": f"deepinv DeepImagePrior + ConvDecoder ({version})",
                    "met": "n/a",
                    "note": "deepinv " + version,
                }
            )
            continue
        params = (r["params_ours"], r["params_deepinv"])
        flops = (r["flops_ours"], r["flops_deepinv"])
        sizes = {
            "params_ours": params[0],
            "params_reference": params[1],
            "gflops_ours": flops[0] / 1e9,
            "gflops_reference": flops[1] / 1e9,
            "same_size": _same_size(params, flops),
            "target": "none (comparison)",
            "met": "n/a",
        }
        reference = f"deepinv {version} DeepImagePrior loop, ConvDecoder"
        per_flop = (r["deepinv_s"] / flops[1]) / (r["step_s"] / flops[0])
        rows.append(
            {
                "comparison": "DIP iteration vs deepinv",
                "case": case,
                "metric": "seconds per iteration (ratio: deepinv / ours, > 1: ours faster)",
                "ours": r["step_s"],
                "reference": reference,
                "reference_value": r["deepinv_s"],
                "ratio": r["deepinv_s"] / r["step_s"],
                **sizes,
                "note": (
                    f"ours = DIPFitter.step; fit iteration with logging "
                    f"{r['iteration_s'] * 1e3:.2f} ms; seconds per forward FLOP, deepinv / ours "
                    f"{per_flop:.2f}; deepinv's own DeepImagePrior.forward "
                    f"{r['deepinv_forward_s'] * 1e3:.2f} ms per iteration"
                ),
            }
        )
        rows.append(
            {
                "comparison": "DIP network vs deepinv (same loop)",
                "case": case,
                "metric": "seconds per iteration (ratio: deepinv / ours, > 1: ours faster)",
                "ours": r["ours_plain_loop_s"],
                "reference": reference,
                "reference_value": r["deepinv_s"],
                "ratio": r["deepinv_s"] / r["ours_plain_loop_s"],
                **sizes,
                "note": "ours = our network in deepinv's loop body: only the networks differ",
            }
        )
    return rows


# --- DIP: overhead share and convolution bound ----------------------------------------------


def dip_rows(settings: Settings) -> pd.DataFrame:
    """bench_dip.py's rows (CPU, with the convolution bound and the overhead share) for
    every case: one image at a time, then each batch size."""
    bench_dip = script("bench_dip")
    cpu = torch.device("cpu")
    frames = []
    for case in settings.dip_cases:
        for i, k in enumerate(case.batches):
            modes = "single" if k == 1 else ("single,batched" if i == 0 else "batched")
            args = bench_dip.parse_args(
                [
                    *("--k", str(k), "--iters", str(settings.dip_iters)),
                    *("--repeats", str(settings.dip_repeats)),
                    *("--single-fits", str(case.single_fits), "--size", str(case.size)),
                    *("--depth", str(case.depth), "--channels", str(case.channels)),
                    *("--modes", modes, "--devices", "cpu"),
                ]
            )
            frame = pd.DataFrame(bench_dip.bench_device(args, cpu))
            frames.append(frame.assign(case=case.name))
    return pd.concat(frames, ignore_index=True)


def dip_summary(table: pd.DataFrame, settings: Settings) -> list[dict]:
    bench_dip = script("bench_dip")
    rows = []
    for case in settings.dip_cases:
        group = table[table.case == case.name]
        single = group[group["mode"] == "single"].iloc[0]
        skip = {"depth": case.depth, "channels_down": case.channels, "channels_up": case.channels}
        params = bench_dip.num_params(skip, case.size)
        for k in case.batches:
            mode = "single" if k == 1 else "batched"
            r = group[(group["mode"] == mode) & (group["k"] == k)].iloc[0]
            what = "one image at a time" if k == 1 else f"batched, K = {k}"
            share = float(r["overhead_share"])
            rows.append(
                {
                    "comparison": "DIP overhead share",
                    "case": f"{case.name}, {what}",
                    "metric": "share of a fit iteration outside the network's forward+backward",
                    "ours": share,
                    "reference": "forward+backward alone",
                    "reference_value": float(r["fwd_bwd_s"]),
                    "params_ours": params,
                    "target": f"< {case.overhead_target:.0%}",
                    "met": "yes" if share < case.overhead_target else "no",
                    "note": (
                        f"iteration {r['iteration_s'] * 1e3:.2f} ms, forward+backward "
                        f"{r['fwd_bwd_s'] * 1e3:.2f} ms; share of a step alone "
                        f"{r['step_overhead_share']:.0%}"
                    ),
                }
            )
            rate, bound = float(r["image_steps_per_s"]), float(r["conv_bound_image_steps_per_s"])
            one = float(single["image_steps_per_s"])
            row = {
                "comparison": "DIP fitting vs convolution bound",
                "case": f"{case.name}, {what}",
                "metric": "image-steps/s (ratio: share of the bound reached)",
                "ours": rate,
                "reference": "convolution bound",
                "reference_value": bound,
                "ratio": rate / bound,
                "params_ours": params,
            }
            if k == 1:
                row |= {"target": "none (one image)", "met": "n/a"}
                row["note"] = f"convolutions {r['conv_share']:.0%} of the step"
            else:
                row |= {
                    "target": f">= {BOUND_TARGET:.0%} of the bound",
                    "met": "yes" if rate / bound >= BOUND_TARGET else "no",
                    "note": (
                        f"one at a time {one:.1f} image-steps/s; batched/single "
                        f"{rate / one:.2f}x, bound {bound / one:.2f}x"
                    ),
                }
            rows.append(row)
    return rows


# --- The table ------------------------------------------------------------------------------


def summary_frame(rows: list[dict], info: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame([{**dict.fromkeys(COLUMNS), **row, **info} for row in rows])
    return frame[COLUMNS]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text(value: Any, empty: str = "-") -> str:
    return empty if _missing(value) or value == "" else str(value)


def _number(value: Any, metric: str) -> str:
    if _missing(value):
        return "-"
    if "share" in metric and value <= 1:
        return f"{value:.1%}"
    if "seconds" in metric:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.3g}"


def _count(value: Any) -> str:
    if _missing(value):
        return "-"
    return f"{int(value):,}"


def _gflops(value: Any) -> str:
    if _missing(value):
        return "-"
    return f"{value:.3g}"


def to_markdown(frame: pd.DataFrame, info: dict[str, Any], notes: list[str]) -> str:
    """The table as the README shows it, with where and how it was measured."""
    header = [
        "comparison",
        "case",
        "ours",
        "reference",
        "ratio",
        "parameters, ours / reference",
        "GFLOP per evaluation, ours / reference",
        "target",
        "met",
        "note",
    ]
    lines = [
        f"Generated by `make bench` (scripts/bench_report.py) on {info['date']}: "
        f"{info['cpu']}, {info['cores']} cores, {info['threads']} torch thread(s), torch "
        f"{info['torch']}, load average at start {info['load_average_start']}.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for r in frame.to_dict(orient="records"):
        ratio = r["ratio"]
        if _missing(ratio):
            ratio_text = "-"
        elif "share of the bound" in r["metric"]:
            ratio_text = f"{ratio:.0%}"
        else:
            ratio_text = f"{ratio:.3f}x"
        reference_metric = "seconds" if "forward+backward" in str(r["reference"]) else r["metric"]
        cells = [
            r["comparison"],
            r["case"],
            _number(r["ours"], r["metric"]),
            f"{_text(r['reference'])}: {_number(r['reference_value'], reference_metric)}",
            ratio_text,
            f"{_count(r['params_ours'])} / {_count(r['params_reference'])}",
            f"{_gflops(r['gflops_ours'])} / {_gflops(r['gflops_reference'])}",
            _text(r["target"]),
            _text(r["met"]),
            _text(r["note"], ""),
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    lines += [
        "",
        "Ratios: ours / diffusers images/s (> 1: ours faster); deepinv / ours seconds per "
        "iteration (> 1: ours faster); batched image-steps/s / convolution bound.",
    ]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def rewrite_readme(readme: Path, block: str) -> None:
    """Put ``block`` between the bench markers of ``readme``."""
    text = readme.read_text()
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise SystemExit(f"{readme}: needs exactly one {START} ... {END} block")
    new = pattern.sub(lambda _: f"{START}\n{block}{END}", text)
    with atomic_path(readme) as tmp:
        tmp.write_text(new)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def run(settings: Settings, out_dir: Path, readme: Path | None) -> pd.DataFrame:
    """Run every bench, write the table (and the benches' rows) to ``out_dir`` and, when
    ``readme`` is given, rewrite its bench block. Returns the table."""
    info = run_info(settings.threads)
    print(f"bench_report: {info}", flush=True)
    cpu = torch.device("cpu")
    with torch_threads(settings.threads):
        ddpm = ddpm_rows(settings)
        dip = dip_rows(settings)
        deepinv, version = load_deepinv()
        results = []
        for size, layers, channels in settings.deepinv_cases:
            if deepinv is None:
                results.append({"size": size, "layers": layers, "channels": channels})
            else:
                results.append(
                    deepinv_comparison(size, layers, channels, settings.deepinv_repeats, cpu)
                )
            print(f"deepinv comparison: {results[-1]}", flush=True)
    rows = diffusers_summary(ddpm, settings.presets)
    rows += deepinv_summary(results, version)
    rows += dip_summary(dip, settings)
    frame = summary_frame(rows, info)

    layers = settings.deepinv_cases[0][1] if settings.deepinv_cases else 4
    notes = list(settings.notes)
    if deepinv is None:
        notes.append(f"deepinv {version}: pip install -e '.[bench]'; its DIP rows are empty")
    else:
        notes += [f"ours vs deepinv, {d}" for d in deepinv_differences(layers)]
    markdown = to_markdown(frame, info, notes)

    out_dir.mkdir(parents=True, exist_ok=True)
    save_csv(out_dir / "performance.csv", frame)
    _write_text(out_dir / "performance.md", markdown)
    save_csv(out_dir / "bench_ddpm.csv", ddpm)
    save_csv(out_dir / "bench_dip.csv", dip)
    save_csv(out_dir / "dip_deepinv.csv", pd.DataFrame(results))
    if readme is not None:
        rewrite_readme(readme, markdown)
    print(markdown, flush=True)
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny shapes for a smoke test (seconds); needs --out-dir; never touches the README",
    )
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="default: results/summary/bench/"
    )
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--no-readme", action="store_true", help="leave the README as it is")
    args = parser.parse_args(argv)
    if args.quick and args.out_dir is None:
        parser.error("--quick needs --out-dir (its numbers must not land in results/summary)")
    out_dir = args.out_dir or ROOT / "results" / "summary" / "bench"
    readme = None if args.quick or args.no_readme else args.readme
    run(QUICK if args.quick else FULL, out_dir, readme)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
