"""The study parts' summaries: the models part's convergence and the priors part's DIP alone.

Kept apart from the cell stages (:mod:`.ddpm`, :mod:`.dip`) because they pull in pandas'
aggregation, scipy and matplotlib, which every one of the many sampling and fitting jobs
would otherwise pay for at import time.
"""

from __future__ import annotations

import logging

from .. import figures, grid
from ..aggregate import collect, dip_by_architecture
from ..ddpm.convergence import convergence_table, convergence_verdicts
from ..io import save_csv

log = logging.getLogger("dipddpm")


def summarise_models(
    curves, batch_size: int, plateau_db: float, out_table, out_verdicts, out_figure_stem
) -> None:
    """The models part's summary: quality vs images seen and seconds, per model, and
    which models have not flattened (under-trained) over their last doubling."""
    frame = collect(curves)
    keys = [k for k in grid.TRAIN.axes if k in frame.columns]
    table = convergence_table(frame, keys, batch_size)
    verdicts = convergence_verdicts(table, keys, plateau_db)
    save_csv(out_table, table)
    save_csv(out_verdicts, verdicts)
    figures.model_convergence(table, keys, out_figure_stem)
    for _, row in verdicts.iterrows():
        log.info(
            "%s t_max=%s: %.2f dB after %d images (%.0f s), +%.2f dB over the last doubling%s",
            row["mode"],
            row["t_max"],
            row["final_psnr_mean"],
            row["images_seen"],
            row["train_seconds"],
            row["last_doubling_gain_db"],
            " (under-trained)" if row["under_trained"] else "",
        )


def summarise_priors(metrics_csvs, out_csv) -> None:
    """DIP alone in the prior store, per task, architecture and duration: mean PSNR/SSIM at
    each stored duration and the mean per-image peak (an upper reference only: picking
    the peak needs the clean image)."""
    table = dip_by_architecture(collect(metrics_csvs))
    save_csv(out_csv, table)
    log.info("DIP priors: %d rows over %d cells", len(table), len(list(metrics_csvs)))
