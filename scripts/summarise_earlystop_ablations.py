"""Adapter for rule summarise_earlystop_ablations."""

from dipddpm.logs import log_to
from dipddpm.stages.earlystop import summarise_ablations

with log_to(snakemake.log[0]):
    summarise_ablations(
        snakemake.input.tables,
        snakemake.params.ablations,
        out_csv=snakemake.output.csv,
        out_md=snakemake.output.md,
    )
