"""Training convergence of the DDPMs a study samples from: quality against images seen and
against training seconds, and whether a model has stopped improving.

Quality is the PSNR of the EMA model's one-shot x0 prediction on held-out images noised to
the fixed evaluation steps (``ema_psnr_t<t>`` in a training curve). A model is flagged
*under-trained* when the mean of those PSNRs rose by more than ``plateau_db`` over the last
doubling of training (from step s/2 to the last step s): a curve still climbing that fast
would give different Example 1 numbers with more training, so the report says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

EVAL_COLUMN = re.compile(r"^ema_psnr_t(\d+)$")


def eval_columns(curve: pd.DataFrame) -> list[str]:
    """The EMA evaluation columns of a curve, ordered by their step t."""
    found = [(int(m.group(1)), c) for c in curve.columns if (m := EVAL_COLUMN.match(c))]
    return [column for _, column in sorted(found)]


def _value_at(evaluated: pd.DataFrame, step: float, column: str) -> float:
    """The curve's value at ``step``, linear between the evaluated steps around it."""
    return float(np.interp(step, evaluated["step"], evaluated[column]))


def last_doubling_gain(evaluated: pd.DataFrame, column: str) -> float:
    """PSNR gained from half the training to its end (dB); NaN with under two points."""
    if len(evaluated) < 2:
        return math.nan
    last = float(evaluated["step"].iloc[-1])
    if last / 2 < float(evaluated["step"].iloc[0]):
        return math.nan
    return _value_at(evaluated, last, column) - _value_at(evaluated, last / 2, column)


def convergence_table(
    curves: pd.DataFrame, model_keys: Sequence[str], batch_size: int
) -> pd.DataFrame:
    """One row per model and evaluated step: images seen, training seconds and the EMA
    x0 PSNR at each evaluation step (plus their mean)."""
    rows = []
    for key, curve in curves.groupby(list(model_keys), sort=True, dropna=False):
        columns = eval_columns(curve)
        evaluated = curve.dropna(subset=columns).sort_values("step")
        for _, point in evaluated.iterrows():
            row = dict(zip(model_keys, key, strict=True))
            row.update(
                step=int(point["step"]),
                images_seen=int(point["step"]) * int(batch_size),
                train_seconds=float(point["elapsed_s"]),
                psnr_mean=float(np.mean([point[c] for c in columns])),
                **{column.removeprefix("ema_"): float(point[column]) for column in columns},
            )
            rows.append(row)
    return pd.DataFrame(rows)


def convergence_verdicts(
    table: pd.DataFrame, model_keys: Sequence[str], plateau_db: float
) -> pd.DataFrame:
    """Per model: steps, images seen, seconds, final PSNR, gain over the last doubling and
    ``under_trained`` (that gain above ``plateau_db``)."""
    rows = []
    for key, group in table.groupby(list(model_keys), sort=True, dropna=False):
        group = group.sort_values("step")
        gain = last_doubling_gain(group, "psnr_mean")
        final = group.iloc[-1]
        rows.append(
            {
                **dict(zip(model_keys, key, strict=True)),
                "steps": int(final["step"]),
                "images_seen": int(final["images_seen"]),
                "train_seconds": float(final["train_seconds"]),
                "final_psnr_mean": float(final["psnr_mean"]),
                "last_doubling_gain_db": gain,
                "plateau_db": float(plateau_db),
                "under_trained": bool(gain > plateau_db) if not math.isnan(gain) else True,
            }
        )
    return pd.DataFrame(rows)


__all__ = [
    "convergence_table",
    "convergence_verdicts",
    "eval_columns",
    "last_doubling_gain",
]
