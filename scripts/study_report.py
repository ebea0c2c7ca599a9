"""Adapter for rule study_report."""

from dipddpm.logs import log_to
from dipddpm.stages.report import run_study_report

with log_to(snakemake.log[0]):
    run_study_report(snakemake.params.root, snakemake.output.md, repo=snakemake.params.repo)
