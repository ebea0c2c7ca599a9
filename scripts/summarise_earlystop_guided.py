"""Adapter for rule summarise_earlystop_guided."""

from dipddpm.logs import log_to
from dipddpm.stages.earlystop_guided import summarise_earlystop_guided

with log_to(snakemake.log[0]):
    summarise_earlystop_guided(
        list(snakemake.input.tables),
        out_summary=snakemake.output.summary,
        out_comparisons=snakemake.output.comparisons,
        out_ddpm=snakemake.output.ddpm,
        out_markdown=snakemake.output.markdown,
    )
