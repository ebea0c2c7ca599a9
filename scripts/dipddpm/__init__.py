"""DIP + DDPM reference pipeline: the importable library behind the Snakemake rules."""

__version__ = "0.1.0"
