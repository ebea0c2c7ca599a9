"""Benchmark: DIP image-steps/second, one image at a time vs K images in one fitter.

Not a test. Example (the shared CPU; keep iterations small):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_dip.py --k 64 --iters 5 --out bench.csv

"single" fits ``--single-fits`` images one after another, each with its own K=1 fitter;
"batched" fits K images in one fitter (``batched-loop`` / ``batched-grouped`` force the
convolution mode). Every Adam step after a warm-up step is timed; the fastest one is kept
because the machine is shared. Images/second of a fit = image-steps/second / iterations.
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd
import torch

from dipddpm.device import describe_device
from dipddpm.dip import DIPFitter
from dipddpm.io import save_csv
from dipddpm.operators import Operator


def step_times(
    params: dict,
    size: int,
    seeds: list[int],
    iters: int,
    device: torch.device,
    conv_mode: str = "auto",
) -> list[float]:
    """Seconds of each of ``iters`` steps of one fitter over len(seeds) images (after a
    warm-up step)."""
    g = torch.Generator().manual_seed(0)
    observed = torch.rand(len(seeds), 3, size, size, generator=g).to(device)
    fitter = DIPFitter("skip", params, (3, size, size), seeds, device=device, conv_mode=conv_mode)
    operator = Operator("denoise")
    fitter.step(observed, operator)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fitter.step(observed, operator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def bench_device(args: argparse.Namespace, device: torch.device) -> list[dict]:
    params = {"depth": args.depth, "channels_down": args.channels, "channels_up": args.channels}
    rows = []
    for mode in [m for m in args.modes.split(",") if m]:
        if mode == "single":
            k = 1
            runs = [
                step_times(params, args.size, [i], args.iters, device)
                for _ in range(args.repeats)
                for i in range(args.single_fits)
            ]
        elif mode in {"batched", "batched-loop", "batched-grouped"}:
            k = args.k
            conv_mode = {"batched": "auto"}.get(mode, mode.removeprefix("batched-"))
            runs = [
                step_times(params, args.size, list(range(k)), args.iters, device, conv_mode)
                for _ in range(args.repeats)
            ]
        else:
            raise ValueError(f"unknown --modes entry {mode!r}")
        times = [t for run in runs for t in run]
        # The machine is shared: the fastest step is the least disturbed one.
        step = min(times)
        rows.append(
            {
                "device": device.type,
                "mode": mode,
                "k": k,
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
        )
        print(
            f"{device.type} {mode} k={k}: step {step * 1e3:.1f} ms (median "
            f"{rows[-1]['step_s_median'] * 1e3:.1f}), {k / step:.1f} image-steps/s",
            flush=True,
        )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=64, help="images per batched fitter")
    parser.add_argument("--iters", type=int, default=5, help="timed Adam steps per fit")
    parser.add_argument("--single-fits", type=int, default=8,
                        help="images fitted one at a time to estimate that rate")  # fmt: skip
    parser.add_argument("--size", type=int, default=32, help="image side (CIFAR: 32)")
    parser.add_argument("--depth", type=int, default=4, help="skip depth (4 fits 32x32)")
    parser.add_argument("--channels", type=int, default=128, help="skip channels per scale")
    parser.add_argument("--modes", default="single,batched",
                        help="comma list of single, batched (auto conv mode), "
                        "batched-loop, batched-grouped")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=2, help="timings per mode; best kept")
    parser.add_argument("--devices", default="cpu,cuda", help="cuda is skipped when absent")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
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
    for device, group in frame.groupby("device"):
        rates = dict(zip(group["mode"], group["image_steps_per_s"], strict=True))
        for mode, rate in rates.items():
            if mode != "single" and "single" in rates:
                print(f"{device}: {mode}/single speed-up {rate / rates['single']:.2f}x")
    if args.out:
        save_csv(args.out, frame)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
