"""Adapter for rule sample_ddpm."""

from dipddpm.logs import log_to
from dipddpm.stages.ddpm import run_sample_cell

with log_to(snakemake.log[0]):
    run_sample_cell(
        snakemake.input.ckpt,
        snakemake.input.npz,
        snakemake.input.params,
        prior_npz=snakemake.input.get("prior") or None,
        cell=snakemake.params.identity,
        device=snakemake.params.device,
        threads=snakemake.threads,
        out_npz=snakemake.output.npz,
        out_metrics=snakemake.output.metrics,
        out_json=snakemake.output.json,
        out_preview=snakemake.output.preview,
        reference_npz=snakemake.input.get("reference") or None,
        weights=snakemake.params.weights,
        out_fid=snakemake.output.fid,
        calibration_json=list(snakemake.input.calibration),
    )
