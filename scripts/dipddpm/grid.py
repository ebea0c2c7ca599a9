"""The experimental design: which cells a configuration asks for, and where each one lives.

This module is the single owner of cell identity. A cell is one cached result (a DIP fit, a
trained DDPM, a sampling run, ...) named by the values of its *axes*. Each axis has one
identity column (also the Snakemake wildcard name) and one path key, so a cell's folder is
``<root>/<key>~<value>/...`` (Snakemake's Paramspace style) and every path maps back to the
identity it was made from (:func:`parse`). Every rule file, adapter and stage takes its paths
from here; no other file spells a ``key~`` path segment.

Values are canonical strings: integers without leading zeros, floats in ``%g`` form and
``none`` for an axis that does not apply to a cell, so ``seed~00`` or ``lam~.`` cannot name a
cell. Rows written by a cell carry every column of :data:`IDENTITY_COLUMNS` (``none`` where
an axis does not apply), so aggregation groups by declared columns and never reads a path.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NONE = "none"
RESULTS = "results"

INT = r"(?:0|[1-9][0-9]*)"
FLOAT = r"(?:0|[1-9][0-9]*)(?:\.[0-9]*[1-9])?(?:e[+-]?[0-9]+)?"
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


@dataclass(frozen=True)
class Axis:
    """One dimension of the design: identity column, path key and wildcard pattern."""

    column: str
    key: str
    pattern: str
    description: str


_AXES = [
    Axis("purpose", "purpose", "restoration|generation|training", "what a cell's numbers measure"),
    Axis("dataset", "data", NAME, "evaluated image set"),
    Axis("task", "task", NAME, "degradation"),
    Axis("obs_seed", "obs", INT, "seed of the observation noise / mask"),
    Axis("arch", "arch", NAME, "DIP architecture (of the fit or of the prior)"),
    Axis("iters", "iters", INT, "DIP iterations (snapshot) of the output or prior"),
    Axis("dip_seed", "dseed", INT, "seed of the DIP initialisation"),
    Axis("train_dataset", "tdata", NAME, "DDPM training set"),
    Axis("preset", "model", NAME, "UNet preset"),
    Axis("schedule", "sched", "linear|cosine", "noise schedule"),
    Axis("mode", "mode", "full|truncated", "training mode"),
    Axis("t_max", "tmax", INT, "largest trained diffusion step"),
    Axis("train_steps", "tsteps", INT, "training steps of the run"),
    Axis("train_seed", "tseed", INT, "seed of DDPM training"),
    Axis("ckpt", "ckpt", INT, "training step of the checkpoint used"),
    Axis("start", "start", "noise|obs|dip", "start of the reverse chain"),
    Axis("t0", "t0", INT + "|sigma", "start step (sigma: the step matching the noise level)"),
    Axis("sampler", "sampler", "ddpm|ddim", "reverse sampler"),
    Axis("eta", "eta", FLOAT, "DDIM eta"),
    Axis("steps", "steps", INT, "reverse steps"),
    Axis("lam", "lam", FLOAT, "DIP guidance weight"),
    Axis("sample_seed", "sseed", INT, "seed of the sampler noise"),
    Axis("es_schedule", "esched", "linear|cosine|geometric", "progressive-target schedule"),
    Axis("stages", "stages", INT, "progressive-target stages"),
    Axis("sigma_max", "smax", FLOAT, "largest progressive-target noise (0-255)"),
]
AXES: dict[str, Axis] = {axis.column: axis for axis in _AXES}
_BY_KEY: dict[str, Axis] = {axis.key: axis for axis in _AXES}

# Every row of every cell table carries these columns; `method` and `image` are the row's.
IDENTITY_COLUMNS: tuple[str, ...] = tuple(AXES) + ("method",)
# Averaged over within a table row; every other identity column separates rows.
SEED_COLUMNS: tuple[str, ...] = ("obs_seed", "dip_seed", "train_seed", "sample_seed")
TRAIN_AXES = ("train_dataset", "preset", "schedule", "mode", "t_max", "train_steps", "train_seed")
OBSERVATION_AXES = ("dataset", "task", "obs_seed")
PRIOR_AXES = ("arch", "iters", "dip_seed")


def canonical(value: Any) -> str:
    """The one spelling of a value in paths and identity columns."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        raise TypeError(f"booleans are not grid values: {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    if re.fullmatch(r"[0-9.e+-]+", text):
        return canonical(int(number) if number.is_integer() else number)
    return text


@dataclass(frozen=True)
class Kind:
    """A kind of cell: the folder under ``results/`` and the axes that name one cell."""

    name: str
    root: str
    axes: tuple[str, ...]

    @property
    def wildcards(self) -> str:
        """The cell folder relative to the root, with one wildcard per axis."""
        return "/".join(f"{AXES[a].key}~{{{a}}}" for a in self.axes)

    @property
    def template(self) -> str:
        return f"{RESULTS}/{self.root}/{self.wildcards}"

    def file(self, name: str) -> str:
        """Wildcard pattern of one output file of this kind (for rule outputs)."""
        return f"{self.template}/{name}"

    @property
    def log(self) -> str:
        return f"{RESULTS}/logs/{self.root}/{self.wildcards}.log"

    @property
    def benchmark(self) -> str:
        return f"{RESULTS}/benchmarks/{self.root}/{self.wildcards}.tsv"

    def path(self, cell: Mapping[str, Any], name: str | None = None) -> str:
        """The folder (or a file in it) of a concrete cell."""
        missing = [a for a in self.axes if a not in cell]
        if missing:
            raise KeyError(f"{self.name} cell lacks axes {missing}: {dict(cell)}")
        folder = f"{RESULTS}/{self.root}/" + "/".join(
            f"{AXES[a].key}~{canonical(cell[a])}" for a in self.axes
        )
        return f"{folder}/{name}" if name else folder

    def identity(self, cell: Mapping[str, Any]) -> dict[str, str]:
        return {a: canonical(cell[a]) for a in self.axes}


CLEAN = Kind("clean", "data/clean", ("dataset",))
OBSERVATION = Kind("observation", "data/observed", OBSERVATION_AXES)
DIP = Kind("dip", "dip", ("purpose", *OBSERVATION_AXES, "arch", "dip_seed"))
TRAIN = Kind("train", "ddpm/train", TRAIN_AXES)
SAMPLE = Kind(
    "sample",
    "ddpm/sample",
    (
        "purpose",
        *OBSERVATION_AXES,
        *TRAIN_AXES,
        "ckpt",
        *PRIOR_AXES,
        "start",
        "t0",
        "sampler",
        "eta",
        "steps",
        "lam",
        "sample_seed",
    ),
)
GENERATE = Kind(
    "generate", "ddpm/generate", (*TRAIN_AXES, "ckpt", "sampler", "eta", "steps", "sample_seed")
)
EARLYSTOP = Kind(
    "earlystop",
    "earlystop",
    (*OBSERVATION_AXES, "arch", "es_schedule", "stages", "sigma_max", "dip_seed"),
)
REFERENCE = Kind("reference", "metrics/reference", ("dataset",))
KINDS = {
    k.name: k for k in (CLEAN, OBSERVATION, DIP, TRAIN, SAMPLE, GENERATE, EARLYSTOP, REFERENCE)
}

# A sample set is the folder of a sampling or generation cell; FID reads either.
SAMPLE_SET_ROOT = f"{RESULTS}/ddpm"
SAMPLE_SET = f"{SAMPLE_SET_ROOT}/{{sampleset}}"
SAMPLE_SET_PATTERN = f"(?:{SAMPLE.root[5:]}|{GENERATE.root[5:]})/.+"
TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"
REPORT = f"{RESULTS}/report"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"


def wildcard_constraints() -> dict[str, str]:
    """Global Snakemake wildcard constraints: one per axis (its canonical values, or
    ``none`` where it does not apply), plus the sample-set folder."""
    return {column: f"{axis.pattern}|{NONE}" for column, axis in AXES.items()} | {
        "sampleset": SAMPLE_SET_PATTERN
    }


def parse(path: str | Path) -> dict[str, str]:
    """Identity of the cell a path belongs to (the inverse of :meth:`Kind.path`)."""
    found: dict[str, str] = {}
    for part in Path(path).parts:
        key, sep, value = part.partition("~")
        if sep and key in _BY_KEY:
            found[_BY_KEY[key].column] = value
    return found


def kind_of(path: str | Path) -> Kind:
    text = Path(path).as_posix()
    for kind in sorted(KINDS.values(), key=lambda k: -len(k.root)):
        if text.startswith(f"{RESULTS}/{kind.root}/"):
            return kind
    raise ValueError(f"{path} is not inside a cell folder")


def full_identity(cell: Mapping[str, Any], method: str | None = None) -> dict[str, str]:
    """Every identity column, ``none`` where the axis does not apply to this cell."""
    row = {column: NONE for column in IDENTITY_COLUMNS}
    row.update({k: canonical(v) for k, v in cell.items() if k in row})
    if method is not None:
        row["method"] = method
    return row


def stamp(frame, cell: Mapping[str, Any], method: str | None = None):
    """``frame`` with every identity column (row values, e.g. a DIP row's ``iters``, win
    over the cell's ``none``) and the code version that computed it."""
    from .version import code_version

    frame = frame.copy()
    for column, value in {**full_identity(cell, method), **code_version()}.items():
        if column not in frame.columns:
            frame[column] = value
        else:
            frame[column] = frame[column].map(canonical)
    return frame


# ----------------------------------------------------------------------- expansion


def _grid_blocks(config: Mapping) -> Iterable[tuple[str, str, str]]:
    for block in config["dip"]["grid"]:
        yield from itertools.product(block["datasets"], block["tasks"], block["archs"])


def observation_seeds(config: Mapping) -> list[int]:
    return list(config.get("observation_seeds", [0]))


def task_kind(config: Mapping, task: str) -> str:
    return config["tasks"][task]["kind"]


def generation(config: Mapping) -> Mapping | None:
    return config["ddpm"].get("generation") or None


def prior_iters(config: Mapping) -> list[int]:
    """The DIP durations whose outputs seed the DDPM (one value or a list in the config)."""
    value = config["ddpm"]["sample"]["prior_iters"]
    return sorted(value) if isinstance(value, list) else [value]


def dip_cells(config: Mapping) -> list[dict[str, str]]:
    """Every DIP fit: the restoration grid and the priors of the generation variant."""
    cells = []
    for (dataset, task, arch), obs, seed in itertools.product(
        _grid_blocks(config), observation_seeds(config), config["dip"]["seeds"]
    ):
        cells.append(
            _cell(
                DIP,
                purpose="restoration",
                dataset=dataset,
                task=task,
                obs_seed=obs,
                arch=arch,
                dip_seed=seed,
            )
        )
    gen = generation(config)
    if gen:
        arch = config["ddpm"]["sample"]["prior_arch"]
        for obs, seed in itertools.product(observation_seeds(config), config["dip"]["seeds"]):
            cells.append(
                _cell(
                    DIP,
                    purpose="generation",
                    dataset=gen["dataset"],
                    task=gen["task"],
                    obs_seed=obs,
                    arch=arch,
                    dip_seed=seed,
                )
            )
    return _unique(cells)


def observation_cells(config: Mapping) -> list[dict[str, str]]:
    """Every (dataset, task, observation seed) that a DIP, sampling or early-stopping cell
    reads."""
    cells = [_pick(c, OBSERVATION) for c in dip_cells(config) + earlystop_cells(config)]
    cells += [_pick(c, OBSERVATION) for c in sample_cells(config)]
    return _unique(cells)


def clean_cells(config: Mapping) -> list[dict[str, str]]:
    return [CLEAN.identity({"dataset": name}) for name in config["data"]["datasets"]]


def train_modes(config: Mapping) -> list[tuple[str, int]]:
    """(mode, t_max) of every training mode; a full model's t_max is T."""
    T = config["ddpm"]["T"]
    return [
        (m["mode"], m.get("t_max", T) if m["mode"] == "truncated" else T)
        for m in config["ddpm"]["modes"]
    ]


def train_cells(config: Mapping) -> list[dict[str, str]]:
    ddpm = config["ddpm"]
    return [
        _cell(
            TRAIN,
            train_dataset=ddpm["dataset"],
            preset=ddpm["model"],
            schedule=ddpm["schedule"],
            mode=mode,
            t_max=tmax,
            train_steps=ddpm["steps"],
            train_seed=seed,
        )
        for (mode, tmax), seed in itertools.product(train_modes(config), ddpm["seeds"])
    ]


# A training cell's checkpoints are files in its folder, one per `ckpt`.
CHECKPOINT = "step~{ckpt}.pt"
CHECKPOINT_RE = re.compile(r"^step~(" + INT + r")\.pt$")
CHECKPOINT_GLOB = "step~*.pt"


def checkpoint_name(step: int) -> str:
    return CHECKPOINT.format(ckpt=canonical(int(step)))


def checkpoint_path(cell: Mapping[str, Any]) -> str:
    """The checkpoint file a sampling or generation cell reads."""
    return TRAIN.path(cell, checkpoint_name(int(cell["ckpt"])))


def checkpoint_file() -> str:
    """Wildcard pattern of a training cell's checkpoints (one per ``ckpt``)."""
    return TRAIN.file(CHECKPOINT)


def _sampler(config: Mapping) -> dict[str, Any]:
    sample = config["ddpm"]["sample"]
    return {"sampler": sample["sampler"], "eta": sample["eta"]}


def _restoration_starts(config: Mapping, task: str, t_max: int) -> list[dict[str, Any]]:
    """Start points a model can serve: noise at T (full models only), the observation at
    the sigma-matched step (denoising), and the DIP prior at each t0 <= t_max."""
    sample, T = config["ddpm"]["sample"], config["ddpm"]["T"]
    starts = []
    if t_max == T:
        starts.append({"start": "noise", "t0": T, "lam": 0})
    if task_kind(config, task) == "denoise":
        starts.append({"start": "obs", "t0": "sigma", "lam": 0})
    for t0 in sample["t0"]:
        if t0 <= t_max:
            starts += [
                {"start": "dip", "t0": t0, "lam": lam} for lam in sorted({0.0, *sample["lam"]})
            ]
    return starts


def _prior_axes(config: Mapping, start: str, iters: list[int]) -> list[dict[str, Any]]:
    if start != "dip":
        return [{"arch": None, "iters": None, "dip_seed": None}]
    arch = config["ddpm"]["sample"]["prior_arch"]
    return [
        {"arch": arch, "iters": it, "dip_seed": seed}
        for it, seed in itertools.product(iters, config["dip"]["seeds"])
    ]


def sample_cells(config: Mapping) -> list[dict[str, str]]:
    """The Example 1 grid, the training-convergence sub-grid and the generation variant."""
    return _unique(
        _restoration_cells(config) + _convergence_cells(config) + _generation_cells(config)
    )


def _model_axes(config: Mapping, ckpt: int | None = None) -> list[dict[str, Any]]:
    final = config["ddpm"]["steps"] if ckpt is None else ckpt
    return [{**c, "ckpt": final} for c in train_cells(config)]


def _observations(config: Mapping, dataset: str, task: str) -> list[dict[str, Any]]:
    return [
        {"dataset": dataset, "task": task, "obs_seed": obs} for obs in observation_seeds(config)
    ]


def _restoration_cells(config: Mapping) -> list[dict[str, str]]:
    sample = config["ddpm"]["sample"]
    cells = []
    observations = _observations(config, sample["dataset"], sample["task"])
    for obs, model in itertools.product(observations, _model_axes(config)):
        for start in _restoration_starts(config, sample["task"], int(model["t_max"])):
            for prior, steps, seed in itertools.product(
                _prior_axes(config, start["start"], prior_iters(config)),
                sample["steps"],
                sample["seeds"],
            ):
                cells.append(
                    _cell(
                        SAMPLE,
                        purpose="restoration",
                        **obs,
                        **model,
                        **prior,
                        **start,
                        **_sampler(config),
                        steps=steps,
                        sample_seed=seed,
                    )
                )
    return cells


def convergence_t0(config: Mapping) -> int:
    """The start step of the training-convergence sub-grid: the middle configured t0."""
    t0 = sorted(config["ddpm"]["sample"]["t0"])
    return t0[len(t0) // 2]


def _convergence_cells(config: Mapping) -> list[dict[str, str]]:
    """Every checkpoint from the DIP prior at the middle t0 with the most steps: how quality
    grows with training, first observation, prior and sample seed."""
    sample = config["ddpm"]["sample"]
    t0 = convergence_t0(config)
    prior = {
        "arch": sample["prior_arch"],
        "iters": max(prior_iters(config)),
        "dip_seed": config["dip"]["seeds"][0],
    }
    cells = []
    for ckpt in config["ddpm"]["checkpoints"]:
        for model in _model_axes(config, ckpt):
            if t0 <= int(model["t_max"]):
                cells.append(
                    _cell(
                        SAMPLE,
                        purpose="restoration",
                        dataset=sample["dataset"],
                        task=sample["task"],
                        obs_seed=observation_seeds(config)[0],
                        **model,
                        **prior,
                        start="dip",
                        t0=t0,
                        lam=0,
                        **_sampler(config),
                        steps=max(sample["steps"]),
                        sample_seed=sample["seeds"][0],
                    )
                )
    return cells


def _generation_cells(config: Mapping) -> list[dict[str, str]]:
    """Example 1, generation variant: DIP fits of training images diffused to a large t0."""
    gen = generation(config)
    if not gen:
        return []
    sample = config["ddpm"]["sample"]
    cells = []
    for obs, model in itertools.product(
        _observations(config, gen["dataset"], gen["task"]), _model_axes(config)
    ):
        for t0, prior, seed in itertools.product(
            gen["t0"], _prior_axes(config, "dip", [max(prior_iters(config))]), sample["seeds"]
        ):
            if t0 <= int(model["t_max"]):
                cells.append(
                    _cell(
                        SAMPLE,
                        purpose="generation",
                        **obs,
                        **model,
                        **prior,
                        start="dip",
                        t0=t0,
                        lam=0,
                        **_sampler(config),
                        steps=gen["steps"],
                        sample_seed=seed,
                    )
                )
    return cells


def generate_cells(config: Mapping) -> list[dict[str, str]]:
    """Unconditional samples from noise at T, for models trained on the whole chain."""
    sample = config["ddpm"]["sample"]
    if not sample["generate"]:
        return []
    T = config["ddpm"]["T"]
    return [
        _cell(GENERATE, **model, **_sampler(config), steps=steps, sample_seed=seed)
        for model, steps, seed in itertools.product(
            _model_axes(config), sample["steps"], sample["seeds"]
        )
        if int(model["t_max"]) == T
    ]


def earlystop_cells(config: Mapping) -> list[dict[str, str]]:
    es = config.get("earlystop")
    if not es or not es.get("grid"):
        return []
    cells = []
    for block in es["grid"]:
        for task, arch, schedule, stages, smax, obs, seed in itertools.product(
            block["tasks"],
            block["archs"],
            block["schedules"],
            block["stages"],
            block["sigma_max"],
            observation_seeds(config),
            config["dip"]["seeds"],
        ):
            cells.append(
                _cell(
                    EARLYSTOP,
                    dataset=es["dataset"],
                    task=task,
                    obs_seed=obs,
                    arch=arch,
                    es_schedule=schedule,
                    stages=stages,
                    sigma_max=smax,
                    dip_seed=seed,
                )
            )
    return _unique(cells)


def cells(config: Mapping) -> dict[str, list[dict[str, str]]]:
    """Every cell of every kind the configuration asks for."""
    return {
        "clean": clean_cells(config),
        "observation": observation_cells(config),
        "dip": dip_cells(config),
        "train": train_cells(config),
        "sample": sample_cells(config),
        "generate": generate_cells(config),
        "earlystop": earlystop_cells(config),
    }


# --------------------------------------------------------------------- upstream cells


def observation_of(cell: Mapping[str, Any]) -> dict[str, str]:
    return _pick(cell, OBSERVATION)


def prior_of(cell: Mapping[str, Any]) -> dict[str, str] | None:
    """The DIP cell whose output seeds a ``dip`` start; None for other starts."""
    if cell["start"] != "dip":
        return None
    return _pick(cell, DIP)


def _pick(cell: Mapping[str, Any], kind: Kind) -> dict[str, str]:
    return kind.identity(cell)


def _cell(kind: Kind, **values: Any) -> dict[str, str]:
    extra = set(values) - set(kind.axes)
    if extra:
        raise KeyError(f"{kind.name} cells have no axes {sorted(extra)}")
    return kind.identity(values)


def _unique(cells: list[dict[str, str]]) -> list[dict[str, str]]:
    seen, out = set(), []
    for cell in cells:
        key = tuple(cell.items())
        if key not in seen:
            seen.add(key)
            out.append(cell)
    return out


def qualitative_cells(config: Mapping) -> dict[str, Any]:
    """The cells of the fixed qualitative comparison: first seeds, most reverse steps, the
    full model for DDPM alone and the truncated one (if any) for DIP+DDPM."""
    restoration = _restoration_cells(config)
    first = {
        "obs_seed": canonical(observation_seeds(config)[0]),
        "sample_seed": canonical(config["ddpm"]["sample"]["seeds"][0]),
        "steps": canonical(max(config["ddpm"]["sample"]["steps"])),
        "lam": "0",
    }
    firsts = [c for c in restoration if all(c[k] == v for k, v in first.items())]
    T = canonical(config["ddpm"]["T"])
    kind = task_kind(config, config["ddpm"]["sample"]["task"])
    ddpm_start = "obs" if kind == "denoise" else "noise"
    ddpm = next((c for c in firsts if c["start"] == ddpm_start and c["t_max"] == T), None)
    t0 = canonical(convergence_t0(config))
    combos = [
        c
        for c in firsts
        if c["start"] == "dip"
        and c["t0"] == t0
        and c["iters"] == canonical(max(prior_iters(config)))
        and c["dip_seed"] == canonical(config["dip"]["seeds"][0])
    ]
    combo = next((c for c in combos if c["mode"] == "truncated"), combos[0])
    samples = {"DDPM": ddpm} if ddpm else {}
    return {
        "observation": observation_of(combo),
        "prior": prior_of(combo),
        "prior_iters": combo["iters"],
        "samples": samples | {f"DIP+DDPM (t0={t0})": combo},
    }
