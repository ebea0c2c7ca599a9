"""Stage entry points: one function per Snakemake rule, taking plain paths and values.

The adapter scripts in ``scripts/*.py`` read ``snakemake.input/output/params`` and call
these; everything testable lives here.
"""
