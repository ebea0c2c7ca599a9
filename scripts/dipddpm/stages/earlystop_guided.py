"""Issue 18 stage: a cell per grid.GUIDED identity (observation, arch, form, lam, DDPM, DIP
seed): DIP with the trained DDPM as a learned denoiser (``earlystop.guided``), and the
guided cells summarised.

A cell fits its images once, ``iters`` iterations (``earlystop.guided.run_guided``; no
plain fit beside it), and writes one row per image and stop: ``final`` (the last iteration)
and ``peak`` (the run's own PSNR peak). The lam-0 cell (form ``none``) is plain DIP, the
reference its lam > 0 cells are paired with; it also scores its model alone as a denoiser
(``earlystop.guided.ddpm_alone``: the one-step x0 estimate and the reverse chain from the
observation), so those rows need no job of their own and sit next to the plain oracle they
are compared with.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from .. import grid
from ..ddpm.checkpoint import load_model
from ..device import describe_device, pick_device
from ..earlystop.guided import CHAIN, GUIDED_DEFAULTS, DdpmDenoiser, ddpm_alone, run_guided
from ..earlystop.guided_summary import (
    CHAIN_AXES,
    METHOD_GUIDED,
    METHOD_PLAIN,
    STOPS,
    summarise,
    to_markdown,
)
from ..io import save_csv, save_json, save_text
from .ddpm import load_observation

log = logging.getLogger("dipddpm")

# The variant's keys each form's cells read; the lam-0 cell (form none) reads the tiles
# for the DDPM alone.
FORM_KEYS = {
    "red": ("guidance_sigma", "tile", "stride"),
    "mix": ("tile", "stride"),
    "perc": ("tile", "stride"),
    grid.NONE: ("tile", "stride"),
}
DIP_KEYS = ("lr", "reg_noise_std", "exp_weight", "backtrack")


def cell_settings(config: Mapping, cell: Mapping[str, str]) -> dict:
    """What shapes one guided cell (its rule's params): the named architecture, the DIP
    fitting keys, the iterations and its form's keys; the lam-0 cell also the DDPM-alone
    chain (``grid.guided_chain``). Nothing else, so editing one form's keys reruns only its
    cells."""
    guided, dip = config["earlystop"]["guided"], config["dip"]
    form = cell["guide_form"]
    settings = {"iters": guided["iters"]} | {key: guided[key] for key in FORM_KEYS[form]}
    if form == grid.NONE:
        settings["chain"] = grid.guided_chain(config)
    return {
        "arch": dip["archs"][cell["arch"]],
        "dip": {key: dip[key] for key in DIP_KEYS},
        "guided": settings,
    }


def run_cell(
    degraded_npz,
    degraded_json,
    ckpt,
    cell: dict,
    arch: dict,
    dip: dict,
    guided: dict,
    device: str,
    threads: int,
    out_table,
    out_trajectory,
    out_json,
    classifier=None,
) -> None:
    """Fit one guided cell (``guided``: ``iters``, the form's keys and, at lam 0, the DDPM-
    alone chain's ``chain``) and write its rows, the fit's trajectory and its record.
    ``classifier``: the CifarNet weights of form ``perc``."""
    torch.set_num_threads(max(1, int(threads)))
    data, task, operator = load_observation(degraded_npz, degraded_json)
    if task["kind"] != "denoise":
        raise ValueError(f"guided DIP needs a denoising task (known sigma); got {task['kind']}")
    dev = pick_device(device)
    sigma = float(task["sigma"]) / 255.0
    run = run_guided(
        data["clean"],
        data["observed"],
        operator,
        sigma,
        arch["kind"],
        {k: v for k, v in arch.items() if k != "kind"},
        [int(cell["dip_seed"])] * len(data["observed"]),
        int(guided["iters"]),
        rule_params(cell, guided, ckpt, classifier),
        lr=float(dip["lr"]),
        reg_noise_std=float(dip["reg_noise_std"]),
        exp_weight=float(dip["exp_weight"]),
        backtrack=bool(dip["backtrack"]),
        device=dev,
    )
    table, info = fit_rows(run.table, cell, run.info), dict(run.info)
    if cell["guide_form"] == grid.NONE:
        alone = ddpm_alone_rows(ckpt, data, sigma, guided, dev)
        table = pd.concat([table, alone], ignore_index=True)
        info["ddpm_alone"] = {"checkpoint": str(ckpt), **guided["chain"]}
    table["name"] = [str(data["names"][i]) for i in table["image"]]
    table["stage"], table["device"] = "earlystop_guided", dev.type
    trajectory = run.curves.assign(method=fit_method(cell))
    save_csv(out_trajectory, grid.stamp(trajectory, cell))
    save_json(
        out_json,
        {
            **cell,
            "arch_params": arch,
            "dip": dip,
            "guided": guided,
            "info": info,
            **describe_device(dev),
        },
    )
    save_csv(out_table, grid.stamp(table, cell))


def rule_params(cell: dict, guided: dict, ckpt, classifier=None) -> dict:
    """The variant's keys: the cell's form and lam, the checkpoint when it guides (lam 0
    never reads it), the classifier of form perc and the settings' form keys. Lam 0 is
    form-independent: it runs the default form, which does nothing at lam 0."""
    lam = float(cell["guide_lam"])
    form = GUIDED_DEFAULTS["form"] if cell["guide_form"] == grid.NONE else cell["guide_form"]
    params = {"form": form, "lam": lam, "checkpoint": str(ckpt) if lam > 0 else None}
    if form == "perc":
        if classifier is None:
            raise ValueError("a guided cell of form 'perc' needs the classifier's weights")
        params["classifier"] = str(classifier)
    return params | {key: guided[key] for key in FORM_KEYS["red"] if key in guided}


def fit_rows(table: pd.DataFrame, cell: dict, info: dict) -> pd.DataFrame:
    """The variant's rows as the cell writes them: ``method`` (plain DIP at lam 0), ``stop``
    (``final`` or ``peak``), ``seconds`` (the fit's wall time per image) and the chain
    axes, which do not apply to a fit (``none``)."""
    rows = table.copy()
    rows["method"] = fit_method(cell)
    rows["stop"] = rows["rule"].map(STOPS)
    rows["seconds"] = float(info["guided_seconds"]) / rows["image"].nunique()
    for axis in CHAIN_AXES:
        rows[axis] = grid.NONE
    return rows


def fit_method(cell: dict) -> str:
    """Plain DIP at lam 0 (form none), DDPM-guided DIP otherwise."""
    return METHOD_PLAIN if cell["guide_form"] == grid.NONE else METHOD_GUIDED


def ddpm_alone_rows(ckpt, data: dict, sigma: float, guided: dict, device) -> pd.DataFrame:
    """The model alone as a denoiser of the cell's observation, by the settings' tiles and
    with the settings' reverse chain (``grid.guided_chain``); the chain axes name it."""
    model, diffusion, meta = load_model(ckpt, device)
    t_max = meta["config"].get("t_max")
    tile = int(guided.get("tile", GUIDED_DEFAULTS["tile"]))
    stride = int(guided.get("stride", GUIDED_DEFAULTS["stride"]))
    denoiser = DdpmDenoiser(model, diffusion, tile, stride, t_max)
    chain = guided["chain"]
    observed = torch.as_tensor(data["observed"], dtype=torch.float32, device=device)
    rows = ddpm_alone(
        denoiser,
        observed,
        sigma,
        data["clean"],
        steps=int(chain["steps"]),
        sampler=chain["sampler"],
        eta=float(chain["eta"]),
        seed=int(chain["sample_seed"]),
    )
    rows["stop"] = grid.NONE
    one_step = rows["method"] != CHAIN
    for axis in CHAIN_AXES:
        rows[axis] = chain[axis]
        if axis not in ("start", "t0"):  # one x0 estimate: no sampler, steps or noise
            rows.loc[one_step, axis] = grid.NONE
    log.info("DDPM alone from step %d: %s", int(rows["t_start"].iloc[0]), chain)
    return rows


def summarise_earlystop_guided(
    tables: Sequence[str], out_summary, out_comparisons, out_ddpm, out_markdown
) -> None:
    """The guided cells' tables summarised (``earlystop.guided_summary.summarise``)."""
    rows = pd.concat([read_rows(path) for path in tables], ignore_index=True)
    summary, comparisons, ddpm = summarise(rows)
    log.info("%d guided cells, %d settings", len(tables), len(summary))
    save_csv(out_summary, summary)
    save_csv(out_comparisons, comparisons)
    save_csv(out_ddpm, ddpm)
    save_text(out_markdown, to_markdown(summary, ddpm))


def read_rows(path) -> pd.DataFrame:
    """A cell's table with its identity values as the strings they were written as."""
    return pd.read_csv(
        path,
        dtype=dict.fromkeys(grid.IDENTITY_COLUMNS, str),
        keep_default_na=False,
        na_values=[""],
    )
