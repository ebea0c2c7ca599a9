"""Adapter for rule store_model."""

from dipddpm.logs import log_to
from dipddpm.stages.ddpm import store_model

with log_to(snakemake.log[0]):
    store_model(snakemake.input.get("checkpoint"), snakemake.output[0])
