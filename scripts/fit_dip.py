"""Adapter for rule fit_dip."""

from dipddpm.logs import log_to
from dipddpm.stages.dip import run_dip_cell

with log_to(snakemake.log[0]):
    run_dip_cell(
        snakemake.input.npz,
        snakemake.input.params,
        cell=snakemake.params.identity,
        arch=snakemake.params.settings["arch"],
        fit=snakemake.params.settings["fit"],
        device=snakemake.params.device,
        threads=snakemake.threads,
        out_npz=snakemake.output.npz,
        out_trajectory=snakemake.output.trajectory,
        out_metrics=snakemake.output.metrics,
        out_json=snakemake.output.json,
        out_preview=snakemake.output.preview,
    )
