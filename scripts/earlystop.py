"""Adapter for rule earlystop."""

from dipddpm.logs import log_to
from dipddpm.stages.earlystop import run_cell

with log_to(snakemake.log[0]):
    run_cell(
        snakemake.input.npz,
        snakemake.input.params,
        snakemake.input.plain_table,
        snakemake.input.plain_trajectory,
        snakemake.input.plain_json,
        cell=snakemake.params.identity,
        arch=snakemake.params.settings["arch"],
        dip=snakemake.params.settings["dip"],
        es=snakemake.params.settings["es"],
        device=snakemake.params.device,
        threads=snakemake.threads,
        out_table=snakemake.output.table,
        out_curves=snakemake.output.curves,
        out_trajectory=snakemake.output.trajectory,
        out_npz=snakemake.output.npz,
        out_json=snakemake.output.json,
    )
