"""Sampling entry points: start points (noise, DIP prior, observation) and DIP guidance.

Images going in and out are float32 (N, 3, H, W) in ``[0, 1]``; start points ``x_start``
are in the diffusion's model space (data scaled to ``[-1, 1]``, then noised to
``t_start``). See :mod:`dipddpm.ddpm.diffusion` for the timestep convention.

Start points:

* unconditional: ``noise_start(shape, generator)`` with ``t_start = T``;
* DIP prior (SDEdit / CCDF): ``diffuse_prior(diffusion, prior01, t0, generator)`` gives
  ``x_t0 = sqrt(abar_t0) x_dip + sqrt(1 - abar_t0) eps``; ``t0 = 0`` is the prior itself;
* denoising: ``observation_start(diffusion, y01, sigma01)`` starts from the observation at
  the step whose noise level matches: noise of std ``sigma`` in ``[0, 1]`` units is ``2 sigma``
  in model space, and ``x_t / sqrt(abar_t) = x_0 + sqrt((1 - abar_t) / abar_t) eps``, so with
  ``t = t_for_sigma(sigma)`` (``sqrt((1 - abar_t) / abar_t) ~= 2 sigma``) the start is
  ``x_t = sqrt(abar_t) * (2 y - 1)``.

Conditioning: :class:`Guide` rewrites the x0 estimates (DIP guidance), :class:`Consistency`
the states x_s (RePaint replacement for inpainting, ILVR for super-resolution); both can
act in one :func:`sample` call. :func:`sample_k` averages K chains (posterior mean).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dipddpm.ddpm.diffusion import Diffusion, XtHook, _randn, to_model_space, to_unit
from dipddpm.operators import Operator

ArrayLike = np.ndarray | torch.Tensor
# ``make_start(generator) -> x_start``: one chain's start point, drawing any noise it needs.
StartMaker = Callable[[torch.Generator | None], ArrayLike]


@dataclass
class SampleResult:
    """Samples in [0, 1] as a float32 (N, 3, H, W) array, network evaluations, wall time."""

    images: np.ndarray
    nfe: int
    seconds: float


def _tensor(value: ArrayLike, name: str, device: torch.device | str = "cpu") -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
    if tensor.ndim != 4:
        raise ValueError(f"{name} must be a (N, C, H, W) batch; got shape {tuple(tensor.shape)}")
    return tensor.to(device=device, dtype=torch.float32)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def noise_start(shape: tuple[int, ...], generator: torch.Generator | None = None):
    """x_T ~ N(0, I) (on the CPU), the start of unconditional sampling at t = T."""
    return torch.randn(shape, generator=generator)


def diffuse_prior(
    diffusion: Diffusion,
    prior01: ArrayLike,
    t0: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Forward-diffuse a DIP output to step t0: sqrt(abar_t0) x_dip + sqrt(1-abar_t0) eps.

    ``t0 = 0`` returns the prior (in model space) without drawing noise.
    """
    if not 0 <= t0 <= diffusion.T:
        raise ValueError(f"t0 must be in 0..T={diffusion.T}; got {t0}")
    x0 = to_model_space(_tensor(prior01, "prior01"))
    if t0 == 0:
        return x0
    return diffusion.q_sample(x0, t0, torch.randn(x0.shape, generator=generator))


def t_for_sigma(diffusion: Diffusion, sigma01: float) -> int:
    """The step whose noise level matches Gaussian noise of std ``sigma01`` on [0, 1] data.

    Picks t in 1..T with sqrt((1 - abar_t) / abar_t) closest (in log) to ``2 * sigma01``;
    ``sigma01 = 0`` gives 0.
    """
    if sigma01 < 0:
        raise ValueError(f"noise level sigma must be >= 0; got {sigma01}")
    if sigma01 == 0:
        return 0
    abar = diffusion.alphas_cumprod[1:]
    ratio = ((1.0 - abar) / abar).sqrt()
    if 2 * sigma01 > float(ratio[-1]):
        raise ValueError(
            f"noise level sigma={sigma01} exceeds the schedule's largest "
            f"(sigma <= {float(ratio[-1]) / 2:.3g} for T={diffusion.T})"
        )
    return int(torch.argmin((ratio.log() - np.log(2 * sigma01)).abs())) + 1


def observation_start(
    diffusion: Diffusion, y01: ArrayLike, sigma01: float
) -> tuple[torch.Tensor, int]:
    """(x_start, t_start) for denoising: the scaled observation sqrt(abar_t) (2y - 1)."""
    t = t_for_sigma(diffusion, sigma01)
    abar = float(diffusion.alphas_cumprod[t])
    return np.sqrt(abar) * to_model_space(_tensor(y01, "y01")), t


@dataclass
class Guide:
    """DIP output as an intermediate prior, plus inpainting data consistency.

    At every sampling step t the network's clipped x0 estimate is rewritten, then the
    chain continues with the posterior q(x_s | x_t, x0_hat) (DDPM) or the DDIM update:

    1. if ``t_min <= t <= t_max`` (``t_max=None``: T):
       ``x0_hat <- (1 - lam) * x0_hat + lam * x_dip``;
    2. if ``mask`` is set (1 = known pixel), at every step:
       ``x0_hat <- mask * y + (1 - mask) * x0_hat``.

    At the final step (t -> 0) the posterior mean is x0_hat itself, so ``lam = 1`` there
    returns the DIP output (with known pixels replaced by y when a mask is given).
    ``x_dip``, ``observation`` are [0, 1] batches (N, 3, H, W); ``mask`` is (N, 1, H, W).
    """

    x_dip: ArrayLike | None = None
    lam: float = 0.0
    t_min: int = 1
    t_max: int | None = None
    observation: ArrayLike | None = None
    mask: ArrayLike | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"guidance weight lam must be in [0, 1]; got {self.lam}")
        if self.lam > 0 and self.x_dip is None:
            raise ValueError("guidance with lam > 0 needs x_dip")
        if (self.mask is None) != (self.observation is None):
            raise ValueError("inpainting consistency needs both mask and observation")

    @classmethod
    def for_task(
        cls,
        operator: Operator,
        observation: ArrayLike,
        x_dip: ArrayLike | None = None,
        lam: float = 0.0,
        t_min: int = 1,
        t_max: int | None = None,
    ) -> Guide:
        """A guide for a task: inpainting adds the known-pixel replacement."""
        inpaint = operator.kind == "inpaint"
        return cls(
            x_dip=x_dip,
            lam=lam,
            t_min=t_min,
            t_max=t_max,
            observation=observation if inpaint else None,
            mask=operator.mask if inpaint else None,
        )

    def hook(self, n: int, device: torch.device):
        """The ``x0_hook(x0_hat, t)`` for :meth:`Diffusion.sample_loop`, for a batch of n."""

        def batch(value: ArrayLike, name: str) -> torch.Tensor:
            tensor = _tensor(value, name, device)
            if tensor.shape[0] != n:
                raise ValueError(f"guide {name} has {tensor.shape[0]} images; the batch has {n}")
            return tensor

        x_dip = None if self.x_dip is None else to_model_space(batch(self.x_dip, "x_dip"))
        mask = None if self.mask is None else batch(self.mask, "mask")
        y = None if self.observation is None else to_model_space(batch(self.observation, "y"))

        def apply(x0: torch.Tensor, t: int) -> torch.Tensor:
            if x_dip is not None and self.lam > 0 and self.t_min <= t <= (self.t_max or t):
                x0 = (1.0 - self.lam) * x0 + self.lam * x_dip
            if mask is not None:
                x0 = mask * y + (1.0 - mask) * x0
            return x0

        return apply


@dataclass
class Consistency:
    """Data consistency in x_t space: after every reverse step t -> s (s = 0 included),

        ``x_s <- x_s - P x_s + P y_s``,   ``y_s = sqrt(abar_s) A^+ y + sqrt(1 - abar_s) eps``,

    with ``A`` the task's :class:`~dipddpm.operators.Operator`, ``P = A^+ A`` its projection
    (:meth:`Operator.project`), ``y`` the observation in model space (``2 y01 - 1``) and
    ``eps ~ N(0, I)`` drawn fresh at every step from the sampler's generator (none at
    s = 0, where ``y_0 = A^+ y``). So the part of x_s the observation constrains is swapped
    for the observation diffused to the same step, and the rest is left alone.

    * inpainting (RePaint-style replacement, Lugmayr et al. 2022, *without* RePaint's
      resampling jumps): ``P x = m * x``, ``A^+ y = m * y`` for the binary mask m, so
      ``x_s <- m * q_sample(y, s, eps) + (1 - m) * x_s``; at s = 0 the known pixels are y.
    * super-resolution (ILVR, Choi et al. 2021): ``down = D`` is the task's
      :func:`~dipddpm.operators.downsample` (``factor``, ``kernel`` as in degrade.py) and
      ``up = D^+`` its Moore-Penrose pseudo-inverse (:func:`~dipddpm.operators.upsample_pinv`),
      so ``phi = up(down(.))`` is an exact projection (``phi(phi(x)) = phi(x)``) and
      ``y_s = q_sample(up(y), s, eps)`` lives on the HR grid:
      ``x_s <- x_s - phi(x_s) + phi(y_s)``. At s = 0, ``down(x_0) = y`` (up to float
      rounding; ``D`` keeps constants, so this holds in [0, 1] too, before clipping).
      ILVR itself upsamples with a bicubic resize; ``D^+`` is used instead because a
      resize pair is only approximately a projection and would not end on y exactly.
    * denoising: no consistency step (the observation is the start point); see
      :meth:`for_task`.

    ``observation`` is a [0, 1] batch (N, 3, h, w) on the operator's observation grid.
    """

    operator: Operator
    observation: ArrayLike

    def __post_init__(self) -> None:
        kind = self.operator.kind
        if kind not in ("inpaint", "sr"):
            raise ValueError(
                f"x_t consistency is for inpainting and super-resolution; got {kind!r}"
            )

    @classmethod
    def for_task(cls, operator: Operator, observation: ArrayLike) -> Consistency | None:
        """The task's consistency step, or None for denoising (nothing to project)."""
        if operator.kind == "denoise":
            return None
        return cls(operator, observation)

    def hook(self, diffusion: Diffusion, n: int, device: torch.device) -> XtHook:
        """The ``xt_hook(x_s, s, generator)`` for :meth:`Diffusion.sample_loop`, batch of n."""
        y = _tensor(self.observation, "observation", device)
        if y.shape[0] != n:
            raise ValueError(f"consistency observation has {y.shape[0]} images; the batch has {n}")
        operator = self.operator.to(device)
        y_image = operator.pinv(to_model_space(y))

        def apply(x: torch.Tensor, s: int, generator: torch.Generator | None) -> torch.Tensor:
            y_s = y_image
            if s > 0:
                y_s = diffusion.q_sample(y_image, s, _randn(y_image.shape, generator, x))
            return x - operator.project(x) + operator.project(y_s)

        return apply


def sample(
    model: nn.Module,
    diffusion: Diffusion,
    x_start: ArrayLike,
    t_start: int,
    steps: int,
    sampler: str = "ddpm",
    eta: float = 0.0,
    guide: Guide | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    consistency: Consistency | None = None,
) -> SampleResult:
    """Run the reverse chain from ``x_start`` (model space, at ``t_start``) down to x_0.

    ``steps`` evenly spaced steps from ``t_start`` to 1 (``steps <= t_start``); ``sampler``
    is ``ddpm`` (ancestral) or ``ddim`` (with ``eta``). Noise comes from ``generator``
    (a CPU generator keeps results independent of the device). ``t_start = 0`` returns
    ``x_start`` mapped back to [0, 1] with NFE 0. ``guide`` acts on the x0 estimates,
    ``consistency`` on the states x_s after each step; both may be given.
    """
    device = _model_device(model)
    x = _tensor(x_start, "x_start", device)
    n = x.shape[0]
    hook = guide.hook(n, device) if guide is not None else None
    xt_hook = consistency.hook(diffusion, n, device) if consistency is not None else None
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        x, nfe = diffusion.sample_loop(
            model, x, t_start, steps, sampler, eta, generator, hook, progress, xt_hook
        )
        images = to_unit(x).float().cpu().numpy()
    finally:
        model.train(was_training)
    return SampleResult(images, nfe, time.perf_counter() - start)


def generate(
    model: nn.Module,
    diffusion: Diffusion,
    n: int,
    steps: int,
    image_shape: tuple[int, int, int],
    sampler: str = "ddpm",
    eta: float = 0.0,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> SampleResult:
    """Unconditional generation: ``n`` samples from pure noise at T, in batches."""
    if n < 1:
        raise ValueError(f"number of samples must be >= 1; got {n}")
    parts, nfe, seconds = [], 0, 0.0
    for first in range(0, n, batch_size):
        count = min(batch_size, n - first)
        x_T = noise_start((count, *image_shape), generator)
        result = sample(
            model, diffusion, x_T, diffusion.T, steps, sampler, eta, None, generator, progress
        )
        parts.append(result.images)
        nfe += result.nfe
        seconds += result.seconds
    return SampleResult(np.concatenate(parts), nfe, seconds)


@dataclass
class PosteriorMean:
    """K chains per image: their mean and spread in [0, 1], the samples, cost in total.

    ``mean`` (N, 3, H, W) float32; ``spread`` (N,) float64, the mean over pixels and
    channels of the per-pixel standard deviation over the K samples (ddof = 0, so 0 for
    K = 1); ``samples`` (K, N, 3, H, W) float32; ``nfe`` and ``seconds`` summed over chains.
    """

    mean: np.ndarray
    spread: np.ndarray
    samples: np.ndarray
    nfe: int
    seconds: float


def sample_k(
    model: nn.Module,
    diffusion: Diffusion,
    make_start: StartMaker,
    t_start: int,
    steps: int,
    k: int,
    sampler: str = "ddpm",
    eta: float = 0.0,
    guide: Guide | None = None,
    consistency: Consistency | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> PosteriorMean:
    """K independent chains of :func:`sample` from ``make_start(generator)``, averaged.

    One generator feeds all chains in turn (chain 1's start and steps, then chain 2's, ...),
    so the result is deterministic for a seed and K = 1 is exactly one :func:`sample` call.
    ``make_start`` draws its own noise from the generator it is given (e.g.
    ``lambda g: noise_start(shape, g)`` or ``lambda g: diffuse_prior(diffusion, dip, t0, g)``);
    a start that ignores it (the denoising observation) gives chains that differ only
    through the sampler's own noise.
    """
    if k < 1:
        raise ValueError(f"number of chains K must be >= 1; got {k}")
    chains = [
        sample(
            model,
            diffusion,
            make_start(generator),
            t_start,
            steps,
            sampler,
            eta,
            guide,
            generator,
            progress,
            consistency,
        )
        for _ in range(k)
    ]
    samples = np.stack([chain.images for chain in chains])
    spread = samples.astype(np.float64).std(axis=0).mean(axis=(1, 2, 3))
    return PosteriorMean(
        mean=samples.mean(axis=0, dtype=np.float64).astype(np.float32),
        spread=spread,
        samples=samples,
        nfe=sum(chain.nfe for chain in chains),
        seconds=sum(chain.seconds for chain in chains),
    )
