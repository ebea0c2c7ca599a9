"""Adapter for rule prepare_dataset."""

from dipddpm.logs import log_to
from dipddpm.stages.data import prepare_dataset

with log_to(snakemake.log[0]):
    prepare_dataset(
        snakemake.wildcards.dataset,
        snakemake.params.spec,
        snakemake.params.cifar10,
        snakemake.output.npz,
        snakemake.output.preview,
        snakemake.output.meta,
    )
