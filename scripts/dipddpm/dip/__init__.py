"""Deep Image Prior: architectures (``models``) and the batched fitting engine (``fit``)."""

from __future__ import annotations

from .fit import DIPFitter, FitResult, fit_dip, psnr_from_mse
from .models import ARCH_DEFAULTS, ARCH_KINDS, build_dip_net, make_dip_input

__all__ = [
    "ARCH_DEFAULTS",
    "ARCH_KINDS",
    "DIPFitter",
    "FitResult",
    "build_dip_net",
    "fit_dip",
    "make_dip_input",
    "psnr_from_mse",
]
