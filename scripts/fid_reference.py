"""Adapter for rule fid_reference."""

from dipddpm.logs import log_to
from dipddpm.stages.fid import run_fid_reference

with log_to(snakemake.log[0]):
    run_fid_reference(
        snakemake.input.clean,
        weights=snakemake.params.weights,
        device=snakemake.params.device,
        out_npz=snakemake.output.npz,
    )
