"""DIP denoising quality on a scikit-image photo with the paper's skip defaults.

A measurement, not a test or a rule: prints the PSNR trajectory and the peak, and writes
the trajectory as CSV. The README's quality numbers come from this command:

    python scripts/dip_quality.py --image astronaut --crop 256 --sigma 25 --iters 2000

On a CPU a 256x256 step of the default net takes about 2 s; use a GPU (--device cuda) for
the full 2000-3000 iterations.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from dipddpm.data import load_skimage_images, to_chw_float
from dipddpm.degrade import degrade
from dipddpm.device import pick_device
from dipddpm.dip.fit import DIPFitter
from dipddpm.dip.models import ARCH_DEFAULTS
from dipddpm.io import save_csv
from dipddpm.metrics import psnr_from_mse
from dipddpm.operators import Operator


def centre_crop(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="astronaut")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--sigma", type=float, default=25.0, help="0-255 units")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--arch", default="skip", choices=sorted(ARCH_DEFAULTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--every", type=int, default=100, help="print every N iterations")
    parser.add_argument("--out", help="trajectory CSV")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    image = centre_crop(load_skimage_images([args.image]).images[0], args.crop)
    clean = to_chw_float(image[None])
    degraded = degrade(clean, {"kind": "denoise", "sigma": args.sigma}, seed=args.seed)
    device = pick_device(args.device)
    observed = torch.from_numpy(degraded.observed).to(device)
    target = torch.from_numpy(clean).to(device)
    fitter = DIPFitter(args.arch, {}, tuple(clean.shape[1:]), [args.seed], device=device)
    noisy_psnr = psnr(observed, target)
    print(
        f"{args.image} {args.crop}x{args.crop}, sigma {args.sigma:g}: noisy input "
        f"{noisy_psnr:.2f} dB",
        flush=True,
    )
    # Printed as it goes (flushed), so a run cut short still leaves its numbers.
    rows, best, start = [], (-1.0, 0), time.perf_counter()
    for _ in range(args.iters):
        output, _loss = fitter.step(observed, Operator("denoise"))
        it = fitter.iteration
        raw, ema = psnr(output, target), psnr(fitter.output_ema, target)
        rows.append(
            {
                "iteration": it,
                "psnr_clean": raw,
                "psnr_clean_ema": ema,
                "elapsed_s": time.perf_counter() - start,
            }
        )
        best = max(best, (ema, it))
        if it % args.every == 0:
            print(
                f"  iter {it:5d}  PSNR {raw:6.2f}  EMA {ema:6.2f}  "
                f"peak EMA {best[0]:6.2f} at {best[1]}  "
                f"{(time.perf_counter() - start) / it:.2f} s/it",
                flush=True,
            )
    print(f"peak (EMA output): {best[0]:.2f} dB at iteration {best[1]}")
    if args.out:
        save_csv(args.out, pd.DataFrame(rows))


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(psnr_from_mse(torch.mean((x.clamp(0, 1) - ref) ** 2)))


if __name__ == "__main__":
    main()
