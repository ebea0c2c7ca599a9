"""Example 2's ablations: one factor at a time around the centre, paired with it per image."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dipddpm import grid
from dipddpm.config import ConfigError, load_schema, validate_config
from dipddpm.earlystop.ablations import ablation_markdown, ablation_table

ROOT = Path(__file__).resolve().parents[1]
ABLATIONS = {
    "tasks": ["denoise-s25"],
    "obs_seeds": [0],
    "centre": {"arch": "skip", "schedule": "cosine", "stages": 2, "sigma_max": 50},
    "vary": {"schedules": ["geometric", "cosine"], "stages": [3], "archs": ["convdecoder"]},
}


@pytest.fixture
def tiny() -> dict:
    config = yaml.safe_load((ROOT / "tests" / "config" / "tiny.yaml").read_text())
    config["observation_seeds"] = [0, 1]
    config["earlystop"]["ablations"] = copy.deepcopy(ABLATIONS)
    return config


def test_one_factor_at_a_time_around_the_centre(tiny):
    validate_config(tiny, load_schema(ROOT / "workflow/schemas/config.schema.yaml"))
    cells = grid.earlystop_ablation_cells(tiny)
    settings = [(c["arch"], c["es_schedule"], c["stages"]) for c in cells]
    # The centre, then each other value (cosine, the centre's own, is not repeated).
    assert settings == [
        ("skip", "cosine", "2"),
        ("skip", "geometric", "2"),
        ("skip", "cosine", "3"),
        ("convdecoder", "cosine", "2"),
    ]
    assert {c["obs_seed"] for c in cells} == {"0"}
    # The centre cell is the main grid's cell of the same identity: computed once.
    assert cells[0] in grid.earlystop_cells(tiny)
    assert grid.earlystop_cells(tiny) != cells  # the grid itself is unchanged
    assert [grid.ablation_factor(ABLATIONS, c) for c in cells] == [
        "centre",
        "schedules",
        "stages",
        "archs",
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a["centre"].update(arch="nope"), "earlystop.ablations.centre.arch"),
        (lambda a: a.update(tasks=["inpaint-d50"]), "are not denoising tasks"),
        (lambda a: a.update(obs_seeds=[7]), "'earlystop.ablations.obs_seeds': [7]"),
        (lambda a: a["vary"].update(patiences=[-1]), "'earlystop.ablations.vary.patiences[0]'"),
    ],
)
def test_bad_ablations_are_refused_by_key(tiny, change, message):
    change(tiny["earlystop"]["ablations"])
    with pytest.raises(ConfigError) as info:
        validate_config(tiny, load_schema(ROOT / "workflow/schemas/config.schema.yaml"))
    assert message in str(info.value)


def test_patience_cells_vary_the_stage_patience_and_share_the_centres_plain_fit(tiny):
    """A centre without a patience is at the default 20; the patience cells differ from it
    in their path's patience only, and all read the one plain fit, which has none."""
    tiny["earlystop"]["ablations"]["vary"] = {"patiences": [0, 20, 5]}
    validate_config(tiny, load_schema(ROOT / "workflow/schemas/config.schema.yaml"))
    cells = grid.earlystop_ablation_cells(tiny)
    assert [c["stage_patience"] for c in cells] == ["20", "0", "5"]
    ablations = tiny["earlystop"]["ablations"]
    factors = [grid.ablation_factor(ablations, c) for c in cells]
    assert factors == ["centre", "patiences", "patiences"]
    paths = [grid.EARLYSTOP.path(c) for c in cells]
    assert paths[1:] == [grid.EARLYSTOP.path({**cells[0], "stage_patience": p}) for p in (0, 5)]
    assert [grid.parse(path)["stage_patience"] for path in paths] == ["20", "0", "5"]
    plain = {grid.EARLYSTOP_PLAIN.path(grid.plain_fit_of(c)) for c in cells}
    assert len(plain) == 1 and "stage_patience" not in grid.parse(plain.pop())
    assert grid.plain_fit_of(cells[0]) in grid.earlystop_plain_cells(tiny)


def _rows(
    schedule: str, psnrs: list[float], gaps: list[float], patience: str = "20"
) -> pd.DataFrame:
    rows = []
    for rule, shift in (("progressive", 0.0), ("progressive_oracle", 0.5)):
        for image, (psnr, gap) in enumerate(zip(psnrs, gaps, strict=True)):
            rows.append(
                dict(dataset="d", task="denoise-s25", obs_seed="0", dip_seed="0", image=image)
                | dict(arch="skip", es_schedule=schedule, stages="2", sigma_max="50")
                | dict(stage_patience=patience)
                | dict(rule=rule, psnr=psnr + shift, gap_plain_db=gap, stop_iter=100)
            )
    return pd.DataFrame(rows)


def test_the_table_pairs_each_setting_with_the_centre_per_image():
    ablations = {**ABLATIONS, "vary": {"schedules": ["geometric"]}}
    frame = pd.concat(
        [
            _rows("cosine", [25.0, 26.0, 27.0, 28.0], [0.1, 0.2, 0.9, 0.3]),
            _rows("geometric", [25.5, 26.5, 27.5, 28.0], [0.0, 0.0, 0.4, 0.3]),
        ],
        ignore_index=True,
    )
    table = ablation_table(frame, ablations)
    centre, geometric = table.iloc[0], table.iloc[1]
    assert centre["verdict"] == "reference" and centre["n"] == 4
    assert centre["within_0_5db"] == 0.75
    assert centre["run_peak_psnr"] == pytest.approx(27.0)
    assert geometric["diff_vs_centre"] == pytest.approx((0.5 + 0.5 + 0.5 + 0.0) / 4)
    assert geometric["gap_plain_db"] == pytest.approx(0.7 / 4)
    assert "es_schedule = geometric" in ablation_markdown(table)


def test_the_table_has_a_patiences_row_for_cells_of_another_patience():
    ablations = {**ABLATIONS, "centre": {**ABLATIONS["centre"], "patience": 20}}
    ablations["vary"] = {"patiences": [5]}
    frame = pd.concat(
        [
            _rows("cosine", [25.0, 26.0, 27.0], [0.2, 0.2, 0.2]),
            _rows("cosine", [24.0, 25.0, 26.5], [1.2, 1.2, 0.7], patience="5"),
        ],
        ignore_index=True,
    )
    table = ablation_table(frame, ablations)
    assert table["factor"].tolist() == ["centre", "patiences"]
    centre, short = table.iloc[0], table.iloc[1]
    assert centre["setting"].endswith("stage_patience = 20")
    assert short["setting"] == "stage_patience = 5" and short["n"] == 3
    assert short["diff_vs_centre"] == pytest.approx(-2.5 / 3)
    assert short["gap_plain_db"] == pytest.approx(3.1 / 3)
