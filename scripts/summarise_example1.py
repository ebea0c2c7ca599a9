"""Adapter for rule summarise_example1."""

from dipddpm.logs import log_to
from dipddpm.stages.example1 import summarise_example1

with log_to(snakemake.log[0]):
    summarise_example1(
        list(snakemake.input.metrics),
        list(snakemake.input.calibration),
        tuning=snakemake.params.tuning_every,
        out_dir=snakemake.params.out_dir,
        observations=list(snakemake.input.observations),
        priors=list(snakemake.input.priors),
        T=snakemake.params.T,
        schedule=snakemake.params.schedule,
        model_verdicts=snakemake.params.model_verdicts,
        prior_headline=snakemake.params.prior_headline,
    )
