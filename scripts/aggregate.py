"""Adapter for rule aggregate."""

from dipddpm.logs import log_to
from dipddpm.stages.report import run_aggregate

with log_to(snakemake.log[0]):
    run_aggregate(
        list(snakemake.input.metrics),
        list(snakemake.input.curves),
        list(snakemake.input.fids),
        list(snakemake.input.earlystop),
        target_psnr=snakemake.params.target_psnr,
        target_eval_psnr=snakemake.params.target_eval_psnr,
        out_all_cells=snakemake.output.all_cells,
        out_versions=snakemake.output.versions,
        out_dir=str(snakemake.output.all_cells).rsplit("/", 1)[0],
        calibration_json=list(snakemake.input.calibration),
    )
