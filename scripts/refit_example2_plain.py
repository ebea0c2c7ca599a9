"""Adapter for rule example2_refit_plain."""

from dipddpm.logs import log_to
from dipddpm.stages.example2_report import refit_plain

with log_to(snakemake.log[0]):
    refit_plain(
        snakemake.input.cases,
        list(snakemake.input.trajectories),
        list(snakemake.input.tables),
        list(snakemake.input.params),
        list(snakemake.input.observations),
        list(snakemake.input.degraded),
        dip=snakemake.params.dip,
        threads=snakemake.threads,
        out_npz=snakemake.output.npz,
        out_table=snakemake.output.table,
    )
