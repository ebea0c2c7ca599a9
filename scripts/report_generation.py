"""Adapter for rule report_generation."""

from dipddpm.logs import log_to
from dipddpm.stages.generation_metrics import report_generation

with log_to(snakemake.log[0]):
    report_generation(
        snakemake.input.scores,
        list(snakemake.input.cells),
        list(snakemake.input.priors),
        snakemake.input.classifier,
        snakemake.output.curves,
        snakemake.output.figure,
        snakemake.output.section,
        settings=dict(snakemake.params.settings),
        sample_npzs=list(snakemake.input.samples),
        prior_npzs=list(snakemake.input.prior_outputs),
        source_npz=snakemake.input.source,
        out_samples=snakemake.output.samples,
    )
