"""Adapter for rule train_ddpm."""

from dipddpm.logs import log_to
from dipddpm.stages.ddpm import run_train_cell

with log_to(snakemake.log[0]):
    run_train_cell(
        snakemake.input.clean,
        snakemake.input.held_out,
        cell=snakemake.params.identity,
        train_cfg=snakemake.params.train,
        device=snakemake.params.device,
        threads=snakemake.threads,
        out_dir=snakemake.params.out_dir,
        out_json=snakemake.output.json,
        prior_npz=snakemake.input.get("prior"),
        prior=snakemake.params.prior,
    )
