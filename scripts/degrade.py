"""Adapter for rule degrade."""

from dipddpm.logs import log_to
from dipddpm.stages.data import degrade_dataset

with log_to(snakemake.log[0]):
    degrade_dataset(
        snakemake.input.clean,
        snakemake.wildcards.task,
        snakemake.params.task,
        int(snakemake.wildcards.obs_seed),
        snakemake.output.npz,
        snakemake.output.params,
        snakemake.output.preview,
    )
