"""The configuration is checked before any job starts, with messages naming the key."""

import copy
import subprocess
import sys

import pytest
import yaml

from dipddpm.config import ConfigError, load_schema, validate_config


@pytest.fixture(scope="module")
def schema(root):
    return load_schema(root / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture(scope="module")
def default_config(root):
    return yaml.safe_load((root / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(root, schema, name):
    validate_config(yaml.safe_load((root / "config" / name).read_text()), schema)


def _error(config, schema) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, schema)
    return str(info.value)


def test_unknown_key_is_named_with_allowed_keys(default_config, schema):
    config = copy.deepcopy(default_config)
    config["dip"]["learning_rate"] = 0.1
    message = _error(config, schema)
    assert "'learning_rate'" in message and "under 'dip'" in message
    assert "lr" in message and "reg_noise_std" in message  # allowed keys are listed


def test_wrong_type_names_key(default_config, schema):
    config = copy.deepcopy(default_config)
    config["dip"]["iters"] = "many"
    message = _error(config, schema)
    assert "'dip.iters'" in message and "wrong type" in message and "integer" in message


def test_out_of_range_value_names_bound(default_config, schema):
    config = copy.deepcopy(default_config)
    config["tasks"]["denoise-s25"]["sigma"] = 300
    message = _error(config, schema)
    assert "'tasks.denoise-s25.sigma'" in message and "<= 255" in message


def test_bad_enum_lists_allowed_values(default_config, schema):
    config = copy.deepcopy(default_config)
    config["data"]["cifar10"]["source"] = "ftp"
    message = _error(config, schema)
    assert "'data.cifar10.source'" in message
    for allowed in ("auto", "torchvision", "archive", "folder"):
        assert allowed in message


def test_undefined_architecture_in_grid(default_config, schema):
    config = copy.deepcopy(default_config)
    config["dip"]["grid"][0]["archs"].append("unet")
    message = _error(config, schema)
    assert "dip.grid[0].archs" in message and "'unet'" in message and "skip" in message


def test_t0_beyond_every_model(default_config, schema):
    config = copy.deepcopy(default_config)
    config["ddpm"]["modes"] = [{"mode": "truncated", "t_max": 300}]
    config["ddpm"]["sample"]["t0"] = [100, 900]
    message = _error(config, schema)
    assert "ddpm.sample.t0" in message and "[900]" in message and "t_max" in message


def test_every_problem_is_reported_at_once(default_config, schema):
    config = copy.deepcopy(default_config)
    config["dip"]["lr"] = -1
    config["ddpm"]["T"] = 1
    message = _error(config, schema)
    assert "'dip.lr'" in message and "'ddpm.T'" in message


def test_snakemake_stops_before_any_job(root, tmp_path):
    """A bad value on the command line ends the dry run with the key in the message."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", "device=tpu"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "'device'" in result.stderr + result.stdout
    assert "auto, cpu, cuda" in result.stderr + result.stdout


def test_architecture_parameters_are_checked_per_kind(default_config, schema):
    config = copy.deepcopy(default_config)
    config["dip"]["archs"]["resnet"]["skip_channels"] = 4
    message = _error(config, schema)
    assert "'dip.archs.resnet'" in message and "skip_channels" in message
    assert "blocks" in message  # the allowed parameters are listed
