"""Adapter for rule generate_ddpm."""

from dipddpm.logs import log_to
from dipddpm.stages.ddpm import run_generate_cell

with log_to(snakemake.log[0]):
    run_generate_cell(
        snakemake.input.ckpt,
        n=snakemake.params.n,
        cell=snakemake.params.identity,
        device=snakemake.params.device,
        threads=snakemake.threads,
        out_npz=snakemake.output.npz,
        out_json=snakemake.output.json,
        out_preview=snakemake.output.preview,
        reference_npz=snakemake.input.reference,
        weights=snakemake.params.weights,
        out_fid=snakemake.output.fid,
    )
