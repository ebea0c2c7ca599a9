"""Benchmark DDPM training and sampling throughput (CLI, not a test).

Measures, for each UNet preset, training images/s (forward + backward + AdamW step on the
DDPM loss) and sampling images/s (a short DDPM chain; NFE/s is steps x images/s), on CPU and,
when available, on CUDA in float32, bf16 autocast and torch.compile variants. When
``diffusers`` is importable the same is measured for its ``UNet2DModel`` configured to the
same architecture, driven by the same loss and sampler code, so only the network differs.

    python scripts/bench_ddpm.py --device cpu --presets tiny ddpm-cifar10 --out bench.json
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import pandas as pd
import torch
from torch import nn

from dipddpm.ddpm.diffusion import Diffusion
from dipddpm.ddpm.unet import build_unet, count_parameters
from dipddpm.device import describe_device
from dipddpm.io import save_json

# diffusers UNet2DModel settings equal to our presets (same widths, depths, attention).
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
        sample_size=32, in_channels=3, out_channels=3, dropout=0.1, **DIFFUSERS_CONFIGS[preset]
    )
    return DiffusersAdapter(unet)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(
    model: nn.Module,
    diffusion: Diffusion,
    device: torch.device,
    batch: int,
    steps: int,
    bf16: bool,
    repeats: int = 1,
) -> float:
    """Best training images/s of ``repeats`` windows of ``steps`` steps, after 2 warm-ups."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    x0 = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = diffusion.loss(model, x0, generator=gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(2):
        step()
    best = 0.0
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        best = max(best, batch * steps / (time.perf_counter() - start))
    return best


def time_sampling(
    model: nn.Module,
    diffusion: Diffusion,
    device: torch.device,
    batch: int,
    steps: int,
    bf16: bool,
    repeats: int = 1,
) -> float:
    """Best images/s of ``repeats`` ``steps``-step DDPM chains (NFE/s = steps x images/s)."""
    model.eval()
    x_T = torch.randn(batch, 3, 32, 32, device=device)
    gen = torch.Generator().manual_seed(0)

    def chain(n: int) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            diffusion.sample_loop(model, x_T, diffusion.T, n, generator=gen, progress=False)

    chain(1)
    best = 0.0
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        chain(steps)
        _sync(device)
        best = max(best, batch / (time.perf_counter() - start))
    return best


def variants(device: torch.device) -> list[tuple[str, bool, bool]]:
    if device.type != "cuda":
        return [("fp32", False, False)]
    return [("fp32", False, False), ("bf16", True, False), ("bf16+compile", True, True)]


def run(args: argparse.Namespace) -> pd.DataFrame:
    devices = [torch.device("cpu")] if args.device == "cpu" else []
    if args.device in {"cuda", "all"} or (args.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SystemExit("CUDA requested but not available")
        devices.append(torch.device("cuda"))
    if args.device in {"auto", "all"}:
        devices.insert(0, torch.device("cpu"))
    diffusion = Diffusion("linear", 1000)
    rows = []
    for device in devices:
        cpu = device.type == "cpu"
        for preset in args.presets:
            small = preset == "tiny"
            batch = args.batch or (32 if small or not cpu else 8)
            train_steps = args.train_steps or (5 if cpu else 20)
            sample_steps = args.sample_steps or (5 if cpu else 20)
            impls = {"ours": lambda p=preset: build_unet(p)}
            if not args.no_diffusers:
                impls["diffusers"] = lambda p=preset: build_diffusers(p)
            for impl, factory in impls.items():
                for label, bf16, compiled in variants(device):
                    torch.manual_seed(0)
                    model = factory()
                    if model is None:
                        print("diffusers is not importable: skipping its UNet2DModel")
                        break
                    model = model.to(device)
                    params = count_parameters(model)
                    net = torch.compile(model) if compiled else model
                    row = {
                        "device": device.type,
                        "preset": preset,
                        "impl": impl,
                        "variant": label,
                        "params_M": round(params / 1e6, 3),
                        "batch": batch,
                        "train_img_per_s": time_training(
                            net, diffusion, device, batch, train_steps, bf16, args.repeats
                        ),
                        "sample_steps": sample_steps,
                        "sample_img_per_s": time_sampling(
                            net, diffusion, device, batch, sample_steps, bf16, args.repeats
                        ),
                    }
                    row["sample_nfe_img_per_s"] = row["sample_img_per_s"] * sample_steps
                    rows.append(row)
                    print(row, flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto", "all"], default="cpu")
    parser.add_argument("--presets", nargs="+", default=["tiny", "ddpm-cifar10"])
    parser.add_argument("--batch", type=int, default=0, help="0: 32 (tiny/GPU), 8 (big, CPU)")
    parser.add_argument("--train-steps", type=int, default=0, help="0: 5 on CPU, 20 on GPU")
    parser.add_argument("--sample-steps", type=int, default=0, help="0: 5 on CPU, 20 on GPU")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: keep)")
    parser.add_argument("--repeats", type=int, default=1, help="timed windows; best is kept")
    parser.add_argument("--no-diffusers", action="store_true")
    parser.add_argument("--out", help="write the table and device info to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = run(args)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.out:
        info = describe_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        save_json(args.out, {"device": info, "rows": table.to_dict(orient="records")})


if __name__ == "__main__":
    main()
