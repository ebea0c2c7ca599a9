"""The DIP fitting hyperparameters' defaults, in one place.

These are the defaults the config schema gives ``dip.*`` (workflow/schemas/config.schema.yaml;
a test keeps the two equal) and the keyword defaults of ``DIPFitter`` and ``fit_dip``.
``iters``, ``snapshots`` and ``seeds`` are the pipeline's defaults only: ``fit_dip`` needs
``iters`` and one seed per image, and snapshots only the last iteration unless told.

``reg_noise_std`` is the schema's 0.0333, not the paper's 1/30: the configs pass 0.0333, so
a caller that omits it fits exactly as the pipeline does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DIPDefaults:
    iters: int = 3000
    snapshots: tuple[int, ...] = (100, 250, 500, 1000, 2000, 3000)
    lr: float = 0.01
    reg_noise_std: float = 0.0333
    exp_weight: float = 0.99
    backtrack: bool = True
    wmv_window: int = 100
    seeds: tuple[int, ...] = (0,)


DIP_DEFAULTS = DIPDefaults()
