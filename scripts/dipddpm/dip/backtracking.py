"""Backtracking of a batched DIP fit, per image.

The paper (Ulyanov et al., denoising.ipynb) goes back to the last good parameters when the
PSNR to the observation drops by more than 5 dB against the last good step. Here each image
of a batch is judged on its own, and a backtracked image gets its last good parameters AND
Adam moments back (the paper restores parameters and then still applies the divergent
step's gradient).
"""

from __future__ import annotations

import math
from typing import Any

import torch

BACKTRACK_DB = 5.0


def per_image(flags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) flags shaped to broadcast over a (K, ...) tensor."""
    return flags.to(like.device).view(-1, *([1] * (like.dim() - 1)))


def _adam_moments(
    optimizer: torch.optim.Optimizer, param: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    state = optimizer.state.get(param)
    if not state:
        return None
    return state["exp_avg"], state["exp_avg_sq"]


class Backtracker:
    """The last good state of each image of a fit: its parameters, Adam moments and PSNR.

    ``params`` are the fit's stacked (K, ...) parameters. Disabled, it keeps no copies and
    never reports a divergence (the reference PSNR stays at minus infinity).
    """

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        num_images: int,
        device: torch.device,
        threshold_db: float = BACKTRACK_DB,
        enabled: bool = True,
    ) -> None:
        self.params = params
        self.threshold_db = float(threshold_db)
        self.enabled = bool(enabled)
        self.good_params: dict[str, torch.Tensor] = {}
        self.good_moments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.good_psnr = torch.full((num_images,), -math.inf, device=device)
        if self.enabled:
            for name, value in params.items():
                self.good_params[name] = value.detach().clone()
                zeros = torch.zeros_like(value)
                self.good_moments[name] = (zeros, zeros.clone())

    def before_step(self, psnr_obs: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """Which images diverged (K,) bool; the others' current state becomes their good one.

        Call it with the PSNR of the current parameters, before the optimizer steps.
        """
        diverged = psnr_obs < self.good_psnr - self.threshold_db
        if self.enabled:
            self._remember(~diverged, psnr_obs, optimizer)
        return diverged

    def after_step(self, diverged: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Give the diverged images their good parameters and moments back."""
        if self.enabled and bool(diverged.any()):
            self._restore(diverged, optimizer)

    def reset(self) -> None:
        """Forget the reference PSNRs: only a good step can set them again."""
        self.good_psnr.fill_(-math.inf)

    @torch.no_grad()
    def _remember(
        self, good: torch.Tensor, psnr_obs: torch.Tensor, optimizer: torch.optim.Optimizer
    ) -> None:
        every = bool(good.all())
        for name, param in self.params.items():
            moments = _adam_moments(optimizer, param)
            sources = (param, *(moments or (torch.zeros_like(param),) * 2))
            targets = (self.good_params[name], *self.good_moments[name])
            for source, target in zip(sources, targets, strict=True):
                if every:
                    target.copy_(source)
                else:
                    target.copy_(torch.where(per_image(good, source), source, target))
        self.good_psnr = torch.where(good, psnr_obs, self.good_psnr)

    @torch.no_grad()
    def _restore(self, diverged: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        for name, param in self.params.items():
            moments = _adam_moments(optimizer, param) or ()
            targets = (param, *moments)
            sources = (self.good_params[name], *self.good_moments[name])
            # A parameter that has had no gradient yet has no Adam moments: values only.
            for target, source in zip(targets, sources, strict=False):
                target.copy_(torch.where(per_image(diverged, target), source, target))

    def state_dict(self) -> dict[str, Any]:
        return {
            "good_params": {k: v.clone() for k, v in self.good_params.items()},
            "good_moments": {k: (a.clone(), b.clone()) for k, (a, b) in self.good_moments.items()},
            "good_psnr": self.good_psnr.clone(),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.good_params = {k: v.to(device) for k, v in state["good_params"].items()}
        self.good_moments = {
            k: (a.to(device), b.to(device)) for k, (a, b) in state["good_moments"].items()
        }
        self.good_psnr = state["good_psnr"].to(device)
