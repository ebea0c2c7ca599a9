"""Generate ``report.md`` from the aggregated tables: every number in it comes from them.

Sections: setup (from the config actually used), findings (sentences computed from the
tables, including where the DIP+DDPM combination does not help), the comparison tables,
the ablations, and the figures with captions. Missing tables or unavailable FID are
stated as such; the report never contains placeholder text or ``nan``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from dipddpm import grid
from dipddpm.aggregate import to_markdown
from dipddpm.claims import (
    Claim,
    StopClaim,
    claim_sentences,
    earlystop_claims,
    restoration_claims,
)
from dipddpm.example1_report import formulation
from dipddpm.example2_report import configured_stage_sigmas
from dipddpm.example2_report import formulation as example2_formulation
from dipddpm.findings import (
    ablation_findings,
    fid_findings,
    is_finite,
    number_text,
    steps_findings,
)
from dipddpm.io import atomic_path

SCALE_NAMES = {
    "cpu": "CPU default",
    "default": "CPU default",
    "cpu-default": "CPU default",
    "small": "CPU default",
    "full": "full grid",
    "full-grid": "full grid",
    "grid": "full grid",
}

TABLE_TITLES = {
    "method_comparison": "Method comparison (PSNR / SSIM per method and reverse steps)",
    "steps_to_quality": "Steps to quality (fewest reverse steps reaching the target PSNR)",
    "fid": "Sample quality: Inception FID and KID by method and steps",
    "training_convergence": "DDPM training: full vs truncated diffusion",
    "dip_by_architecture": "DIP PSNR by architecture and duration",
    "earlystop": "Early-stopping rules against the oracle stop",
}
# Identity columns a row's label spells out; the report's tables show the label instead.
LABELLED = (
    "purpose",
    "method",
    "start",
    "t0",
    "lam",
    "train_dataset",
    "preset",
    "schedule",
    "mode",
    "t_max",
    "train_steps",
    "ckpt",
    "sampler",
    "eta",
)
EXAMPLE1_TABLES = ("method_comparison", "steps_to_quality")
ABLATION_TABLES = ("training_convergence", "dip_by_architecture")
KNOWN_TABLES = (*EXAMPLE1_TABLES, "fid", "earlystop", *ABLATION_TABLES)
# The sections only some configs produce: (config key path, what it adds, study target).
STUDY_SECTIONS = (
    (("example1",), "Example 1 on held-out images (settings tuned on other images)", "example1"),
    (
        ("prior_training",),
        "DDPMs trained with and without the DIP prior at equal images seen",
        "prior_training",
    ),
    (
        ("earlystop", "loo"),
        "Example 2 on natural-image crops, rules tuned leave-one-image-out",
        "earlystop_loo",
    ),
    (
        ("metrics", "classifier"),
        "offline generation metrics (KID on a CIFAR-10 classifier's features, diversity)",
        "generation",
    ),
)

FIGURE_CAPTIONS = {
    "quality_vs_steps": "PSNR and SSIM of the restored images against the number of reverse "
    "steps, one line per method (band: +-1 std over images and seeds).",
    "dip_trajectories": "PSNR to the clean image along DIP optimisation, mean over images "
    "with a +-1 std band, per architecture.",
    "dip_t0_heatmap": "Mean PSNR of DIP+DDPM over the prior's DIP duration (rows) and the "
    "diffusion start step t0 (columns).",
    "fid_vs_steps": "FID of DDPM samples against reverse steps, per method.",
    "training_curves": "DDPM training loss and evaluation PSNR, full vs truncated diffusion.",
    "qualitative": "The same images restored by each method (clean, observed, DIP, DDPM, "
    "DIP+DDPM).",
    "earlystop_curves": "DIP PSNR curves with each rule's detected stop (dashed) and the oracle "
    "stop (red).",
    "gap_distribution": "PSNR below the plain-DIP oracle on the same image, observation and "
    "seed, per rule (dB; 0 is the oracle, higher is worse).",
}


# ----------------------------------------------------------------------- formatting


def scale_name(config: Mapping[str, Any]) -> str:
    """'CPU default' or 'full grid' from the config's ``scale`` key."""
    scale = str(config.get("scale", "")).strip().lower()
    if not scale:
        return "unspecified (no `scale` key in the config)"
    return SCALE_NAMES.get(scale, scale)


def compact(table: pd.DataFrame) -> pd.DataFrame:
    """Merge ``<v>_mean/_ci_low/_ci_high/_n`` columns into one 'mean [low, high]' column."""
    if table.empty:
        return table
    out = table.copy()
    stems = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    n_column = None
    for stem in stems:
        parts = [f"{stem}_{s}" for s in ("mean", "std", "n", "ci_low", "ci_high")]
        if not all(p in out.columns for p in parts):
            continue
        mean, low, high = out[parts[0]], out[parts[3]], out[parts[4]]
        out[stem] = [_mean_ci(m, lo, hi) for m, lo, hi in zip(mean, low, high, strict=True)]
        n_column = n_column or parts[2]
        out = out.drop(columns=[p for p in parts if p != n_column])
    if n_column is not None:
        out = out.rename(columns={n_column: "n"})
        out = out[[c for c in out.columns if c != "n"] + ["n"]]
    return out


def _mean_ci(mean: Any, low: Any, high: Any) -> str:
    if not is_finite(mean):
        return "—"
    spec = ".2f" if abs(mean) >= 10 else ".3g"

    def fmt(value: float) -> str:
        return number_text(value) if float(value).is_integer() else f"{value:{spec}}"

    if is_finite(low) and is_finite(high):
        return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"
    return fmt(mean)


# --------------------------------------------------------------------------- sections


def _versions_text(versions: pd.DataFrame | None) -> str:
    if versions is None or versions.empty:
        return "no cell recorded its code version"
    parts = [
        f"`{r['code_commit']}` (sources `{r['code_hash']}`, {r['cells']} cells)"
        for _, r in versions.iterrows()
    ]
    warning = " — **the cells were computed by different code**" if len(parts) > 1 else ""
    return "; ".join(parts) + warning


def abstract(claims: list[Claim], stops: list[StopClaim], config: Mapping[str, Any]) -> str:
    """One paragraph: the answer to each example, its numbers and CIs, and the scale."""
    if claims:
        first = claims[0]
        rivals = "; ".join(f"vs {_role(c.rival)}: {_short(c)}" for c in claims)
        example1 = (
            f"**Example 1** (DIP priors for DDPM): on {first.where}, the best DIP+DDPM "
            f"setting ({first.subject}) {rivals}."
        )
    else:
        example1 = "**Example 1**: no DIP+DDPM restoration cell ran in this configuration."
    if stops:
        best = min(stops, key=lambda c: c.gap)
        example2 = (
            f"**Example 2** (early stopping): the rule closest to the plain-DIP oracle is "
            f"{best.rule} ({best.where}), {best.gap:.2f} dB [{best.ci_low:.2f}, "
            f"{best.ci_high:.2f}] below it (n = {best.n})."
        )
    else:
        example2 = "**Example 2**: no early-stopping cell ran in this configuration."
    scale = (
        "These are the numbers of the CPU default run: few images and one seed, a check "
        "that every stage works end to end; the study's sections (results/study/) are "
        "the reference result."
        if str(config.get("scale", "")).lower() in ("cpu", "default", "cpu-default", "small")
        else f"Scale: {scale_name(config)}."
    )
    return " ".join([example1, example2, scale])


def _role(label: str) -> str:
    """A rival's role in the abstract (its full label is in the claim below)."""
    for prefix, role in (
        ("DIP alone", "its own DIP prior"),
        ("DDPM", "the best DDPM alone"),
        ("DIP-guided", "the best DIP-guided chain"),
    ):
        if label.startswith(prefix):
            return role
    return label


def _short(claim: Claim) -> str:
    r = claim.result
    unit = " dB" if claim.metric == "psnr" else ""
    return f"{r.mean_diff:+.2f}{unit} [{r.ci_low:+.2f}, {r.ci_high:+.2f}], n = {r.n}, {r.verdict}"


def _methods_section(config: Mapping[str, Any], cells: pd.DataFrame) -> list[str]:
    """The formulations, from the same templates as the study's sections."""
    ddpm = config.get("ddpm") or {}
    text = formulation(int(ddpm.get("T", 1000)), str(ddpm.get("schedule", "linear")), _t0s(cells))
    lines = ["## Methods", "", text.replace("### ", "### Example 1: ", 1), ""]
    example2 = _example2_formulation(config)
    if example2:
        lines += [example2.replace("### ", "### Example 2: ", 1), ""]
    return lines


def _example2_formulation(config: Mapping[str, Any]) -> str | None:
    """Example 2's formulation with the stage noise levels of the configured progressive
    settings; None when the config runs no early-stopping cell."""
    es = config.get("earlystop") or {}
    settings = [
        {"schedule": schedule, "stages": stages, "sigma_max": smax}
        for block in es.get("grid") or []
        for schedule in block["schedules"]
        for stages in block["stages"]
        for smax in block["sigma_max"]
    ]
    if not settings:
        return None
    es_settings = {**es, "exp_weight": (config.get("dip") or {}).get("exp_weight", 0.99)}
    es_settings.setdefault("noise", "fresh")
    patiences = [p for block in es["grid"] for p in grid.block_patiences(block)]
    return example2_formulation(es_settings, configured_stage_sigmas(settings), patiences)


def _t0s(cells: pd.DataFrame) -> list[int]:
    if cells.empty or "t0" not in cells:
        return []
    values = pd.to_numeric(cells["t0"], errors="coerce").dropna().astype(int)
    return sorted(set(values))


def _example1_section(tables: Mapping[str, pd.DataFrame], claims: list[Claim]) -> list[str]:
    lines = ["### Example 1: DIP priors for DDPM (restoration, PSNR/SSIM)", ""]
    sentences = claim_sentences(claims) or [
        "No restoration results were available to compare DIP+DDPM with its rivals."
    ]
    sentences += steps_findings(tables.get("steps_to_quality", pd.DataFrame()))
    lines += [f"- {sentence}" for sentence in sentences] + [""]
    for name in EXAMPLE1_TABLES:
        lines += _table_section(name, tables.get(name), level="####")
    return lines


def _generation_section(
    tables: Mapping[str, pd.DataFrame],
    section: str | None = None,
    scores: pd.DataFrame | None = None,
) -> list[str]:
    """Generation cells, scored with generation metrics only (never PSNR to a source):
    first the offline metrics on the classifier's features (``section``: the generation
    part's Markdown, links relative to the report; else the settings' ``scores`` as a
    table), then Inception FID/KID under its table's title, its state (its findings, or
    why it is unavailable) said once."""
    fid = tables.get("fid", pd.DataFrame())
    lines = ["### Generation (sample-quality metrics only)", ""]
    if section:
        lines += [_subsection(section), ""]
    elif scores is not None and not scores.empty:
        lines += _scores_section(scores)
    findings = [f"- {sentence}" for sentence in fid_findings(fid)] + [""]
    # Where no cell has Inception FID, the findings already give the reason the table's
    # note would repeat.
    some = "available" not in fid.columns or fid["available"].astype(bool).any()
    table = _table_section("fid", fid, level="####", note=bool(some))
    return lines + table[:2] + findings + table[2:]


def _subsection(section: str) -> str:
    """The generation part's section one heading level down, without its own title (the
    report's Generation heading stands for it)."""
    lines = section.strip().splitlines()
    if lines and lines[0].startswith("## "):
        lines = lines[1:]
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in lines).strip()


# The offline metrics' columns when the run scored settings but wrote no section (only
# settings from noise): what each setting measured, KID with its interval.
SCORE_COLUMNS = {
    "method": "method",
    "mode": "model",
    "t0": "t0",
    "steps": "steps",
    "n_seeds": "seeds",
    "n_per_seed": "per seed",
    "kid_cifarnet": "KID",
    "kid_cifarnet_ci_low": "KID low",
    "kid_cifarnet_ci_high": "KID high",
    "diversity_all_feature": "diversity",
    "coverage_entropy_normalised": "coverage",
}


def _scores_section(scores: pd.DataFrame) -> list[str]:
    columns = {c: name for c, name in SCORE_COLUMNS.items() if c in scores.columns}
    shown = scores[list(columns)].rename(columns=columns)
    return [
        "#### Offline generation metrics (KID on CIFAR-10 classifier features)",
        "",
        "KID: unbiased squared MMD of the classifier's penultimate features against the "
        "reference set (95 % half-sample interval); diversity: mean pairwise feature "
        "distance; coverage: entropy of the predicted classes over log 10.",
        "",
        to_markdown(shown),
        "",
    ]


def _example2_section(tables: Mapping[str, pd.DataFrame], stops: list[StopClaim]) -> list[str]:
    lines = ["### Example 2: DDPM-inspired early stopping for DIP", ""]
    sentences = [claim.sentence() for claim in stops] or [
        "No early-stopping cell ran in this configuration."
    ]
    lines += [f"- {sentence}" for sentence in sentences] + [""]
    return lines + _table_section("earlystop", tables.get("earlystop"), level="####")


def _limitations_section(config: Mapping[str, Any], cells: pd.DataFrame) -> list[str]:
    lines = ["## Limitations", ""]
    if not cells.empty and {"dataset", "task", "image"} <= set(cells.columns):
        rows = cells[cells["purpose"].astype(str) == "restoration"]
        images = rows.groupby(["dataset", "task"])["image"].nunique()
        seeds = {
            c: rows[c][rows[c].astype(str) != "none"].nunique()
            for c in ("obs_seed", "dip_seed", "train_seed")
            if c in rows
        }
        if len(images):
            counts = (
                str(images.min())
                if images.min() == images.max()
                else f"{images.min()}-{images.max()}"
            )
            lines.append(
                f"- Restoration claims rest on {counts} images per "
                f"dataset and task and {seeds.get('obs_seed', 0)} observation, "
                f"{seeds.get('dip_seed', 0)} DIP and {seeds.get('train_seed', 0)} DDPM "
                "training seed(s): their CIs are over images; variation between seeds is "
                "not in them."
            )
    lines.append(
        "- A setting called the best is chosen by its mean on the images it is scored on, "
        "so its claims are optimistic for it (the study's Example 1 section tunes on other "
        "images)."
    )
    ddpm = config.get("ddpm") or {}
    if ddpm.get("steps"):
        lines.append(
            f"- The DDPMs train for {ddpm['steps']} steps at batch {ddpm.get('batch_size')}: "
            "far from convergence, so DDPM-based numbers are those of weak models."
        )
    missing = [
        f"{what} (`make study PART={target}`)"
        for keys, what, target in STUDY_SECTIONS
        if not _config_has(config, keys)
    ]
    if missing:
        lines.append(
            "- Sections this configuration does not produce; `config/study.yaml` does: "
            + "; ".join(missing)
            + "."
        )
    return lines + [""]


def _config_has(config: Mapping[str, Any], keys: tuple[str, ...]) -> bool:
    value: Any = config
    for key in keys:
        if not isinstance(value, Mapping) or not value.get(key):
            return False
        value = value[key]
    return True


def _appendix(
    config: Mapping[str, Any],
    commit: str,
    versions: pd.DataFrame | None,
    environment: Mapping[str, Any] | None,
    timings: pd.DataFrame | None,
) -> list[str]:
    dumped = yaml.safe_dump(_plain(config), sort_keys=True, default_flow_style=None).strip()
    lines = [
        "## Appendix: reproducibility",
        "",
        f"- Scale: **{scale_name(config)}**",
        f"- Report generated at commit `{commit}`",
        f"- Cells computed by: {_versions_text(versions)}",
        "- Every table row averages exactly the cells its columns name (the label spells out "
        "method, t0, prior, model, checkpoint and sampler); it averages over the seeds listed "
        "in its `*_seeds` columns, and its n is images x seeds.",
    ]
    for key, value in (environment or {}).items():
        lines.append(f"- {key}: {value}")
    lines += [
        "- Rebuild: `make run` (this configuration; `CIFAR10=<dir>` for a local CIFAR-10 "
        "copy), then `make summary`; the study in parts: `make study PART=<target>`.",
        "",
    ]
    if timings is not None and not timings.empty:
        lines += [
            "Compute per stage (the sum of the rules' benchmark seconds over the cells this "
            "report's tables average; jobs ran in parallel, so the wall clock was shorter):",
            "",
            to_markdown(timings),
            "",
        ]
    return lines + ["Configuration used for this run:", "", "```yaml", dumped or "{}", "```", ""]


def _plain(value: Any) -> Any:
    """Config as plain YAML-safe types (paths and numpy scalars become str/float)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _table_section(
    name: str, table: pd.DataFrame | None, level: str = "###", note: bool = True
) -> list[str]:
    """A table under its title; ``note``: the FID table's unavailable reasons above it
    (left out where the findings above already say them)."""
    title = TABLE_TITLES.get(name, name.replace("_", " ").capitalize())
    lines = [f"{level} {title}", ""]
    if table is None or table.empty:
        return lines + ["No results for this table in this run.", ""]
    shown = compact(table)
    if "label" in shown.columns:  # these are spelled out in the label
        shown = shown.drop(columns=[c for c in LABELLED if c in shown.columns])
    if name == "fid" and "reason" in shown.columns:
        text = _fid_note(shown) if note else ""
        shown = shown.drop(columns=["reason"])
        if text:
            lines += [text, ""]
    return lines + [to_markdown(shown), ""]


def _fid_note(table: pd.DataFrame) -> str:
    if "available" not in table.columns or table["available"].astype(bool).all():
        return ""
    reasons = sorted({str(r) for r in table["reason"].dropna() if str(r)})
    return "FID/KID unavailable for some cells: " + ("; ".join(reasons) or "no reason recorded")


# The section each figure belongs to; numbered in the order they appear.
FIGURE_SECTIONS = {
    "example1": ("quality_vs_steps", "dip_t0_heatmap", "qualitative"),
    "generation": ("fid_vs_steps",),
    "example2": ("earlystop_curves", "gap_distribution"),
    "ablations": ("dip_trajectories", "training_curves"),
}


class _Figures:
    """The run's figures, embedded in their sections and numbered as they appear."""

    def __init__(self, figures: Mapping[str, str], out_path: Path) -> None:
        self.figures, self.out_path, self.count = dict(figures), out_path, 0

    def section(self, name: str) -> list[str]:
        lines = []
        for figure in FIGURE_SECTIONS[name]:
            if figure in self.figures:
                lines += self._embed(figure, self.figures.pop(figure))
        return lines

    def rest(self) -> list[str]:
        """Figures of no section (none today; a new figure is never silently dropped)."""
        lines = []
        for figure, path in list(self.figures.items()):
            lines += self._embed(figure, path)
        return lines

    def _embed(self, name: str, path: str) -> list[str]:
        self.count += 1
        target = Path(path)
        if target.is_absolute() or target.exists():
            target = Path(os.path.relpath(target, self.out_path.parent))
        caption = FIGURE_CAPTIONS.get(name, name.replace("_", " ").capitalize() + ".")
        return [f"![{name}]({target.as_posix()})", "", f"*Figure {self.count}: {caption}*", ""]


def render_report(
    tables: Mapping[str, pd.DataFrame],
    figures: Mapping[str, str],
    config: Mapping[str, Any],
    commit: str,
    out_path: str | os.PathLike = "report.md",
    versions: pd.DataFrame | None = None,
    cells: pd.DataFrame | None = None,
    environment: Mapping[str, Any] | None = None,
    timings: pd.DataFrame | None = None,
    generation: str | None = None,
    generation_scores: pd.DataFrame | None = None,
) -> str:
    """The report as Markdown text (see write_report).

    ``cells`` (all_cells.csv: per-image rows) gives the paired claims; ``environment``
    (machine, torch) and ``timings`` (compute seconds per stage) the appendix;
    ``generation`` (the generation part's section, links relative to the report) or
    else ``generation_scores`` (its summary table) the offline generation metrics."""
    out_path = Path(out_path)
    empty = pd.DataFrame()
    cells = empty if cells is None else cells
    shown = _Figures(figures, out_path)
    claims = restoration_claims(cells)
    stop_claims = earlystop_claims(tables.get("earlystop", empty))
    lines = [
        f"# DIP + DDPM: results ({scale_name(config)})"
        if config.get("scale")
        else "# DIP + DDPM: results",
        "",
        "Generated from the aggregated result tables; every number below is computed from them.",
        "",
        "## Abstract",
        "",
        abstract(claims, stop_claims, config),
        "",
        *_methods_section(config, cells),
        "## Experiments",
        "",
        *_example1_section(tables, claims),
        *shown.section("example1"),
        *_generation_section(tables, generation, generation_scores),
        *shown.section("generation"),
        *_example2_section(tables, stop_claims),
        *shown.section("example2"),
        "## Ablations",
        "",
        *[f"- {sentence}" for sentence in ablation_findings(tables)],
        "",
    ]
    for name in ABLATION_TABLES:
        lines += _table_section(name, tables.get(name))
    extra = [name for name in tables if name not in KNOWN_TABLES]
    for name in extra:
        lines += _table_section(name, tables[name])
    lines += shown.section("ablations") + shown.rest()
    if not figures:
        lines += ["No figures were produced in this run.", ""]
    lines += _limitations_section(config, cells)
    lines += _appendix(config, commit, versions, environment, timings)
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    tables: Mapping[str, pd.DataFrame],
    figures: Mapping[str, str],
    config: Mapping[str, Any],
    commit: str,
    out_path: str | os.PathLike,
    versions: pd.DataFrame | None = None,
    **sections: Any,
) -> Path:
    """Write ``report.md`` atomically from the tables, figure paths and the config used.

    ``tables`` uses the names of aggregate.build_tables; ``figures`` maps a figure name
    (see FIGURE_CAPTIONS) to its image path, linked relative to the report; ``sections``
    are render_report's ``cells``, ``environment``, ``timings``, ``generation`` and
    ``generation_scores``.
    """
    out_path = Path(out_path)
    text = render_report(tables, figures, config, commit, out_path, versions, **sections)
    with atomic_path(out_path) as tmp:
        tmp.write_text(text)
    return out_path
