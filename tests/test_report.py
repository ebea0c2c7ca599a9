"""Report generation from small tables, and figures that never crash on missing data."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from dipddpm import aggregate as agg
from dipddpm import figures as fg
from dipddpm import grid
from dipddpm.report import render_report, scale_name, write_report

MODEL = {
    "train_dataset": "cifar10-train",
    "preset": "tiny",
    "schedule": "linear",
    "mode": "truncated",
    "t_max": 300,
    "train_steps": 300,
    "train_seed": 0,
    "ckpt": 300,
    "sampler": "ddim",
    "eta": 0,
    "lam": 0,
    "window": None,
    "k": 1,
    "sample_seed": 0,
}
OBSERVATION = {
    "purpose": "restoration",
    "dataset": "cifar10-test",
    "task": "denoise",
    "obs_seed": 0,
}
PRIOR = {"arch": "unet", "iters": 500, "dip_seed": 0}


def _cells(combo_psnr: float) -> pd.DataFrame:
    """Per-image rows of every method, stamped as the stages stamp them; DIP+DDPM's level is
    set by the test."""
    frames = []

    def add(cell, method, rows):
        frames.append(grid.stamp(pd.DataFrame(rows), {**OBSERVATION, **cell}, method))

    jitter = [0.1 * image for image in range(3)]
    add(
        PRIOR,
        "dip",
        [
            dict(stage="dip", iters=500, image=i, psnr=25.0 + j, ssim=0.8, peak_psnr=26.0)
            for i, j in enumerate(jitter)
        ],
    )
    for steps in (10, 50):
        extra = 1.0 if steps == 50 else 0.0
        for method, start, t0, base, nfe in (
            ("ddpm-noise", "noise", 300, 15.0, steps),
            ("ddpm-obs", "obs", "sigma", 21.0, steps),
            ("dip+ddpm", "dip", 30, combo_psnr, int(0.3 * steps)),
        ):
            prior = PRIOR if start == "dip" else {}
            cell = {**MODEL, **prior, "start": start, "t0": t0, "steps": steps}
            add(
                cell,
                method,
                [
                    dict(stage="ddpm", nfe=nfe, image=i, psnr=base + extra + j, ssim=0.6)
                    for i, j in enumerate(jitter)
                ],
            )
    return pd.concat(frames, ignore_index=True)


def _tables(combo_psnr: float, fid_available: bool) -> dict[str, pd.DataFrame]:
    fid = pd.DataFrame(
        [
            grid.full_identity(
                {
                    **MODEL,
                    "purpose": "generation",
                    "mode": "full",
                    "t_max": 1000,
                    "start": "noise",
                    "t0": 1000,
                    "steps": s,
                },
                "ddpm-noise",
            )
            | dict(
                fid=60.0 / s if fid_available else np.nan,
                kid_mean=0.01,
                kid_std=0.001,
                n_samples=32,
                available=fid_available,
                reason="" if fid_available else "no internet and no local weights at /w.pth",
            )
            for s in (10, 50)
        ]
    )
    curves = pd.concat(
        [
            grid.stamp(
                pd.DataFrame(
                    [
                        dict(step=s, loss=1.0 / s, images_per_s=10.0, eval_psnr=p + s / 100)
                        for s in (100, 200, 300)
                    ]
                ),
                {**MODEL, "purpose": "training", "mode": m, "t_max": t},
            )
            for m, t, p in (("full", 1000, 15.0), ("truncated", 200, 18.0))
        ]
    )
    stops = grid.stamp(
        pd.DataFrame(
            {
                "rule": ["wmv", "wmv", "patience", "patience"],
                "image": [0, 1, 0, 1],
                "gap_plain_db": [0.2, 0.4, 1.5, 2.5],
                "within_1db": [1, 1, 0, 0],
                "iter_gap": [20, 40, 300, 500],
            }
        ),
        {**OBSERVATION, **PRIOR},
        "earlystop",
    )
    return agg.build_tables(_cells(combo_psnr), curves, fid, stops, 24.0, 20.0)


CONFIG = {"scale": "cpu", "seeds": [0, 1], "dip": {"arch": ["unet"], "iters": [500]}}


def _assert_clean(text: str) -> None:
    for banned in ("TODO", "placeholder", "nan dB", "XXX", "TBD"):
        assert banned.lower() not in text.lower(), banned
    assert not re.search(r"\bnan\b", text, flags=re.IGNORECASE)


def test_report_has_every_section_and_numbers_from_the_tables(tmp_path):
    tables = _tables(combo_psnr=26.0, fid_available=True)
    figures = {"quality_vs_steps": str(tmp_path / "figures/quality_vs_steps.png")}
    out = write_report(
        tables, figures, CONFIG, "abc1234", tmp_path / "report.md", cells=_cells(26.0)
    )
    text = out.read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Abstract",
        "## Methods",
        "## Experiments",
        "## Ablations",
        "## Limitations",
        "## Appendix: reproducibility",
    ]
    for title in (
        "Method comparison",
        "Steps to quality",
        "FID and KID",
        "full vs truncated",
        "by architecture",
        "Early-stopping",
        "Example 1: Formulation",
    ):
        assert title in text
    assert "CPU default" in text and "abc1234" in text and "iters: [500]" in text
    # Without early-stopping cells in the config, Methods has no Example 2 formulation.
    assert "Example 2: Formulation" not in text
    # The configuration dump is in the appendix, after every result.
    assert text.index("iters: [500]") > text.index("## Appendix: reproducibility")
    # Paired claims from the per-image rows: DIP+DDPM at 50 steps = 27.0 + jitter against
    # its own prior (25.0 + the same jitter) on the same three images.
    combo = "DIP+DDPM (t0=30, prior unet-i500) · truncated-t300 · ddim eta=0 · 50 steps"
    assert f"the best DIP+DDPM setting ({combo}) vs its own DIP prior: +2.00 dB" in text
    assert "[+2.00, +2.00], n = 3, helps" in text
    assert "vs DIP alone (unet, 500 iterations) (its own prior): PSNR +2.00 dB" in text
    assert "24.00 dB was first reached by DIP+DDPM (t0=30, prior unet-i500)" in text
    assert "averages over the seeds listed" in text
    assert "lowest FID was 1.20 for DDPM from noise · full-t1000 · ddim eta=0 at 50 steps" in text
    assert "truncated training (t_max=200) needed 200 steps" in text
    assert "wmv stops 0.30 dB [-0.97, 1.57] below the plain-DIP oracle" in text
    assert "![quality_vs_steps](figures/quality_vs_steps.png)" in text
    assert "*Figure 1:" in text
    _assert_clean(text)


def test_report_says_when_the_combination_does_not_help_and_fid_is_unavailable(tmp_path):
    tables = _tables(combo_psnr=22.0, fid_available=False)
    text = render_report(
        tables, {}, {"scale": "full"}, "deadbee", tmp_path / "report.md", cells=_cells(22.0)
    )
    assert "full grid" in text
    assert "(its own prior): PSNR -2.00 dB [-2.00, -2.00]" in text
    assert "n = 3 images, one seed of each kind): hurts" in text
    assert "FID/KID unavailable: no internet and no local weights at /w.pth" in text
    # Said once: the table's note would repeat the findings' reason.
    assert text.count("no local weights at /w.pth") == 1
    assert "No figures were produced" in text
    _assert_clean(text)


GENERATION_SECTION = """## Generation from DIP priors and from noise

**Answer**: DIP-started samples have a lower KID than samples from noise at 25 NFE.

![KID and diversity against NFE and seconds](generation_curves.png)

### Formulation

$$x_{t_0} = \\sqrt{\\bar\\alpha_{t_0}}\\, x_{\\mathrm{dip}}$$

### Every setting

| start | NFE | KID |
|:------|----:|----:|
| dip   |  25 | 0.012 |
| noise |  25 | 0.031 |
"""


def test_the_offline_generation_section_leads_and_inception_is_said_once(tmp_path):
    """With metrics.classifier the generation part's section is the Generation section's
    body: a heading level down, its own title dropped, its links relative to the report;
    Inception FID/KID follows under its table's title, its unavailable reason said once."""
    from dipddpm.stages.report import generation_part

    folder = tmp_path / "results" / "generation"
    folder.mkdir(parents=True)
    (folder / "generation.md").write_text(GENERATION_SECTION)
    scores = pd.DataFrame([{"method": "dip+ddpm", "kid_cifarnet": 0.012}])
    scores.to_csv(folder / "generation.csv", index=False)
    out = tmp_path / "results" / "report" / "report.md"
    names = ("generation_metrics.csv", "generation.csv", "generation.md")
    part = generation_part([str(folder / name) for name in names], out)
    assert set(part) == {"generation", "generation_scores"}
    config = CONFIG | {"metrics": {"classifier": {"train": "a", "test": "b"}}}
    tables = _tables(combo_psnr=26.0, fid_available=False)
    text = render_report(tables, {}, config, "0", out, cells=_cells(26.0), **part)
    start = text.index("### Generation (sample-quality metrics only)")
    body = text[start : text.index("### Example 2")]
    assert "## Generation from DIP priors" not in body
    assert "\n#### Formulation\n" in body and "\n#### Every setting\n" in body
    assert "](../generation/generation_curves.png)" in body
    inception = body.index("#### Sample quality: Inception FID and KID")
    assert body.index("**Answer**: DIP-started") < body.index("| noise |  25 | 0.031 |") < inception
    assert text.count("no local weights at /w.pth") == 1
    assert body.index("FID/KID unavailable") > inception
    # The offline metrics are this run's now, not a section only the study produces.
    assert "make study PART=generation" not in text
    _assert_clean(text)


def test_scores_without_a_section_are_a_table_of_their_own(tmp_path):
    """Settings from noise only (no DIP-started setting, so no section): their scores."""
    scores = pd.DataFrame(
        [
            {
                "method": "ddpm-noise",
                "mode": "full",
                "t0": 1000,
                "steps": s,
                "n_seeds": 1,
                "n_per_seed": 16,
                "kid_cifarnet": 0.05 / s,
                "kid_cifarnet_ci_low": 0.04 / s,
                "kid_cifarnet_ci_high": 0.06 / s,
                "diversity_all_feature": 3.5,
                "coverage_entropy_normalised": 0.8,
                "score_seconds": 4.0,
            }
            for s in (10, 25)
        ]
    )
    tables = _tables(combo_psnr=26.0, fid_available=True)
    text = render_report(tables, {}, CONFIG, "0", tmp_path / "r.md", generation_scores=scores)
    body = text[text.index("### Generation") : text.index("### Example 2")]
    assert "#### Offline generation metrics (KID on CIFAR-10 classifier features)" in body
    assert "| ddpm-noise |" in body and "KID low" in body and "score_seconds" not in body
    assert body.index("Offline generation metrics") < body.index("Inception FID and KID")
    _assert_clean(text)


def test_report_with_no_results_at_all_still_reads_cleanly(tmp_path):
    empty = agg.build_tables(pd.DataFrame())
    text = render_report(empty, {}, {}, "0000000", tmp_path / "report.md")
    assert "no DIP+DDPM restoration cell ran" in text
    assert "No restoration results were available" in text
    assert "FID was not computed" in text
    assert "no `scale` key" in text
    _assert_clean(text)


def test_report_names_the_sections_only_the_study_config_produces(tmp_path):
    empty = agg.build_tables(pd.DataFrame())
    text = render_report(empty, {}, {"scale": "cpu"}, "0000000", tmp_path / "report.md")
    assert "`config/study.yaml` does:" in text
    for part in ("example1", "prior_training", "earlystop_loo", "generation"):
        assert f"make study PART={part}" in text
    study = {"scale": "study", "example1": {"out": "x"}, "prior_training": {"steps": 1}}
    study |= {"earlystop": {"loo": True}, "metrics": {"classifier": {"floor": 0.6}}}
    assert "`config/study.yaml` does:" not in render_report(empty, {}, study, "0", "r.md")


@pytest.mark.parametrize("scale, name", [("cpu", "CPU default"), ("full", "full grid")])
def test_scale_names(scale, name):
    assert scale_name({"scale": scale}) == name


def test_figures_are_written_as_png_and_pdf_with_data(tmp_path):
    cells = _cells(26.0)
    trajectory = pd.DataFrame(
        [
            dict(
                image=i,
                arch="unet",
                iteration=it,
                psnr_clean=20 + it / 100 - (it / 300) ** 2,
                wmv=1.0 / (it + 1),
            )
            for i in range(2)
            for it in range(0, 600, 50)
        ]
    )
    stops = pd.DataFrame(
        {
            "image": [0, 1],
            "rule": ["wmv", "wmv"],
            "stop_iter": [150, 200],
            "oracle_iter": [150, 150],
            "gap_plain_db": [0.0, 0.1],
        }
    )
    images = np.random.default_rng(0).random((3, 3, 8, 8)).astype(np.float32)
    written = [
        *fg.quality_vs_steps(cells, tmp_path / "q"),
        *fg.dip_trajectories(trajectory, tmp_path / "traj"),
        *fg.dip_t0_heatmap(cells, tmp_path / "heat"),
        *fg.qualitative_grid(
            {"clean": images, "DIP": images[:, :1], "DDPM": None}, tmp_path / "grid", indices=[0, 2]
        ),
        *fg.earlystop_curves(trajectory, stops, tmp_path / "es"),
        *fg.gap_distribution(stops, tmp_path / "gap"),
    ]
    assert len(written) == 12
    for path in written:
        assert path.stat().st_size > 1000
    assert {p.suffix for p in written} == {".png", ".pdf"}


def test_figures_degrade_to_a_no_data_figure(tmp_path):
    empty = pd.DataFrame()
    calls = {
        "q": lambda stem: fg.quality_vs_steps(empty, stem),
        "traj": lambda stem: fg.dip_trajectories(pd.DataFrame({"iteration": [1]}), stem),
        "heat": lambda stem: fg.dip_t0_heatmap(_cells(26.0).drop(columns=["t0"]), stem),
        "fid": lambda stem: fg.fid_vs_steps(
            pd.DataFrame({"available": [False], "reason": ["no weights"], "fid": [np.nan]}), stem
        ),
        "train": lambda stem: fg.training_curves(empty, stem),
        "grid": lambda stem: fg.qualitative_grid({"clean": None}, stem),
        "es": lambda stem: fg.earlystop_curves(empty, empty, stem),
        "gap": lambda stem: fg.gap_distribution(empty, stem),
    }
    for name, call in calls.items():
        paths = call(tmp_path / name)
        assert [p.name for p in paths] == [f"{name}.png", f"{name}.pdf"]
        assert all(p.is_file() for p in paths)


def test_the_recorded_config_names_paths_relative_to_the_repository(tmp_path):
    from dipddpm.stages.report import relative_paths

    repo = tmp_path / "repo"
    config = {
        "data": {"cifar10": {"path": str(tmp_path / "shared" / "c-{split}.tar.gz")}},
        "tasks": [{"mask": str(repo / "masks" / "m.png")}],
        "n": 3,
        "rel": "a/b",
    }
    got = relative_paths(config, repo)
    assert got["data"]["cifar10"]["path"] == "../shared/c-{split}.tar.gz"
    assert got["tasks"][0]["mask"] == "masks/m.png"
    assert got["n"] == 3 and got["rel"] == "a/b"


def test_methods_carry_example2_formulation_with_the_configured_stage_noises(tmp_path):
    config = {
        **CONFIG,
        "earlystop": {
            "noise": "fresh",
            "iters_per_stage": 40,
            "final_iters": 400,
            "grid": [{"schedules": ["geometric"], "stages": [5], "sigma_max": [50]}],
        },
    }
    tables = _tables(combo_psnr=26.0, fid_available=True)
    out = write_report(tables, {}, config, "abc1234", tmp_path / "report.md", cells=_cells(26.0))
    text = out.read_text()
    methods = text[text.index("## Methods") : text.index("## Experiments")]
    assert "### Example 2: Formulation" in methods
    # The same template as the study's section, with this config's stage noise levels.
    assert "| geometric K=5 smax=50 | 50, 25, 12.5, 6.25, 0" in methods
    assert "`progressive`\n(`stage_end`)" in methods
    assert "{{" not in methods
