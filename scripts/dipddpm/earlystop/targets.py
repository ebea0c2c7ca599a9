"""Progressive targets: the observation with decreasing amounts of injected noise.

From the observation y we build K stage targets ``y_k = y + sigma_k * n_k`` with ``sigma_k``
decreasing along a diffusion-like schedule down to ``sigma_{K-1} = 0`` (the last target is y
itself). One DIP network per image is trained stage by stage, from the most to the least
corrupted target, like a reverse diffusion in noise level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..dip.fit import derive_seed
from ..operators import Operator

SCHEDULES = ("linear", "cosine", "geometric")
NOISE_MODES = ("fresh", "fixed")
# The random stream of the stage noise: fit.py uses streams 0..2 for one image.
TARGET_STREAM = 3


def stage_sigmas(schedule: str, K: int, sigma_max: float, ratio: float = 0.5) -> np.ndarray:
    """Noise std of each of the K stage targets, decreasing, the last one exactly 0.

    With ``u_k = 1 - k / (K - 1)`` running from 1 (first stage) to 0 (last):
    ``linear``: ``sigma_max * u_k``; ``cosine``: ``sigma_max * sin(pi/2 * u_k)``, the
    noise std ``sqrt(1 - alpha_bar)`` of the DDPM cosine schedule (slow start, fast end);
    ``geometric``: ``sigma_max * ratio**k`` for the K - 1 noisy stages (constant ratio
    between stages, as in score-based models), then 0. Units are those of the images
    (range 1), like ``sigma_task``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")
    if int(K) != K or K < 1:
        raise ValueError(f"K (number of stages) must be an integer >= 1; got {K!r}")
    K = int(K)
    if K > 1 and not (math.isfinite(sigma_max) and sigma_max > 0):
        raise ValueError(f"sigma_max must be a positive number; got {sigma_max!r}")
    if schedule == "geometric" and not 0 < ratio < 1:
        raise ValueError(f"geometric schedule ratio must be in (0, 1); got {ratio!r}")
    if K == 1:
        return np.zeros(1)
    u = 1.0 - np.arange(K) / (K - 1)
    if schedule == "linear":
        sigmas = sigma_max * u
    elif schedule == "cosine":
        sigmas = sigma_max * np.sin(0.5 * np.pi * u)
    else:
        sigmas = sigma_max * ratio ** np.arange(K, dtype=np.float64)
    sigmas[-1] = 0.0
    return sigmas


def progressive_targets(
    y: torch.Tensor,
    sigmas: Sequence[float],
    noise: str = "fresh",
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage targets ``y_k = y + sigma_k * n_k`` and the unit noises ``n_k``.

    ``y`` is the observation (N, C, h, w). ``noise="fresh"`` draws an independent n_k per
    stage; ``"fixed"`` reuses one draw (a single forward-diffusion path). Targets are not
    clipped, so their noise stays exactly Gaussian with std sigma_k. ``mask`` (inpainting,
    broadcastable to y) zeroes the noise on unknown pixels, where y carries no data.
    A stage with sigma_k = 0 gets y itself, bit for bit. Returns two (K, N, C, h, w)
    tensors: targets and unit noises (the rule needs the noise it can recognise).
    """
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}; got {noise!r}")
    y = torch.as_tensor(y, dtype=torch.float32)
    if y.ndim != 4:
        raise ValueError(f"observation must have shape (N, C, H, W); got {tuple(y.shape)}")
    sigmas = [float(s) for s in sigmas]
    if any(not math.isfinite(s) or s < 0 for s in sigmas):
        raise ValueError(f"stage sigmas must be finite and >= 0; got {sigmas}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    # Drawn in both modes: the fresh draws follow it in the generator's stream, so dropping
    # it would change every stored target.
    shared = torch.randn(y.shape, generator=generator).to(y.device)
    targets, noises = [], []
    for sigma in sigmas:
        n = shared if noise == "fixed" else torch.randn(y.shape, generator=generator)
        n = n.to(y.device)
        if mask is not None:
            n = n * mask.to(y.device)
        noises.append(n)
        targets.append(y.clone() if sigma == 0 else y + sigma * n)
    return torch.stack(targets), torch.stack(noises)


def stage_targets_for(
    observed: torch.Tensor,
    operator: Operator,
    seeds: Sequence[int],
    sigmas: Sequence[float],
    noise: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Progressive targets drawn per image from its own seed, so an image gets the same
    targets whatever batch it is fitted in. Returns (K, N, ...) targets and unit noises."""
    per_image = []
    for i, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(derive_seed(int(seed), TARGET_STREAM))
        mask = operator.mask
        if mask is not None:  # one mask per image, or one shared (1, 1, H, W)
            mask = (mask[i : i + 1] if len(mask) > 1 else mask).cpu()
        per_image.append(progressive_targets(observed[i : i + 1].cpu(), sigmas, noise, gen, mask))
    targets = torch.cat([t for t, _ in per_image], dim=1)
    noises = torch.cat([n for _, n in per_image], dim=1)
    return targets.to(observed.device), noises.to(observed.device)
