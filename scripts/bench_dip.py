"""Benchmark: DIP image-steps/second, one image at a time vs K images in one fitter.

Not a test. Example (the shared CPU; keep iterations small):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_dip.py --k 64 --iters 5 --out bench.csv

"single" fits ``--single-fits`` images one after another, each with its own K=1 fitter;
"batched" fits K images in one fitter (``batched-loop`` / ``batched-grouped`` force the
convolution mode); "chunked" fits them as ``fit_dip`` does by default, in chunks of
``default_chunk_size`` images (one fitter per chunk, the chunks one after another). Every
Adam step after a warm-up step is timed; the fastest one is kept because the machine is
shared. Images/second of a fit = image-steps/second / iterations.

The convolution bound: every convolution layer of a step is also timed on its own
(forward and backward, on the input it sees in a real step). ``conv_bound`` =
K / (those seconds) is the rate a fitter would reach if everything but its convolutions
were free; dividing the batched bound by the single rate bounds the batched speed-up that
any overhead reduction can buy with these convolution kernels.

The overhead share: on one fitter, the network's forward and backward alone (loss
included, on the fixed input), a ``DIPFitter.step`` and a fit iteration (the step plus
the per-step trajectory logging ``fit_dip`` does, with a full ES-WMV window and PSNRs to
a clean image) are timed in turn, the fastest of each kept. ``overhead_share`` = 1 -
forward+backward / iteration is the share of an iteration spent outside the network
(Adam, backtracking, EMA, input noise, logging); ``step_overhead_share`` the same for the
step alone. Both come from one run, so a busy machine slows numerator and denominator
alike.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import pandas as pd
import torch

from dipddpm.cost import dip_fitter, dip_step_seconds, timed
from dipddpm.device import describe_device
from dipddpm.dip.defaults import DIP_DEFAULTS
from dipddpm.dip.fit import default_chunk_size
from dipddpm.dip.models import (
    StackedConv2d,
    StackedPointwiseConv2d,
    build_dip_net,
    resolve_params,
)
from dipddpm.dip.recording import ChunkRecorder
from dipddpm.io import save_csv
from dipddpm.operators import Operator

CONV_LAYERS = (StackedConv2d, StackedPointwiseConv2d)


def num_params(params: dict, size: int) -> int:
    """Parameters of one skip network with these settings (built on the meta device)."""
    with torch.device("meta"):
        net = build_dip_net("skip", 3, (size, size), **resolve_params("skip", params))
    return sum(p.numel() for p in net.parameters())


def step_times(
    params: dict,
    size: int,
    seeds: list[int],
    iters: int,
    device: torch.device,
    conv_mode: str = "auto",
) -> list[float]:
    """Seconds of each of ``iters`` steps of one fitter over len(seeds) images (after a
    warm-up step), timed as the cost calibration times a DIP iteration."""
    return dip_step_seconds("skip", params, (3, size, size), seeds, iters, 1, device, conv_mode)


def conv_flops(module: torch.nn.Module, out_elements: int, needs_grad: bool) -> int:
    """Floating-point operations of one stacked convolution layer, forward and backward:
    2 per multiply-add, one pass for the output, one for the weight gradient and one more
    for the input gradient when it is needed."""
    weight = module.weight  # (K, out, in, kh, kw): an output element sums in * kh * kw terms
    multiply_adds = out_elements * weight[0, 0].numel()
    return 2 * multiply_adds * (3 if needs_grad else 2)


def conv_seconds(
    params: dict,
    size: int,
    seeds: list[int],
    repeats: int,
    device: torch.device,
    conv_mode: str = "auto",
) -> tuple[float, int, int]:
    """Seconds one step spends in its convolutions alone, how many layers and FLOPs that is.

    Each convolution layer is timed forward and backward (weight gradients, and the input
    gradient where the real step needs it) on the input it received in a real step; the
    fastest of ``repeats`` timings per layer is kept.
    """
    fitter, observed = dip_fitter("skip", params, (3, size, size), seeds, device, conv_mode)
    seen: list[tuple[torch.nn.Module, torch.Tensor, bool, int]] = []

    def record(module, inputs, output):
        x = inputs[0]
        seen.append((module, x.detach().clone(), x.requires_grad, output.numel()))

    layers = [m for m in fitter.net.modules() if isinstance(m, CONV_LAYERS)]
    hooks = [layer.register_forward_hook(record) for layer in layers]
    try:
        fitter.step(observed, Operator("denoise"))
    finally:
        for hook in hooks:
            hook.remove()

    def forward_backward(module, x, needs_grad):
        x = x.requires_grad_(needs_grad)
        out = module(x)
        wrt = [*module.parameters(), *([x] if needs_grad else [])]
        torch.autograd.grad(out, wrt, torch.ones_like(out))

    total, flops = 0.0, 0
    for module, x, needs_grad, out_elements in seen:
        forward_backward(module, x, needs_grad)  # warm-up: kernel selection, allocation
        flops += conv_flops(module, out_elements, needs_grad)
        total += min(
            timed(lambda: forward_backward(module, x, needs_grad), device)  # noqa: B023
            for _ in range(repeats)
        )
    return total, len(seen), flops


def overhead_timings(
    kind: str,
    params: dict,
    image_shape: tuple[int, int, int],
    seeds: list[int],
    device: torch.device,
    conv_mode: str = "auto",
    calls: int = 8,
) -> dict[str, Callable[[], object]]:
    """What :func:`overhead_seconds` times, on one fitter of architecture ``kind`` over
    len(seeds) images: the network's forward+backward alone (``fwd_bwd_s``), one
    ``DIPFitter.step`` (``step_s``) and one fit iteration, step plus the per-step logging
    of ``fit_dip`` (``iteration_s``), which may be called ``calls`` times."""
    fitter, observed = dip_fitter(kind, params, image_shape, seeds, device, conv_mode)
    operator = Operator("denoise")
    window = DIP_DEFAULTS.wmv_window
    recorder = ChunkRecorder(0, calls + 2, set(), window, 1, observed)
    weights = list(fitter.params.values())
    output, _ = fitter.step(observed, operator)
    for _ in range(window):  # a full window, as after the first wmv_window iterations
        recorder.window.push(output)

    def forward_backward():
        loss = operator.residual(fitter.net(fitter.inputs), observed)
        torch.autograd.grad(loss.sum(), weights)

    def iteration():
        recorder.record(fitter, *fitter.step(observed, operator))

    return {
        "fwd_bwd_s": forward_backward,
        "step_s": lambda: fitter.step(observed, operator),
        "iteration_s": iteration,
    }


def fastest(
    timings: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Fastest seconds of each callable, timed in turn ``repeats`` times after a warm-up
    call each: one round runs them all, so a busy machine slows each alike."""
    for fn in timings.values():
        fn()  # warm-up: kernel selection, allocation
    best = dict.fromkeys(timings, float("inf"))
    for _ in range(repeats):
        for name, fn in timings.items():
            best[name] = min(best[name], timed(fn, device))
    return best


def overhead_seconds(
    params: dict,
    size: int,
    seeds: list[int],
    repeats: int,
    device: torch.device,
    conv_mode: str = "auto",
) -> dict[str, float]:
    """Fastest seconds of the network's forward+backward alone (``fwd_bwd_s``), of one
    ``DIPFitter.step`` (``step_s``) and of one fit iteration, step plus logging
    (``iteration_s``), of one skip fitter over len(seeds) images, timed in turn ``repeats``
    times each after a warm-up."""
    shape = (3, size, size)
    timings = overhead_timings("skip", params, shape, seeds, device, conv_mode, repeats + 2)
    return fastest(timings, repeats, device)


def plan_mode(
    mode: str, args: argparse.Namespace, params: dict, device: torch.device
) -> tuple[int, str, list[list[int]]]:
    """Images per step, convolution mode and the seed list of each fitter to time."""
    if mode == "single":
        return 1, "auto", [[i] for i in range(args.single_fits)]
    if mode in {"batched", "batched-loop", "batched-grouped"}:
        conv_mode = {"batched": "auto"}.get(mode, mode.removeprefix("batched-"))
        return args.k, conv_mode, [list(range(args.k))]
    if mode == "chunked":
        size = (args.size, args.size)
        chunk = default_chunk_size(device, num_params(params, args.size), size) or args.k
        return args.k, "auto", [list(range(min(args.k, chunk)))]
    raise ValueError(f"unknown --modes entry {mode!r}")


def bench_device(args: argparse.Namespace, device: torch.device) -> list[dict]:
    params = {"depth": args.depth, "channels_down": args.channels, "channels_up": args.channels}
    rows = []
    for mode in [m for m in args.modes.split(",") if m]:
        k, conv_mode, seed_lists = plan_mode(mode, args, params, device)
        times = [
            t
            for _ in range(args.repeats)
            for seeds in seed_lists
            for t in step_times(params, args.size, seeds, args.iters, device, conv_mode)
        ]
        # A chunked step of k images is k / chunk steps of one chunk, as fit_dip runs them.
        steps_per_k = k / len(seed_lists[0])
        times = [t * steps_per_k for t in times]
        # The machine is shared: the fastest step is the least disturbed one.
        step = min(times)
        row = {
            "device": device.type,
            "mode": mode,
            "k": k,
            "chunk": len(seed_lists[0]),
            "size": args.size,
            "depth": args.depth,
            "channels": args.channels,
            "threads": torch.get_num_threads(),
            "steps_timed": len(times),
            "step_s_min": step,
            "step_s_median": float(pd.Series(times).median()),
            "image_step_s": step / k,
            "image_steps_per_s": k / step,
        }
        message = (
            f"{device.type} {mode} k={k}: step {step * 1e3:.1f} ms (median "
            f"{row['step_s_median'] * 1e3:.1f}), {k / step:.1f} image-steps/s"
        )
        if args.bound:
            conv_s, layers, flops = conv_seconds(
                params, args.size, seed_lists[0], 3 * args.iters, device, conv_mode
            )
            row["conv_gflop_per_s"] = flops / conv_s / 1e9
            conv_s *= steps_per_k
            row |= {
                "conv_layers": layers,
                "conv_s": conv_s,
                "conv_share": conv_s / step,
                "conv_bound_image_steps_per_s": k / conv_s,
            }
            message += (
                f"; convolutions alone {conv_s * 1e3:.1f} ms ({layers} layers, "
                f"{conv_s / step:.0%} of the step, {row['conv_gflop_per_s']:.0f} GFLOP/s), "
                f"bound {k / conv_s:.1f} image-steps/s"
            )
        if args.overhead:
            seconds = overhead_seconds(
                params, args.size, seed_lists[0], max(3, 2 * args.iters), device, conv_mode
            )
            row |= {
                "fwd_bwd_s": seconds["fwd_bwd_s"] * steps_per_k,
                "iteration_s": seconds["iteration_s"] * steps_per_k,
                "overhead_share": 1.0 - seconds["fwd_bwd_s"] / seconds["iteration_s"],
                "step_overhead_share": 1.0 - seconds["fwd_bwd_s"] / seconds["step_s"],
            }
            message += (
                f"; forward+backward alone {row['fwd_bwd_s'] * 1e3:.1f} ms, overhead "
                f"{row['overhead_share']:.0%} of an iteration "
                f"({row['step_overhead_share']:.0%} of a step)"
            )
        rows.append(row)
        print(message, flush=True)
    return rows


def print_speedups(frame: pd.DataFrame) -> None:
    """Batched over single speed-up per device, and its convolution bound when measured."""
    for device, group in frame.groupby("device"):
        by_mode = group.set_index("mode")
        if "single" not in by_mode.index:
            continue
        single = by_mode.loc["single", "image_steps_per_s"]
        for mode, row in by_mode.drop(index="single").iterrows():
            line = f"{device}: {mode}/single speed-up {row['image_steps_per_s'] / single:.2f}x"
            if "conv_bound_image_steps_per_s" in row:
                bound = row["conv_bound_image_steps_per_s"] / single
                line += f" (convolution bound {bound:.2f}x)"
            print(line)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=64, help="images per batched fitter")
    parser.add_argument("--iters", type=int, default=5, help="timed Adam steps per fit")
    parser.add_argument(
        "--single-fits",
        type=int,
        default=8,
        help="images fitted one at a time to estimate that rate",
    )
    parser.add_argument("--size", type=int, default=32, help="image side (CIFAR: 32)")
    parser.add_argument("--depth", type=int, default=4, help="skip depth (4 fits 32x32)")
    parser.add_argument("--channels", type=int, default=128, help="skip channels per scale")
    parser.add_argument(
        "--modes",
        default="single,batched,chunked",
        help="comma list of single, batched (one fitter, auto conv mode), "
        "batched-loop, batched-grouped, chunked (fit_dip's default "
        "chunks of the k images)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="timings per mode; best kept")
    parser.add_argument("--devices", default="cpu,cuda", help="cuda is skipped when absent")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--no-bound",
        dest="bound",
        action="store_false",
        help="skip timing the convolution layers on their own",
    )
    parser.add_argument(
        "--no-overhead",
        dest="overhead",
        action="store_false",
        help="skip timing the network's forward+backward against a step (overhead share)",
    )
    parser.add_argument("--out", default=None, help="optional CSV path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped", file=sys.stderr)
            continue
        device = torch.device(name)
        print(describe_device(device), flush=True)
        rows += bench_device(args, device)
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False))
    print_speedups(frame)
    if args.out:
        save_csv(args.out, frame)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
