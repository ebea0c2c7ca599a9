"""Adapter for rule store_prior."""

from dipddpm.logs import log_to
from dipddpm.stages.dip import store_prior

with log_to(snakemake.log[0]):
    store_prior(
        snakemake.input.get("npz"),
        snakemake.input.get("metrics"),
        snakemake.output.npz,
        snakemake.output.metrics,
    )
