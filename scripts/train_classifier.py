"""Adapter for rule train_classifier."""

from dipddpm.logs import log_to
from dipddpm.stages.generation_metrics import train_classifier_stage

with log_to(snakemake.log[0]):
    train_classifier_stage(
        snakemake.input.train,
        snakemake.input.test,
        out_weights=snakemake.output.weights,
        out_json=snakemake.output.json,
        settings=dict(snakemake.params.settings),
        floor=snakemake.params.floor,
        min_test_images=snakemake.params.min_test_images,
        exclude_npzs=list(snakemake.input.get("exclude", [])),
        threads=snakemake.threads,
        resume_path=snakemake.params.get("resume") or None,
    )
