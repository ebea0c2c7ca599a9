"""Adapter for rule summarise_generation."""

from dipddpm.logs import log_to
from dipddpm.stages.generation_metrics import summarise_generation

with log_to(snakemake.log[0]):
    summarise_generation(list(snakemake.input.scores), snakemake.output.csv)
