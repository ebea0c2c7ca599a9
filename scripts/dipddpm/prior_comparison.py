"""Issue 19's comparison: DDPMs trained with and without the DIP prior, on one footing.

Every model of the prior-training part (full, truncated and the prior-trained modes) was
trained for the same steps at the same batch, so a checkpoint means the same number of
training images seen for all of them, and each restores the same held-out images from the
same stored DIP priors. These functions turn the part's per-image sample metrics and its
training curves into tables:

* :func:`convergence_table`: quality at every checkpoint against images seen and against
  total seconds (training, plus the training priors' DIP fit for a prior-trained model),
  each model paired per image against the reference (truncated) model at that checkpoint;
* :func:`restoration_table`: the final checkpoint at every sampled t0 and step count, paired
  the same way;
* :func:`steps_to_quality`: the fewest reverse steps each model needs to reach a common
  target (the reference's best mean PSNR over the step ladder, less a tolerance);
* :func:`headline`: the family the answer rests on (each model against the reference at the
  final checkpoint and the headline setting), Holm-corrected, with a verdict per model.

Observation seeds are averaged within an image (:mod:`dipddpm.stats`), so n counts images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from . import stats
from .example1_report import interval

REFERENCE = "truncated"
# The reverse-step count within this of a model's target counts as reaching it: the
# resolution at which a ladder of 1..50 steps tells settings apart on 32 images.
STEP_TOLERANCE_DB = 0.1
# Bootstrap draws per CI (the statistics module's default; tests lower it for speed).
N_BOOT = 10000


def _numeric(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    return frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c in columns})


def _setting(frame: pd.DataFrame, **values: object) -> pd.DataFrame:
    keep = pd.Series(True, index=frame.index)
    for column, value in values.items():
        keep &= frame[column].astype(str) == str(value)
    return frame[keep]


def modes_in(frame: pd.DataFrame) -> list[str]:
    """The models' modes, the reference first, then full, then prior-trained by name."""
    modes = sorted(set(frame["mode"].astype(str)))
    order = {REFERENCE: 0, "full": 1}
    return sorted(modes, key=lambda m: (order.get(m, 2), m))


def _per_image(frame: pd.DataFrame, value: str) -> pd.Series:
    """Per-image means over the observation seeds (the unit is the image)."""
    return frame.groupby(["dataset", "task", "image"])[value].mean()


def _summary(frame: pd.DataFrame) -> dict[str, float]:
    psnr, ssim = _per_image(frame, "psnr"), _per_image(frame, "ssim")
    return {
        "psnr": float(psnr.mean()),
        "ssim": float(ssim.mean()),
        "n_images": int(len(psnr)),
        "obs_seeds": ",".join(sorted(set(frame["obs_seed"].astype(str)))),
    }


def _paired(frame: pd.DataFrame, a: Mapping[str, object], b: Mapping[str, object]) -> dict:
    """``a - b`` per image in PSNR and SSIM with 95 % bootstrap CIs (unadjusted)."""
    out = {}
    for value in ("psnr", "ssim"):
        diff = stats.paired_differences(frame, value, a, b)
        comparison = stats.paired_comparison(diff, n_boot=N_BOOT)
        out |= {
            f"{value}_diff": comparison.mean_diff,
            f"{value}_ci_low": comparison.ci_low,
            f"{value}_ci_high": comparison.ci_high,
            f"{value}_verdict": comparison.verdict,
        }
    return out


def _cell_filter(row: Mapping[str, object], keys: Sequence[str]) -> dict[str, object]:
    return {key: row[key] for key in keys}


# Identity columns that tell the compared models apart (the rest is one setting).
MODEL_KEYS = ("mode", "t_max")
SETTING_KEYS = ("ckpt", "t0", "steps", "sampler", "eta", "iters", "arch", "lam", "k")


def _reference_filter(frame: pd.DataFrame, setting: Mapping[str, object]) -> dict[str, object]:
    ref = _setting(frame, mode=REFERENCE)
    if ref.empty:
        raise ValueError(f"prior comparison: no {REFERENCE!r} model among {modes_in(frame)}")
    return {"mode": REFERENCE, "t_max": ref["t_max"].iloc[0], **setting}


def _compared_rows(frame: pd.DataFrame, group_keys: Sequence[str]) -> list[dict]:
    rows = []
    for key, cells in frame.groupby([*MODEL_KEYS, *group_keys], sort=False):
        values = dict(zip([*MODEL_KEYS, *group_keys], key, strict=True))
        setting = {k: values[k] for k in group_keys}
        setting |= {k: cells[k].iloc[0] for k in SETTING_KEYS if k not in setting}
        row = {**values, **_summary(cells)}
        if values["mode"] != REFERENCE:
            reference = _reference_filter(frame, setting)
            row |= _paired(frame, {**_cell_filter(values, MODEL_KEYS), **setting}, reference)
        rows.append(row)
    return rows


def convergence_table(
    samples: pd.DataFrame,
    curves: pd.DataFrame,
    prior_seconds: Mapping[str, float],
    batch_size: int,
    t0: int,
    steps: int,
) -> pd.DataFrame:
    """One row per (mode, checkpoint) at start step ``t0`` with ``steps`` reverse steps.

    ``images_seen`` = checkpoint x batch; ``train_seconds`` is the curve's elapsed training
    time at that step; ``prior_seconds`` (per prior-trained mode) the wall time of its
    training priors' DIP fit, counted in full at every checkpoint: it is paid before the
    first step;
    ``probe_psnr_t*`` the curve's held-out one-step x0 PSNR (EMA weights) at that step.
    """
    frame = _numeric(_setting(samples, t0=t0, steps=steps), "psnr", "ssim")
    if frame.empty:
        raise ValueError(f"prior comparison: no sample cell at t0={t0}, steps={steps}")
    rows = pd.DataFrame(_compared_rows(frame, ["ckpt"]))
    rows["ckpt"] = rows["ckpt"].astype(int)
    rows["images_seen"] = rows["ckpt"] * int(batch_size)
    rows = rows.merge(_curve_at_checkpoints(curves), on=["mode", "ckpt"], how="left")
    missing = sorted({m for m in rows["mode"] if str(m).startswith("prior-")} - set(prior_seconds))
    if missing:
        raise ValueError(f"prior comparison: no DIP fit seconds for prior-trained {missing}")
    rows["prior_seconds"] = [float(prior_seconds.get(m, 0.0)) for m in rows["mode"]]
    rows["total_seconds"] = rows["train_seconds"] + rows["prior_seconds"]
    rows.insert(2, "t0", t0)
    rows.insert(3, "steps", steps)
    return _ordered(rows, ["ckpt"])


def _curve_at_checkpoints(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (mode, step): elapsed training seconds and the EMA probe columns."""
    probes = [c for c in curves.columns if c.startswith("ema_psnr_t")]
    frame = _numeric(curves, "step", "elapsed_s", *probes)
    out = frame[["mode", "step", "elapsed_s", *probes]].rename(
        columns={"step": "ckpt", "elapsed_s": "train_seconds"}
        | {c: c.replace("ema_psnr_", "probe_psnr_") for c in probes}
    )
    out["mode"] = out["mode"].astype(str)
    out["ckpt"] = out["ckpt"].astype(int)
    return out.dropna(subset=["train_seconds"]).drop_duplicates(["mode", "ckpt"], keep="last")


def restoration_table(samples: pd.DataFrame, ckpt: int) -> pd.DataFrame:
    """One row per (mode, t0, steps) at checkpoint ``ckpt``, paired against the reference."""
    frame = _numeric(_setting(samples, ckpt=ckpt), "psnr", "ssim")
    if frame.empty:
        raise ValueError(f"prior comparison: no sample cell at checkpoint {ckpt}")
    rows = pd.DataFrame(_compared_rows(frame, ["t0", "steps"]))
    rows.insert(2, "ckpt", ckpt)
    for column in ("t0", "steps"):
        rows[column] = rows[column].astype(int)
    return _ordered(rows, ["t0", "steps"])


def _ordered(rows: pd.DataFrame, within: list[str]) -> pd.DataFrame:
    rank = {m: i for i, m in enumerate(modes_in(rows))}
    rows = rows.assign(_rank=rows["mode"].map(rank))
    return rows.sort_values(["_rank", *within]).drop(columns="_rank").reset_index(drop=True)


def steps_to_quality(table: pd.DataFrame, t0: int, tolerance: float = STEP_TOLERANCE_DB):
    """The fewest reverse steps with which each model's mean PSNR at ``t0`` reaches the
    target: the reference model's best mean PSNR over the step ladder less ``tolerance``
    (a model that never reaches it says so), and the steps to its own best less the same."""
    ladder = table[table["t0"] == t0]
    ref = ladder[ladder["mode"] == REFERENCE]
    if ref.empty:
        raise ValueError(f"steps to quality: no {REFERENCE!r} rows at t0={t0}")
    target = float(ref["psnr"].max()) - tolerance
    rows = []
    for mode, rungs in ladder.groupby("mode", sort=False):
        rungs = rungs.sort_values("steps")
        reached = rungs[rungs["psnr"] >= target]
        own = rungs[rungs["psnr"] >= rungs["psnr"].max() - tolerance]
        rows.append(
            {
                "mode": mode,
                "t0": t0,
                "target_psnr": target,
                "steps_to_target": int(reached["steps"].iloc[0]) if len(reached) else None,
                "psnr_at_target_steps": float(reached["psnr"].iloc[0]) if len(reached) else None,
                "best_psnr": float(rungs["psnr"].max()),
                "steps_to_own_best": int(own["steps"].iloc[0]),
                "ladder": ",".join(str(s) for s in rungs["steps"]),
            }
        )
    return _ordered(pd.DataFrame(rows), [])


def headline(samples: pd.DataFrame, setting: Mapping[str, object]) -> pd.DataFrame:
    """Each model against the reference at one setting (final checkpoint, headline t0 and
    steps), as one Holm-corrected family over models and metrics."""
    frame = _numeric(samples, "psnr", "ssim")
    frame = _setting(frame, **setting)
    if frame.empty:
        raise ValueError(f"prior comparison: no sample cell at {dict(setting)}")
    reference = _reference_filter(frame, setting)
    comparisons = {}
    for mode in modes_in(frame):
        if mode == REFERENCE:
            continue
        t_max = _setting(frame, mode=mode)["t_max"].iloc[0]
        comparisons[f"{mode} - {REFERENCE}"] = (
            {"mode": mode, "t_max": t_max, **setting},
            reference,
        )
    table = stats.comparison_table(frame, comparisons, values=("psnr", "ssim"), n_boot=N_BOOT)
    for key, value in setting.items():
        table[key] = value
    return table


def answer(headline_table: pd.DataFrame) -> str:
    """One sentence per prior-trained model: helps, hurts or no measurable difference."""
    psnr = headline_table[headline_table["value"] == "psnr"]
    sentences = []
    for _, row in psnr.iterrows():
        name = str(row["name"]).split(" - ")[0]
        sentences.append(
            f"{name} vs {REFERENCE}: {row['mean_diff']:+.2f} dB "
            f"{interval(row['ci_low'], row['ci_high'])} (Holm-adjusted "
            f"{row['level'] * 100:.1f} % CI, n = {int(row['n'])} images): {row['verdict']}"
        )
    return "; ".join(sentences) + "."
