"""DIP denoising quality on a scikit-image photo with the paper's skip defaults.

A measurement, not a test or a rule: prints the PSNR trajectory and the peak, and writes
the trajectory as CSV. The README's quality numbers come from this command:

    python scripts/dip_quality.py --image astronaut --crop 256 --sigma 25 --iters 2000

On a CPU a 256x256 step of the default net takes about 2 s; use a GPU (--device cuda) for
the full 2000-3000 iterations.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from dipddpm.data import load_skimage_images, to_chw_float
from dipddpm.degrade import degrade
from dipddpm.device import pick_device
from dipddpm.dip.fit import fit_dip
from dipddpm.dip.models import ARCH_DEFAULTS
from dipddpm.io import save_csv
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
    result = fit_dip(
        degraded.observed,
        Operator("denoise"),
        args.arch,
        {},
        [args.seed],
        iters=args.iters,
        clean=clean,
        device=pick_device(args.device),
        log_every=1,
    )
    trajectory = result.trajectory
    noisy_psnr = -10 * np.log10(np.mean((degraded.observed - clean) ** 2))
    print(f"{args.image} {args.crop}x{args.crop}, sigma {args.sigma:g}: noisy input "
          f"{noisy_psnr:.2f} dB; {result.seconds / args.iters:.2f} s/iteration")  # fmt: skip
    for _, row in trajectory[trajectory["iteration"] % args.every == 0].iterrows():
        print(f"  iter {int(row.iteration):5d}  PSNR {row.psnr_clean:6.2f}  "
              f"EMA {row.psnr_clean_ema:6.2f}")  # fmt: skip
    best = trajectory.loc[trajectory["psnr_clean_ema"].idxmax()]
    print(f"peak (EMA output): {best.psnr_clean_ema:.2f} dB at iteration {int(best.iteration)}")
    if args.out:
        save_csv(args.out, trajectory)


if __name__ == "__main__":
    main()
