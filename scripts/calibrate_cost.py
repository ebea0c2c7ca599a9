"""Adapter for rule calibrate_cost: one timing bench that every method's cost is read from."""

from dipddpm import cost
from dipddpm.logs import log_to

with log_to(snakemake.log[0]):
    calibration = cost.calibrate(
        archs=snakemake.params.archs,
        presets=snakemake.params.presets,
        image_shape=snakemake.params.image_shape,
        batch=int(snakemake.params.batch),
        threads=int(snakemake.threads),
        repeats=int(snakemake.params.get("repeats", 5)),
        warmup=int(snakemake.params.get("warmup", 2)),
        device=snakemake.params.get("device", "auto"),
    )
    cost.save(snakemake.output[0], calibration)
