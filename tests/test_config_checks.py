"""Values checkable without running are checked at load time: networks too deep for their
images, SR factors that do not divide them, names that point nowhere (with a suggestion),
values that name one grid cell twice and keys the grid reads without a default."""

from __future__ import annotations

import copy

import pytest
import yaml
from snakemake.utils import validate

from dipddpm import grid
from dipddpm.config import ConfigError, load_config, load_schema, validate_config
from dipddpm.config_checks import _disjoint_set_errors

SCHEMA = "workflow/schemas/config.schema.yaml"


@pytest.fixture(scope="module")
def schema(root):
    return load_schema(root / SCHEMA)


@pytest.fixture(scope="module")
def shipped(root):
    return {
        name: yaml.safe_load(path.read_text())
        for name, path in {
            "config.yaml": root / "config" / "config.yaml",
            "paper.yaml": root / "config" / "paper.yaml",
            "tiny.yaml": root / "tests" / "config" / "tiny.yaml",
        }.items()
    }


@pytest.fixture
def config(shipped):
    return copy.deepcopy(shipped["config.yaml"])


@pytest.fixture
def tiny(shipped):
    return copy.deepcopy(shipped["tiny.yaml"])


def _error(config, schema) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, schema)
    return str(info.value)


def _problems(message: str) -> list[str]:
    return message.split("\n  - ")[1:]


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "tiny.yaml"])
def test_shipped_configs_pass_every_check(shipped, schema, name):
    validate_config(copy.deepcopy(shipped[name]), schema)


# ------------------------------------------------------------ depth against image size


def test_hourglass_too_deep_for_cifar_names_depth_dataset_and_grid_block(config, schema):
    config["dip"]["archs"]["skip"]["depth"] = 5  # 32 / 2^5 = 1: below the 2x2 bottom
    message = _error(config, schema)
    assert "'dip.archs.skip.depth'" in message and "'cifar10-test'" in message
    assert "dip.grid[0]" in message and "dip.grid[1]" in message
    assert "largest depth that fits is 4" in message


def test_depth_must_divide_a_resized_side(config, schema):
    config["data"]["datasets"]["astronaut"].update(size=48, multiple=16)
    config["dip"]["archs"]["deep"] = {"kind": "skip", "depth": 4}
    config["dip"]["grid"].append(
        {"datasets": ["astronaut"], "tasks": ["denoise-s25"], "archs": ["deep"]}
    )
    validate_config(copy.deepcopy(config), schema)  # 48 / 2^4 = 3
    config["dip"]["archs"]["deep"]["depth"] = 5  # 48 is not a multiple of 32
    message = _error(config, schema)
    assert "'dip.archs.deep.depth'" in message and "48x48" in message
    assert "'astronaut'" in message and "dip.grid[2]" in message


def test_default_depth_is_checked_and_said_to_be_the_default(config, schema):
    del config["dip"]["archs"]["encdec"]["depth"]  # the default, 5, is too deep for 32x32
    message = _error(config, schema)
    assert "'dip.archs.encdec.depth'" in message and "depth 5 is the default" in message


def test_convdecoder_layers_are_checked_like_a_depth(config, schema):
    config["dip"]["archs"]["convdecoder"]["layers"] = 5
    message = _error(config, schema)
    assert "'dip.archs.convdecoder.layers'" in message and "'cifar10-test'" in message


@pytest.mark.parametrize(
    "where, key",
    [("prior", "ddpm.sample.prior_arch"), ("earlystop", "earlystop.grid[0]")],
)
def test_prior_and_earlystop_architectures_are_checked_against_their_dataset(
    config, schema, where, key
):
    config["dip"]["archs"]["deep"] = {"kind": "skip", "depth": 5}
    if where == "prior":
        config["ddpm"]["sample"]["prior_arch"] = "deep"
    else:
        config["earlystop"]["grid"][0]["archs"] = ["deep"]
    message = _error(config, schema)
    assert "'dip.archs.deep.depth'" in message and key in message


def test_generation_prior_is_checked_against_the_generation_dataset(config, schema):
    config["data"]["datasets"]["big-gen"] = {
        "source": "skimage",
        "names": ["astronaut"],
        "size": 128,
    }
    config["ddpm"]["generation"]["dataset"] = "big-gen"
    validate_config(copy.deepcopy(config), schema)
    config["data"]["datasets"]["big-gen"]["size"] = 12  # 12 is not divisible by 2^3
    config["data"]["datasets"]["big-gen"]["multiple"] = 4
    message = _error(config, schema)
    assert "'dip.archs.skip.depth'" in message and "'big-gen'" in message
    assert "ddpm.generation" in message


def test_folder_images_of_unknown_size_are_not_judged(config, schema):
    del config["data"]["datasets"]["dip-inpainting"]["size"]
    config["dip"]["archs"]["deep"] = {"kind": "skip", "depth": 8}
    config["dip"]["grid"].append(
        {"datasets": ["dip-inpainting"], "tasks": ["inpaint-paper"], "archs": ["deep"]}
    )
    validate_config(config, schema)


def test_per_scale_channel_list_must_match_depth(config, schema):
    config["dip"]["archs"]["skip"]["channels_down"] = [16, 32]  # depth is 3
    message = _error(config, schema)
    assert "'dip.archs.skip.channels_down'" in message and "depth is 3" in message


def test_multiple_larger_than_the_images_is_named(config, schema):
    config["data"]["datasets"]["astronaut"]["size"] = 16  # the default multiple is 32
    message = _error(config, schema)
    assert "'data.datasets.astronaut.multiple'" in message and "16x16" in message


# --------------------------------------------------------------- tasks against images


def test_sr_factor_must_divide_the_image_side(config, schema):
    config["tasks"]["sr-x3"] = {"kind": "sr", "factor": 3}
    config["dip"]["grid"][1]["tasks"].append("sr-x3")
    message = _error(config, schema)
    assert "'tasks.sr-x3.factor'" in message and "32x32" in message
    assert "'cifar10-test'" in message and "dip.grid[1]" in message
    assert "sr-x2" not in message


def test_sr_factor_is_checked_for_the_sampling_task(config, schema):
    config["tasks"]["sr-x3"] = {"kind": "sr", "factor": 3}
    config["ddpm"]["sample"]["task"] = "sr-x3"
    assert "ddpm.sample" in _error(config, schema)


@pytest.mark.parametrize(
    "task, missing",
    [
        ({"kind": "sr"}, "factor"),
        ({"kind": "denoise"}, "sigma"),
        ({"kind": "inpaint"}, "drop"),
        ({"kind": "inpaint", "mask": "random"}, "drop"),
    ],
)
def test_a_task_kind_requires_its_parameters(config, schema, task, missing):
    config["tasks"]["new"] = task
    message = _error(config, schema)
    assert f"'tasks.new.{missing}' is required for kind {task['kind']!r}" in message


def test_dataset_masks_need_a_folder_dataset(config, schema):
    config["dip"]["grid"][1]["tasks"].append("inpaint-paper")
    message = _error(config, schema)
    assert "'tasks.inpaint-paper.mask'" in message and "'cifar10-test'" in message


# ---------------------------------------------------------------------- unknown names


@pytest.mark.parametrize(
    "key, edit, suggestion",
    [
        ("dip.grid[0].archs", lambda c: c["dip"]["grid"][0]["archs"].append("skp"), "skip"),
        (
            "dip.grid[0].datasets",
            lambda c: c["dip"]["grid"][0].update(datasets=["cifar10-tst"]),
            "cifar10-test",
        ),
        ("dip.grid[1].tasks", lambda c: c["dip"]["grid"][1]["tasks"].append("sr-2"), "sr-x2"),
        ("ddpm.dataset", lambda c: c["ddpm"].update(dataset="cifar10-trian"), "cifar10-train"),
        (
            "ddpm.sample.task",
            lambda c: c["ddpm"]["sample"].update(task="denoise-25"),
            "denoise-s25",
        ),
        (
            "ddpm.sample.prior_arch",
            lambda c: c["ddpm"]["sample"].update(prior_arch="encdc"),
            "encdec",
        ),
        (
            "ddpm.generation.dataset",
            lambda c: c["ddpm"]["generation"].update(dataset="cifar-gen"),
            "cifar10-gen",
        ),
        (
            "earlystop.dataset",
            lambda c: c["earlystop"].update(dataset="cifar10_test"),
            "cifar10-test",
        ),
        (
            "earlystop.grid[0].archs",
            lambda c: c["earlystop"]["grid"][0].update(archs=["Skip"]),
            "skip",
        ),
        ("metrics.reference", lambda c: c["metrics"].update(reference="cifar10-rf"), "cifar10-ref"),
    ],
)
def test_unknown_name_suggests_the_closest_defined_one(config, schema, key, edit, suggestion):
    edit(config)
    message = _error(config, schema)
    assert f"'{key}'" in message and f"did you mean '{suggestion}'" in message
    assert "defined:" in message


def test_absent_metrics_reference_defaults_to_a_dataset_that_must_exist(tiny, schema):
    del tiny["metrics"]["reference"]  # the schema's default is cifar10-test
    tiny["data"]["datasets"]["cifar10-eval"] = tiny["data"]["datasets"].pop("cifar10-test")
    for block in tiny["dip"]["grid"]:
        block["datasets"] = ["cifar10-eval"]
    tiny["ddpm"]["sample"]["dataset"] = tiny["earlystop"]["dataset"] = "cifar10-eval"
    problems = _problems(_error(tiny, schema))
    assert len(problems) == 1
    assert problems[0].startswith("'metrics.reference' names dataset 'cifar10-test'")


def test_earlystop_grid_needs_a_dataset(config, schema):
    del config["earlystop"]["dataset"]
    message = _error(config, schema)
    assert "'earlystop.dataset' is required when 'earlystop.grid' is set" in message
    assert "None" not in message


def _optional_key_paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _optional_key_paths(value, (*prefix, key))


@pytest.mark.parametrize("name", ["config.yaml", "tiny.yaml"])
def test_a_config_that_passes_never_fails_later_with_a_bare_key_error(root, shipped, schema, name):
    """Drop any one key: either the check names the problem, or the grid expands."""
    for path in _optional_key_paths(shipped[name]):
        config = copy.deepcopy(shipped[name])
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
        try:
            validate_config(copy.deepcopy(config), schema)
        except ConfigError:
            continue
        validate(config, str(root / SCHEMA))
        grid.cells(config)
        grid.qualitative_cells(config)


def test_absent_seeds_get_their_default(root, config, schema):
    for part in (config, config["dip"], config["ddpm"], config["ddpm"]["sample"]):
        part.pop("seeds", None)
    config.pop("observation_seeds")
    validate_config(copy.deepcopy(config), schema)
    validate(config, str(root / SCHEMA))
    assert config["dip"]["seeds"] == config["ddpm"]["sample"]["seeds"] == [0]
    assert config["ddpm"]["seeds"] == config["observation_seeds"] == [0]


def test_absent_checkpoints_are_named(config, schema):
    del config["ddpm"]["checkpoints"]
    assert "'ddpm.checkpoints' is required" in _error(config, schema)


# ---------------------------------------------------------------------- duplicates


@pytest.mark.parametrize(
    "key, edit",
    [
        ("dip.seeds", lambda c: c["dip"].update(seeds=[0, 0])),
        ("observation_seeds", lambda c: c.update(observation_seeds=[1, 0, 1])),
        ("ddpm.sample.lam", lambda c: c["ddpm"]["sample"].update(lam=[0.3333333, 0.33333334])),
        ("ddpm.sample.t0", lambda c: c["ddpm"]["sample"].update(t0=[50, 100, 50])),
        ("ddpm.sample.steps", lambda c: c["ddpm"]["sample"].update(steps=[10, 10])),
        ("ddpm.sample.prior_iters", lambda c: c["ddpm"]["sample"].update(prior_iters=[400, 400])),
        ("ddpm.generation.t0", lambda c: c["ddpm"]["generation"].update(t0=[300, 300])),
        ("ddpm.checkpoints", lambda c: c["ddpm"].update(checkpoints=[150, 150, 300])),
        ("dip.grid[0].archs", lambda c: c["dip"]["grid"][0]["archs"].append("skip")),
        (
            "earlystop.grid[0].sigma_max",
            lambda c: c["earlystop"]["grid"][0].update(sigma_max=[50, 50.0000001]),
        ),
        ("ddpm.modes", lambda c: c["ddpm"]["modes"].append({"mode": "truncated", "t_max": 300})),
    ],
)
def test_values_naming_one_grid_cell_twice_are_duplicates(config, schema, key, edit):
    edit(config)
    problems = _problems(_error(config, schema))
    assert len(problems) == 1 and problems[0].startswith(f"'{key}' lists ")
    assert "more than once" in problems[0]


def test_duplicate_message_shows_the_colliding_spellings(config, schema):
    config["ddpm"]["sample"]["lam"] = [0.25, 0.3333333, 0.33333334]
    message = _error(config, schema)
    assert "0.3333333, 0.33333334 all name '0.333333'" in message


# ------------------------------------------------------------------- all at once


def test_schema_and_cross_reference_problems_are_reported_together(config, schema):
    config["metrics"]["target_psnr"] = "high"  # schema: metrics
    config["dip"]["grid"][0]["archs"].append("unet")  # names: dip
    config["tasks"]["sr-x3"] = {"kind": "sr", "factor": 3}  # fit: dip + tasks + data
    config["ddpm"]["sample"]["task"] = "sr-x3"
    config["ddpm"]["sample"]["steps"] = [10, 10]  # duplicates
    message = _error(config, schema)
    assert "'metrics.target_psnr'" in message and "'unet'" in message
    assert "'tasks.sr-x3.factor'" in message and "'ddpm.sample.steps'" in message


def test_a_section_the_schema_rejects_is_not_cross_checked(config, schema):
    config["dip"]["grid"][0]["archs"] = "skip"  # a string, not a list
    problems = _problems(_error(config, schema))
    assert len(problems) == 1 and "'dip.grid[0].archs'" in problems[0]


def test_missing_kind_parameters_do_not_hide_the_other_checks(config, schema):
    config["tasks"]["inpaint-d50"].pop("drop")  # schema, but the structure is intact
    del config["earlystop"]["dataset"]  # likewise
    config["ddpm"]["sample"]["prior_arch"] = "skp"
    config["tasks"]["sr-x2"]["factor"] = 3
    problems = _problems(_error(config, schema))
    assert len(problems) == 4
    for key in ("tasks.inpaint-d50.drop", "earlystop.dataset", "ddpm.sample.prior_arch"):
        assert any(f"'{key}'" in p for p in problems), key
    assert any("'tasks.sr-x2.factor': 3" in p for p in problems)


def test_a_block_naming_what_does_not_exist_is_named(config, schema):
    config["ddpm"]["sample"]["blocks"] = [
        {"name": "arch", "task": "inpaint-d50", "prior_arch": ["skip", "encdc"]},
        {"name": "typo", "task": "denoise-s2", "prior_iters": [123]},
    ]
    message = _error(config, schema)
    assert "'ddpm.sample.blocks[0].prior_arch'" in message and "'encdc'" in message
    assert "'ddpm.sample.blocks[1].task'" in message and "denoise-s2" in message
    assert "'ddpm.sample.blocks[1].prior_iters' 123" in message


PRIOR_MODE = {
    "mode": "prior-p0.5",
    "t_max": 300,
    "prior": {
        "dataset": "cifar10-train",
        "task": "denoise-s25",
        "arch": "skip",
        "iters": 400,
        "share": 0.5,
    },
}


def _with_prior_mode(config, **changes):
    mode = copy.deepcopy(PRIOR_MODE)
    mode["prior"].update(changes.pop("prior", {}))
    mode.update(changes)
    config["ddpm"]["modes"].append(mode)
    return config


def test_a_prior_trained_mode_is_accepted_and_expands_to_its_cells(config, schema):
    validate_config(_with_prior_mode(config), schema)
    modes = {cell["mode"]: cell["t_max"] for cell in grid.train_cells(config)}
    assert modes["prior-p0.5"] == "300"
    training = [c for c in grid.dip_cells(config) if c["purpose"] == "training"]
    assert training == [grid.training_prior_cell(config, PRIOR_MODE)]
    assert training[0]["dataset"] == "cifar10-train" and training[0]["arch"] == "skip"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"prior": None}, "mode 'prior-p0.5' needs a 'prior'"),
        ({"mode": "truncated"}, "has a 'prior', so its name must start with 'prior-'"),
        ({"prior": {"dataset": "cifar10-test"}}, "must be a subset of the DDPM's training set"),
        ({"prior": {"iters": 300}}, "'ddpm.modes[2].prior.iters' 300 is not a DIP snapshot"),
        ({"prior": {"arch": "unet"}}, "ddpm.modes[2].prior.arch"),
    ],
)
def test_prior_trained_modes_name_priors_that_exist(config, schema, changes, message):
    if "prior" in changes and changes["prior"] is None:
        config = _with_prior_mode(config)
        del config["ddpm"]["modes"][-1]["prior"]
    else:
        config = _with_prior_mode(config, **changes)
    assert message in _error(config, schema)


def test_the_classifier_learns_and_is_tested_on_enough_labelled_cifar_images(config, schema):
    config["metrics"]["classifier"] = {"train": "cifar10-train", "test": "astronaut"}
    message = _error(config, schema)
    assert "'metrics.classifier.test' 'astronaut' must be a CIFAR-10 dataset" in message
    config["metrics"]["classifier"]["test"] = "cifar10-ref"  # 500 images
    message = _error(config, schema)
    assert "holds 500 images; the accuracy floor is measured on at least 2000" in message
    config["metrics"]["classifier"]["min_test_images"] = 500
    validate_config(config, schema)


def _with_prior_training(config, **changes):
    config["data"]["datasets"]["cifar10-train"]["n"] = 50000
    config["prior_training"] = {
        "steps": 40,
        "checkpoints": [10, 20, 40],
        "modes": [{"mode": "truncated", "t_max": 300}, copy.deepcopy(PRIOR_MODE)],
        "sample": {"task": "denoise-s25", "t0": [57], "steps": [5]},
    } | changes
    return config


def test_a_prior_training_comparison_is_accepted_and_expands_to_its_cells(config, schema):
    config = _with_prior_training(config)
    validate_config(config, schema)
    assert grid.training_runs(config)[40] == [10, 20, 40]
    assert {c["mode"] for c in grid.prior_training_train_cells(config)} == {
        "truncated",
        "prior-p0.5",
    }
    training = [c for c in grid.dip_cells(config) if c["purpose"] == "training"]
    assert training == [grid.training_prior_cell(config, PRIOR_MODE)]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"checkpoints": [10, 20]}, "'prior_training.checkpoints' [10, 20] must end at"),
        (
            {
                "sample": {
                    "task": "denoise-s25",
                    "t0": [57],
                    "steps": [5],
                    "blocks": [{"ckpt": [15]}],
                }
            },
            "'prior_training.sample.blocks[0].ckpt' [15] are not prior_training.checkpoints",
        ),
        (
            {"sample": {"task": "denoise-s25", "t0": [400], "steps": [5]}},
            "'prior_training.sample.blocks[0].t0' [400] exceed every model's t_max",
        ),
        (
            {"sample": {"task": "denoise-s52", "t0": [57], "steps": [5]}},
            "'prior_training.sample.task'",
        ),
    ],
)
def test_a_prior_training_comparison_is_checked(config, schema, changes, message):
    assert message in _error(_with_prior_training(config, **changes), schema)


def test_one_training_length_keeps_one_set_of_checkpoints(config, schema):
    steps = config["ddpm"]["steps"]
    config = _with_prior_training(config, steps=steps, checkpoints=[steps])
    assert "equals ddpm.steps but its checkpoints" in _error(config, schema)


def test_a_prior_mode_has_one_setting_in_both_mode_lists(config, schema):
    config = _with_prior_mode(config, prior={"share": 0.25})
    config = _with_prior_training(config)
    assert "is also in ddpm.modes with other settings" in _error(config, schema)


# ------------------------------------------------------- early stopping on several sets


CROPS64 = {
    "source": "skimage",
    "names": ["astronaut", "coffee"],
    "crops": {"size": 64, "per_image": 2},
}


def _earlystop_on_crops(config: dict, **keys) -> dict:
    config["data"]["datasets"]["crops64"] = copy.deepcopy(CROPS64)
    del config["earlystop"]["dataset"]
    config["earlystop"].update(datasets=["cifar10-test", "crops64"], **keys)
    return config


def test_the_tiny_loo_config_passes_every_check(root, schema):
    tiny_loo = yaml.safe_load((root / "tests" / "config" / "tiny-earlystop-loo.yaml").read_text())
    validate_config(tiny_loo, schema)


def test_earlystop_datasets_and_the_plain_fit_keys_are_accepted(root, config, schema):
    config = _earlystop_on_crops(
        config, run_past_peak=1000, max_iters=6000, wmv_windows=[50, 100, 200], loo=True
    )
    validate_config(copy.deepcopy(config), schema)
    validate(config, str(root / SCHEMA))
    assert {c["dataset"] for c in grid.earlystop_cells(config)} == {"cifar10-test", "crops64"}
    assert config["earlystop"]["loo_patiences"] == [200, 500, 1000]


def test_absent_plain_fit_keys_default_to_todays_fixed_length_fit(root, config):
    validate(config, str(root / SCHEMA))
    es = config["earlystop"]
    assert es["run_past_peak"] is None and es["max_iters"] is None and es["wmv_windows"] == []
    assert es["loo"] is False and "out" not in es


def test_dataset_and_datasets_exclude_each_other(config, schema):
    config["earlystop"]["datasets"] = ["cifar10-test"]
    problems = _problems(_error(config, schema))
    assert len(problems) == 1
    assert "'earlystop.dataset' and 'earlystop.datasets' exclude each other" in problems[0]


def test_earlystop_datasets_must_exist(config, schema):
    config = _earlystop_on_crops(config)
    config["earlystop"]["datasets"][1] = "crop64"
    message = _error(config, schema)
    assert "'earlystop.datasets' names dataset 'crop64'" in message
    assert "did you mean 'crops64'" in message


def test_each_earlystop_dataset_is_checked_against_the_architectures(config, schema):
    config = _earlystop_on_crops(config)
    config["data"]["datasets"]["crops64"]["crops"]["size"] = 16
    config["data"]["datasets"]["crops64"]["multiple"] = 16
    config["dip"]["archs"]["deep"] = {"kind": "skip", "depth": 5}
    config["earlystop"]["grid"][0]["archs"] = ["deep"]
    message = _error(config, schema)
    assert "'dip.archs.deep.depth'" in message and "'crops64'" in message
    assert "earlystop.grid[0]" in message


def test_earlystop_on_several_datasets_needs_denoising_tasks(config, schema):
    config = _earlystop_on_crops(config)
    config["earlystop"]["grid"][0]["tasks"] = ["inpaint-d50"]
    message = _error(config, schema)
    assert "'earlystop.grid[0].tasks': ['inpaint-d50'] are not denoising tasks" in message


def test_earlystop_grid_without_any_dataset_names_both_keys(config, schema):
    del config["earlystop"]["dataset"]
    message = _error(config, schema)
    assert "'earlystop.datasets'" in message


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"max_iters": 5000}, "'earlystop.max_iters' (5000) caps a run past the PSNR peak"),
        ({"run_past_peak": 100}, "'earlystop.run_past_peak' (100) needs 'earlystop.max_iters'"),
        # config.yaml: 5 stages x 40 iterations and a final 400: 560 at most; budgets 400.
        (
            {"run_past_peak": 100, "max_iters": 500},
            "'earlystop.max_iters' (500) is below the plain fit's least length 560",
        ),
    ],
)
def test_a_cap_belongs_to_a_run_past_the_peak_and_leaves_room_for_it(config, schema, keys, message):
    config["earlystop"].update(keys)
    problems = _problems(_error(config, schema))
    assert len(problems) == 1 and problems[0].startswith(message)


def test_a_cap_leaves_room_for_the_ablations_longest_fit(config, schema):
    """One plain fit serves the grid's cells and the ablations': 6 stages there make it
    5 x 40 + 400 = 600 iterations at least."""
    config["earlystop"].update(run_past_peak=0, max_iters=560)
    config["earlystop"]["ablations"] = {
        "tasks": ["denoise-s25"],
        "centre": {"arch": "skip", "schedule": "cosine", "stages": 5, "sigma_max": 50},
        "vary": {"stages": [6]},
    }
    problems = _problems(_error(config, schema))
    message = "'earlystop.max_iters' (560) is below the plain fit's least length 600"
    assert len(problems) == 1 and problems[0].startswith(message)


def test_a_cap_at_the_longest_fit_is_accepted(config, schema):
    config["earlystop"].update(run_past_peak=0, max_iters=560)
    validate_config(config, schema)


@pytest.mark.parametrize(
    "key, edit",
    [
        ("earlystop.wmv_windows", lambda es: es.update(wmv_windows=[50, 100, 50])),
        ("earlystop.loo_taus", lambda es: es.update(loo_taus=[1, 1.0])),
        ("earlystop.loo_patiences", lambda es: es.update(loo_patiences=[200, 200])),
        (
            "earlystop.datasets",
            lambda es: es.update(datasets=[es.pop("dataset"), "cifar10-test"]),
        ),
    ],
)
def test_earlystop_lists_name_each_value_once(config, schema, key, edit):
    edit(config["earlystop"])
    problems = _problems(_error(config, schema))
    assert len(problems) == 1 and problems[0].startswith(f"'{key}' lists ")


@pytest.mark.parametrize(
    "keys",
    [{"wmv_windows": [1]}, {"run_past_peak": -1, "max_iters": 600}, {"loo": "yes"}],
)
def test_the_schema_refuses_bad_plain_fit_and_loo_values(config, schema, keys):
    config["earlystop"].update(keys)
    assert "'earlystop." in _error(config, schema)


def test_the_reference_is_held_out_from_the_ddpm_training_split(config, schema):
    """It scores the generated images and is the memorisation test's held-out baseline."""
    config["data"]["datasets"]["cifar10-ref"]["split"] = "train"
    # The generation sources (training images) are then in the reference's split too, and
    # so is the classifier's training set (the whole split).
    problem, sources, fitted = _problems(_error(config, schema))
    assert sources.startswith("'ddpm.generation.dataset' 'cifar10-gen' and 'metrics.reference'")
    assert fitted.startswith(
        "'metrics.reference' 'cifar10-ref' and 'metrics.classifier.train' 'cifar10-train50k'"
    )
    assert problem.startswith(
        "'ddpm.dataset' 'cifar10-train' and 'metrics.reference' 'cifar10-ref' can share images "
        "(both drawn from the CIFAR-10 train split)"
    )
    assert "held-out baseline of the memorisation test" in problem
    assert problem.endswith("give one of them a dataset of the other split")


def test_a_config_that_generates_nothing_may_score_against_training_images(config, schema):
    config["data"]["datasets"]["cifar10-ref"]["split"] = "train"
    del config["ddpm"]["generation"]
    config["ddpm"]["sample"]["generate"] = 0
    # Nothing generated, nothing for the generation metrics' classifier to score either
    # (with it, the reference must still be held out from its training split).
    del config["metrics"]["classifier"]
    validate_config(config, schema)


def test_generation_sources_are_kept_out_of_the_reference(config, schema):
    """Sources within the DDPM's training split are the intended nesting; sources drawn
    from the reference's split would flatter KID and FID."""
    config["data"]["datasets"]["cifar10-gen"]["split"] = "test"
    (problem,) = _problems(_error(config, schema))
    assert problem.startswith(
        "'ddpm.generation.dataset' 'cifar10-gen' and 'metrics.reference' 'cifar10-ref' can "
        "share images (both drawn from the CIFAR-10 test split)"
    )
    assert "intended nesting" in problem


def test_one_non_cifar_set_cannot_be_both_training_set_and_reference(tiny, schema):
    tiny["data"]["datasets"]["photos"] = {"source": "skimage", "names": ["astronaut"]}
    tiny["ddpm"]["dataset"] = tiny["metrics"]["reference"] = "photos"
    (problem,) = _problems(_error(tiny, schema))
    assert "can share images (the same image set)" in problem
    assert problem.endswith("give one of them a dataset of other images")


def test_the_classifier_is_tested_and_scores_on_images_it_never_trained_on(config, schema):
    """Training on the split that holds the DDPM's training images and the generation
    sources is the intended nesting; its test set and the reference are held out."""
    datasets = config["data"]["datasets"]
    datasets["cifar10-test2k"] = {"source": "cifar10", "split": "test", "n": 2000}
    config["metrics"]["classifier"] = {"train": "cifar10-train", "test": "cifar10-test2k"}
    validate_config(copy.deepcopy(config), schema)
    datasets["cifar10-test2k"]["split"] = "train"
    (problem,) = _problems(_error(config, schema))
    assert problem.startswith(
        "'metrics.classifier.test' 'cifar10-test2k' and 'metrics.classifier.train' "
        "'cifar10-train' can share images"
    )
    assert "accuracy floor is measured on images it never trained on" in problem
    datasets["cifar10-test2k"]["split"] = "test"
    config["metrics"]["classifier"]["train"] = "cifar10-ref"
    problems = _problems(_error(config, schema))
    assert any(
        p.startswith("'metrics.reference' 'cifar10-ref' and 'metrics.classifier.train'")
        and "images the classifier was fitted to" in p
        for p in problems
    )


def test_the_default_run_scores_its_generation_with_the_studys_stored_classifier(root):
    """The default run's offline generation metrics reuse the study's committed classifier
    (same sets, same settings, its store), so it trains none; every generation setting has
    a score target, and the sets the metrics compare are disjoint where they must be."""
    default = load_config(root / "config" / "config.yaml", root / SCHEMA)
    study = load_config(root / "config" / "study.yaml", root / SCHEMA)
    classifier = default["metrics"]["classifier"]
    assert classifier == study["metrics"]["classifier"]
    for role in ("train", "test"):
        name = classifier[role]
        assert default["data"]["datasets"][name] == study["data"]["datasets"][name]
    store = root / classifier["store"]
    assert (store / "cifarnet.pt").is_file() and (store / "cifarnet.json").is_file()
    for kind in (grid.SAMPLE, grid.GENERATE):
        settings = grid.generation_settings(default, kind)
        targets = {grid.setting_path(kind, s, grid.GENERATION_SCORES) for s in settings}
        assert settings and len(targets) == len(settings), kind.name
    # DIP-started at t0 300 and 600 (full model) and 300 (truncated, t_max 300); from
    # noise at 10 and 25 steps.
    assert len(grid.generation_settings(default, grid.SAMPLE)) == 3
    assert len(grid.generation_settings(default, grid.GENERATE)) == 2
    assert _disjoint_set_errors(default) == []
    # The reference is the test split's, the classifier trained on the whole training split.
    datasets = default["data"]["datasets"]
    assert datasets[default["metrics"]["reference"]]["split"] == "test"
    train = datasets[classifier["train"]]
    assert (train["source"], train["split"], train["n"]) == ("cifar10", "train", 50000)
