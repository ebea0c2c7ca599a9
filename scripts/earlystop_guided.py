"""Adapter for rule earlystop_guided_cell."""

from dipddpm.logs import log_to
from dipddpm.stages.earlystop_guided import run_cell

with log_to(snakemake.log[0]):
    run_cell(
        snakemake.input.npz,
        snakemake.input.params,
        snakemake.input.ckpt,
        classifier=snakemake.input.get("classifier"),
        cell=snakemake.params.identity,
        arch=snakemake.params.settings["arch"],
        dip=snakemake.params.settings["dip"],
        guided=snakemake.params.settings["guided"],
        device=snakemake.params.device,
        threads=snakemake.threads,
        out_table=snakemake.output.table,
        out_trajectory=snakemake.output.trajectory,
        out_json=snakemake.output.json,
    )
