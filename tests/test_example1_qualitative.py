"""Example 1's qualitative figure: the images shown, the panels and the figure file."""

from __future__ import annotations

import numpy as np
import pytest

from dipddpm import grid
from dipddpm.config import load_config
from dipddpm.example1_qualitative import (
    Block,
    Column,
    build_panels,
    evaluation_images,
    find_checkpoint,
    find_input,
    image_label,
    plan_cells,
    qualitative_figure,
    qualitative_plan,
    spread,
)
from dipddpm.metrics import psnr


def test_the_images_shown_are_evaluation_images_spread_over_the_set():
    chosen = evaluation_images(32, 4)
    assert chosen == [1, 11, 21, 31]
    assert not [i for i in chosen if i % 4 == 0]
    assert evaluation_images(32, 4) == chosen  # deterministic
    # Every evaluation image when there are too few; none is ever a tuning image.
    assert evaluation_images(6, 3) == [1, 2, 4, 5]
    assert all(i % 3 for i in evaluation_images(100, 3, count=7))
    assert evaluation_images(5, 0, count=2) == [0, 4]  # no tuning split
    with pytest.raises(ValueError):
        evaluation_images(8, 4, count=0)


def test_spread_keeps_the_ends_and_the_rank_order():
    assert spread([250, 0, 10, 20, 33, 57, 80, 115, 150], 5) == [0, 20, 57, 115, 250]
    assert spread([5, 1], 5) == [1, 5]


def _columns(rng):
    clean = rng.uniform(0.2, 0.8, size=(6, 3, 4, 4)).astype(np.float32)
    noisy = np.clip(clean + rng.normal(0, 0.1, size=clean.shape), 0, 1).astype(np.float32)
    small = clean[:, :, ::2, ::2]  # an SR observation: shown small, scored on its upsampling
    columns = [
        Column("observation", small, scored=noisy),
        Column("DIP 100 it", clean * 0.9),
        Column("DDPM", noisy),
        Column("clean", clean, reference=True),
    ]
    return clean, noisy, columns


def test_panels_keep_the_column_order_and_score_each_chosen_image():
    clean, noisy, columns = _columns(np.random.default_rng(0))
    panels = build_panels(columns, clean, [1, 5])
    assert [p.title for p in panels] == ["observation", "DIP 100 it", "DDPM", "clean"]
    assert panels[0].images.shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(panels[1].images, (clean * 0.9)[[1, 5]])
    assert panels[0].psnr == pytest.approx([psnr(noisy[1], clean[1]), psnr(noisy[5], clean[5])])
    assert panels[2].psnr == panels[0].psnr
    # 0.9 x clean: the error is 0.1 x clean, so PSNR = -10 log10(mean((0.1 clean)^2)).
    expected = [-10 * np.log10(np.mean((0.1 * clean[i].astype(np.float64)) ** 2)) for i in (1, 5)]
    assert panels[1].psnr == pytest.approx(expected, abs=1e-4)
    assert panels[3].psnr is None


def test_a_column_of_another_size_or_count_is_refused():
    clean, _, _ = _columns(np.random.default_rng(1))
    with pytest.raises(ValueError, match="scored on shape"):
        build_panels([Column("small", clean[:, :, ::2, ::2])], clean, [0])
    with pytest.raises(ValueError, match="holds 5 images"):
        build_panels([Column("short", clean[:5])], clean, [0])


def test_the_figure_is_written_as_png_and_pdf(tmp_path):
    clean, _, columns = _columns(np.random.default_rng(2))
    indices = [1, 2]
    blocks = [
        Block(
            "task A",
            [image_label(i, f"set/test/cat/{i}.jpg") for i in indices],
            build_panels(columns, clean, indices),
        ),
        Block(
            "task B", [image_label(i) for i in indices], build_panels(columns[1:], clean, indices)
        ),
    ]
    paths = qualitative_figure(blocks, tmp_path / "qualitative")
    assert [p.name for p in paths] == ["qualitative.png", "qualitative.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert image_label(3, "cifar10-jpeg/test/bird/0511.jpg") == "image 3\nbird"


def test_the_study_plan_shows_the_study_cells(root):
    study = load_config(
        root / "config" / "study.yaml", root / "workflow" / "schemas" / "config.schema.yaml"
    )
    plan = qualitative_plan(study)
    assert [b["task"] for b in plan] == list(study["ddpm"]["sample"]["task"])
    cells = {tuple(c.items()) for c in grid.sample_cells(study)}
    assert all(tuple(c.items()) in cells for c in plan_cells(plan))
    t0 = {b["task"]: [c["cell"]["t0"] for c in b["samples"][:-1]] for b in plan}
    assert t0["denoise-s25"] == ["0", "57", "115"]  # the prior, sigma-matched, about 2x
    assert t0["denoise-s50"] == ["0", "115", "250"]
    assert t0["inpaint-d50"] == ["0", "20", "57", "115", "250"]
    alone = {b["task"]: b["samples"][-1]["cell"] for b in plan}
    assert alone["denoise-s15"]["start"] == "obs" and alone["denoise-s15"]["mode"] == "truncated"
    assert alone["sr-x2"]["start"] == "noise" and alone["sr-x2"]["mode"] == "full"
    for block in plan:
        for column in block["samples"]:
            cell = column["cell"]
            assert (cell["sampler"], cell["eta"], cell["k"], cell["lam"]) == ("ddim", "0", "1", "0")
            assert cell["steps"] == "25" and cell["obs_seed"] == "0"
            # The truncated model wherever it reaches the start step.
            reach = cell["start"] != "noise" and (cell["t0"] == "sigma" or int(cell["t0"]) <= 150)
            assert cell["mode"] == ("truncated" if reach else "full")
        assert block["dip_iters"] == [100, 200, 400, 600]
        assert block["prior"]["arch"] == "skip"


def test_inputs_are_found_by_their_cell_in_a_run_or_a_store():
    cell = {"dataset": "d", "task": "t", "obs_seed": "0"}
    other = {**cell, "obs_seed": "1"}
    paths = [grid.OBSERVATION.path(c, "degraded.npz") for c in (cell, other)]
    assert find_input(paths, cell, "observation") == paths[0]
    with pytest.raises(ValueError, match="0 observation files"):
        find_input(paths[1:], cell, "observation")
    model = {
        "train_dataset": "x",
        "preset": "tiny",
        "schedule": "linear",
        "mode": "truncated",
        "t_max": "150",
        "train_steps": "10",
        "train_seed": "0",
    }
    full = {**model, "mode": "full", "t_max": "1000"}
    stored = [
        grid.stored_checkpoint_path({**m, "ckpt": c}, "results/study/models")
        for m in (model, full)
        for c in (5, 10)
    ]
    assert find_checkpoint(stored, {**full, "ckpt": "10"}) == stored[3]
