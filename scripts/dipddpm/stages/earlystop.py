"""Example 2 stage: a cell per grid.EARLYSTOP identity (observation, arch, schedule, K,
sigma_max, stage patience, DIP seed), scored with the post-hoc rules on the plain fit of its
grid.EARLYSTOP_PLAIN cell (observation, arch, DIP seed), which every cell differing only in
the training variant's settings reads."""

from __future__ import annotations

import logging

import pandas as pd
import torch

from .. import aggregate, grid
from ..device import describe_device, pick_device
from ..earlystop.ablations import ablation_markdown, ablation_table
from ..earlystop.registry import Problem
from ..earlystop.run import (
    PlainFitResult,
    assemble_cell,
    fitter_arguments,
    make_problem,
    run_plain_fit,
    run_training_variant,
    variant_settings,
)
from ..io import load_json, load_npz, save_csv, save_json, save_npz, save_text
from ..operators import Operator

log = logging.getLogger("dipddpm")

# The settings key of the plain fit's default length (grid.earlystop_plain_iters).
PLAIN_LENGTH_KEY = "plain_default_iters"


def run_plain_cell(
    degraded_npz,
    degraded_json,
    cell: dict,
    arch: dict,
    dip: dict,
    es: dict,
    device: str,
    threads: int,
    out_table,
    out_trajectory,
    out_json,
) -> None:
    """The plain DIP fit the post-hoc rules are scored on, with their rows. ``es``: the
    plain fit's keys (``baseline_params``) and ``plain_default_iters``, its length."""
    torch.set_num_threads(max(1, int(threads)))
    data, task = load_denoising(degraded_npz, degraded_json)
    if PLAIN_LENGTH_KEY not in es:
        raise ValueError(f"the plain cell's settings lack {PLAIN_LENGTH_KEY!r}: {sorted(es)}")
    dev = pick_device(device)
    problem = cell_problem(data, task, cell, arch, dip, dev)
    plain = run_plain_fit(problem, es[PLAIN_LENGTH_KEY], baseline_params(es))
    name_peaks(plain.info, data["names"])
    identity = {**cell, "purpose": "restoration"}
    save_csv(out_trajectory, grid.stamp(plain.trajectory, identity, "earlystop"))
    save_json(
        out_json,
        {
            **cell,
            "arch_params": arch,
            "dip": dip,
            "earlystop": es,
            "info": plain.info,
            **describe_device(dev),
        },
    )
    save_csv(out_table, grid.stamp(plain.table, identity, "earlystop"))


def run_cell(
    degraded_npz,
    degraded_json,
    plain_table,
    plain_trajectory,
    plain_json,
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
    """Progressive-target DIP with its stopping rule, and the baselines read from the plain
    cell's outputs (``run_plain_cell``; checked to be this cell's plain fit)."""
    torch.set_num_threads(max(1, int(threads)))
    data, task = load_denoising(degraded_npz, degraded_json)
    plain = load_plain_cell(plain_table, plain_trajectory, plain_json, cell, arch, dip, es)
    check_plain_images(plain, len(data["observed"]), plain_json)
    dev = pick_device(device)
    settings = variant_settings(
        cell["es_schedule"],
        int(cell["stages"]),
        float(cell["sigma_max"]) / 255.0,
        es["noise"],
        int(es["iters_per_stage"]),
        int(es["final_iters"]),
    )
    fitted = run_training_variant(
        cell_problem(data, task, cell, arch, dip, dev), settings, cell_rule_params(cell)
    )
    result = assemble_cell(fitted, plain)
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


def cell_rule_params(cell: dict) -> dict:
    """The progressive variant's ``rule_params`` a cell's axes set: its stage patience (the
    other keys keep ``RULE_DEFAULTS``)."""
    return {"stage_patience": int(cell["stage_patience"])}


def load_denoising(degraded_npz, degraded_json) -> tuple[dict, dict]:
    """The observation's arrays and task; early stopping needs a known noise level."""
    data, task = load_npz(degraded_npz), load_json(degraded_json)
    if task["kind"] != "denoise":
        raise ValueError(f"early stopping needs a denoising task (known sigma); got {task['kind']}")
    return data, task


def cell_problem(
    data: dict, task: dict, cell: dict, arch: dict, dip: dict, device: torch.device
) -> Problem:
    """The observation's images as both fits of a cell read them, every image with the
    cell's DIP seed."""
    return make_problem(
        data["clean"],
        data["observed"],
        Operator.from_arrays(data, task),
        float(task["sigma"]) / 255.0,
        arch["kind"],
        {k: v for k, v in arch.items() if k != "kind"},
        [int(cell["dip_seed"])] * len(data["observed"]),
        fitter_arguments(
            float(dip["lr"]),
            float(dip["reg_noise_std"]),
            float(dip["exp_weight"]),
            bool(dip["backtrack"]),
        ),
        device,
        progress=True,
        log_every=1,
    )


def load_plain_cell(
    table_csv, trajectory_csv, params_json, cell: dict, arch: dict, dip: dict, es: dict
) -> PlainFitResult:
    """The plain cell's outputs as ``run_plain_fit`` returned them (without the identity
    columns it stamped), once its record shows it is the fit this cell would run."""
    record = load_json(params_json)
    check_plain_record(record, cell, arch, dip, es, params_json)
    # pandas (3.1 on) parses every float exactly: the cell's rows equal those of the same
    # two fits run in one process (run_earlystop_cell) bit for bit.
    table = grid.unstamp(pd.read_csv(table_csv))
    trajectory = grid.unstamp(pd.read_csv(trajectory_csv))
    return PlainFitResult(table, trajectory, record["info"])


def check_plain_record(record: dict, cell: dict, arch: dict, dip: dict, es: dict, where) -> None:
    """The plain cell's ``params.json`` must name this cell's plain fit (observation, arch,
    DIP seed) fitted with this cell's architecture, DIP keys and post-hoc settings."""
    wanted = grid.plain_fit_of(cell)
    found = {axis: grid.canonical(record.get(axis)) for axis in grid.EARLYSTOP_PLAIN.axes}
    if found != wanted:
        raise ValueError(f"{where} is the plain fit {found}; this cell reads {wanted}")
    recorded = {
        "arch_params": (record.get("arch_params"), arch),
        "dip": (record.get("dip"), dip),
        "post-hoc settings": (recorded_baseline_params(record), baseline_params(es)),
    }
    for what, (theirs, mine) in recorded.items():
        if theirs != mine:
            raise ValueError(
                f"{where} was fitted with {what} {theirs!r}; this cell runs with {mine!r}: "
                "rerun the plain cell"
            )


def recorded_baseline_params(record: dict) -> dict | None:
    """The post-hoc settings a plain cell's record says it ran with (None: unreadable)."""
    try:
        return baseline_params(record["earlystop"])
    except (KeyError, TypeError, ValueError):
        return None


def check_plain_images(plain: PlainFitResult, n_images: int, where) -> None:
    """The plain fit's rows and trajectory cover exactly the observation's images."""
    wanted = list(range(n_images))
    for name, frame in (("table", plain.table), ("trajectory", plain.trajectory)):
        images = sorted(frame["image"].unique().tolist()) if "image" in frame else []
        if images != wanted:
            raise ValueError(
                f"the plain cell {where} has a {name} of images {images}; the "
                f"observation has {n_images}: rerun the plain cell"
            )


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
