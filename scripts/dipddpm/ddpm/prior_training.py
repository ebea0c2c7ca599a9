"""Prior-trained DDPM: training that sees the DIP outputs of the training images.

The ``truncated`` model trains on ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with
t <= t_max, yet at sampling time it is started from a diffused DIP output, whose structured
error (blur, missing texture) it has never seen. In ``prior-trained`` mode a share p of
each batch is instead noised from the DIP output of the same training image,

    x_t = sqrt(abar_t) x_DIP + sqrt(1 - abar_t) eps,

and the network learns to recover the CLEAN image: an x0-predicting network regresses on
x_0, an eps-predicting one on the equivalent noise, the eps* with
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps*``:

    eps* = eps + sqrt(abar_t / (1 - abar_t)) (x_DIP - x_0).

The remedy for unbounded targets: a t floor per image
----------------------------------------------------
In [0, 1] units (model space is [-1, 1], hence the 2s) the excess is
``||eps* - eps||_rms = r / s(t)``, with ``r`` the image's prior error RMS and
``s(t) = sqrt((1 - abar_t) / abar_t) / 2`` the noise level of step t
(:func:`dipddpm.ddpm.auto_t0.noise_level`). On the linear schedule with T = 1000, s(1) =
0.0050 (the coefficient sqrt(abar_1 / (1 - abar_1)) is 100), so the study's skip prior
(sigma 25, 400 iterations, mean 25.6 dB, r ~ 0.052) would give a target 10.5 times the noise
RMS at t = 1, 2.4 at t = 10: the loss would be dominated by a few small-t prior samples
asking the network to undo an error that the noise at that step no longer hides.

Prior samples are therefore drawn only at ``t >= t_floor(i) = t_for_error(r_i)``, the
step whose noise level matches image i's own error RMS (the mapping auto-t0 uses to pick
a DIP start; at least 1). There ``r_i / s(t) <= r_i / s(t_floor) ~ 1``: the error is at
most as large as the noise the step adds, so the excess is at most about one noise RMS
and the target RMS at most about 2 (about 1.4 for an error uncorrelated with the noise).
The mapping picks the step nearest in log, so the excess is bounded by
sqrt(max_t s(t + 1) / s(t)) (:func:`excess_target_bound`): 1.22 on the linear schedule with
T = 1000, 1.09 once r >= 0.01 (any prior worse than 40 dB). At the study's mean prior
errors the floors are t = 29 (400 iterations), 33 (200) and 70 (100, 18.5 dB) of
t_max = 150. This matches how the model is used: a DIP-start chain starts at a t0 where
the noise covers the prior's error (auto-t0 picks exactly t_for_error), so below the floor
a prior-derived state is not one the chain starts from.

The other remedies were rejected: predicting x0 for prior samples (an x0 loss is the eps
loss times (1 - abar_t) / abar_t, 1e-4 at t = 1) silences them at small t instead of
removing the ill-posed task, and mixes two parameterisations in one network; weighting
the loss keeps targets of 10x the noise in the batch, where they still dominate gradient
clipping and AdamW's second moments.

The floor keeps the share p exact: a prior sample whose t (drawn by the training's own
stream, untouched) lies below its floor gets a new t drawn from the prior stream,
uniform on ``t_floor..t_max``, which makes prior samples' t uniform on that range. A zero
error has the floor 1, so then no t is changed: with x_DIP = x_0 the training is the
truncated one, bit for bit, as it is with p = 0.

An image whose error exceeds the noise level of t_max keeps the floor t_max and an
excess of r / s(t_max) above the bound; :func:`prepare_priors` warns about those (a
misaligned prior array, one image's prior paired with another image, looks like that).

The share may follow a schedule over training (:func:`prior_share_at`): constant, or a
linear ramp from ``share_start`` to ``share`` (the "intermediate priors at different stages
of DDPM training" of the assignment).
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dipddpm.ddpm.auto_t0 import noise_level, prior_error, t_for_error
from dipddpm.ddpm.diffusion import Diffusion, _randn

log = logging.getLogger("dipddpm")

PRIOR_MODE = "prior-trained"


# ---------------------------------------------------------------------------- settings


def check_prior_settings(
    mode: str, share: float | None, share_start: float | None, ramp_steps: int | None
) -> None:
    """Reject prior settings that are missing, out of range, or given to another mode."""
    if mode != PRIOR_MODE:
        given = {
            name: value
            for name, value in (
                ("prior_share", share),
                ("prior_share_start", share_start),
                ("prior_ramp_steps", ramp_steps),
            )
            if value is not None
        }
        if given:
            raise ValueError(f"{sorted(given)} are only used in {PRIOR_MODE} mode, not {mode!r}")
        return
    if share is None:
        raise ValueError(f"{PRIOR_MODE} mode needs prior_share (p) in [0, 1]; got None")
    for name, value in (("prior_share", share), ("prior_share_start", share_start)):
        if value is not None and not _is_share(value):
            raise ValueError(f"{name} must lie in [0, 1]; got {value!r}")
    if ramp_steps is not None:
        if share_start is None:
            raise ValueError(
                f"prior_ramp_steps={ramp_steps} needs prior_share_start (the ramp's first value)"
            )
        if int(ramp_steps) != ramp_steps or ramp_steps < 1:
            raise ValueError(f"prior_ramp_steps must be an integer >= 1; got {ramp_steps}")


def _is_share(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0.0 <= value <= 1.0


def prior_share_at(
    step: int, share: float, share_start: float | None = None, ramp_steps: int = 1
) -> float:
    """The share p of prior samples at optimisation step ``step`` (0-based).

    Constant ``share`` when ``share_start`` is None; otherwise a linear ramp that is
    ``share_start`` at the first step and ``share`` from step index ``ramp_steps - 1`` on.
    """
    if share_start is None:
        return float(share)
    fraction = min(1.0, step / (ramp_steps - 1)) if ramp_steps > 1 else 1.0
    return float(share_start + (share - share_start) * fraction)


# ------------------------------------------------------------------------------ priors


class TrainingPriors(NamedTuple):
    """The DIP outputs of (a subset of) the training images: row i belongs to training image
    ``index[i]``, or to training image i when ``index`` is None (every image has a prior).

    With a subset (the study fits DIP to 512 of 50,000 images), a prior sample is not the
    batch's own image: it is a pool member drawn at random, clean image and prior together,
    so the clean samples still come from the whole training set."""

    images: torch.Tensor  # float32 (M, C, H, W) in [0, 1]
    error_rms: np.ndarray  # (M,) ||x_DIP - x_0|| / sqrt(d), [0, 1] units
    t_floor: torch.Tensor  # (M,) long: the smallest t a prior sample of row i is drawn at
    digest: str  # sha256 of the float32 priors (and index): a resume must see the same pool
    index: torch.Tensor | None = None  # (M,) long positions in the training images


def check_priors(priors01: np.ndarray, images01: np.ndarray) -> None:
    """Priors must be a finite [0, 1] array shaped like the training images, row for row."""
    if not isinstance(priors01, np.ndarray):
        raise ValueError(
            f"priors01 must be a numpy (N, C, H, W) array; got {type(priors01).__name__}"
        )
    if priors01.shape != images01.shape:
        raise ValueError(
            f"priors01 must hold one DIP output per training image, in the same order: "
            f"shape {images01.shape} like the training images; got {priors01.shape}"
        )
    if not np.all(np.isfinite(priors01)):
        raise ValueError("priors01 has non-finite values")
    lo, hi = float(priors01.min()), float(priors01.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"priors01 must lie in [0, 1] like the training images; got range [{lo:.3g}, {hi:.3g}]"
        )


def t_floors(diffusion: Diffusion, error_rms: np.ndarray, t_max: int) -> torch.Tensor:
    """Per image, the step whose noise level matches its error RMS, in 1..t_max."""
    steps = np.atleast_1d(t_for_error(diffusion, np.asarray(error_rms, dtype=float), t_max))
    return torch.as_tensor(np.maximum(steps, 1), dtype=torch.long)


def excess_target_bound(diffusion: Diffusion) -> float:
    """Bound on ``||eps* - eps||_rms`` of a prior sample at ``t >= t_floor``.

    ``t_for_error`` picks the step nearest in log, so ``s(t_floor) >= r / sqrt(q)`` with q
    the largest ratio ``s(t + 1) / s(t)`` of the schedule; the bound holds for every image
    whose error is below the noise level of t_max."""
    levels = np.array([noise_level(diffusion, t) for t in range(1, diffusion.T + 1)])
    ratio = levels[1:] / levels[:-1] if diffusion.T > 1 else np.ones(1)
    return float(np.sqrt(max(1.0, ratio.max())))


def prepare_priors(
    priors01: np.ndarray,
    images01: np.ndarray,
    diffusion: Diffusion,
    t_max: int,
    index: np.ndarray | None = None,
) -> TrainingPriors:
    """Check the priors against their training images (``images01[index]``, or all of
    ``images01`` row for row); compute their errors and t floors."""
    if index is not None:
        index = np.asarray(index, dtype=np.int64)
        if index.ndim != 1 or len(np.unique(index)) != len(index):
            raise ValueError("prior_index must list distinct training-image positions")
        if len(index) and (index.min() < 0 or index.max() >= len(images01)):
            raise ValueError(
                f"prior_index must lie in 0..{len(images01) - 1}; got {index.min()}..{index.max()}"
            )
        images01 = images01[index]
    check_priors(priors01, images01)
    error = prior_error(priors01, images01)
    floors = t_floors(diffusion, error, t_max)
    beyond = error > noise_level(diffusion, t_max)
    if beyond.any():
        warnings.warn(
            f"{int(beyond.sum())} of {len(error)} priors have an error RMS above the noise "
            f"level of t_max={t_max} (s = {noise_level(diffusion, t_max):.3g}; their errors "
            f"reach {error.max():.3g}); their prior samples are drawn at t_max with targets "
            "above the bound. Are the priors aligned with the training images?",
            stacklevel=3,
        )
    images = torch.as_tensor(priors01, dtype=torch.float32)
    hashed = hashlib.sha256(images.numpy().tobytes())
    if index is not None:
        hashed.update(index.tobytes())
    digest = hashed.hexdigest()[:16]
    log.info(
        "%d training priors: error RMS median %.4f (max %.4f), t floor median %d (max %d)",
        len(error),
        float(np.median(error)),
        float(error.max()),
        int(floors.median()),
        int(floors.max()),
    )
    pool = None if index is None else torch.as_tensor(index)
    return TrainingPriors(images, error, floors, digest, pool)


def pool_index(prior_names: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Positions in the training images (named ``names``) of the images the priors belong to
    (named ``prior_names``, in the priors' order): the ``index`` of a prior pool."""
    prior_names, names = [str(n) for n in prior_names], [str(n) for n in names]
    if len(set(prior_names)) != len(prior_names):
        raise ValueError("prior_names has duplicates; each prior must name one image")
    where = {name: i for i, name in enumerate(names)}
    missing = [name for name in prior_names if name not in where]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(prior_names)} priors belong to no training image "
            f"(first: {missing[:3]}); fit DIP on a subset of the training set"
        )
    return np.array([where[name] for name in prior_names], dtype=np.int64)


def pool_members(
    priors: TrainingPriors, index: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Which prior row each batch example would start from: its own image's when every
    image has a prior, else a pool member drawn uniformly (from ``generator`` only)."""
    if priors.index is None:
        return index
    return torch.randint(len(priors.images), (len(index),), generator=generator)


def align_priors(
    priors01: np.ndarray, prior_names: Sequence[str], names: Sequence[str]
) -> np.ndarray:
    """The rows of ``priors01`` (named ``prior_names``) in the order of training ``names``.

    A DIP cell's ``output.npz`` and a dataset's npz both carry ``names``; aligning by name
    makes a reordered or partial prior set an error instead of a silent mismatch."""
    prior_names, names = [str(n) for n in prior_names], [str(n) for n in names]
    if len(prior_names) != len(priors01):
        raise ValueError(
            f"prior_names has {len(prior_names)} names for {len(priors01)} priors; "
            "they must match one to one"
        )
    if len(set(prior_names)) != len(prior_names):
        raise ValueError("prior_names has duplicates; each prior must name one image")
    where = {name: i for i, name in enumerate(prior_names)}
    missing = [name for name in names if name not in where]
    if missing:
        raise ValueError(
            f"no prior for {len(missing)} of {len(names)} training images "
            f"(first: {missing[:3]}); fit DIP on the training images themselves"
        )
    return priors01[[where[name] for name in names]]


# ---------------------------------------------------------------------------- the loss


class PriorStats(NamedTuple):
    """What one batch's prior samples were: for the training curve."""

    share: float  # the share of the batch actually drawn as prior samples
    target_rms: float  # mean per-sample RMS of their targets (NaN without prior samples)


def choose_prior_samples(
    t: torch.Tensor,
    t_floor: torch.Tensor,
    share: float,
    t_max: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(is_prior, t): which examples start from their prior, and their timesteps.

    ``t`` are the timesteps the training drew for the batch. Each example is a prior
    sample with probability ``share``; a prior sample below its floor gets a new t drawn
    uniform on ``t_floor..t_max`` (so prior samples' t are uniform there). Every draw comes
    from ``generator``, and always as many, so the other streams never shift."""
    n = t.shape[0]
    pick = torch.rand(n, generator=generator, device=generator.device).cpu()
    redraw = torch.rand(n, generator=generator, device=generator.device).cpu()
    is_prior = pick < share
    t_cpu, floor = t.cpu(), t_floor.cpu()
    above_floor = floor + (redraw * (t_max - floor + 1)).long()
    raised = torch.minimum(above_floor, torch.full_like(floor, t_max))
    t_new = torch.where(is_prior & (t_cpu < floor), raised, t_cpu)
    return is_prior.to(t.device), t_new.to(t.device)


def prior_targets(
    diffusion: Diffusion,
    x0: torch.Tensor,
    x_start: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    is_prior: torch.Tensor,
) -> torch.Tensor:
    """What the network must output for x_t noised from ``x_start``: the clean x0, or the
    equivalent noise eps* = eps + sqrt(abar_t / (1 - abar_t)) (x_start - x0).

    Clean examples keep ``noise`` itself (not a recomputed value), so that they train
    exactly as in truncated mode."""
    if diffusion.prediction == "x0":
        return x0
    abar = diffusion.alphas_cumprod.to(x0.device)[t.to(x0.device)]
    coef = (abar / (1.0 - abar)).sqrt().to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    shifted = noise + coef * (x_start - x0)
    return torch.where(is_prior.reshape(coef.shape), shifted, noise)


def prior_trained_loss(
    diffusion: Diffusion,
    model: nn.Module,
    x0: torch.Tensor,
    x0_prior: torch.Tensor,
    x_prior: torch.Tensor,
    t_floor: torch.Tensor,
    share: float,
    t_max: int,
    generator: torch.Generator,
    prior_generator: torch.Generator,
) -> tuple[torch.Tensor, PriorStats]:
    """The DDPM loss of a batch in which a share ``share`` starts from its DIP prior.

    ``x0`` is the batch, ``x0_prior``/``x_prior`` the clean image and prior that row i
    trains on if it becomes a prior sample (the same image as ``x0``'s row when every
    training image has a prior; a pool member otherwise), ``t_floor`` their floors. t and
    the noise are drawn from ``generator`` exactly as :meth:`Diffusion.loss` draws them;
    the prior choice from ``prior_generator`` only."""
    n = x0.shape[0]
    t = diffusion.sample_t(n, t_max, generator).to(x0.device)
    noise = _randn(x0.shape, generator, x0)
    is_prior, t = choose_prior_samples(t, t_floor, share, t_max, prior_generator)
    mask = is_prior.reshape(-1, *([1] * (x0.ndim - 1)))
    x0 = torch.where(mask, x0_prior, x0)
    x_start = torch.where(mask, x_prior, x0)
    xt = diffusion.q_sample(x_start, t, noise)
    target = prior_targets(diffusion, x0, x_start, t, noise, is_prior)
    loss = F.mse_loss(model(xt, t).float(), target)
    return loss, batch_stats(target, is_prior)


@torch.no_grad()
def batch_stats(target: torch.Tensor, is_prior: torch.Tensor) -> PriorStats:
    drawn = int(is_prior.sum())
    if drawn == 0:
        return PriorStats(0.0, math.nan)
    rms = target[is_prior].float().pow(2).mean(dim=tuple(range(1, target.ndim))).sqrt()
    return PriorStats(drawn / len(is_prior), float(rms.mean()))


__all__ = [
    "PRIOR_MODE",
    "PriorStats",
    "TrainingPriors",
    "align_priors",
    "batch_stats",
    "check_prior_settings",
    "check_priors",
    "choose_prior_samples",
    "excess_target_bound",
    "pool_index",
    "pool_members",
    "prepare_priors",
    "prior_share_at",
    "prior_targets",
    "prior_trained_loss",
    "t_floors",
]
