"""Deep Image Prior: architectures and their registry (``models``), K networks stacked into
one (``batched``), the fitting engine (``fit``) with its ``backtracking``, ``recording``
and hyperparameter ``defaults``."""

from __future__ import annotations

from ..metrics import psnr_from_mse
from .defaults import DIP_DEFAULTS
from .fit import DIPFitter, FitResult, fit_dip
from .models import (
    ARCH_DEFAULTS,
    ARCH_KINDS,
    ARCHITECTURES,
    Architecture,
    build_dip_net,
    make_dip_input,
    register_architecture,
)

__all__ = [
    "ARCHITECTURES",
    "ARCH_DEFAULTS",
    "ARCH_KINDS",
    "DIP_DEFAULTS",
    "Architecture",
    "DIPFitter",
    "FitResult",
    "build_dip_net",
    "fit_dip",
    "make_dip_input",
    "psnr_from_mse",
    "register_architecture",
]
