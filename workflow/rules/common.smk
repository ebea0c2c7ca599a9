# Configuration loading and validation, path helpers, input functions and global
# wildcard constraints shared by every rule file.
import itertools
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))
from dipddpm.config import ConfigError, load_schema, validate_config  # noqa: E402

SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"

# Our own check first: it names every bad key and its allowed values, and checks the
# cross-references a schema cannot. Snakemake's validate then fills in the defaults.
try:
    validate_config(config, load_schema(SCHEMA))
except ConfigError as err:
    raise WorkflowError(str(err)) from None
validate(config, str(SCHEMA))


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    task=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    arch=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    seed=r"\d+",
    mode=r"full|truncated",
    tmax=r"\d+",
    ckpt=r"\d+",
    steps=r"\d+",
    sched=r"linear|cosine",
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    start=r"noise|obs|dip",
    t0=r"\d+|sigma",
    lam=r"[0-9.]+",
    sampleset=r"(sample|generate)/.+",
    stages=r"\d+",
    schedule=r"linear|cosine|geometric",
    smax=r"[0-9.]+",


DATA = "results/data"
LOGS = "results/logs"
BENCH = "results/benchmarks"
DIP = "results/dip"
DDPM = "results/ddpm"
METRICS = "results/metrics"
EARLYSTOP_ID = "{dataset}/task~{task}/arch~{arch}/schedule~{schedule}/stages~{stages}/smax~{smax}/seed~{seed}"
EARLYSTOP_CELL = f"results/earlystop/{EARLYSTOP_ID}"
TABLES = "results/tables"
FIGURES = "results/figures"
REPORT = "results/report"
TABLE_NAMES = [
    "method_comparison",
    "steps_to_quality",
    "fid",
    "training_convergence",
    "dip_by_architecture",
    "earlystop",
]
FIGURE_NAMES = [
    "quality_vs_steps",
    "dip_trajectories",
    "dip_t0_heatmap",
    "fid_vs_steps",
    "training_curves",
    "qualitative",
    "earlystop_curves",
    "gap_distribution",
]
# Paramspace-style cell paths: one key~value directory per parameter.
TRAIN_ID = "data~{dataset}/mode~{mode}/tmax~{tmax}/sched~{sched}/model~{model}/steps~{steps}/seed~{seed}"
TRAIN_CELL = f"{DDPM}/train/{TRAIN_ID}"
SAMPLE_ID = "/".join(
    [
        "data~{dataset}/task~{task}/train~{mode}-t{tmax}/ckpt~{ckpt}",
        "start~{start}/t0~{t0}/steps~{steps}/lam~{lam}/seed~{seed}",
    ]
)
SAMPLE_CELL = f"{DDPM}/sample/{SAMPLE_ID}"
GENERATE_CELL = f"{DDPM}/generate/train~{{mode}}-t{{tmax}}/ckpt~{{ckpt}}/steps~{{steps}}/seed~{{seed}}"


def dataset_spec(name):
    return config["data"]["datasets"][name]


def task_spec(name):
    return config["tasks"][name]


def clean_path(dataset):
    return f"{DATA}/{dataset}/clean.npz"


def degraded_path(dataset, task, seed):
    return f"{DATA}/{dataset}/task~{task}/seed~{seed}/degraded.npz"


def data_targets():
    """Every dataset and every (dataset, task, seed) observation the grids use."""
    targets = [clean_path(name) for name in config["data"]["datasets"]]
    for dataset, task, seed in observation_cells():
        targets.append(degraded_path(dataset, task, seed))
    return sorted(set(targets))


def observation_cells():
    cells = set()
    for block in config["dip"]["grid"]:
        for dataset, task in itertools.product(block["datasets"], block["tasks"]):
            cells.update((dataset, task, seed) for seed in config["dip"]["seeds"])
    return sorted(cells)


def arch_spec(name):
    return config["dip"]["archs"][name]


def dip_fit_params(wildcards):
    keys = (
        "iters",
        "snapshots",
        "lr",
        "reg_noise_std",
        "exp_weight",
        "backtrack",
        "wmv_window",
    )
    return {key: config["dip"][key] for key in keys}


DDPM_TRAIN_KEYS = (
    "T",
    "batch_size",
    "lr",
    "ema_decay",
    "grad_clip",
    "eval_every",
    "eval_t",
    "resume_every",
    "bf16",
    "compile",
)


def ddpm_train_params(wildcards):
    """Only what shapes training: a change to the sampling grid must not retrain models."""
    return {key: config["ddpm"][key] for key in DDPM_TRAIN_KEYS}


def dip_cell_dir(dataset, task, arch, seed):
    return f"{DIP}/{dataset}/task~{task}/arch~{arch}/seed~{seed}"


def dip_cells():
    """(dataset, task, arch, seed) of every DIP cell in the grid."""
    cells = set()
    for block in config["dip"]["grid"]:
        for combo in itertools.product(
            block["datasets"], block["tasks"], block["archs"]
        ):
            cells.update((*combo, seed) for seed in config["dip"]["seeds"])
    generation = config["ddpm"].get("generation")
    if generation:  # the priors of the generation variant are DIP cells too
        arch = config["ddpm"]["sample"]["prior_arch"]
        cells.update(
            (generation["dataset"], generation["task"], arch, seed)
            for seed in config["ddpm"]["sample"]["seeds"]
        )
    return sorted(cells)


def dip_targets():
    return [f"{dip_cell_dir(*cell)}/metrics.csv" for cell in dip_cells()]


def ddpm_modes():
    """(mode, t_max) of every training mode; a full model's t_max is T."""
    T = config["ddpm"]["T"]
    return [
        (m["mode"], m.get("t_max", T) if m["mode"] == "truncated" else T)
        for m in config["ddpm"]["modes"]
    ]


def train_cell_dir(mode, tmax, seed=None):
    ddpm = config["ddpm"]
    return TRAIN_CELL.format(
        dataset=ddpm["dataset"],
        mode=mode,
        tmax=tmax,
        sched=ddpm["schedule"],
        model=ddpm["model"],
        steps=ddpm["steps"],
        seed=ddpm["seeds"][0] if seed is None else seed,
    )


def trained_checkpoint(mode, tmax, ckpt):
    """The checkpoint a sampling cell uses: the configured model trained in `mode`."""
    return f"{train_cell_dir(mode, tmax)}/step~{ckpt}.pt"


def prior_input(wildcards):
    """The DIP cell whose output is the prior of a `dip` start; none for other starts."""
    if wildcards.start != "dip":
        return []
    arch = config["ddpm"]["sample"]["prior_arch"]
    return f"{dip_cell_dir(wildcards.dataset, wildcards.task, arch, wildcards.seed)}/output.npz"


def sample_cell(mode, tmax, ckpt, start, t0, steps, lam, seed, dataset=None, task=None):
    sample = config["ddpm"]["sample"]
    return SAMPLE_CELL.format(
        dataset=dataset or sample["dataset"],
        task=task or sample["task"],
        mode=mode,
        tmax=tmax,
        ckpt=ckpt,
        start=start,
        t0=t0,
        steps=steps,
        lam=lam,
        seed=seed,
    )


def sample_cells():
    """The Example 1 grid: every start point for every model, t0, steps, lam and seed."""
    sample, T = config["ddpm"]["sample"], config["ddpm"]["T"]
    final = config["ddpm"]["steps"]
    is_denoise = task_spec(sample["task"])["kind"] == "denoise"
    cells = []
    for (mode, tmax), steps, seed in itertools.product(
        ddpm_modes(), sample["steps"], sample["seeds"]
    ):
        if tmax == T:
            cells.append((mode, tmax, final, "noise", T, steps, 0.0, seed))
        if is_denoise:
            cells.append((mode, tmax, final, "obs", "sigma", steps, 0.0, seed))
        for t0 in sample["t0"]:
            if t0 <= tmax:
                cells.append((mode, tmax, final, "dip", t0, steps, 0.0, seed))
                cells += [
                    (mode, tmax, final, "dip", t0, steps, lam, seed)
                    for lam in sample["lam"]
                    if lam > 0
                ]
    # Training convergence: the middle t0 and most steps at every checkpoint.
    t0_mid = sorted(sample["t0"])[len(sample["t0"]) // 2]
    for (mode, tmax), ckpt in itertools.product(
        ddpm_modes(), config["ddpm"]["checkpoints"]
    ):
        if t0_mid <= tmax:
            cells.append(
                (
                    mode,
                    tmax,
                    ckpt,
                    "dip",
                    t0_mid,
                    max(sample["steps"]),
                    0.0,
                    sample["seeds"][0],
                )
            )
    return sorted(set(cells), key=str)


def generation_cells():
    """Example 1, generation variant: DIP fits of training images diffused to a large t0."""
    generation = config["ddpm"].get("generation")
    if not generation:
        return []
    final, seeds = config["ddpm"]["steps"], config["ddpm"]["sample"]["seeds"]
    return [
        (mode, tmax, final, "dip", t0, generation["steps"], 0.0, seed)
        for (mode, tmax), t0, seed in itertools.product(
            ddpm_modes(), generation["t0"], seeds
        )
        if t0 <= tmax
    ]


def generation_cell(*cell):
    generation = config["ddpm"]["generation"]
    return sample_cell(*cell, dataset=generation["dataset"], task=generation["task"])


def sample_dirs():
    """Every sampling cell: the restoration grid and the generation variant."""
    return [sample_cell(*c) for c in sample_cells()] + [
        generation_cell(*c) for c in generation_cells()
    ]


def sample_targets():
    return [f"{cell}/metrics.csv" for cell in sample_dirs()]


def generate_cell(mode, tmax, ckpt, steps, seed):
    return GENERATE_CELL.format(mode=mode, tmax=tmax, ckpt=ckpt, steps=steps, seed=seed)


def generate_cells():
    sample, T = config["ddpm"]["sample"], config["ddpm"]["T"]
    if not sample["generate"]:
        return []
    return [
        (mode, tmax, config["ddpm"]["steps"], steps, seed)
        for (mode, tmax), steps, seed in itertools.product(
            ddpm_modes(), sample["steps"], sample["seeds"]
        )
        if tmax == T
    ]


def training_targets():
    return [
        f"{train_cell_dir(mode, tmax, seed)}/curve.csv"
        for (mode, tmax), seed in itertools.product(
            ddpm_modes(), config["ddpm"]["seeds"]
        )
    ]


def fid_targets():
    """FID of every unconditional generation and every restoration sample set."""
    generated = [f"{generate_cell(*cell)}/fid.json" for cell in generate_cells()]
    restored = [f"{cell}/fid.json" for cell in sample_dirs()]
    return generated + restored


def qualitative_panels():
    """{title: (npz, key)} of the fixed qualitative comparison: the first seed's cells."""
    sample = config["ddpm"]["sample"]
    seed, steps, T = sample["seeds"][0], max(sample["steps"]), config["ddpm"]["T"]
    kind = task_spec(sample["task"])["kind"]
    degraded = degraded_path(sample["dataset"], sample["task"], seed)
    prior = dip_cell_dir(sample["dataset"], sample["task"], sample["prior_arch"], seed)
    modes = ddpm_modes()
    full = next(((m, t) for m, t in modes if t == T), modes[0])
    prior_model = next(((m, t) for m, t in modes if m == "truncated"), full)
    t0_mid = sorted(sample["t0"])[len(sample["t0"]) // 2]
    final = config["ddpm"]["steps"]
    start = ("obs", "sigma") if kind == "denoise" else ("noise", T)
    ddpm = sample_cell(*full, final, *start, steps, 0.0, seed)
    dip_ddpm = sample_cell(*prior_model, final, "dip", t0_mid, steps, 0.0, seed)
    return {
        "clean": (degraded, "clean"),
        # An SR observation is smaller than the other panels; it is left out of the grid.
        "observed": (degraded, "observed") if kind != "sr" else (None, None),
        "DIP": (f"{prior}/output.npz", f"it{sample['prior_iters']}"),
        "DDPM": (f"{ddpm}/samples.npz", "samples"),
        f"DIP+DDPM (t0={t0_mid})": (f"{dip_ddpm}/samples.npz", "samples"),
    }


def earlystop_cells():
    es = config.get("earlystop")
    if not es or not es.get("grid"):
        return []
    cells = set()
    for block in es["grid"]:
        for combo in itertools.product(
            block["tasks"],
            block["archs"],
            block["schedules"],
            block["stages"],
            [f"{smax:g}" for smax in block["sigma_max"]],
            config["dip"]["seeds"],
        ):
            cells.add((es["dataset"], *combo))
    return sorted(cells)


def earlystop_cell_dir(dataset, task, arch, schedule, stages, smax, seed):
    return EARLYSTOP_CELL.format(
        dataset=dataset,
        task=task,
        arch=arch,
        schedule=schedule,
        stages=stages,
        smax=smax,
        seed=seed,
    )


def earlystop_targets():
    return [f"{earlystop_cell_dir(*cell)}/earlystop.csv" for cell in earlystop_cells()]


def earlystop_curve_targets():
    return [f"{earlystop_cell_dir(*cell)}/trajectory.csv" for cell in earlystop_cells()]


def report_targets():
    return [f"{REPORT}/report.md"]


def all_targets():
    return (
        data_targets()
        + dip_targets()
        + training_targets()
        + sample_targets()
        + earlystop_targets()
        + report_targets()
    )
