"""Adapter for rule figures."""

from pathlib import Path

from dipddpm.logs import log_to
from dipddpm.stages.report import run_figures

with log_to(snakemake.log[0]):
    run_figures(
        snakemake.input.all_cells,
        list(snakemake.input.trajectories),
        list(snakemake.input.curves),
        list(snakemake.input.fids),
        list(snakemake.input.earlystop),
        list(snakemake.input.stage_curves),
        qualitative=snakemake.params.panels,
        names=snakemake.params.names,
        out_dir=Path(snakemake.output.figures[0]).parent,
    )
