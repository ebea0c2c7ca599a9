"""Adapter for rule example2_report."""

from dipddpm.logs import log_to
from dipddpm.stages.example2_report import write_example2

with log_to(snakemake.log[0]):
    write_example2(
        {
            name: snakemake.input[name]
            for name in ("cases", "summary", "summary_by_task", "comparisons", "plain_peaks")
        },
        list(snakemake.input.trajectories),
        list(snakemake.input.tables),
        list(snakemake.input.params),
        list(snakemake.input.observations),
        list(snakemake.input.stage_curves),
        plain_refit=(snakemake.input.plain_npz, snakemake.input.plain_table),
        progressive_refit=(snakemake.input.progressive_npz, snakemake.input.progressive_table),
        settings=snakemake.params.settings,
        out_section=snakemake.output.section,
        out_curves=snakemake.output.curves,
        out_gaps=snakemake.output.gaps,
        out_crops=snakemake.output.crops,
    )
