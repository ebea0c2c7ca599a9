"""Adapter for rule summarise_models."""

from dipddpm.logs import log_to
from dipddpm.stages.summaries import summarise_models

with log_to(snakemake.log[0]):
    summarise_models(
        snakemake.input.curves,
        batch_size=snakemake.params.batch_size,
        plateau_db=snakemake.params.plateau_db,
        out_table=snakemake.output.table,
        out_verdicts=snakemake.output.verdicts,
        out_figure_stem=snakemake.params.stem,
    )
