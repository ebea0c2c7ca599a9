# Configuration loading and validation, input functions and global wildcard constraints
# shared by every rule file. The experimental design (which cells exist, where each lives)
# is the package scripts/dipddpm/grid/: this file only turns it into Snakemake targets.
import os
import sys
from pathlib import Path

from snakemake.utils import validate

# The checkout's own library first, here and in every job (jobs inherit PYTHONPATH), whatever
# the virtual environment's editable install points to: two checkouts sharing one venv each
# run their own code.
LIBRARY = str(Path(workflow.basedir) / "scripts")
sys.path.insert(0, LIBRARY)
os.environ.update(
    PYTHONPATH=os.pathsep.join([LIBRARY, *filter(None, [os.environ.get("PYTHONPATH")])])
)
from dipddpm import grid  # noqa: E402
from dipddpm.logs import log_to  # noqa: E402
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
    **grid.wildcard_constraints(),


# Which ready job Snakemake starts first (higher first; unlisted rules 0). On a machine with
# few cores the long chains must start early: the data they read, then DDPM training (every
# sampling cell waits for it), the early-stopping fits (a plain fit, then the cells reading
# it) and the DIP fits. The many short jobs (sampling, scoring, tables) then fill the cores
# at the end instead of one core idling behind a lone long fit. Order only: no result
# depends on it.
PRIORITY = {"data": 50, "training": 40, "earlystop": 30, "dip": 20}


TABLE_NAMES = [
    "method_comparison",
    "steps_to_quality",
    "fid",
    "training_convergence",
    "dip_by_architecture",
    "earlystop",
]


def figure_names():
    """The report's figures; the DIP-duration x t0 heatmap needs two prior durations."""
    names = [
        "quality_vs_steps",
        "dip_trajectories",
        "fid_vs_steps",
        "training_curves",
        "qualitative",
        "earlystop_curves",
        "gap_distribution",
    ]
    if len(grid.prior_iters(config)) > 1:
        names.insert(2, "dip_t0_heatmap")
    return names


def cell_of(kind, wildcards):
    """The identity of the cell a job builds, from its wildcards."""
    return kind.identity(dict(wildcards))


def files(kind, cells, name):
    return [kind.path(cell, name) for cell in cells]


def dip_fit_settings(wildcards):
    """What shapes a DIP fit: the named architecture and the fitting keys, nothing else.
    A fit of training priors stops at the longest prior a mode reads from it (its
    snapshots up to there equal a longer fit's)."""
    dip = config["dip"]
    keys = ("iters", "snapshots", "lr", "reg_noise_std", "exp_weight", "backtrack")
    fit = {key: dip[key] for key in keys} | {"wmv_window": dip["wmv_window"]}
    if wildcards.purpose == "training":
        iters = training_prior_iters(wildcards)
        fit |= {
            "iters": iters,
            "snapshots": [s for s in dip["snapshots"] if s <= iters],
        }
    return {"arch": dip["archs"][wildcards.arch], "fit": fit}


def training_prior_iters(wildcards):
    cell = grid.DIP.identity(dict(wildcards))
    return max(
        m["prior"]["iters"]
        for m in grid.prior_modes(config)
        if grid.training_prior_cell(config, m) == cell
    )


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


def ddpm_train_settings(wildcards):
    """Only what shapes training: a change to the sampling grid must not retrain models.
    The checkpoints are those of the cell's training length (the main models' or the
    prior-training comparison's)."""
    checkpoints = grid.training_runs(config)[int(wildcards.train_steps)]
    return {key: config["ddpm"][key] for key in DDPM_TRAIN_KEYS} | {
        "checkpoints": checkpoints
    }


def train_rule_name(steps):
    """The main models' training rule keeps its name; another training length (the
    prior-training comparison) gets a rule of its own, as its checkpoints differ."""
    return "train_ddpm" if steps == config["ddpm"]["steps"] else f"train_ddpm_{steps}"


def train_prior_settings(wildcards):
    """A prior-trained mode's `prior` settings (None for full and truncated)."""
    mode = grid.prior_mode(config, wildcards.mode)
    return dict(mode["prior"]) if mode else None


def train_prior_input(wildcards):
    """The DIP outputs a prior-trained mode learns from; nothing for the other modes."""
    mode = grid.prior_mode(config, wildcards.mode)
    if mode is None:
        return {}
    cell = grid.training_prior_cell(config, mode)
    return {"prior": grid.DIP.path(cell, "output.npz")}


def earlystop_settings(wildcards):
    """The early-stopping keys a cell reads (not the grid, which only selects cells)."""
    es, dip = config["earlystop"], config["dip"]
    keys = ("iters_per_stage", "final_iters", "budgets", "tau", "wmv_window")
    return {
        "arch": dip["archs"][wildcards.arch],
        "es": {key: es[key] for key in keys}
        | {"wmv_patience": es["wmv_patience"], "noise": es["noise"]}
        | earlystop_plain_fit_settings(es),
        "dip": {
            key: dip[key] for key in ("lr", "reg_noise_std", "exp_weight", "backtrack")
        },
    }


EARLYSTOP_PLAIN_FIT_KEYS = ("run_past_peak", "max_iters", "wmv_windows")


def earlystop_plain_fit_settings(es):
    """The plain fit's optional keys, only where set: a config without them gives its
    cells the same params as before the keys existed, so they are not rerun."""
    return {
        key: es[key]
        for key in EARLYSTOP_PLAIN_FIT_KEYS
        if es.get(key) not in (None, [])
    }


def earlystop_plain_cell_settings(wildcards):
    """The keys a plain-fit cell reads: earlystop_settings' less the training variant's
    (it is shared by cells of different variant settings), and its default length, a
    function of the config alone (grid.earlystop_plain_iters)."""
    es = config["earlystop"]
    keys = ("budgets", "tau", "wmv_window", "wmv_patience")
    plain = (
        {key: es[key] for key in keys}
        | earlystop_plain_fit_settings(es)
        | {"plain_default_iters": grid.earlystop_plain_iters(config)}
    )
    return earlystop_settings(wildcards) | {"es": plain}


def earlystop_plain_input(wildcards):
    """The outputs of the plain-fit cell an early-stopping cell's post-hoc rules read."""
    plain = grid.plain_fit_of(dict(wildcards))
    return {
        f"plain_{name}": grid.EARLYSTOP_PLAIN.path(plain, file)
        for name, file in EARLYSTOP_PLAIN_FILES.items()
    }


EARLYSTOP_PLAIN_FILES = {
    "table": "baselines.csv",
    "trajectory": "trajectory.csv",
    "json": "params.json",
}


def observation_input(wildcards):
    observation = grid.observation_of(dict(wildcards))
    return {
        "npz": grid.OBSERVATION.path(observation, "degraded.npz"),
        "params": grid.OBSERVATION.path(observation, "params.json"),
    }


def fid_reference_input():
    """The cached Inception statistics every sample set is scored against."""
    return grid.REFERENCE.path(
        {"dataset": config["metrics"]["reference"]}, "inception.npz"
    )


MODEL_STORE = config["ddpm"].get("model_store")
# Where the models part writes its summary: next to the stored weights when a store is
# configured (the study commits it), else with the other tables.
MODELS_SUMMARY = MODEL_STORE or grid.TABLES


def checkpoint_input(wildcards):
    """The weights a sampling cell reads: the model store's copy when one is configured
    (committed weights are used as they are, with no retraining), else the training cell's.
    """
    if MODEL_STORE:
        return grid.stored_checkpoint_path(dict(wildcards), MODEL_STORE)
    return grid.checkpoint_path(dict(wildcards))


PRIOR_STORE = config["dip"].get("prior_store")


def prior_input(wildcards):
    """The DIP cell whose output is the prior of a `dip` start (its copy in the prior store
    when one is configured); none for other starts."""
    prior = grid.prior_of(dict(wildcards))
    if prior is None:
        return []
    output = grid.DIP.path(prior, "output.npz")
    return grid.in_store(output, PRIOR_STORE) if PRIOR_STORE else output


def data_targets():
    """Every declared dataset but those only a stored classifier's training would read."""
    unread = stored_classifier_sets()
    clean = [c for c in grid.clean_cells(config) if c["dataset"] not in unread]
    return files(grid.CLEAN, clean, "clean.npz") + files(
        grid.OBSERVATION, grid.observation_cells(config), "degraded.npz"
    )


def stored_classifier_sets():
    """The classifier's training and test sets once its store holds the weights: only its
    training reads them (a job that needs one of them still asks for it)."""
    if not (CLASSIFIER and CLASSIFIER.get("store")):
        return set()
    if not os.path.exists(classifier_weights()):
        return set()
    return {CLASSIFIER["train"], CLASSIFIER["test"]}


def dip_targets(name="metrics.csv"):
    """Every restoration and generation DIP fit. The training priors of prior-trained
    modes are not targets of their own: the models that learn from them ask for them."""
    kept = [c for c in grid.dip_cells(config) if c["purpose"] != "training"]
    return files(grid.DIP, kept, name)


def training_targets():
    return files(grid.TRAIN, grid.train_cells(config), "curve.csv")


def _kept(stored: str, sources: dict[str, str]) -> dict[str, str]:
    """A store's inputs: none once the stored copy exists. A committed copy is then a
    source like the raw data: a fresh checkout samples from it, and no upstream change
    (a re-prepared dataset, a new library version) retrains or refits behind it. Delete
    the stored file to rebuild it from its cell."""
    return {} if os.path.exists(stored) else sources


# The stores' bodies import their stages (and torch) only when a store job runs: every
# Snakemake start (a dry run, the lint, each spawned `run` job) parses this file.
def keep_model(input, output, log):
    """store_model's body (a `run` rule: see there why not a script)."""
    from dipddpm.stages.ddpm import store_model

    with log_to(log[0]):
        store_model(input.get("checkpoint"), output[0])


def keep_prior(input, output, log):
    """store_prior's body (a `run` rule: see store_model why not a script)."""
    from dipddpm.stages.dip import store_prior

    with log_to(log[0]):
        store_prior(input.get("npz"), input.get("metrics"), output.npz, output.metrics)


def stored_model_source(wildcards):
    cell = dict(wildcards)
    stored = grid.stored_checkpoint_path(cell, MODEL_STORE)
    return _kept(stored, {"checkpoint": grid.checkpoint_path(cell)})


def stored_prior_source(wildcards):
    cell = dict(wildcards)
    stored = grid.in_store(grid.DIP.path(cell, "output.npz"), PRIOR_STORE)
    sources = {
        name: grid.DIP.path(cell, name) for name in ("output.npz", "metrics.csv")
    }
    return _kept(
        stored, {"npz": sources["output.npz"], "metrics": sources["metrics.csv"]}
    )


def sample_calibration_input(wildcards):
    """The timings a sampling cell's cost is computed from: its UNet preset's and, for a
    DIP start, its prior's architecture."""
    archs = [wildcards.arch] if wildcards.start == "dip" else []
    return grid.calibration_files(archs, [wildcards.preset])


def calibration_targets():
    """Every fitted architecture's and the UNet preset's timings (DIP rows get the cost
    of DIP alone in aggregation)."""
    archs = sorted({cell["arch"] for cell in grid.dip_cells(config)})
    return grid.calibration_files(archs, [config["ddpm"]["model"]])


def prior_targets():
    """The priors part: every DIP fit, its copy in the prior store (with one) and the
    DIP-alone summary of the stored priors."""
    if not PRIOR_STORE:
        return dip_targets()
    stored = [
        path for name in ("output.npz", "metrics.csv") for path in stored_dip(name)
    ]
    return dip_targets() + stored + [f"{PRIOR_STORE}/dip_summary.csv"]


EXAMPLE1_DIR = config.get("example1", {}).get("out", f"{grid.RESULTS}/example1")


def stored_dip(name):
    """A file of every DIP cell the prior store keeps: not the training priors (hundreds of
    training images, which only feed training)."""
    kept = [c for c in grid.dip_cells(config) if c["purpose"] != "training"]
    return [grid.in_store(path, PRIOR_STORE) for path in files(grid.DIP, kept, name)]


def dip_metrics_inputs():
    """DIP-alone per-image metrics: the prior store's copies when one is configured."""
    return stored_dip("metrics.csv") if PRIOR_STORE else dip_targets("metrics.csv")


def _dip_started():
    return [cell for cell in grid.sample_cells(config) if cell["start"] == "dip"]


def auto_t0_observations():
    """The observations of DIP-started cells: auto-t0 estimates each prior's error from them."""
    cells = {tuple(grid.observation_of(c).items()) for c in _dip_started()}
    return sorted(grid.OBSERVATION.path(dict(c), "degraded.npz") for c in cells)


def auto_t0_priors():
    """The DIP outputs of DIP-started cells (their prior-store copies when one is set)."""
    return sorted({prior_input(cell) for cell in _dip_started()})


def example1_targets():
    """The Example 1 part: every sampling cell and the study's answer tables, and where
    example1.out is set (the study's committed folder; the schema fills in the default
    results/example1 for every other config) the qualitative figure."""
    tables = [f"{EXAMPLE1_DIR}/{name}.csv" for name in EXAMPLE1_TABLES]
    figure = [f"{EXAMPLE1_DIR}/qualitative.png"]
    if EXAMPLE1_DIR == f"{grid.RESULTS}/example1":
        figure = []
    return sample_targets() + tables + figure


def model_targets():
    """The models part: every training cell, its stored final weights (with a model store)
    and the convergence summary."""
    summary = [
        f"{MODELS_SUMMARY}/model_convergence.csv",
        f"{MODELS_SUMMARY}/model_verdicts.csv",
        f"{MODELS_SUMMARY}/model_convergence.png",
    ]
    final = {"ckpt": config["ddpm"]["steps"]}
    stored = [
        grid.stored_checkpoint_path({**cell, **final}, MODEL_STORE)
        for cell in grid.train_cells(config)
        if MODEL_STORE
    ]
    return training_targets() + stored + summary


def sample_targets():
    return files(grid.SAMPLE, grid.sample_cells(config), "metrics.csv")


PRIOR_TRAINING = config.get("prior_training")
PRIOR_TRAINING_DIR = (PRIOR_TRAINING or {}).get("out", f"{grid.RESULTS}/prior_training")
PRIOR_TRAINING_TABLES = [
    "convergence",
    "restoration",
    "steps_to_quality",
    "headline",
    "training_priors",
]


def prior_training_sample_targets():
    return files(grid.SAMPLE, grid.prior_training_sample_cells(config), "metrics.csv")


def prior_training_curve_targets():
    return files(grid.TRAIN, grid.prior_training_train_cells(config), "curve.csv")


def training_prior_mapping():
    """Each prior-trained mode of the comparison -> its training priors' DIP cell files."""
    modes = [m for m in PRIOR_TRAINING["modes"] if m.get("prior")]
    return {
        m["mode"]: {
            name: grid.DIP.path(grid.training_prior_cell(config, m), f"{name}.{ext}")
            for name, ext in (("params", "json"), ("metrics", "csv"))
        }
        for m in modes
    }


def training_prior_files():
    return sorted(
        {p for files in training_prior_mapping().values() for p in files.values()}
    )


def prior_training_headline():
    """The setting the answer rests on: the comparison's first t0 and most steps of its
    every-checkpoint block (its sample-level values unless a block overrides them)."""
    sample = {**config["ddpm"]["sample"], **PRIOR_TRAINING["sample"]}
    return {"t0": sample["t0"][0], "steps": max(sample["steps"])}


def prior_training_targets():
    """The prior-training part: the training priors' DIP fit, every compared model (all
    its checkpoints), their sampling cells from the held-out priors, and the summary."""
    if not PRIOR_TRAINING:
        return []
    summary = [f"{PRIOR_TRAINING_DIR}/{name}.csv" for name in PRIOR_TRAINING_TABLES]
    summary += [
        f"{PRIOR_TRAINING_DIR}/{n}" for n in ("convergence.png", "prior_training.md")
    ]
    return (
        training_prior_files()
        + prior_training_curve_targets()
        + prior_training_sample_targets()
        + summary
    )


def fid_targets():
    """FID of every unconditional generation and every restoration sample set."""
    generated = files(grid.GENERATE, grid.generate_cells(config), "fid.json")
    return generated + files(grid.SAMPLE, grid.sample_cells(config), "fid.json")


def earlystop_targets(name="earlystop.csv"):
    return files(grid.EARLYSTOP, grid.earlystop_cells(config), name)


# The leave-one-image-out tables of the post-hoc rules (workflow/rules/earlystop.smk).
EARLYSTOP_LOO_DIR = (config.get("earlystop") or {}).get(
    "out", f"{grid.RESULTS}/{grid.EARLYSTOP.root}"
)


def earlystop_loo_table(name):
    return f"{EARLYSTOP_LOO_DIR}/loo_{name}.csv"


def earlystop_loo_targets():
    """The summary's tables and Example 2's report section with its figures, only when
    earlystop.loo or earlystop.out asks for them: no run gains the jobs unasked."""
    es = config.get("earlystop") or {}
    if not (es.get("loo") or es.get("out")) or not grid.earlystop_cells(config):
        return []
    tables = [earlystop_loo_table(name) for name in EARLYSTOP_LOO_TABLES]
    figures = [example2_figure(name) for name in EXAMPLE2_FIGURES]
    return tables + [example2_output("example2.md")] + figures


def earlystop_loo_settings():
    """The keys the candidate settings of the post-hoc rules come from."""
    es = config["earlystop"]
    keys = (
        "budgets",
        "wmv_window",
        "wmv_patience",
        "wmv_windows",
        "loo_taus",
        "loo_patiences",
    )
    return {key: es[key] for key in keys}


def earlystop_observation_params():
    """The observations of every early-stopping cell (their image names and sigma)."""
    paths = [
        grid.OBSERVATION.path(grid.observation_of(cell), "params.json")
        for cell in grid.earlystop_cells(config)
    ]
    return list(dict.fromkeys(paths))


# Example 2's report section (workflow/rules/earlystop.smk), next to the loo tables.
EXAMPLE2_FIGURES = ("curves", "gaps", "crops")


def example2_output(name):
    return f"{EARLYSTOP_LOO_DIR}/{name}"


def example2_figure(name):
    return f"{EARLYSTOP_LOO_DIR}/figures/example2_{name}.png"


def example2_cells():
    """The cells of the plain fits the section shows image by image: per dataset, the
    lowest noise level, observation seed and DIP seed (example2_report)."""
    from dipddpm.example2_report import example_cells

    cells = grid.earlystop_cells(config)
    sigmas = {c["task"]: config["tasks"][c["task"]].get("sigma", 0) for c in cells}
    return example_cells(cells, sigmas)


def example2_progressive_cells():
    """Of those, the progressive run each example fit's crops show (its first setting)."""
    from dipddpm.example2_report import progressive_examples

    return progressive_examples(example2_cells())


def example2_shows_patience():
    """Whether the progressive rules' names spell the stage patience, decided on every
    early-stopping cell as the loo tables decide it (the refit sees only examples)."""
    from dipddpm.stages.earlystop_loo import patiences_differ

    return patiences_differ(grid.earlystop_cells(config))


def example2_files(name, progressive=False):
    cells = example2_progressive_cells() if progressive else example2_cells()
    return files(grid.EARLYSTOP, cells, name)


def example2_observations(name, progressive=False):
    """A file of the example cells' observations (``degraded.npz``, ``params.json``)."""
    cells = example2_progressive_cells() if progressive else example2_cells()
    paths = [grid.OBSERVATION.path(grid.observation_of(c), name) for c in cells]
    return list(dict.fromkeys(paths))


def example2_dip_settings():
    """The DIP fitting keys the early-stopping cells ran with (earlystop_settings)."""
    keys = ("lr", "reg_noise_std", "exp_weight", "backtrack")
    return {key: config["dip"][key] for key in keys}


def example2_settings():
    """What the section quotes besides the tables: the candidate grids, the progressive
    stages' lengths and the DIP output's EMA weight."""
    es = config["earlystop"]
    return (
        earlystop_loo_settings()
        | {key: es[key] for key in ("iters_per_stage", "final_iters", "noise")}
        | {"exp_weight": config["dip"]["exp_weight"]}
    )


def qualitative_panels():
    """{title: (npz, key)} of the fixed qualitative comparison: the first seeds' cells."""
    panels = grid.qualitative_cells(config)
    observation = grid.OBSERVATION.path(panels["observation"], "degraded.npz")
    sr = grid.task_kind(config, panels["observation"]["task"]) == "sr"
    prior = panels["prior"]
    out = {
        "clean": (observation, "clean"),
        # An SR observation is smaller than the other panels; it is left out of the grid.
        "observed": (None, None) if sr else (observation, "observed"),
        "DIP": (grid.DIP.path(prior, "output.npz"), f"it{panels['prior_iters']}"),
    }
    for title, cell in panels["samples"].items():
        out[title] = (grid.SAMPLE.path(cell, "samples.npz"), "samples")
    return out


def report_targets():
    return [f"{grid.REPORT}/report.md"]


def all_targets():
    return (
        data_targets()
        + dip_targets()
        + training_targets()
        + sample_targets()
        + earlystop_targets()
        + earlystop_loo_targets()
        + report_targets()
    )


# The generation metrics' classifier (workflow/rules/generation.smk).
CLASSIFIER = config["metrics"].get("classifier")
CLASSIFIER_DIR = f"{grid.RESULTS}/classifier"


def classifier_weights():
    """The weights the metrics read: the store's copy when one is configured."""
    store = CLASSIFIER.get("store")
    return f"{store}/cifarnet.pt" if store else f"{CLASSIFIER_DIR}/cifarnet.pt"


def guided_classifier_input(wildcards):
    """The classifier whose features a guided cell of form perc compares; none otherwise."""
    if wildcards.guide_form != "perc":
        return {}
    return {"classifier": classifier_weights()}


def classifier_targets():
    if not CLASSIFIER:
        return []
    weights = classifier_weights()
    return [weights, weights.replace(".pt", ".json")]


def stored_classifier_source(wildcards):
    stored = classifier_weights()
    files = {name: f"{CLASSIFIER_DIR}/cifarnet.{name}" for name in ("pt", "json")}
    return _kept(stored, {"weights": files["pt"], "json": files["json"]})


def keep_classifier(input, output, log):
    """store_classifier's body (a `run` rule: see store_model why not a script)."""
    from dipddpm.stages.generation_metrics import store_classifier

    with log_to(log[0]):
        store_classifier(
            input.get("weights"), input.get("json"), output.weights, output.json
        )


# The generation metrics of every compared setting (a generation cell less its sample
# seed, all seeds pooled): scored only with a classifier, whose features they use.
GENERATION_KINDS = (grid.SAMPLE, grid.GENERATE)


def generation_score_targets():
    if not CLASSIFIER:
        return []
    return [
        grid.setting_path(kind, setting, grid.GENERATION_SCORES)
        for kind in GENERATION_KINDS
        for setting in grid.generation_settings(config, kind)
    ]


def clean_input(dataset):
    return grid.CLEAN.path({"dataset": dataset}, "clean.npz")


def generation_score_input(kind):
    """A setting's inputs: every seed's samples, the reference set, which is also the
    held-out baseline of memorisation (the config checks keep it out of the DDPM's
    training split; the classifier's test set is sized for its accuracy, not for this),
    the DDPM's training images and, for a DIP start, the prior and its source images."""

    def inputs(wildcards):
        cells = grid.setting_cells(config, kind, dict(wildcards))
        reference = clean_input(config["metrics"]["reference"])
        found = {
            "samples": files(kind, cells, "samples.npz"),
            "reference": reference,
            "heldout": reference,
            "classifier": classifier_weights(),
            "train": clean_input(wildcards.train_dataset),
        }
        if kind is grid.SAMPLE:
            found["prior"] = prior_input(wildcards)
            found["source"] = clean_input(wildcards.dataset)
        return found

    return inputs


def generation_score_identity(kind):
    """A setting's identity columns; a setting from noise is named as its cells stamp
    themselves (dipddpm.stages.ddpm.run_generate_cell)."""

    def identity(wildcards):
        setting = grid.setting_of(kind, dict(wildcards))
        if kind is grid.SAMPLE:
            method = grid.method_name(setting["start"], float(setting["lam"]))
            return grid.setting_identity(setting, method)
        noise = {"purpose": "generation", "start": "noise", "t0": config["ddpm"]["T"]}
        return grid.setting_identity(setting | noise, "ddpm-noise")

    return identity


# One row per setting, with the part's curves, figure and section in ddpm.generation.out
# (results/ is the run's; the study sets a folder it commits, as for the classifier).
GENERATION_DIR = (grid.generation(config) or {}).get(
    "out", f"{grid.RESULTS}/generation"
)
GENERATION_SUMMARY = f"{GENERATION_DIR}/generation.csv"


def generation_output(name):
    return f"{GENERATION_DIR}/{name}"


def generation_section_targets():
    """The curves table, figure and section: only where DIP-started settings are scored."""
    if not (CLASSIFIER and grid.generation_settings(config, grid.SAMPLE)):
        return []
    names = (
        "generation_curves.csv",
        "generation_curves.png",
        "generation_samples.png",
        "generation.md",
    )
    return [generation_output(name) for name in names]


def generation_targets():
    """The generation part: every setting's scores, their summary table and (with
    DIP-started settings) the curves and the section."""
    scores = generation_score_targets()
    if not scores:
        return []
    return scores + [GENERATION_SUMMARY] + generation_section_targets()


def generation_cell_records():
    """The params.json of every generation cell (its measured seconds and NFE)."""
    cells = [
        (kind, cell)
        for kind in GENERATION_KINDS
        for setting in grid.generation_settings(config, kind)
        for cell in grid.setting_cells(config, kind, setting)
    ]
    return [kind.path(cell, "params.json") for kind, cell in cells]


def generation_prior_metrics():
    """The per-image metrics (with the fit's seconds at each snapshot) of the generation
    priors: their prior-store copies when one is configured."""
    paths = files(grid.DIP, grid.design.generation_dip_cells(config), "metrics.csv")
    return [grid.in_store(p, PRIOR_STORE) for p in paths] if PRIOR_STORE else paths


def generation_grid_input():
    """What the sample grid draws: every generation cell's samples (beside its
    params.json), the priors' DIP outputs (beside their metrics.csv) and the images the
    priors were fitted to."""
    samples = [
        os.path.join(os.path.dirname(p), "samples.npz")
        for p in generation_cell_records()
    ]
    outputs = [
        os.path.join(os.path.dirname(p), "output.npz")
        for p in generation_prior_metrics()
    ]
    source = clean_input(config["ddpm"]["generation"]["dataset"])
    return {"samples": samples, "prior_outputs": outputs, "source": source}


def generation_section_settings():
    """What the section quotes besides the tables: the priors' data, task and fit, the
    chain, the reference set and the scoring settings."""
    gen, ddpm, metrics = config["ddpm"]["generation"], config["ddpm"], config["metrics"]
    datasets = config["data"]["datasets"]
    noise = grid.design.generation_noise(config)
    return {
        "dataset": gen["dataset"],
        "dataset_spec": datasets[gen["dataset"]],
        "task": gen["task"],
        "task_spec": config["tasks"][gen["task"]],
        "prior_arch": grid.prior_archs(config)[0],
        "dip_iters": config["dip"]["iters"],
        "T": ddpm["T"],
        "schedule": ddpm["schedule"],
        "sampler": ddpm["sample"]["sampler"],
        "eta": ddpm["sample"]["eta"],
        "train_dataset": ddpm["dataset"],
        "reference": metrics["reference"],
        "reference_spec": datasets[metrics["reference"]],
        "noise_per_seed": noise["generate"] if noise else ddpm["sample"]["generate"],
    }


def generate_count(wildcards):
    """Samples per seed of a cell from noise (rule generate_ddpm)."""
    return grid.design.generate_count(config, dict(wildcards))
