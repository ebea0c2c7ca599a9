"""Adapter for rule earlystop_plain."""

from dipddpm.logs import log_to
from dipddpm.stages.earlystop import run_plain_cell

with log_to(snakemake.log[0]):
    run_plain_cell(
        snakemake.input.npz,
        snakemake.input.params,
        cell=snakemake.params.identity,
        arch=snakemake.params.settings["arch"],
        dip=snakemake.params.settings["dip"],
        es=snakemake.params.settings["es"],
        device=snakemake.params.device,
        threads=snakemake.threads,
        out_table=snakemake.output.table,
        out_trajectory=snakemake.output.trajectory,
        out_json=snakemake.output.json,
    )
