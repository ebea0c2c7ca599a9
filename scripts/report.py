"""Adapter for rule report."""

from dipddpm.logs import log_to
from dipddpm.stages.report import run_report

with log_to(snakemake.log[0]):
    run_report(
        snakemake.params.table_dir,
        snakemake.params.figure_dir,
        config=snakemake.params.config,
        out_md=snakemake.output.md,
        out_config=snakemake.output.config,
        repo=snakemake.params.repo,
    )
