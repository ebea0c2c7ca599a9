"""The study's report: the answers first, then each committed part's section, with figures.

``config/study.yaml`` runs in parts (``make study PART=<target>``), each committing its tables
and its Markdown section under ``results/study/``. This module assembles them into one
report (``results/study/report.md``): an abstract that answers Example 1 and Example 2 with
their key numbers, CIs and n (read from the parts' committed tables, never typed in), then
each part's section as that part wrote it (its links rewritten to stay valid from the
report's folder, its own title replaced by the report's) followed by its figures with
captions saying what to see, then the limitations and a reproducibility appendix. A part
that has not run yet is named with the command that builds it; no number stands in for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .example1_report import interval


@dataclass(frozen=True)
class Figure:
    file: str  # relative to the part's folder
    caption: str  # what the figure shows and what to see in it


@dataclass(frozen=True)
class Part:
    """One committed part of the study: its folder under the study root, its section
    (Markdown, relative to the folder; None when the part writes tables only), its
    figures, and the target that builds it."""

    name: str
    title: str
    folder: str
    section: str | None
    figures: tuple[Figure, ...]
    target: str

    def present(self, root: Path) -> bool:
        folder = root / self.folder
        if self.section is not None:
            return (folder / self.section).is_file()
        return any((folder / f.file).is_file() for f in self.figures)


PARTS = (
    Part(
        "models",
        "DDPM training: full vs truncated diffusion",
        "models",
        None,
        (
            Figure(
                "model_convergence.png",
                "Held-out one-shot x0 PSNR at the sigma-matched steps against images seen "
                "and seconds, full vs truncated model. What to see: the truncated model "
                "is ahead at equal images seen at every evaluated step; both still climb "
                "at the end (flagged under-trained in the models table).",
            ),
        ),
        "models",
    ),
    Part(
        "example1",
        "Example 1: DIP priors for DDPM",
        "example1",
        "example1.md",
        (
            Figure(
                "psnr_vs_t0.png",
                "PSNR of DIP+DDPM against the start step t0, per task, on the held-out "
                "images. What to see: the curve peaks near the sigma-matched t0 for "
                "denoising; t0 = 0 is the DIP prior itself.",
            ),
            Figure(
                "qualitative.png",
                "Evaluation images per task: the observation, DIP at each duration, DIP+DDPM "
                "from the 400-iteration prior at several t0 (0 is the prior itself), DDPM "
                "alone and the clean image, PSNR on each. What to see: DIP is blurry early "
                "and copies the noise late (by 400 iterations at sigma 50); DDPM alone from "
                "the observation is the best denoiser; a small t0 helps where the prior is "
                "poor or incomplete (sigma 50, inpainting, SR); a large t0 changes the "
                "content.",
            ),
            Figure(
                "pareto.png",
                "PSNR against seconds per image for each method's settings. What to see: "
                "DDPM alone is far cheaper; DIP+DDPM costs the DIP fit plus the chain.",
            ),
        ),
        "example1",
    ),
    Part(
        "prior_training",
        "Training that sees the prior",
        "prior_training",
        "prior_training.md",
        (
            Figure(
                "convergence.png",
                "Held-out restoration PSNR from the DIP priors against images seen and "
                "seconds, per training mode. What to see: the prior-trained models lead "
                "the truncated one from 200 steps on; at equal seconds the priors' fit "
                "dominates the cost.",
            ),
        ),
        "prior_training",
    ),
    Part(
        "earlystop",
        "Example 2: DDPM-inspired early stopping for DIP",
        "earlystop",
        "example2.md",
        (),
        "earlystop_loo",
    ),
    Part(
        "earlystop_ablations",
        "Example 2: ablations of the progressive rule",
        "earlystop",
        "ablations.md",
        (),
        "earlystop_ablations",
    ),
    Part(
        "earlystop_guided",
        "Example 2: DDPM-guided DIP",
        "earlystop",
        "guided.md",
        (),
        "earlystop_guided",
    ),
    Part(
        "generation",
        "Generation from DIP priors and from noise",
        "generation",
        "generation.md",
        (),
        "generation",
    ),
)

LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def rebased(text: str, folder: str) -> str:
    """A section's Markdown with its relative links made relative to the study root
    (the section lived in ``folder``)."""

    def fix(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z]+://|^/|^#", target):
            return match.group(0)
        joined = Path(folder, target).as_posix()
        parts: list[str] = []
        for piece in joined.split("/"):
            if piece == ".." and parts and parts[-1] != "..":
                parts.pop()
            elif piece != ".":
                parts.append(piece)
        return f"{match.group(1)}{'/'.join(parts)}{match.group(3)}"

    return LINK.sub(fix, text)


# ------------------------------------------------------------------------------ answers


def _read(root: Path, relative: str) -> pd.DataFrame | None:
    path = root / relative
    return pd.read_csv(path) if path.is_file() else None


def example1_answer(root: Path) -> str | None:
    """Per task: DIP+DDPM vs DIP alone (the chosen settings) and vs DDPM alone at equal
    NFE, each with its Holm-adjusted CI and n (primary_comparisons.csv)."""
    primary = _read(root, "example1/primary_comparisons.csv")
    if primary is None or primary.empty:
        return None
    phrases = []
    for task, rows in primary.groupby("task", sort=False):
        picked = [
            _row_phrase(rows, "chosen", "vs DIP alone"),
            _row_phrase(rows, "equal NFE", "vs DDPM alone at equal NFE"),
        ]
        picked = [p for p in picked if p]
        if picked:
            n = int(rows["n"].iloc[0])
            phrases.append(f"{task} ({'; '.join(picked)}; n = {n})")
    return (
        "**Example 1** (DIP priors for DDPM, held-out CIFAR-10 images, settings tuned on "
        "other images, Holm-adjusted CIs): DIP+DDPM on " + "; ".join(phrases) + "."
    )


def _row_phrase(rows: pd.DataFrame, match: str, text: str) -> str | None:
    found = rows[(rows["match"] == match) & (rows["value"] == "psnr")]
    if found.empty:
        return None
    row = found.iloc[0]
    return (
        f"{text} {row['mean_diff']:+.2f} dB {interval(row['ci_low'], row['ci_high'])}, "
        f"{row['verdict']}"
    )


def prior_training_answer(root: Path) -> str | None:
    """Prior-trained vs truncated DDPM at the part's headline setting (headline.csv)."""
    headline = _read(root, "prior_training/headline.csv")
    if headline is None or headline.empty:
        return None
    rows = headline[headline["value"] == "psnr"]
    phrases = [
        f"{r['name']}: {r['mean_diff']:+.2f} dB {interval(r['ci_low'], r['ci_high'])} "
        f"({r['verdict']}, n = {int(r['n'])})"
        for _, r in rows.iterrows()
    ]
    return "Training the DDPM on DIP-prior states: " + "; ".join(phrases) + "."


def example2_answer(root: Path) -> str | None:
    """Example 2's answer, as its section states it (the section's ``**Answer**``
    paragraph: the section computes it from the leave-one-image-out tables)."""
    path = root / "earlystop" / "example2.md"
    if not path.is_file():
        return None
    return _answer_paragraph(path.read_text(), "**Example 2** (early stopping): ")


def guided_answer(root: Path) -> str | None:
    """Per dataset, the guided setting that runs to its last iteration best (its final
    PSNR near its own peak), against plain DIP's oracle and against the DDPM alone; or that
    no setting removes the need to stop early (earlystop/guided_summary.csv)."""
    summary = _read(root, "earlystop/guided_summary.csv")
    if summary is None or summary.empty:
        return None
    from .earlystop.guided_summary import REMOVES

    phrases = []
    for dataset, rows in summary.groupby("dataset", sort=False):
        free = rows[(rows["stopping_verdict"] == REMOVES) & (rows["guide_lam"] > 0)]
        if free.empty:
            phrases.append(f"on {dataset} no guided setting removes the need to stop early")
            continue
        best = free.sort_values("psnr_final").iloc[-1]
        n = int(best["n"])
        text = (
            f"on {dataset} {best['guide_form']} at lam {best['guide_lam']:g} ends "
            f"{best['final_minus_peak_db']:+.2f} dB from its own peak, "
            f"{best['minus_plain_peak_db']:+.2f} dB "
            f"{interval(best['minus_plain_peak_db_ci_low'], best['minus_plain_peak_db_ci_high'])}"
            f" against plain DIP's oracle stop"
        )
        if "minus_ddpm_x0_db" in best and pd.notna(best["minus_ddpm_x0_db"]):
            text += (
                f" and {best['minus_ddpm_x0_db']:+.2f} dB "
                f"{interval(best['minus_ddpm_x0_db_ci_low'], best['minus_ddpm_x0_db_ci_high'])}"
                f" against the DDPM alone"
            )
        phrases.append(f"{text} (n = {n})")
    return "**DDPM-guided DIP**: " + "; ".join(phrases) + "."


def generation_answer(root: Path) -> str | None:
    """The generation part's answer in one sentence, once its section is committed: KID
    with its interval at the largest NFE both arms share and the copying verdict, read
    from the part's curves table (:func:`dipddpm.generation_report.abstract_sentence`);
    the section's whole ``**Answer**`` paragraph when that table is missing."""
    path = root / "generation" / "generation.md"
    if not path.is_file():
        return None
    curves = _read(root, "generation/generation_curves.csv")
    if curves is not None:
        # Imported here: the generation report draws with matplotlib, which the other
        # parts' answers do not need.
        from .generation_report import abstract_sentence

        sentence = abstract_sentence(curves)
        if sentence:
            return sentence
    return _answer_paragraph(path.read_text(), "**Generation**: ")


def _answer_paragraph(text: str, prefix: str) -> str | None:
    """A section's answer, with ``prefix``: the paragraphs under its ``### Answer``
    heading (up to the next heading), or the paragraph that starts with ``**Answer**``."""
    paragraphs = [p.strip() for p in text.split("\n\n")]
    for i, paragraph in enumerate(paragraphs):
        if paragraph == "### Answer" and i + 1 < len(paragraphs):
            body = []
            for following in paragraphs[i + 1 :]:
                if following.startswith("#"):
                    break
                body.append(" ".join(following.split()))
            return prefix + " ".join(body)
        if paragraph.startswith("**Answer**"):
            body = paragraph[len("**Answer**") :].lstrip(" :.")
            return prefix + " ".join(body.split())
    return None


ANSWERS: Sequence[tuple[str, Callable[[Path], str | None]]] = (
    ("example1", example1_answer),
    ("prior_training", prior_training_answer),
    ("earlystop", example2_answer),
    ("earlystop_guided", guided_answer),
    ("generation", generation_answer),
)


# ------------------------------------------------------------------------------ report


def render_study_report(root: str | Path, commit: str, environment: Mapping[str, str]) -> str:
    """The study report's Markdown, written to ``<root>/report.md`` by the stage."""
    root = Path(root)
    parts = {part.name: part for part in PARTS}
    answers, missing = [], []
    for name, answer in ANSWERS:
        text = answer(root)
        if text:
            answers.append(text)
        else:
            missing.append(parts[name])
    lines = [
        "# DIP + DDPM: the study",
        "",
        "Assembled from the study's committed parts (`results/study/`); every number is "
        "read from a part's tables. Each part's section follows as that part wrote it.",
        "",
        "## Abstract",
        "",
        " ".join(answers) if answers else "No part of the study has been committed yet.",
        "",
    ]
    if missing:
        lines += [_not_yet(missing), ""]
    figure_number = 0
    for part in PARTS:
        if not part.present(root):
            continue
        lines += [f"## {part.title}", ""]
        if part.section is not None:
            text = (root / part.folder / part.section).read_text()
            lines += [_without_title(rebased(text, part.folder)).strip(), ""]
        for figure in part.figures:
            if (root / part.folder / figure.file).is_file():
                figure_number += 1
                path = f"{part.folder}/{figure.file}"
                lines += [
                    f"![{figure.file}]({path})",
                    "",
                    f"*Figure {figure_number}: {figure.caption}*",
                    "",
                ]
    lines += _limitations() + _appendix(commit, environment)
    return "\n".join(lines).rstrip() + "\n"


def _not_yet(parts: Sequence[Part]) -> str:
    named = "; ".join(f"{p.title} (`make study PART={p.target}`)" for p in parts)
    return f"Not in this report yet (the part has not been committed): {named}."


def _without_title(text: str) -> str:
    """A section without its own top heading (the report gives it one)."""
    lines = text.lstrip().splitlines()
    if lines and lines[0].startswith("## "):
        lines = lines[1:]
    return "\n".join(lines)


def _limitations() -> list[str]:
    return [
        "## Limitations",
        "",
        "- Scale: a 0.6M-parameter DDPM trained for 5,000 steps (320,000 images seen) on "
        "32x32 CIFAR-10, DIP on 32x32 images and 64x64 crops, on a 2-core CPU: absolute "
        "numbers are far from the published ones; the comparisons are paired on the same "
        "images and hold at this scale only.",
        "- One training seed per DDPM: differences between models carry no training-seed "
        "variation; CIs are over images (observation seeds averaged).",
        "- Each part states its own protocol (held-out images, leave-one-image-out tuning) "
        "and where n is too small for a verdict.",
        "",
    ]


def _appendix(commit: str, environment: Mapping[str, str]) -> list[str]:
    lines = [
        "## Appendix: reproducibility",
        "",
        f"- Report assembled at commit `{commit}`; each part's commit, wall time and "
        "machine load are in [`README.md`](README.md).",
    ]
    lines += [f"- {key}: {value}" for key, value in environment.items()]
    lines += [
        "- Rebuild a part: `make study PART=<target> CIFAR10=<dir with the CIFAR-10 "
        "archives>` (targets: " + ", ".join(f"`{p.target}`" for p in PARTS) + "), then "
        "`make study-report` (this report and its Snakemake HTML version).",
        "- Configuration: `config/study.yaml` (every key documented in "
        "`workflow/schemas/config.schema.yaml`).",
        "",
    ]
    return lines
