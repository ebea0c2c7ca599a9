"""Example 1's qualitative figure: a few evaluation images of every task, restored by each
method, with the PSNR of every image printed on it.

Per task of the study (``ddpm.sample.task``), one block of rows (one row per image) and
the columns: the observation, DIP at each stored duration (``dip.snapshots``), DIP+DDPM
from the prior the study samples from (its first architecture, longest ``prior_iters``)
at a few t0, DDPM alone, and the clean image. Every DDPM column is a sampling cell of the
study's grid (:func:`dipddpm.grid.sample_cells`: first observation, DIP and sample seeds,
the sample-level sampler, eta and most steps, no guidance, one chain), sampled on the
model with the smallest t_max that serves it (the truncated model where it reaches, the
full one above), so the figure shows what the study's cells compute:

* denoising: t0 = 0 (the prior itself), the sampled t0 nearest the sigma-matched step and
  the one nearest twice it; DDPM alone starts from the observation at the matched step;
* inpainting and super-resolution (no matched step): t0 = 0 and :data:`SPREAD_T0` - 1
  more, evenly spread by rank over the t0 values the study samples; DDPM alone starts
  from noise at T, held to the observation by the task's consistency step.

The images shown are :func:`evaluation_images`: never a tuning image (every
``example1.tuning_every``-th), which chose the study's settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dipddpm import grid
from dipddpm.grid.design import (
    observation_seeds,
    prior_archs,
    prior_iters,
    sample_tasks,
    sigma_matched_step,
    task_kind,
)
from dipddpm.metrics import psnr

# Images shown per task and DIP+DDPM columns of a task without a sigma-matched step.
COUNT = 4
SPREAD_T0 = 5


def evaluation_images(n_images: int, tuning_every: int, count: int = COUNT) -> list[int]:
    """``count`` image indices spread evenly (by rank) over the evaluation images, first
    and last included: every index not divisible by ``tuning_every`` (0: no tuning images),
    as :func:`dipddpm.example1.split_images` splits them."""
    if count < 1:
        raise ValueError(f"evaluation_images: count must be >= 1; got {count}")
    evaluation = [i for i in range(n_images) if not (tuning_every and i % tuning_every == 0)]
    if len(evaluation) <= count:
        return evaluation
    if count == 1:
        return evaluation[:1]
    step = (len(evaluation) - 1) / (count - 1)
    return [evaluation[int(np.floor(k * step + 0.5))] for k in range(count)]


def spread(values: Sequence[int], count: int) -> list[int]:
    """``count`` of the sorted ``values`` evenly spread by rank, first and last included."""
    values = sorted(set(values))
    if len(values) <= count:
        return values
    step = (len(values) - 1) / (count - 1)
    return [values[int(np.floor(k * step + 0.5))] for k in range(count)]


def _nearest(values: Sequence[int], target: float) -> int:
    """The value nearest ``target`` (the larger one on a tie)."""
    return min(values, key=lambda v: (abs(v - target), -v))


def qualitative_plan(config: Mapping) -> list[dict[str, Any]]:
    """Per task, what the figure shows: ``task``, ``kind``, the ``observation`` cell, the
    ``prior`` (DIP cell) and its ``dip_iters`` columns, and ``samples``: one entry per DDPM
    column, ``title`` and ``cell`` (a sampling cell of the study's grid), in order."""
    sample = config["ddpm"]["sample"]
    steps = sample["steps"] if isinstance(sample["steps"], list) else [sample["steps"]]
    first = {
        "purpose": "restoration",
        "dataset": sample["dataset"],
        "obs_seed": observation_seeds(config)[0],
        "ckpt": config["ddpm"]["steps"],
        "sampler": sample["sampler"],
        "eta": sample["eta"],
        "lam": 0,
        "k": 1,
        "sample_seed": sample["seeds"][0],
    }
    prior = {
        "arch": prior_archs(config)[0],
        "iters": max(prior_iters(config)),
        "dip_seed": config["dip"]["seeds"][0],
    }
    wanted = {key: grid.canonical(value) for key, value in first.items()}
    wanted_prior = {key: grid.canonical(value) for key, value in prior.items()}
    most_steps = grid.canonical(max(steps))
    cells = [c for c in grid.sample_cells(config) if all(c[k] == v for k, v in wanted.items())]
    plan = []
    for task in sample_tasks(config):
        in_task = [c for c in cells if c["task"] == task]
        dip = [
            c
            for c in in_task
            if c["start"] == "dip"
            and all(c[k] == v for k, v in wanted_prior.items())
            # the prior itself (t0 = 0) runs no chain and is one cell, whatever its steps
            and (c["steps"] == most_steps or c["t0"] == "0")
        ]
        if not dip:
            raise ValueError(
                f"qualitative figure: the study samples no DIP+DDPM cell of {task} from the "
                f"{prior['arch']} prior at {prior['iters']} iterations with {wanted}"
            )
        kind = task_kind(config, task)
        sampled = sorted({int(c["t0"]) for c in dip})
        samples = []
        for t0, note in _t0_notes(config, task, kind, sampled).items():
            cell = _lowest(dip, t0)
            samples.append({"title": _dip_title(t0, note, cell), "cell": cell})
        alone = _ddpm_alone(config, task, kind, in_task, most_steps)
        if alone is not None:
            samples.append(alone)
        plan.append(
            {
                "task": task,
                "kind": kind,
                "observation": grid.observation_of(dip[0]),
                "prior": grid.prior_of(dip[0]),
                "dip_iters": sorted(int(i) for i in config["dip"]["snapshots"]),
                "samples": samples,
            }
        )
    return plan


def _t0_notes(config: Mapping, task: str, kind: str, sampled: list[int]) -> dict[int, str]:
    """The t0 columns of a task (in order), each with a note for its title."""
    if kind != "denoise":
        return {t0: "" if t0 else "the prior" for t0 in spread(sampled, SPREAD_T0)}
    matched = sigma_matched_step(config, task)
    notes = {0: "the prior"} if 0 in sampled else {}
    notes.setdefault(_nearest(sampled, matched), "sigma-matched")
    notes.setdefault(_nearest(sampled, 2 * matched), "\u2248 2x matched")
    return notes


def _lowest(cells: list[dict[str, str]], t0: int) -> dict[str, str]:
    """The cell at ``t0`` on the model with the smallest t_max (the truncated model where
    it reaches: the grid only holds cells a model can serve)."""
    return min((c for c in cells if int(c["t0"]) == t0), key=lambda c: int(c["t_max"]))


def _model_note(cell: Mapping[str, str]) -> str:
    return "full model" if cell["mode"] == "full" else f"{cell['mode']} t<={cell['t_max']}"


def _dip_title(t0: int, note: str, cell: Mapping[str, str]) -> str:
    """The prior itself (t0 = 0) runs no chain, so no model is named."""
    model = _model_note(cell) if t0 else ""
    return "\n".join(part for part in ("DIP+DDPM", f"t0={t0}", note, model) if part)


def _ddpm_alone(
    config: Mapping, task: str, kind: str, cells: list[dict[str, str]], most_steps: str
) -> dict[str, Any] | None:
    """DDPM alone's column: from the observation at the sigma-matched step (denoising) or
    from noise at T with the task's consistency step, on the model with the smallest t_max
    that serves it; None when the study samples none."""
    start = "obs" if kind == "denoise" else "noise"
    found = [c for c in cells if c["start"] == start and c["steps"] == most_steps]
    if not found:
        return None
    cell = min(found, key=lambda c: int(c["t_max"]))
    if start == "obs":
        head = f"DDPM alone\nfrom y at t={sigma_matched_step(config, task)}"
    else:
        head = f"DDPM alone from\nnoise at t={config['ddpm']['T']}\n+ consistency"
    return {"title": f"{head}\n{_model_note(cell)}", "cell": cell}


def plan_cells(plan: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Every sampling cell of a plan (each once, in plan order)."""
    cells = [column["cell"] for block in plan for column in block["samples"]]
    return [dict(c) for c in dict.fromkeys(tuple(c.items()) for c in cells)]


def plan_observations(plan: Sequence[Mapping[str, Any]], name: str) -> list[str]:
    """A file (``degraded.npz``, ``params.json``) of every observation a plan restores."""
    return [grid.OBSERVATION.path(block["observation"], name) for block in plan]


def find_input(paths: Sequence[str], identity: Mapping[str, str], what: str) -> str:
    """The one file among ``paths`` (a run's cell or its copy in a store) whose cell path
    carries every value of ``identity``."""
    found = [p for p in paths if all(grid.parse(p).get(k) == v for k, v in identity.items())]
    if len(found) != 1:
        raise ValueError(f"{len(found)} {what} files among the inputs match {dict(identity)}")
    return found[0]


def find_checkpoint(paths: Sequence[str], cell: Mapping[str, str]) -> str:
    """The weights a sampling cell reads, among ``paths`` (training cells or a store)."""
    name = grid.checkpoint_name(int(cell["ckpt"]))
    candidates = [p for p in paths if Path(p).name == name]
    return find_input(candidates, grid.TRAIN.identity(cell), "checkpoint")


def observation_title(kind: str, shape: Sequence[int]) -> str:
    """The observation column's title; its PSNR is that of A+y on the clean grid."""
    if kind == "inpaint":
        return "observation y\n(unknown pixels\nshown black)"
    if kind == "sr":
        return f"observation y\n({shape[-2]}x{shape[-1]}; PSNR of\nA+y, upsampled)"
    return "observation y"


# --------------------------------------------------------------------------- panels


@dataclass(frozen=True)
class Column:
    """One column before the images are chosen: ``images`` (N, C, h, w) in [0, 1] as
    shown; PSNR against the clean image is computed on ``scored`` (N, C, H, W; default
    ``images``), none for the ``reference`` column (the clean image itself)."""

    title: str
    images: np.ndarray
    scored: np.ndarray | None = None
    reference: bool = False


@dataclass(frozen=True)
class Panel:
    """A column of the figure: the chosen images and each one's PSNR (None: reference)."""

    title: str
    images: np.ndarray
    psnr: list[float] | None


@dataclass(frozen=True)
class Block:
    """One task's rows: a heading, a label per image and the panels, left to right."""

    heading: str
    row_labels: list[str]
    panels: list[Panel]


def build_panels(
    columns: Sequence[Column], clean: np.ndarray, indices: Sequence[int]
) -> list[Panel]:
    """The chosen images of every column, in the given order, with each one's PSNR (dB)
    against ``clean`` (N, C, H, W)."""
    clean = np.asarray(clean, dtype=np.float32)
    panels = []
    for column in columns:
        images = np.asarray(column.images)
        if len(images) != len(clean):
            raise ValueError(
                f"column {column.title!r} holds {len(images)} images; the clean set {len(clean)}"
            )
        scores = None
        if not column.reference:
            scored = np.asarray(column.scored if column.scored is not None else images)
            if scored.shape != clean.shape:
                raise ValueError(
                    f"column {column.title!r} is scored on shape {scored.shape}; the clean "
                    f"images are {clean.shape}"
                )
            scores = [psnr(np.clip(scored[i], 0, 1), clean[i]) for i in indices]
        panels.append(Panel(column.title, images[list(indices)], scores))
    return panels


def image_label(index: int, name: str | None = None) -> str:
    """A row's label: the image index and, for a CIFAR-10 path, its class folder."""
    parts = Path(str(name)).parts if name else ()
    return f"image {index}" + (f"\n{parts[-2]}" if len(parts) >= 2 else "")


def _shown(image: np.ndarray) -> np.ndarray:
    image = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    return image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))


def qualitative_figure(
    blocks: Sequence[Block], stem: str | os.PathLike, cell_inches: float = 0.9
) -> list[Path]:
    """One block of rows per task, its column titles above its first row and each image's
    PSNR printed on it; written as ``<stem>.png`` and ``.pdf``."""
    # Imported here: the workflow reads the plan at parse time and needs no matplotlib.
    import matplotlib.pyplot as plt

    from dipddpm.figures import no_data_figure, save_figure

    blocks = [b for b in blocks if b.panels and b.row_labels]
    if not blocks:
        return no_data_figure(stem, "the Example 1 qualitative comparison")
    n_cols = max(len(b.panels) for b in blocks)
    heights = [len(b.row_labels) + 0.6 for b in blocks]
    fig = plt.figure(figsize=(cell_inches * (n_cols + 0.6), cell_inches * sum(heights)))
    subfigs = fig.subfigures(len(blocks), 1, height_ratios=heights, squeeze=False)[:, 0]
    for subfig, block in zip(subfigs, blocks, strict=True):
        axes = subfig.subplots(len(block.row_labels), n_cols, squeeze=False)
        subfig.subplots_adjust(left=0.06, right=0.995, top=0.84, bottom=0.01, wspace=0.04)
        subfig.suptitle(block.heading, x=0.01, ha="left", fontsize=9, fontweight="bold")
        for col in range(n_cols):
            for row, label in enumerate(block.row_labels):
                ax = axes[row][col]
                ax.set_xticks([])
                ax.set_yticks([])
                if col >= len(block.panels):
                    ax.axis("off")
                    continue
                panel = block.panels[col]
                ax.imshow(_shown(panel.images[row]), interpolation="nearest")
                if row == 0:
                    ax.set_title(panel.title, fontsize=6, linespacing=1.1)
                if col == 0:
                    ax.set_ylabel(label, fontsize=6)
                text = "clean" if panel.psnr is None else f"{panel.psnr[row]:.2f}"
                ax.text(
                    0.5,
                    0.02,
                    text,
                    transform=ax.transAxes,
                    ha="center",
                    va="bottom",
                    color="white",
                    fontsize=6,
                    bbox={"facecolor": "black", "alpha": 0.6, "pad": 0.5, "linewidth": 0},
                )
    return save_figure(fig, stem)
