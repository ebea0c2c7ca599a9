"""Adapter for rule fid."""

from dipddpm.logs import log_to
from dipddpm.stages.report import run_fid_cell

with log_to(snakemake.log[0]):
    run_fid_cell(
        snakemake.input.samples,
        snakemake.input.cell,
        snakemake.input.reference,
        weights=snakemake.params.weights,
        device=snakemake.params.device,
        out_json=snakemake.output.json,
    )
