"""Adapter for rule report."""

from pathlib import Path

from dipddpm.logs import log_to
from dipddpm.stages.report import run_report

with log_to(snakemake.log[0]):
    run_report(
        Path(snakemake.input.tables[0]).parent,
        Path(snakemake.input.figures[0]).parent,
        snakemake.input.versions,
        config=snakemake.params.config,
        out_md=snakemake.output.md,
        out_config=snakemake.output.config,
        repo=snakemake.params.repo,
        all_cells=snakemake.input.all_cells,
        benchmarks=snakemake.params.benchmarks,
        generation=snakemake.input.get("generation", []),
    )
