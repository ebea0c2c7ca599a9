"""Adapter for rule score_generation."""

from dipddpm.logs import log_to
from dipddpm.stages.generation_metrics import score_generation

with log_to(snakemake.log[0]):
    score_generation(
        list(snakemake.input.samples),
        snakemake.input.reference,
        snakemake.input.classifier,
        snakemake.output.csv,
        identity=dict(snakemake.params.identity),
        prior_npz=snakemake.input.get("prior") or None,
        prior_iters=snakemake.params.get("prior_iters"),
        source_npz=snakemake.input.get("source") or None,
        train_npz=snakemake.input.get("train") or None,
        heldout_npz=snakemake.input.get("heldout") or None,
        shared_starts=snakemake.params.shared_starts,
        threads=snakemake.threads,
    )
