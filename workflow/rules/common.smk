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


DATA = "results/data"
LOGS = "results/logs"
BENCH = "results/benchmarks"


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


def all_targets():
    return data_targets()
