"""The Gaussian diffusion process: noise schedules, forward noising, loss and samplers.

Timestep convention (used everywhere in this package):

* ``t`` is an integer in ``0..T``. ``t = 0`` is the data itself: ``abar_0 = 1``, "clean".
  ``t = 1..T`` are the paper's noisy steps; ``beta_t`` is the noise added going from
  ``x_{t-1}`` to ``x_t``. Arrays ``betas`` and ``alphas_cumprod`` have length ``T + 1`` and
  are indexed by ``t`` directly (``betas[0] = 0``).
* ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with ``abar_t = prod_{s<=t} (1 - beta_s)``.
* The network receives the integer ``t`` it is denoising (also on respaced chains).

All tensors handled by this class live in model space, ``[-1, 1]``; converting images from
and to ``[0, 1]`` is done at the boundaries (:func:`to_model_space`, :func:`to_unit`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "x0")
SAMPLERS = ("ddpm", "ddim")

# A hook ``guide(x0_hat, t) -> x0_hat`` applied to every x0 estimate during sampling.
X0Hook = Callable[[torch.Tensor, int], torch.Tensor]
# A hook ``consistency(x_s, s, generator) -> x_s`` applied to every state the chain reaches.
XtHook = Callable[[torch.Tensor, int, torch.Generator | None], torch.Tensor]


def to_model_space(images01: torch.Tensor) -> torch.Tensor:
    return images01 * 2.0 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def make_schedule(kind: str, T: int) -> torch.Tensor:
    """``betas`` of length ``T + 1`` (float64, ``betas[0] = 0``) for ``t = 0..T``.

    ``linear``: Ho et al., 1e-4 .. 0.02 at T = 1000; for other T both ends are scaled by
    1000 / T (Nichol & Dhariwal) so the total noise stays comparable.
    ``cosine``: Nichol & Dhariwal, ``abar(t) = cos^2((t/T + s)/(1 + s) * pi/2)``, s = 0.008,
    betas clipped at 0.999.
    """
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"number of diffusion steps T must be a positive integer; got {T!r}")
    if kind == "linear":
        scale = 1000.0 / T
        betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
    elif kind == "cosine":
        s = 0.008
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    else:
        raise ValueError(f"noise schedule must be one of {SCHEDULES}; got {kind!r}")
    return torch.cat([torch.zeros(1, dtype=torch.float64), betas])


def timesteps(steps: int, t_start: int) -> list[int]:
    """``steps`` timesteps evenly spaced from ``t_start`` down to 1 (descending, distinct).

    The sampler walks ``t_start -> ... -> 1 -> 0``; ``steps == t_start`` is the full chain.
    """
    if t_start == 0:
        return []
    if not 1 <= steps <= t_start:
        raise ValueError(f"sampling steps must be in 1..t_start={t_start}; got {steps}")
    grid = np.floor(np.linspace(t_start, 1, steps) + 0.5).astype(int)
    return [int(t) for t in grid]


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] as float32 broadcastable against ``like`` (N, C, H, W)."""
    out = values.to(like.device)[t.to(like.device)].to(like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


def _as_t(t: int | torch.Tensor, n: int) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.long)
    return t.expand(n) if t.ndim == 0 else t


def _randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    # Draw on the generator's device (CPU by default) so results do not depend on where the
    # model runs.
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device).to(like.device, like.dtype)


class Diffusion:
    """The forward process and its reverse samplers for one schedule.

    ``prediction`` says what the network outputs: ``eps`` (the noise, Ho et al.) or ``x0``.
    """

    def __init__(self, schedule: str = "linear", T: int = 1000, prediction: str = "eps"):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}; got {prediction!r}")
        self.schedule, self.T, self.prediction = schedule, T, prediction
        self.betas = make_schedule(schedule, T)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

    def __repr__(self) -> str:
        return f"Diffusion(schedule={self.schedule!r}, T={self.T}, prediction={self.prediction!r})"

    def _check_t(self, t: torch.Tensor, name: str = "t") -> None:
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > self.T):
            raise ValueError(f"{name} must lie in 0..T={self.T}; got range {t.min()}..{t.max()}")

    # -- forward process -------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: int | torch.Tensor, noise: torch.Tensor):
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        t = _as_t(t, x0.shape[0])
        self._check_t(t)
        abar = _gather(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def q_posterior(
        self,
        x0: torch.Tensor,
        xt: torch.Tensor,
        t: int | torch.Tensor,
        s: int | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and log-variance of q(x_s | x_t, x_0), s < t (default s = t - 1).

        With ``b = 1 - abar_t / abar_s`` (the respaced beta; exactly ``beta_t`` if s = t-1):
        mean = sqrt(abar_s) b / (1 - abar_t) x0 + sqrt(1 - b) (1 - abar_s) / (1 - abar_t) xt,
        var = b (1 - abar_s) / (1 - abar_t). The log-variance is clamped at log(1e-20) so
        the final step's zero variance stays finite.
        """
        t = _as_t(t, x0.shape[0])
        s = t - 1 if s is None else _as_t(s, x0.shape[0])
        self._check_t(t)
        if bool((s >= t).any()) or bool((s < 0).any()) or bool((t < 1).any()):
            raise ValueError("q_posterior needs 0 <= s < t with t >= 1")
        abar_t, abar_s = self.alphas_cumprod[t], self.alphas_cumprod[s]
        single = s == t - 1
        beta = torch.where(single, self.betas[t], 1.0 - abar_t / abar_s)
        coef_x0 = abar_s.sqrt() * beta / (1.0 - abar_t)
        coef_xt = (1.0 - beta).sqrt() * (1.0 - abar_s) / (1.0 - abar_t)
        var = beta * (1.0 - abar_s) / (1.0 - abar_t)
        logvar = torch.log(var.clamp_min(1e-20))

        def view(v: torch.Tensor) -> torch.Tensor:
            return v.to(xt.device, xt.dtype).reshape(-1, *([1] * (xt.ndim - 1)))

        mean = view(coef_x0) * x0 + view(coef_xt) * xt
        return mean, view(var), view(logvar)

    def predict_x0(self, model_out: torch.Tensor, xt: torch.Tensor, t: int | torch.Tensor):
        """The x0 estimate implied by the network output at step t."""
        if self.prediction == "x0":
            return model_out
        abar = _gather(self.alphas_cumprod, _as_t(t, xt.shape[0]), xt)
        return (xt - (1.0 - abar).sqrt() * model_out) / abar.sqrt()

    def predict_eps(self, x0: torch.Tensor, xt: torch.Tensor, t: int | torch.Tensor):
        abar = _gather(self.alphas_cumprod, _as_t(t, xt.shape[0]), xt)
        return (xt - abar.sqrt() * x0) / (1.0 - abar).sqrt()

    # -- training --------------------------------------------------------------------
    def sample_t(
        self, n: int, t_max: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n timesteps uniform on 1..t_max (default T), on the generator's device."""
        t_max = self.T if t_max is None else t_max
        if not 1 <= t_max <= self.T:
            raise ValueError(f"t_max must be in 1..T={self.T}; got {t_max}")
        device = generator.device if generator is not None else "cpu"
        return torch.randint(1, t_max + 1, (n,), generator=generator, device=device)

    def loss(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        t: torch.Tensor | None = None,
        t_max: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The simple DDPM loss: MSE between the network output and its target (eps or x0).

        ``x0`` is a model-space batch; ``t`` defaults to uniform on 1..t_max (default T).
        """
        n = x0.shape[0]
        t = self.sample_t(n, t_max, generator) if t is None else _as_t(t, n)
        t = t.to(x0.device)
        noise = _randn(x0.shape, generator, x0)
        xt = self.q_sample(x0, t, noise)
        target = noise if self.prediction == "eps" else x0
        return F.mse_loss(model(xt, t).float(), target)

    # -- sampling --------------------------------------------------------------------
    def _x0_estimate(self, model: nn.Module, x: torch.Tensor, t: int) -> torch.Tensor:
        out = model(x, _as_t(t, x.shape[0]).to(x.device))
        return self.predict_x0(out.float(), x, t).clamp(-1.0, 1.0)

    def _step(
        self,
        x: torch.Tensor,
        x0: torch.Tensor,
        t: int,
        s: int,
        sampler: str,
        eta: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """One move x_t -> x_s on the (respaced) chain given the x0 estimate."""
        if sampler == "ddpm":
            mean, var, _ = self.q_posterior(x0, x, t, s)
            if s == 0:
                return mean
            return mean + var.sqrt() * _randn(x.shape, generator, x)
        abar_t = float(self.alphas_cumprod[t])
        abar_s = float(self.alphas_cumprod[s])
        eps = self.predict_eps(x0, x, t)
        sigma = eta * math.sqrt((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s))
        x_s = math.sqrt(abar_s) * x0 + math.sqrt(max(1 - abar_s - sigma**2, 0.0)) * eps
        if sigma > 0 and s > 0:
            x_s = x_s + sigma * _randn(x.shape, generator, x)
        return x_s

    @torch.no_grad()
    def sample_loop(
        self,
        model: nn.Module,
        x_start: torch.Tensor,
        t_start: int,
        steps: int,
        sampler: str = "ddpm",
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        x0_hook: X0Hook | None = None,
        progress: bool = True,
        xt_hook: XtHook | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Run the reverse chain from ``x_start`` (= x_{t_start}) to x_0; return (x_0, NFE).

        The chain visits ``timesteps(steps, t_start)`` then 0. ``ddpm`` is ancestral
        sampling with the respaced posterior variance (Nichol & Dhariwal); ``ddim`` is
        Song et al.'s sampler with stochasticity ``eta`` (0 = deterministic). ``x0_hook``
        may rewrite each x0 estimate before the step (guidance, data consistency);
        ``xt_hook`` may rewrite each new state x_s after the step, s = 0 included (data
        consistency in x_t space, e.g. RePaint replacement or ILVR). Both are given the
        step they act at; ``xt_hook`` also gets ``generator`` so any noise it draws keeps
        the chain deterministic for a seed.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")
        if not 0 <= t_start <= self.T:
            raise ValueError(f"t_start must be in 0..T={self.T}; got {t_start}")
        chain = timesteps(steps, t_start)
        x = x_start
        for i, t in enumerate(tqdm(chain, desc=f"{sampler} sampling", disable=not progress)):
            s = chain[i + 1] if i + 1 < len(chain) else 0
            x0 = self._x0_estimate(model, x, t)
            if x0_hook is not None:
                x0 = x0_hook(x0, t)
            x = self._step(x, x0, t, s, sampler, eta, generator)
            if xt_hook is not None:
                x = xt_hook(x, s, generator)
        return x, len(chain)
