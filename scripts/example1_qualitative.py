"""Adapter for rule example1_qualitative."""

from dipddpm.logs import log_to
from dipddpm.stages.example1 import draw_qualitative

with log_to(snakemake.log[0]):
    draw_qualitative(
        list(snakemake.input.observations),
        list(snakemake.input.priors),
        list(snakemake.input.models),
        plan=snakemake.params.plan,
        tuning=snakemake.params.tuning_every,
        stem=snakemake.params.stem,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
