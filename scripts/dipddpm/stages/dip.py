"""DIP stage: one cell = one (dataset, task, architecture, seed), all images fitted at once."""

from __future__ import annotations

import logging
import re
import time

import numpy as np
import pandas as pd
import torch

from .. import grid
from ..device import describe_device, pick_device, use_deterministic_kernels
from ..dip.fit import fit_dip
from ..io import image_grid, load_json, load_npz, save_csv, save_json, save_npz, save_png
from ..metrics import per_image_metrics
from ..operators import Operator

log = logging.getLogger("dipddpm")

# Keys of the dip config that shape a fit (the rest, like the grid, only select cells).
FIT_KEYS = ("iters", "snapshots", "lr", "reg_noise_std", "exp_weight", "backtrack", "wmv_window")


SNAPSHOT_RE = re.compile(r"^it\d+$")


def snapshot_key(iteration: int, raw: bool = False) -> str:
    """Array name of a snapshot in a DIP cell's ``output.npz``."""
    return f"it{iteration}_raw" if raw else f"it{iteration}"


def run_dip_cell(
    degraded_npz,
    degraded_json,
    cell: dict,
    arch: dict,
    fit: dict,
    device: str,
    threads: int,
    out_npz,
    out_trajectory,
    out_metrics,
    out_json,
    out_preview,
) -> None:
    """Fit every image of a degraded set and write the cell's outputs.

    ``cell`` is the DIP cell's identity (grid.DIP axes); ``arch`` the named
    architecture's hyperparameters; ``fit`` the dip config's fitting keys.
    """
    torch.set_num_threads(max(1, int(threads)))
    use_deterministic_kernels()
    data, task = load_npz(degraded_npz), load_json(degraded_json)
    operator = Operator.from_arrays(data, task)
    dev = pick_device(device)
    seed = int(cell["dip_seed"])
    seeds = [seed] * len(data["observed"])  # every image: the fit a single run with `seed` gives
    kind, hyper = arch["kind"], {k: v for k, v in arch.items() if k != "kind"}
    snapshots = sorted(set(fit["snapshots"]) | {fit["iters"]})
    log.info("DIP %s on %s/%s: %d images, %s", kind, cell["dataset"], cell["task"], len(seeds), dev)
    started = time.time()
    result = fit_dip(
        data["observed"],
        operator,
        kind,
        hyper,
        seeds,
        iters=int(fit["iters"]),
        snapshots=snapshots,
        lr=float(fit["lr"]),
        reg_noise_std=float(fit["reg_noise_std"]),
        exp_weight=float(fit["exp_weight"]),
        backtrack=bool(fit["backtrack"]),
        clean=data["clean"],
        device=dev,
        wmv_window=int(fit["wmv_window"]),
    )
    metrics = snapshot_metrics(result, data, cell, dev)
    arrays = {snapshot_key(t): out for t, out in result.snapshots.items()}
    arrays |= {snapshot_key(t, raw=True): out for t, out in result.snapshots_raw.items()}
    final = result.snapshots[max(result.snapshots)]
    save_png(out_preview, preview_grid(data, final))
    save_csv(out_trajectory, grid.stamp(result.trajectory, cell, "dip"))
    save_csv(out_metrics, metrics)
    save_json(
        out_json,
        {
            **cell,
            "arch_params": arch,
            "fit": {k: fit[k] for k in FIT_KEYS if k in fit},
            "task_params": task,
            "seeds": seeds,
            "snapshots": snapshots,
            "seconds": result.seconds,
            "images_per_second": len(seeds) * result.iterations / result.seconds,
            "started": started,
            **describe_device(dev),
        },
    )
    save_npz(out_npz, names=data["names"], **arrays)


def peak_of(trajectory: pd.DataFrame) -> pd.DataFrame:
    """Per image: iteration and value of the peak PSNR of the EMA output to the clean image."""
    best = trajectory.loc[trajectory.groupby("image")["psnr_clean_ema"].idxmax()]
    return best[["image", "iteration", "psnr_clean_ema"]].rename(
        columns={"iteration": "peak_iter", "psnr_clean_ema": "peak_psnr"}
    )


def snapshot_metrics(result, data: dict, cell: dict, device: torch.device) -> pd.DataFrame:
    """One row per image and duration: PSNR/SSIM of the EMA output, timing, peak."""
    clean = data["clean"]
    elapsed = result.trajectory.groupby("iteration")["elapsed_s"].max()
    rows = []
    for iteration, output in sorted(result.snapshots.items()):
        frame = per_image_metrics(output, clean)
        frame["iters"] = iteration
        frame["seconds"] = float(elapsed.get(iteration, np.nan))
        rows.append(frame)
    frame = pd.concat(rows, ignore_index=True).merge(peak_of(result.trajectory), on="image")
    frame["psnr_input"] = frame["image"].map(input_psnr(data))
    frame["name"] = frame["image"].map(dict(enumerate(data["names"].tolist())))
    frame["stage"], frame["device"] = "dip", device.type
    return grid.stamp(frame, cell, method="dip")


def input_psnr(data: dict) -> dict[int, float]:
    """PSNR of the observation itself (upsampled by repetition for SR, masked for inpainting)."""
    observed, clean = data["observed"], data["clean"]
    if observed.shape != clean.shape:
        factor = clean.shape[-1] // observed.shape[-1]
        observed = observed.repeat(factor, axis=2).repeat(factor, axis=3)
    frame = per_image_metrics(np.clip(observed, 0, 1), clean)
    return dict(zip(frame["image"], frame["psnr"], strict=True))


def preview_grid(data: dict, restored: np.ndarray, rows: int = 8) -> np.ndarray:
    """Clean, observed and restored images as three rows."""
    observed = data["observed"]
    if observed.shape != data["clean"].shape:
        factor = data["clean"].shape[-1] // observed.shape[-1]
        observed = observed.repeat(factor, axis=2).repeat(factor, axis=3)
    n = min(rows, len(restored))
    stack = [data["clean"][:n], np.clip(observed[:n], 0, 1), restored[:n]]
    return image_grid(np.concatenate(stack), ncol=n)


def store_prior(output_npz, metrics_csv, stored_npz, stored_metrics) -> None:
    """Keep what Example 1 reads from a DIP cell in the prior store: the EMA output at every
    stored duration as float16 (a few hundred kB a cell; its rounding, below 2.5e-4 on
    [0, 1] images, moves PSNR by far less than 0.01 dB) and the per-image metrics."""
    if output_npz is None or metrics_csv is None:
        raise ValueError(
            f"{stored_npz} was a stored copy, so the workflow did not ask for its DIP "
            "cell: delete the stored files (not force the rule) to refit it"
        )
    arrays = load_npz(output_npz)
    kept = {k: v.astype(np.float16) for k, v in arrays.items() if SNAPSHOT_RE.match(k)}
    if not kept:
        raise ValueError(f"{output_npz} holds no DIP snapshots (arrays named it<iterations>)")
    save_npz(stored_npz, names=arrays["names"], **kept)
    save_csv(stored_metrics, pd.read_csv(metrics_csv, dtype=str))
    log.info("stored %d snapshots of %s in %s", len(kept), output_npz, stored_npz)


def load_prior(npz, iters: int) -> np.ndarray:
    """The DIP output after ``iters`` iterations, as float32, from a cell or the store."""
    arrays = load_npz(npz)
    key = snapshot_key(int(iters))
    if key not in arrays:
        found = sorted(k for k in arrays if SNAPSHOT_RE.match(k))
        raise ValueError(f"{npz} has no snapshot {key!r} (it has {found})")
    return arrays[key].astype(np.float32)
