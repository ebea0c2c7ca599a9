"""Adapter for rule summarise_prior_training."""

from dipddpm.logs import log_to
from dipddpm.stages.prior_comparison import summarise_prior_training

with log_to(snakemake.log[0]):
    summarise_prior_training(
        list(snakemake.input.metrics),
        list(snakemake.input.curves),
        snakemake.params.training_priors,
        batch_size=snakemake.params.batch_size,
        final_ckpt=snakemake.params.final_ckpt,
        t0=snakemake.params.t0,
        steps=snakemake.params.steps,
        out_dir=snakemake.params.out_dir,
    )
