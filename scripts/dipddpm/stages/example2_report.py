"""Example 2's report section: the refits of the example images and the section itself.

The early-stopping cells keep the progressive run's outputs at its stop only, and the
plain fit's none, so the crops figure needs refits. Both are checked against the cells
they reproduce (``example2_report.check_reproduced``, at most 1e-3 dB at any iteration)
and fail loudly when they do not:

``refit_plain``        the plain DIP of the example images only (``example2_report.
                       example_images``: the first crop of each photograph, in the example
                       fits of ``example2_report.example_cells``), up to the largest stop a
                       rule picked on them, with the EMA output at every stop. On the CPU a
                       DIP fit of an image does not depend on the images fitted with it
                       (``dip.fit``), so the images are refitted alone.
``refit_progressive``  the progressive run of the same images in each example fit's first
                       progressive setting. A run's images reset each other's backtracking
                       when one of them ends a noisy stage; the refit replays the cell's
                       resets (``CellResets``), so the images are refitted alone there too.
                       Outputs at the end of each noisy stage and at the stop.
``write_example2``     the section (``example2_report.example2_section``) and its figures.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import example2_figures, example2_report, grid, metrics
from ..dip.fit import DIPFitter, fit_dip
from ..earlystop.progressive import fit_progressive
from ..earlystop.progressive_variant import RULE_DEFAULTS, reset_backtracking
from ..earlystop.rules import ProgressiveSureRule
from ..earlystop.targets import stage_sigmas, stage_targets_for
from ..io import load_json, load_npz, save_csv, save_npz, save_text
from ..operators import Operator
from .earlystop_loo import CASE_COLUMNS, GROUP, LooCell, load_cells, photo_of, progressive_rule

log = logging.getLogger("dipddpm")

CPU = torch.device("cpu")
PLAIN_COLUMNS = [
    *CASE_COLUMNS,
    "example",
    "image",
    "stop_iter",
    "rules",
    "psnr_cell",
    "psnr_refit",
    "psnr_output",
    "output_diff_db",
    "max_abs_diff_db",
    "output",
]
PROGRESSIVE_COLUMNS = [
    *CASE_COLUMNS,
    "image",
    "rule",
    "point",
    "stage",
    "sigma_k",
    "iteration",
    "psnr",
    "max_abs_diff_db",
    "output",
]


# ------------------------------------------------------------------------- shared


def _observation(cell: LooCell, degraded: Sequence[str]) -> tuple[dict, dict]:
    """The cell's observation arrays and task parameters (``degraded``: the inputs)."""
    observation = grid.observation_of(cell.identity)
    npz = _input(grid.OBSERVATION.path(observation, "degraded.npz"), degraded)
    return load_npz(npz), load_json(Path(npz).with_name("params.json"))


def _operator(arrays: dict, task: dict, images: Sequence[int] | None = None) -> Operator:
    operator = Operator.from_arrays(arrays, task)
    if images is not None and operator.mask is not None and len(operator.mask) > 1:
        operator = operator.select(list(images))
    return operator


def _fitter_args(dip: Mapping) -> dict:
    return {
        "lr": float(dip["lr"]),
        "reg_noise_std": float(dip["reg_noise_std"]),
        "exp_weight": float(dip["exp_weight"]),
        "backtrack": bool(dip["backtrack"]),
    }


def _require_cpu(record: Mapping) -> None:
    """A refit on the CPU reproduces a cell fitted on the CPU; a GPU fit rounds its grouped
    convolutions differently (``dip.fit.DIPFitter``), so it cannot be refitted here."""
    device = record.get("device", "cpu")
    if device != "cpu":
        cell = grid.EARLYSTOP.path(grid.EARLYSTOP.identity(record))
        raise ValueError(
            f"{cell} was fitted on {device!r}: its fits cannot be reproduced on the CPU bit for "
            "bit, so the example images cannot be refitted; run the early-stopping cells on "
            "the CPU (device: cpu) for Example 2's crops"
        )


def _arch(record: Mapping) -> tuple[str, dict]:
    arch = dict(record["arch_params"])
    return arch.pop("kind"), arch


# ----------------------------------------------------------------------- plain refit


def refit_plain(
    cases_csv,
    trajectories: Sequence[str],
    tables: Sequence[str],
    cell_params: Sequence[str],
    observations: Sequence[str],
    degraded: Sequence[str],
    dip: Mapping,
    threads: int,
    out_npz,
    out_table,
) -> pd.DataFrame:
    """Refit the plain DIP of the example images of the given cells (the example fits) and
    keep its EMA output at every stop a plain rule took on them in ``cases_csv``
    (``loo_cases.csv``). ``dip``: the fitting keys (``lr``, ``reg_noise_std``,
    ``exp_weight``, ``backtrack``) the cells ran with; the rest comes from the cells'
    ``params.json``. Raises when the refit's PSNR differs from the cell's trajectory by more
    than ``REFIT_TOLERANCE_DB`` at any iteration, or a saved output's from it at its stop."""
    torch.set_num_threads(max(1, int(threads)))
    cells = load_cells(trajectories, tables, cell_params, observations)
    records = {path: load_json(path) for path in cell_params}
    for record in records.values():
        _require_cpu(record)
    arch_of = {example2_report.plain_fit_of(r): _arch(r) for r in (records[p] for p in cell_params)}
    cases = example2_report.canonical_cases(pd.read_csv(cases_csv))
    plain = cases[~cases["rule"].isin(example2_report.progressive_names(cells))]
    rows, outputs, observed, clean = [], [], [], []
    for cell in _longest_per_plain_fit(cells):
        images = example2_report.example_images(cell.names)
        arrays, task = _observation(cell, degraded)
        kind, arch = arch_of[cell.plain_fit]
        stops = _stops(plain, cell, images)
        iters = max(max(s) for s in stops.values())
        log.info("refitting %s images %s for %d iterations", cell.identity, images, iters)
        fit = fit_dip(
            arrays["observed"][images],
            _operator(arrays, task, images),
            kind,
            arch,
            [int(cell.identity["dip_seed"])] * len(images),
            iters,
            snapshots=sorted({t for s in stops.values() for t in s}),
            clean=arrays["clean"][images],
            device=CPU,
            progress=False,
            **_fitter_args(dip),
        )
        refit = fit.trajectory.assign(image=[images[j] for j in fit.trajectory["image"]])
        what = f"the plain refit of {grid.EARLYSTOP.path(cell.identity)}"
        for j, i in enumerate(images):
            worst = example2_report.check_reproduced(
                refit[refit["image"] == i], cell.trajectory, "psnr_clean_ema", what
            )
            example = len(observed)
            observed.append(arrays["observed"][i])
            clean.append(arrays["clean"][i])
            for stop in sorted(stops[i]):
                row = _plain_row(cell, plain, i, stop, fit.snapshots[stop][j], clean[-1], refit)
                _check_output(row, what)
                rows.append(row | {"example": example, "max_abs_diff_db": worst})
                rows[-1]["output"] = len(outputs)
                outputs.append(fit.snapshots[stop][j])
    table = pd.DataFrame(rows, columns=PLAIN_COLUMNS)
    save_npz(
        out_npz,
        outputs=np.stack(outputs).astype(np.float32),
        observed=np.stack(observed).astype(np.float32),
        clean=np.stack(clean).astype(np.float32),
    )
    save_csv(out_table, table)
    log.info("plain refit reproduces its cells to %.3g dB", table["max_abs_diff_db"].max())
    return table


def _longest_per_plain_fit(cells: Sequence[LooCell]) -> list[LooCell]:
    """Per plain fit, the cell with the longest trajectory (the one the cases read)."""
    longest: dict[tuple[str, ...], LooCell] = {}
    for cell in cells:
        kept = longest.get(cell.plain_fit)
        if kept is None or cell.last_iter > kept.last_iter:
            longest[cell.plain_fit] = cell
    return list(longest.values())


def _case_rows(cases: pd.DataFrame, cell: LooCell, image: int) -> pd.DataFrame:
    mask = cases["name"] == str(cell.names[image])
    for column, value in zip(example2_report.PLAIN_FIT_COLUMNS, cell.plain_fit, strict=True):
        mask &= cases[column] == value
    return cases[mask]


def _stops(plain: pd.DataFrame, cell: LooCell, images: Sequence[int]) -> dict[int, set[int]]:
    stops = {}
    for i in images:
        mine = _case_rows(plain, cell, i)
        if mine.empty:
            raise ValueError(
                f"loo_cases has no plain rule's row for {cell.names[i]} of {cell.identity}"
            )
        stops[i] = {int(s) for s in mine["stop_iter"]}
    return stops


def _plain_row(cell, plain, image, stop, output, clean, refit) -> dict:
    traj = cell.trajectory
    at = (traj["image"] == image) & (traj["iteration"] == stop)
    mine = refit[(refit["image"] == image) & (refit["iteration"] == stop)]
    case = _case_rows(plain, cell, image)
    return {
        **case.iloc[0][CASE_COLUMNS].to_dict(),
        "image": image,
        "stop_iter": stop,
        "rules": " ".join(sorted(case.loc[case["stop_iter"] == stop, "rule"].astype(str))),
        "psnr_cell": float(traj.loc[at, "psnr_clean_ema"].iloc[0]),
        "psnr_refit": float(mine["psnr_clean_ema"].iloc[0]),
        "psnr_output": metrics.psnr(output, clean),
    }


def _check_output(row: dict, what: str) -> None:
    row["output_diff_db"] = abs(row["psnr_output"] - row["psnr_cell"])
    if row["output_diff_db"] > example2_report.REFIT_TOLERANCE_DB:
        raise ValueError(
            f"{what}: the saved output of {row['name']} at iteration {row['stop_iter']} has "
            f"PSNR {row['psnr_output']:.6f} dB, the cell's trajectory "
            f"{row['psnr_cell']:.6f} dB there"
        )


# ----------------------------------------------------------------- progressive refit


class StageOutputs:
    """``fit_progressive``'s ``on_stage``: the backtracking reset the cell's run makes
    (``progressive_variant.reset_backtracking``), and the EMA outputs of every image at that
    iteration, when some image has just ended a noisy stage."""

    def __init__(self) -> None:
        self.at: dict[int, np.ndarray] = {}

    def __call__(self, fitter) -> None:
        reset_backtracking(fitter)
        self.at[int(fitter.iteration)] = fitter.output_ema.detach().cpu().numpy().copy()


class CellResets:
    """A ``DIPFitter`` of some images of a progressive run that resets its backtracking
    after every iteration at which ANY image of the cell's run ended a noisy stage (the
    cell's ``on_stage`` resets every image's then), before the next step, as the cell did.

    That reset is the one thing an image's progressive fit shares with the other images of
    its run: its network, Adam state, targets (drawn from its own seed), stages and rule
    are its own, and on the CPU a step does not depend on the batch (``dip.fit``). With
    the cell's resets replayed, an image refitted alone takes the cell's run bit for bit."""

    def __init__(self, fitter: DIPFitter, resets: set[int]) -> None:
        self.fitter, self.resets = fitter, resets

    def step(self, observed: torch.Tensor, operator: Operator):
        if self.fitter.iteration in self.resets:
            self.fitter.reset_backtracking()
        return self.fitter.step(observed, operator)

    def __getattr__(self, name: str):
        return getattr(self.fitter, name)


def cell_resets(stage_ends: np.ndarray) -> set[int]:
    """The iterations after which the cell's run reset backtracking: the ends of every
    image's noisy stages (``stage_ends`` (K, N), the cell's ``info``)."""
    return {int(t) for t in np.asarray(stage_ends)[:-1].ravel() if t > 0}


def refit_progressive(
    cell_params: Sequence[str],
    stage_curves: Sequence[str],
    outputs_npz: Sequence[str],
    degraded: Sequence[str],
    dip: Mapping,
    threads: int,
    out_npz,
    out_table,
    show_patience: bool = False,
) -> pd.DataFrame:
    """Refit the progressive run of each given cell's example images (aligned lists: the
    cell's ``params.json``, ``stage_curves.csv`` and ``outputs.npz``; ``degraded``: the
    observations' ``degraded.npz``, each beside its ``params.json``), with the cell's
    settings and its backtracking resets (``CellResets``), and keep their outputs at the
    end of each noisy stage and at the rule's stop. ``show_patience``: whether the rule
    names spell the stage patience, as the loo tables do for the config's cells (the refit
    sees only the example cells, which cannot tell). Raises when an image's PSNR curve
    differs from the cell's by more than ``REFIT_TOLERANCE_DB`` at any iteration, or its
    stage ends, stop or output at the stop differ from the cell's."""
    torch.set_num_threads(max(1, int(threads)))
    rows, outputs = [], []
    for params, curves, npz in zip(cell_params, stage_curves, outputs_npz, strict=True):
        record = load_json(params)
        _require_cpu(record)
        identity = grid.EARLYSTOP.identity(record)
        observation = _input(
            grid.OBSERVATION.path(grid.observation_of(identity), "degraded.npz"), degraded
        )
        arrays = load_npz(observation)
        task = load_json(Path(observation).with_name("params.json"))
        names = [str(n) for n in task["names"]]
        images = example2_report.example_images(names)
        what = f"the progressive refit of {grid.EARLYSTOP.path(identity)}"
        log.info("refitting the progressive run of %s, images %s", identity, images)
        run, sigmas, captured = _progressive_run(record, identity, arrays, task, dip, images)
        saved = load_npz(npz)
        worst = _check_progressive(run, sigmas, record, pd.read_csv(curves), saved, images, what)
        for j, i in enumerate(images):
            base = {
                **_case_of(identity, names[i]),
                "image": i,
                "rule": progressive_rule(identity, show_patience),
                "max_abs_diff_db": worst,
            }
            points = [
                (f"stage {k} end", k, sigmas[k], int(run.stage_ends[k, j]))
                for k in range(len(sigmas) - 1)
            ]
            points.append(("stop", len(sigmas) - 1, 0.0, int(run.stops[j])))
            for point, stage, sigma, t in points:
                if point == "stop":
                    output = run.outputs_at_stop[j]
                elif t in captured.at:
                    output = captured.at[t][j]
                else:
                    raise ValueError(f"{what}: no output kept at the end of stage {stage} ({t})")
                rows.append(
                    base
                    | {"point": point, "stage": stage, "sigma_k": sigma * 255, "iteration": t}
                    | {"psnr": metrics.psnr(output, arrays["clean"][i]), "output": len(outputs)}
                )
                outputs.append(output)
    table = pd.DataFrame(rows, columns=PROGRESSIVE_COLUMNS)
    save_npz(out_npz, outputs=np.stack(outputs).astype(np.float32))
    save_csv(out_table, table)
    log.info("progressive refit reproduces its cells to %.3g dB", table["max_abs_diff_db"].max())
    return table


def _input(path: str, given: Sequence[str]) -> str:
    """``path``, which must be one of the rule's inputs ``given``."""
    if path not in {str(p) for p in given}:
        raise ValueError(f"{path} is not among the inputs given: {list(given)}")
    return path


def _case_of(identity: Mapping[str, str], name: str) -> dict:
    case = {c: identity[c] for c in example2_report.PLAIN_FIT_COLUMNS}
    return case | {GROUP: photo_of(name), "name": name}


def _progressive_run(record, identity, arrays, task, dip, images: Sequence[int]):
    """The cell's progressive run of ``images`` again: ``ProgressiveTargets.fit`` with the
    cell's settings, its stage patience and ``RULE_DEFAULTS``' other keys (those the cell
    runs with), the cell's backtracking resets replayed, the stage outputs kept."""
    es = record["earlystop"]
    kind, arch = _arch(record)
    sigmas = stage_sigmas(
        identity["es_schedule"],
        int(identity["stages"]),
        float(identity["sigma_max"]) / 255.0,
        ratio=RULE_DEFAULTS["ratio"],
    )
    images = list(images)
    clean = np.asarray(arrays["clean"][images], dtype=np.float32)
    observed = torch.as_tensor(np.asarray(arrays["observed"][images], dtype=np.float32))
    operator = _operator(arrays, task, images).to(CPU)
    seeds = [int(identity["dip_seed"])] * len(images)
    targets, noises = stage_targets_for(observed, operator, seeds, sigmas, es["noise"])
    fitter = DIPFitter(kind, arch, clean.shape[1:], seeds, device=CPU, **_fitter_args(dip))
    rule = ProgressiveSureRule(float(task["sigma"]) / 255.0, RULE_DEFAULTS["stop_stage"])
    captured = StageOutputs()
    run = fit_progressive(
        CellResets(fitter, cell_resets(record["info"]["stage_ends"])),
        observed,
        operator,
        targets,
        noises,
        sigmas,
        rule,
        int(es["iters_per_stage"]),
        int(es["final_iters"]),
        clean=clean,
        progress=False,
        on_stage=captured,
        stage_patience=int(identity["stage_patience"]),
    )
    return run, sigmas, captured


def _check_progressive(run, sigmas, record, curves, saved, images, what) -> float:
    """The refit of ``images`` against the cell: stage sigmas, every curve row of those
    images, stage ends, stops and outputs at the stop."""
    info = record["info"]
    if not np.allclose(sigmas, info["sigmas"], rtol=0, atol=1e-12):
        raise ValueError(
            f"{what}: stage sigmas {list(sigmas)} differ from the cell's {info['sigmas']}"
        )
    refit = run.curves.assign(image=[images[j] for j in run.curves["image"]])
    mine = curves[curves["image"].isin(images)]
    worst = example2_report.check_reproduced(refit, mine, "psnr_clean", what)
    if len(refit) != len(mine):
        raise ValueError(f"{what}: {len(refit)} curve rows against the cell's {len(mine)}")
    if not np.array_equal(run.stage_ends, np.asarray(info["stage_ends"])[:, images]):
        raise ValueError(f"{what}: stage ends {run.stage_ends.tolist()} differ from the cell's")
    if not np.array_equal(run.stops, saved["stops"][images]):
        raise ValueError(
            f"{what}: stops {run.stops.tolist()} differ from the cell's "
            f"{saved['stops'][images].tolist()}"
        )
    differ = np.abs(run.outputs_at_stop - saved["outputs"][images]).max()
    if differ > 1e-5:
        raise ValueError(
            f"{what}: outputs at the stop differ from the cell's by up to {differ:.3g}"
        )
    return worst


# ----------------------------------------------------------------------- the section


def write_example2(
    loo_tables: Mapping[str, str],
    trajectories: Sequence[str],
    tables: Sequence[str],
    cell_params: Sequence[str],
    observations: Sequence[str],
    stage_curves: Sequence[str],
    plain_refit: tuple[str, str],
    progressive_refit: tuple[str, str],
    settings: Mapping,
    out_section,
    out_curves,
    out_gaps,
    out_crops,
) -> str:
    """The section and its three figures. ``loo_tables``: name -> ``loo_<name>.csv``
    (cases, summary, summary_by_task, comparisons, plain_peaks); ``trajectories`` ...
    ``observations`` as ``summarise_earlystop_loo`` reads them; ``stage_curves``: the
    example cells' (``example2_report.example_cells``); the refits' (npz, csv)."""
    cells = load_cells(trajectories, tables, cell_params, observations)
    loo = {name: pd.read_csv(path) for name, path in loo_tables.items()}
    plain_npz, plain_table = load_npz(plain_refit[0]), pd.read_csv(plain_refit[1])
    prog_npz, prog_table = load_npz(progressive_refit[0]), pd.read_csv(progressive_refit[1])
    cases = example2_report.canonical_cases(loo["cases"])
    plain_table = example2_report.canonical_cases(plain_table)
    prog_table = example2_report.canonical_cases(prog_table)
    stage_frame = _stage_curves(stage_curves, example2_report.shows_patience(cells))
    curves = _curve_frames(cells, cases, plain_table, stage_frame)
    example2_figures.curves_figure(*curves, _stem(out_curves))
    example2_figures.gaps_figure(cases, _stem(out_gaps))
    example2_figures.crops_figure(
        _crop_rows(cases, plain_table, plain_npz, prog_table, prog_npz), _stem(out_crops)
    )
    section_dir = Path(out_section).parent
    figures = {
        name: os.path.relpath(path, section_dir)
        for name, path in (("curves", out_curves), ("gaps", out_gaps), ("crops", out_crops))
    }
    text = example2_report.example2_section(loo, cells, settings, figures, plain_table, prog_table)
    save_text(out_section, text)
    log.info("Example 2 section: %d cases, %d cells", len(cases), len(cells))
    return text


def _stem(png) -> Path:
    path = Path(png)
    return path.with_name(path.stem)


def _stage_curves(paths: Sequence[str], show_patience: bool) -> pd.DataFrame:
    """The cells' progressive curves, each named as the loo tables name its rule."""
    frames = []
    for path in paths:
        identity = grid.EARLYSTOP.identity(grid.parse(path))
        frame = pd.read_csv(path)[["image", "iteration", "psnr_clean"]]
        frames.append(frame.assign(**identity, rule=progressive_rule(identity, show_patience)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _example_label(row: Mapping) -> str:
    return f"{row['name']}, {row['task']}, obs {row['obs_seed']}"


def _curve_frames(cells, cases, plain_table, stage_curves):
    """The curves figure's frames, for the example images of the plain refit."""
    plain, progressive, stops = [], [], []
    examples = plain_table.drop_duplicates("example")
    by_fit = {cell.plain_fit: cell for cell in _longest_per_plain_fit(cells)}
    for _, row in examples.iterrows():
        label = _example_label(row)
        fit = tuple(row[c] for c in example2_report.PLAIN_FIT_COLUMNS)
        cell, image = by_fit[fit], int(row["image"])
        traj = cell.trajectory[cell.trajectory["image"] == image]
        plain.append(
            pd.DataFrame(
                {"example": label, "iteration": traj["iteration"], "psnr": traj["psnr_clean_ema"]}
            )
        )
        psnr_at = dict(zip(traj["iteration"], traj["psnr_clean_ema"], strict=True))
        mine = cases[(cases["name"] == row["name"])]
        for column, value in zip(example2_report.PLAIN_FIT_COLUMNS, fit, strict=True):
            mine = mine[mine[column] == value]
        curves = stage_curves
        for column, value in zip(example2_report.PLAIN_FIT_COLUMNS, fit, strict=True):
            curves = curves[curves[column].map(grid.canonical) == value]
        curves = curves[curves["image"] == image]
        progressive.append(
            pd.DataFrame(
                {
                    "example": label,
                    "rule": curves["rule"],
                    "iteration": curves["iteration"],
                    "psnr": curves["psnr_clean"],
                }
            )
        )
        prog_rules = set(curves["rule"])
        for _, case in mine.iterrows():
            is_prog = case["rule"] in prog_rules
            stops.append(
                {
                    "example": label,
                    "rule": case["rule"],
                    "run": "progressive" if is_prog else "plain",
                    "stop_iter": int(case["stop_iter"]),
                    "psnr": float(case["psnr"]) if is_prog else psnr_at[int(case["stop_iter"])],
                }
            )
    return _concat(plain), _concat(progressive), pd.DataFrame(stops)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _crop_rows(cases, plain_table, plain_npz, prog_table, prog_npz):
    """Per example image: observation, plain outputs at each rule's stop (in the rules'
    order in ``cases``), the progressive outputs at each stage end and stop, clean."""
    order = list(dict.fromkeys(cases["rule"].astype(str)))
    rows = []
    for example, mine in plain_table.groupby("example", sort=True):
        first = mine.iloc[0]
        panels = [("observation", plain_npz["observed"][example])]
        case = cases[(cases["name"] == first["name"])]
        for column in example2_report.PLAIN_FIT_COLUMNS:
            case = case[case[column] == first[column]]
        for rule in order:
            hit = case[case["rule"] == rule]
            at = (
                mine[mine["stop_iter"] == int(hit["stop_iter"].iloc[0])]
                if len(hit)
                else mine.iloc[:0]
            )
            if at.empty:
                continue
            row = at.iloc[0]
            title = f"{rule} @{int(row['stop_iter'])}\n{row['psnr_output']:.2f} dB"
            panels.append((title, plain_npz["outputs"][int(row["output"])]))
        prog = prog_table[prog_table["name"] == first["name"]]
        for column in example2_report.PLAIN_FIT_COLUMNS:
            prog = prog[prog[column] == first[column]]
        for _, row in prog.iterrows():
            title = f"prog. {row['point']} @{int(row['iteration'])}\n{row['psnr']:.2f} dB"
            panels.append((title, prog_npz["outputs"][int(row["output"])]))
        panels.append(("clean", plain_npz["clean"][example]))
        rows.append((_example_label(first), panels))
    return rows
