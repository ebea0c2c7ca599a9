"""Example 1's one-at-a-time ablations: sampler, guidance weight and window, prior
architecture and duration, each changed alone around one reference setting.

The reference is DIP+DDPM's best single-chain (k = 1) setting on the tuning images: the
ablation blocks of the study run single chains, so a K-sample setting has no neighbours.
For each ablated axis, every evaluation cell that equals the reference on every other
identity column is a variant (giving guidance a weight makes the method ``dip-guided``);
the table pairs each variant with the reference per image (seeds averaged within an image)
and applies Holm's correction over the whole table.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from . import example1, stats

# Each ablation: its name and the identity columns it is allowed to change.
ABLATIONS = (
    ("sampler", ("sampler", "eta")),
    ("guidance", ("method", "lam", "window")),
    ("prior architecture", ("arch",)),
    ("prior duration", ("iters",)),
)
COLUMNS = (
    "dataset",
    "task",
    "ablation",
    "variant",
    "reference",
    "n",
    "mean_diff",
    "ci_low",
    "ci_high",
    "level",
    "p",
    "p_holm",
    "verdict",
    "reference_psnr",
    "variant_psnr",
    "seeds",
    "reason",
)


def ablation_table(
    frame: pd.DataFrame,
    tuning: int,
    tasks: Sequence[str] | None = None,
    n_boot: int = 10000,
) -> pd.DataFrame:
    """Variant minus reference PSNR for every one-axis variant of each task's reference."""
    rows = example1._prepare(frame, tuning)
    evaluation = example1._split(rows, example1.EVALUATION)
    records: list[dict] = []
    for task in example1._ordered_tasks(rows, tasks):
        in_task = evaluation[evaluation["task"] == task]
        reference = _reference(rows, in_task, task, tuning)
        if reference is None:
            continue
        found = [_variants(in_task, reference, name, free) for name, free in ABLATIONS]
        if not any(variants for variants in found):
            records.append({"task": task, "reason": "no ablation cell was run on this task"})
            continue
        for (name, free), variants in zip(ABLATIONS, found, strict=True):
            records += variants or [_none(reference, name, free)]
    return pd.DataFrame(stats.holm_records(records, n_boot), columns=list(COLUMNS))


def _reference(
    rows: pd.DataFrame, evaluation: pd.DataFrame, task: str, tuning: int
) -> dict[str, str] | None:
    """The single-chain DIP+DDPM setting with the most ablations run around it, the best
    on the tuning images among those (the ablation blocks fix t0, steps and the model, so
    the tuning-best setting overall may have no neighbours)."""
    try:
        ranked = example1._rank(rows, example1.COMBINED, task, tuning, None, {"k": 1}, "psnr")
    except ValueError:
        return None
    settings = [
        {c: str(r[c]) for c in example1.SETTING_COLUMNS if c in ranked.columns}
        for r in ranked.to_dict("records")
    ]
    coverage = [
        sum(bool(_variant_settings(evaluation, s, free)) for _, free in ABLATIONS) for s in settings
    ]
    return settings[max(range(len(settings)), key=lambda i: (coverage[i], -i))]


def _variants(
    rows: pd.DataFrame, reference: dict[str, str], name: str, free: Sequence[str]
) -> list[dict]:
    return [
        _pair(rows, reference, variant, name, free)
        for variant in _variant_settings(rows, reference, free)
    ]


def _variant_settings(
    rows: pd.DataFrame, reference: dict[str, str], free: Sequence[str]
) -> list[dict[str, str]]:
    """The settings that equal ``reference`` on every identity column but ``free``."""
    fixed = {c: v for c, v in reference.items() if c not in free}
    candidates = example1._matching(rows, fixed)
    columns = [c for c in example1.SETTING_COLUMNS if c in candidates.columns]
    unique = candidates[columns].drop_duplicates()
    settings = [
        dict(zip(columns, values, strict=True)) for values in unique.itertuples(index=False)
    ]
    return [s for s in settings if s != reference]


def _none(reference: dict[str, str], name: str, free: Sequence[str]) -> dict:
    return {
        "task": reference["task"],
        "ablation": name,
        "reference": example1._setting_text(reference),
        "reason": f"no evaluation cell differs from the reference in {list(free)} only",
    }


def _pair(
    rows: pd.DataFrame,
    reference: dict[str, str],
    variant: dict[str, str],
    name: str,
    free: Sequence[str],
) -> dict:
    pairs = stats.paired_differences(rows, "psnr", variant, reference)
    changed = ", ".join(f"{c}={variant[c]}" for c in free if variant.get(c) != reference.get(c))
    return {
        "dataset": reference["dataset"],
        "task": reference["task"],
        "ablation": name,
        "variant": changed,
        "reference": example1._setting_text(reference),
        "reference_psnr": float(pairs["b"].mean()),
        "variant_psnr": float(pairs["a"].mean()),
        "seeds": example1._seeds_text(example1._matching(rows, reference)),
        "differences": pairs["difference"].to_numpy(float),
        "reason": "",
    }
