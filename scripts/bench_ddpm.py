"""Benchmark DDPM training and sampling throughput (CLI, not a test).

Measures, for each UNet preset, what a pipeline job runs: training images/s of
:func:`optimisation_step` (DDPM loss, backward, clipping, AdamW, EMA update) and sampling
images/s of a job's sampling call (model load from a checkpoint file, then :func:`sample`
on a short DDPM chain; NFE/s is steps x images/s), on CPU and, when available, on CUDA in
float32, bf16 autocast and torch.compile variants. When ``diffusers`` is importable the
same is measured for its ``UNet2DModel`` configured to the same architecture (single-head
attention, same norms and time embedding), put in the same places, so only the network
differs. Parameters and FLOPs per network evaluation (one image) are listed for both sides.

    python scripts/bench_ddpm.py --device cpu --threads 1 --repeats 3 --out bench.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dipddpm.cost import sampling_chain, timed, trained_like
from dipddpm.ddpm.checkpoint import load_model
from dipddpm.ddpm.diffusion import Diffusion
from dipddpm.ddpm.train import Run, TrainConfig, build_run, optimisation_step
from dipddpm.ddpm.unet import build_unet, count_parameters
from dipddpm.device import describe_device
from dipddpm.io import save_json

# diffusers UNet2DModel settings equal to our presets (same widths, depths, attention).
# Ho et al.'s model has single-head attention (head dim None: all channels), GroupNorm eps
# 1e-6 and sin-then-cos timestep features with frequencies over half - 1.
DIFFUSERS_COMMON: dict[str, Any] = {
    "attention_head_dim": None,
    "norm_eps": 1e-6,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
}
DIFFUSERS_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "block_out_channels": (24, 48, 48),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8,
    },
    "ddpm-cifar10": {
        "block_out_channels": (128, 256, 256, 256),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 32,
    },
}


class DiffusersAdapter(nn.Module):
    """Makes ``UNet2DModel`` callable as ``model(x, t) -> tensor`` like our UNet."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample


def build_diffusers(preset: str) -> nn.Module | None:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    unet = UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        dropout=0.1,
        **DIFFUSERS_COMMON,
        **DIFFUSERS_CONFIGS[preset],
    )
    return DiffusersAdapter(unet)


def flops_per_eval(model: nn.Module) -> int:
    """FLOPs of one network evaluation on one 32x32 image.

    Attention runs on the math backend here: the counter does not see the fused CPU
    kernels, and both sides must be counted the same way."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(torch.zeros(1, 3, 32, 32), torch.tensor([500]))
    model.train(was_training)
    return counter.get_total_flops()


def training_run(
    impl: str, preset: str, device: torch.device, batch: int, bf16: bool, compiled: bool
) -> Run:
    """The pipeline's training state; for diffusers its UNet in place of ours."""
    config = TrainConfig(preset=preset, batch_size=batch, bf16=bf16, compile=compiled)
    images = np.random.default_rng(0).random((4 * batch, 3, 32, 32), dtype=np.float32)
    torch.manual_seed(0)
    run = build_run(config, images, None, device, cpu_speedups=True)
    if impl == "ours":
        return run
    torch.manual_seed(0)
    model = build_diffusers(preset).to(device)
    # As build_run makes it.
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    forward = torch.compile(model) if compiled else model
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    return dataclasses.replace(run, model=model, ema=ema, optimizer=optimizer, forward=forward)


def time_training(run: Run, device: torch.device, steps: int, repeats: int = 1) -> float:
    """Best training images/s of ``repeats`` windows of ``steps`` pipeline steps, after 2
    warm-ups."""
    run.model.train()
    for _ in range(2):
        optimisation_step(run)

    def window() -> None:
        for _ in range(steps):
            optimisation_step(run)

    best = 0.0
    for _ in range(repeats):
        best = max(best, run.config.batch_size * steps / timed(window, device))
    return best


def save_for_loading(impl: str, preset: str, folder: Path) -> Path:
    """A checkpoint file as a sampling job finds it (ours: the training format)."""
    torch.manual_seed(0)
    path = folder / f"{impl}-{preset}.pt"
    if impl == "ours":
        model = trained_like(build_unet(preset))
        config = {"preset": preset, "unet": {}, "schedule": "linear", "T": 1000}
        state = {"model": {}, "ema": model.state_dict(), "step": 0, "config": config}
        torch.save({**state, "config": {**config, "prediction": "eps"}}, path)
    else:
        torch.save(trained_like(build_diffusers(preset)).state_dict(), path)
    return path


def loader(impl: str, preset: str, path: Path, device: torch.device) -> Callable[[], nn.Module]:
    """What a sampling job does to get its network: build it and load the weights."""

    def ours() -> nn.Module:
        return load_model(path, device)[0]

    def theirs() -> nn.Module:
        model = build_diffusers(preset)
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        return model.to(device).eval().requires_grad_(False)

    return ours if impl == "ours" else theirs


def time_sampling(
    load: Callable[[], nn.Module],
    diffusion: Diffusion,
    device: torch.device,
    batch: int,
    steps: int,
    bf16: bool,
    compiled: bool,
    repeats: int = 1,
) -> float:
    """Best images/s of ``repeats`` sampling jobs: model load + a ``steps``-step DDPM chain
    through :func:`sample` (NFE/s = steps x images/s), run as the cost calibration runs
    its chains (:func:`dipddpm.cost.sampling_chain`)."""
    x_T = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def job(n: int) -> None:
        model = load()
        net = torch.compile(model) if compiled else model
        sampling_chain(net, diffusion, x_T, diffusion.T, n, bf16=bf16)

    job(1)
    best = 0.0
    for _ in range(repeats):
        best = max(best, batch / timed(lambda: job(steps), device))
    return best


def variants(device: torch.device, cpu_compile: bool) -> list[tuple[str, bool, bool]]:
    """(label, bf16, compiled): both sides are timed in each."""
    if device.type != "cuda":
        return [("fp32", False, False)] + ([("fp32+compile", False, True)] if cpu_compile else [])
    return [("fp32", False, False), ("bf16", True, False), ("bf16+compile", True, True)]


def run(args: argparse.Namespace) -> pd.DataFrame:
    devices = [torch.device("cpu")] if args.device == "cpu" else []
    if args.device in {"cuda", "all"} or (args.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SystemExit("CUDA requested but not available")
        devices.append(torch.device("cuda"))
    if args.device in {"auto", "all"}:
        devices.insert(0, torch.device("cpu"))
    impls = ["ours"] if args.no_diffusers else ["ours", "diffusers"]
    if "diffusers" in impls and build_diffusers("tiny") is None:
        print("diffusers is not importable: skipping its UNet2DModel")
        impls = ["ours"]
    diffusion = Diffusion("linear", 1000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            for preset in args.presets:
                for impl in impls:
                    path = save_for_loading(impl, preset, Path(tmp))
                    for label, bf16, compiled in variants(device, args.compile):
                        row = measure(args, impl, preset, device, path, diffusion, bf16, compiled)
                        row = {**row, "variant": label}
                        rows.append(row)
                        print(row, flush=True)
    return pd.DataFrame(rows)


def measure(
    args: argparse.Namespace,
    impl: str,
    preset: str,
    device: torch.device,
    path: Path,
    diffusion: Diffusion,
    bf16: bool = False,
    compiled: bool = False,
) -> dict[str, Any]:
    """One table row: size, FLOPs and the training and sampling speeds of one network."""
    cpu = device.type == "cpu"
    batch = args.batch or (32 if preset == "tiny" or not cpu else 8)
    train_steps = args.train_steps or (5 if cpu else 20)
    sample_steps = args.sample_steps or (5 if cpu else 20)
    network = build_unet(preset) if impl == "ours" else build_diffusers(preset)
    params, flops = count_parameters(network), flops_per_eval(network)
    row = {
        "device": device.type,
        "preset": preset,
        "impl": impl,
        "params": params,
        "params_M": round(params / 1e6, 3),
        "flops_per_eval": flops,
        "gflops_per_eval": round(flops / 1e9, 3),
        "batch": batch,
    }
    train = training_run(impl, preset, device, batch, bf16, compiled)
    row["train_img_per_s"] = time_training(train, device, train_steps, args.repeats)
    del train
    load = loader(impl, preset, path, device)
    row["sample_steps"] = sample_steps
    row["sample_img_per_s"] = time_sampling(
        load, diffusion, device, batch, sample_steps, bf16, compiled, args.repeats
    )
    row["sample_nfe_img_per_s"] = row["sample_img_per_s"] * sample_steps
    return row


def profile_network(preset: str, impl: str, batch: int, train: bool, rows: int = 12) -> str:
    """Top operators by self CPU time of one network evaluation (with backward if
    ``train``): where the time goes when a speed-up is out of reach."""
    model = trained_like(build_unet(preset) if impl == "ours" else build_diffusers(preset))
    model.train(train)
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.full((batch,), 500)

    def evaluate() -> None:
        with torch.set_grad_enabled(train):
            out = model(x, t)
        if train:
            out.square().mean().backward()

    evaluate()
    with torch.profiler.profile() as prof:
        evaluate()
    title = f"{preset} {impl} {'forward+backward' if train else 'forward (no grad)'}"
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return f"{title}, batch {batch}\n{table}"


def speedups(table: pd.DataFrame) -> pd.DataFrame:
    """Ours / diffusers per device, preset and variant (>1: ours is faster)."""
    keys = ["device", "preset", "variant"]
    speeds = ["train_img_per_s", "sample_img_per_s"]
    ours = table[table.impl == "ours"].set_index(keys)[speeds]
    theirs = table[table.impl == "diffusers"].set_index(keys)[speeds]
    return (ours / theirs).dropna().rename(columns=lambda c: c.replace("_img_per_s", "_x"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto", "all"], default="cpu")
    parser.add_argument("--presets", nargs="+", default=["tiny", "ddpm-cifar10"])
    parser.add_argument("--batch", type=int, default=0, help="0: 32 (tiny/GPU), 8 (big, CPU)")
    parser.add_argument("--train-steps", type=int, default=0, help="0: 5 on CPU, 20 on GPU")
    parser.add_argument("--sample-steps", type=int, default=0, help="0: 5 on CPU, 20 on GPU")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: keep)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on CPU")
    parser.add_argument("--repeats", type=int, default=1, help="timed windows; best is kept")
    parser.add_argument("--no-diffusers", action="store_true")
    parser.add_argument(
        "--profile", action="store_true", help="also print the top operators, ours and diffusers"
    )
    parser.add_argument("--out", help="write the table and device info to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = run(args)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if set(table.impl) == {"ours", "diffusers"}:
        print(speedups(table).to_string(float_format=lambda v: f"{v:.2f}"))
    if args.profile:
        for preset in args.presets:
            batch = args.batch or (32 if preset == "tiny" else 8)
            for train in (False, True):
                for impl in ("ours", "diffusers"):
                    print(profile_network(preset, impl, batch, train), flush=True)
    if args.out:
        info = describe_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        save_json(args.out, {"device": info, "rows": table.to_dict(orient="records")})


if __name__ == "__main__":
    main()
