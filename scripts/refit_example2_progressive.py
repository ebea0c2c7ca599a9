"""Adapter for rule example2_refit_progressive."""

from dipddpm.logs import log_to
from dipddpm.stages.example2_report import refit_progressive

with log_to(snakemake.log[0]):
    refit_progressive(
        list(snakemake.input.params),
        list(snakemake.input.curves),
        list(snakemake.input.outputs),
        list(snakemake.input.degraded),
        dip=snakemake.params.dip,
        threads=snakemake.threads,
        out_npz=snakemake.output.npz,
        out_table=snakemake.output.table,
        show_patience=snakemake.params.show_patience,
    )
