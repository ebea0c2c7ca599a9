"""Cell identity: the axes of the design, the kinds of cell, their one path template each,
the way back from a path to its identity, and the identity columns every row carries.

Values are canonical strings: integers without leading zeros, floats in ``%g`` form and
``none`` for an axis that does not apply to a cell, so ``seed~00`` or ``lam~.`` cannot name a
cell.
"""

from __future__ import annotations

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
    Axis(
        "purpose",
        "purpose",
        "restoration|generation|training",
        "what a cell's numbers measure (a DIP cell of purpose training: the priors a "
        "prior-trained DDPM learns from)",
    ),
    Axis("dataset", "data", NAME, "evaluated image set"),
    Axis("task", "task", NAME, "degradation"),
    Axis("obs_seed", "obs", INT, "seed of the observation noise / mask"),
    Axis("arch", "arch", NAME, "DIP architecture (of the fit or of the prior)"),
    Axis("iters", "iters", INT, "DIP iterations (snapshot) of the output or prior"),
    Axis("dip_seed", "dseed", INT, "seed of the DIP initialisation"),
    Axis("train_dataset", "tdata", NAME, "DDPM training set"),
    Axis("preset", "model", NAME, "UNet preset"),
    Axis("schedule", "sched", "linear|cosine", "noise schedule"),
    Axis(
        "mode",
        "mode",
        "full|truncated|prior-[A-Za-z0-9_.-]+",
        "training mode (prior-*: a named prior-trained mode of the config)",
    ),
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
    Axis("window", "gwin", FLOAT, "share of the chain, at its end, that DIP guidance acts on"),
    Axis("k", "k", INT, "sampling chains averaged per image (posterior-mean estimate)"),
    Axis("sample_seed", "sseed", INT, "seed of the sampler noise"),
    Axis("es_schedule", "esched", "linear|cosine|geometric", "progressive-target schedule"),
    Axis("stages", "stages", INT, "progressive-target stages"),
    Axis("sigma_max", "smax", FLOAT, "largest progressive-target noise (0-255)"),
    Axis(
        "stage_patience",
        "spat",
        INT,
        "iterations without improvement of its error estimate that end a progressive noisy "
        "stage (0: fixed-length stages)",
    ),
    Axis(
        "guide_form",
        "gform",
        "red|mix|perc",
        "how the DDPM guides a DIP fit (red: regulariser; mix: target mixing; perc: "
        "perceptual loss to the DDPM-denoised observation; none: plain DIP)",
    ),
    Axis("guide_lam", "glam", FLOAT, "weight of the DDPM's guidance of a DIP fit (0: plain DIP)"),
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
        "window",
        "k",
        "sample_seed",
    ),
)
GENERATE = Kind(
    "generate", "ddpm/generate", (*TRAIN_AXES, "ckpt", "sampler", "eta", "steps", "sample_seed")
)
EARLYSTOP = Kind(
    "earlystop",
    "earlystop",
    (
        *OBSERVATION_AXES,
        "arch",
        "es_schedule",
        "stages",
        "sigma_max",
        "stage_patience",
        "dip_seed",
    ),
)
# The plain DIP fit an early-stopping cell's post-hoc rules are scored on. It depends on
# none of the training variant's settings (schedule, stages, sigma_max, stage patience),
# so it is a cell of its own that every early-stopping cell differing only in those reads
# (fitted once).
EARLYSTOP_PLAIN = Kind(
    "earlystop_plain", "earlystop/plain", (*OBSERVATION_AXES, "arch", "dip_seed")
)
# DIP guided by a trained DDPM (issue 18): lam 0 is plain DIP, form `none`, the reference the
# guided fits are paired with; it also holds the DDPM-alone rows of its model.
GUIDED = Kind(
    "guided",
    "earlystop/guided",
    (*OBSERVATION_AXES, "arch", "guide_form", "guide_lam", *TRAIN_AXES, "ckpt", "dip_seed"),
)
REFERENCE = Kind("reference", "metrics/reference", ("dataset",))
KINDS = {
    k.name: k
    for k in (
        CLEAN,
        OBSERVATION,
        DIP,
        TRAIN,
        SAMPLE,
        GENERATE,
        EARLYSTOP,
        EARLYSTOP_PLAIN,
        GUIDED,
        REFERENCE,
    )
}

TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"
REPORT = f"{RESULTS}/report"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
# The timing bench every method's calibrated cost is read from: one file per DIP
# architecture and per UNet preset, so editing one re-times only it.
CALIBRATION_DIP = f"{RESULTS}/calibration/dip-{{arch}}.json"
CALIBRATION_UNET = f"{RESULTS}/calibration/unet-{{preset}}.json"


def calibration_files(archs: Iterable[str] = (), presets: Iterable[str] = ()) -> list[str]:
    """The calibration files of these architectures and presets."""
    return [CALIBRATION_DIP.format(arch=a) for a in archs] + [
        CALIBRATION_UNET.format(preset=p) for p in presets
    ]


def wildcard_constraints() -> dict[str, str]:
    """Global Snakemake wildcard constraints: one per axis (its canonical values, or
    ``none`` where it does not apply)."""
    return {column: f"{axis.pattern}|{NONE}" for column, axis in AXES.items()}


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


def method_name(start: str, lam: float) -> str:
    """The ``method`` column of a sampling cell: how its chain starts and whether DIP guides it."""
    if start == "dip":
        return "dip-guided" if lam > 0 else "dip+ddpm"
    return f"ddpm-{start}"


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
    from ..version import code_version

    frame = frame.copy()
    for column, value in {**full_identity(cell, method), **code_version()}.items():
        if column not in frame.columns:
            frame[column] = value
        else:
            frame[column] = frame[column].map(canonical)
    return frame


def unstamp(frame):
    """``frame`` without the columns :func:`stamp` adds (every identity column and the code
    version): the rows as their cell computed them, for a cell that reuses another's rows
    and stamps them with its own identity."""
    from ..version import code_version

    stamped = {*IDENTITY_COLUMNS, *code_version()}
    return frame[[c for c in frame.columns if c not in stamped]]


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


def stored_checkpoint_path(cell: Mapping[str, Any], store: str) -> str:
    """A checkpoint's weights-only copy in a model store (a committed folder such as
    ``results/study/models``): the training cell's path with ``store`` for ``results``."""
    return in_store(checkpoint_path(cell), store)


def stored_checkpoint_file(store: str) -> str:
    """Wildcard pattern of the weights-only copies in a model store."""
    return in_store(checkpoint_file(), store)


def in_store(path: str, store: str) -> str:
    """Where a cell's file is kept in a store (a committed folder standing in for
    ``results/``, so a later session reads it without recomputing the cell)."""
    return f"{store.rstrip('/')}/{path.removeprefix(f'{RESULTS}/')}"


# --------------------------------------------------------------------- upstream cells


def observation_of(cell: Mapping[str, Any]) -> dict[str, str]:
    return _pick(cell, OBSERVATION)


def prior_of(cell: Mapping[str, Any]) -> dict[str, str] | None:
    """The DIP cell whose output seeds a ``dip`` start; None for other starts."""
    if cell["start"] != "dip":
        return None
    return _pick(cell, DIP)


def plain_fit_of(cell: Mapping[str, Any]) -> dict[str, str]:
    """The plain-fit cell (EARLYSTOP_PLAIN) an early-stopping cell's post-hoc rules read."""
    return _pick(cell, EARLYSTOP_PLAIN)


def _pick(cell: Mapping[str, Any], kind: Kind) -> dict[str, str]:
    return kind.identity(cell)


# ------------------------------------------------------------------ generation settings

# A generation setting is a generation cell without its sample seed: it is scored once,
# on every seed's samples together, so the spread across seeds (diversity) is measured.
# Its folder is the cell folder with the seed spelled `all`: no seed is spelled so (seeds
# are integers), so a setting never names a cell, and its path parses back to its kind.
POOLED_AXIS = "sample_seed"
POOLED_SEEDS = "all"
GENERATION_SCORES = "generation_metrics.csv"


def _pooling(kind: Kind) -> Kind:
    if POOLED_AXIS not in kind.axes:
        raise ValueError(f"{kind.name} cells have no {POOLED_AXIS} axis to pool over")
    return kind


def setting_of(kind: Kind, cell: Mapping[str, Any]) -> dict[str, str]:
    """The setting a cell of ``kind`` belongs to: its identity less the sample seed."""
    return {a: canonical(cell[a]) for a in _pooling(kind).axes if a != POOLED_AXIS}


def setting_path(kind: Kind, setting: Mapping[str, Any], name: str | None = None) -> str:
    """The folder (or a file in it) of a concrete setting of ``kind``."""
    return _pooling(kind).path({**setting, POOLED_AXIS: POOLED_SEEDS}, name)


def _setting_wildcards(kind: Kind) -> str:
    """A setting's folder relative to the root: one wildcard per axis, the seed ``all``."""
    values = {a: f"{{{a}}}" for a in _pooling(kind).axes} | {POOLED_AXIS: POOLED_SEEDS}
    return "/".join(f"{AXES[a].key}~{values[a]}" for a in kind.axes)


def setting_file(kind: Kind, name: str) -> str:
    """Wildcard pattern of one file of a setting (for rule outputs): every axis of the
    kind a wildcard but the seed, which is ``all``."""
    return f"{RESULTS}/{kind.root}/{_setting_wildcards(kind)}/{name}"


def setting_log(kind: Kind) -> str:
    return f"{LOGS}/{kind.root}/{_setting_wildcards(kind)}.log"


def setting_benchmark(kind: Kind) -> str:
    return f"{BENCHMARKS}/{kind.root}/{_setting_wildcards(kind)}.tsv"


def setting_identity(setting: Mapping[str, Any], method: str | None = None) -> dict[str, str]:
    """Every identity column of a setting's row: the seed column reads ``all`` (the row
    pools the seeds), the columns that do not apply ``none``."""
    return full_identity({**setting, POOLED_AXIS: POOLED_SEEDS}, method)
