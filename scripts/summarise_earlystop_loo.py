"""Adapter for rule summarise_earlystop_loo."""

from dipddpm.logs import log_to
from dipddpm.stages.earlystop_loo import summarise_earlystop_loo

with log_to(snakemake.log[0]):
    summarise_earlystop_loo(
        list(snakemake.input.trajectories),
        list(snakemake.input.tables),
        list(snakemake.input.params),
        list(snakemake.input.observations),
        settings=snakemake.params.settings,
        out_cases=snakemake.output.cases,
        out_summary=snakemake.output.summary,
        out_summary_by_task=snakemake.output.summary_by_task,
        out_comparisons=snakemake.output.comparisons,
        out_choices=snakemake.output.choices,
        out_plain_peaks=snakemake.output.plain_peaks,
    )
