"""Adapter for rule summarise_priors."""

from dipddpm.logs import log_to
from dipddpm.stages.summaries import summarise_priors

with log_to(snakemake.log[0]):
    summarise_priors(snakemake.input.metrics, snakemake.output[0])
