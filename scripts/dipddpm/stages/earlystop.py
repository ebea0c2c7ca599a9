"""Example 2 stage: a cell per grid.EARLYSTOP identity (observation, arch, schedule, K,
sigma_max, DIP seed)."""

from __future__ import annotations

import logging

import torch

from .. import aggregate, grid
from ..device import describe_device, pick_device
from ..earlystop import run_earlystop_cell
from ..earlystop.ablations import ablation_markdown, ablation_table
from ..io import load_json, load_npz, save_csv, save_json, save_npz, save_text
from ..operators import Operator

log = logging.getLogger("dipddpm")


def run_cell(
    degraded_npz,
    degraded_json,
    cell: dict,
    arch: dict,
    dip: dict,
    es: dict,
    device: str,
    threads: int,
    out_table,
    out_curves,
    out_trajectory,
    out_npz,
    out_json,
) -> None:
    """Progressive-target DIP with its stopping rule, and the baselines on a plain fit."""
    torch.set_num_threads(max(1, int(threads)))
    data, task = load_npz(degraded_npz), load_json(degraded_json)
    if task["kind"] != "denoise":
        raise ValueError(f"early stopping needs a denoising task (known sigma); got {task['kind']}")
    dev = pick_device(device)
    seeds = [int(cell["dip_seed"])] * len(data["observed"])
    result = run_earlystop_cell(
        data["clean"],
        data["observed"],
        Operator.from_arrays(data, task),
        sigma_task=float(task["sigma"]) / 255.0,
        kind=arch["kind"],
        arch_params={k: v for k, v in arch.items() if k != "kind"},
        seeds=seeds,
        schedule=cell["es_schedule"],
        K=int(cell["stages"]),
        sigma_max=float(cell["sigma_max"]) / 255.0,
        noise=es["noise"],
        iters_per_stage=int(es["iters_per_stage"]),
        final_iters=int(es["final_iters"]),
        baseline_params=baseline_params(es),
        lr=float(dip["lr"]),
        reg_noise_std=float(dip["reg_noise_std"]),
        exp_weight=float(dip["exp_weight"]),
        backtrack=bool(dip["backtrack"]),
        device=dev,
    )
    name_peaks(result.info, data["names"])
    table = result.table.copy()
    table["stage"], table["device"] = "earlystop", dev.type
    identity = {**cell, "purpose": "restoration"}
    save_csv(out_curves, grid.stamp(result.stage_curves, identity, "earlystop"))
    save_csv(out_trajectory, grid.stamp(result.trajectory, identity, "earlystop"))
    save_npz(out_npz, outputs=result.outputs_at_stop, stops=result.stops)
    save_json(
        out_json,
        {**cell, "arch_params": arch, "earlystop": es, "info": result.info, **describe_device(dev)},
    )
    save_csv(out_table, grid.stamp(table, identity, "earlystop"))


def baseline_params(es: dict) -> dict:
    """The plain fit's and the post-hoc rules' keys. ``run_past_peak``, ``max_iters`` and
    ``wmv_windows`` are passed only when the settings hold them, so a cell without them
    runs exactly as before they existed."""
    params = {
        "budgets": list(es["budgets"]),
        "tau": float(es["tau"]),
        "wmv_window": int(es["wmv_window"]),
        "patience": int(es["wmv_patience"]),
    }
    if es.get("run_past_peak") is not None:
        params["run_past_peak"] = int(es["run_past_peak"])
        params["max_iters"] = es.get("max_iters")
    if es.get("wmv_windows"):
        params["wmv_windows"] = [int(w) for w in es["wmv_windows"]]
    return params


def name_peaks(info: dict, names) -> None:
    """Give each image's row of the run past its peak (``info["plain_past_peak"]``) the
    image's name, so the params record reads without the observation beside it."""
    peaks = info.get("plain_past_peak")
    if peaks is None:
        return
    for row in peaks["images"]:
        row["name"] = str(names[row["image"]])


def summarise_ablations(tables, ablations: dict, out_csv, out_md) -> None:
    """Example 2's one-factor-at-a-time table from the ablation cells' ``earlystop.csv``."""
    frame = aggregate.collect(tables)
    table = ablation_table(frame, ablations)
    save_csv(out_csv, table)
    save_text(out_md, ablation_markdown(table))
    log.info("Example 2 ablations: %d settings from %d cells", len(table), len(tables))
