"""Backtracking of a batched DIP fit, per image.

The paper (Ulyanov et al., denoising.ipynb) goes back to the last good parameters when the
PSNR to the observation drops by more than 5 dB against the last good step. Here each image
of a batch is judged on its own, and a backtracked image gets its last good parameters AND
Adam moments back (the paper restores parameters and then still applies the divergent
step's gradient).

Keeping the last good state used to cost a copy of parameters and moments every step (a
twentieth of a 32x32 step). When every image's step is good, which is nearly always, the
``Backtracker`` instead lets Adam write its result into the buffers of the previous good
state and swaps the two: the state before the step, untouched, becomes the good one. The
out-of-place update runs the same kernels in the same order as ``torch.optim.Adam``'s
default CPU implementation, so the fit stays bit-identical (tests/test_dip_overhead.py
compares it with plain copies and an in-place ``Adam.step``).
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


def _swappable(optimizer: torch.optim.Optimizer, params: dict[str, torch.Tensor]) -> bool:
    """Whether ``_step_into_good_buffers`` can reproduce ``optimizer.step()`` exactly: a
    plain Adam on the CPU (where torch runs its single-tensor loop) whose every parameter
    has Adam state already (``_has_gradients`` checks the rest after the backward pass)."""
    if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    plain = {"amsgrad", "maximize", "foreach", "fused", "capturable", "differentiable"}
    if any(group.get(key) for key in plain) or group.get("decoupled_weight_decay"):
        return False
    if group["weight_decay"] != 0 or torch.is_tensor(group["lr"]):
        return False
    if len(group["params"]) != len(params) or len({p.dtype for p in params.values()}) != 1:
        return False
    for param in params.values():
        state = optimizer.state.get(param)
        if not state or param.device.type != "cpu" or param.is_complex():
            return False
    return not torch.is_tensor(group["betas"][0])


def _has_gradients(params: dict[str, torch.Tensor]) -> bool:
    return all(p.grad is not None and not p.grad.is_sparse for p in params.values())


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
        # Set by before_step when the current state is the good one but not yet copied.
        self._swap_pending = False
        self._scratch: torch.Tensor | None = None
        if self.enabled:
            for name, value in params.items():
                self.good_params[name] = value.detach().clone()
                zeros = torch.zeros_like(value)
                self.good_moments[name] = (zeros, zeros.clone())

    def before_step(self, psnr_obs: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """Which images diverged (K,) bool; the others' current state becomes their good one.

        Call it with the PSNR of the current parameters, before the optimizer steps, and
        make the step with ``step``.
        """
        diverged = psnr_obs < self.good_psnr - self.threshold_db
        self._swap_pending = False
        if self.enabled:
            if not bool(diverged.any()) and _swappable(optimizer, self.params):
                # The state stays where it is until step() writes the update elsewhere.
                self._swap_pending = True
                self.good_psnr = psnr_obs.clone()
            else:
                self._remember(~diverged, psnr_obs, optimizer)
        return diverged

    def step(self, diverged: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step; then the diverged images get their good state back."""
        if self._swap_pending:
            self._swap_pending = False
            if _has_gradients(self.params):
                self._step_into_good_buffers(optimizer)
                return
            self._copy_good(torch.ones_like(diverged), optimizer)
        optimizer.step()
        if self.enabled and bool(diverged.any()):
            self._restore(diverged, optimizer)

    def reset(self) -> None:
        """Forget the reference PSNRs: only a good step can set them again."""
        self.good_psnr.fill_(-math.inf)

    @torch.no_grad()
    def _step_into_good_buffers(self, optimizer: torch.optim.Optimizer) -> None:
        """Adam's update written into the good buffers, which then swap with the live ones."""
        group = optimizer.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        largest = max(param.numel() for param in self.params.values())
        if self._scratch is None or self._scratch.numel() < largest:
            first = next(iter(self.params.values()))
            self._scratch = first.new_empty(largest)
        for name, param in self.params.items():
            state = optimizer.state[param]
            good_param, (good_avg, good_avg_sq) = self.good_params[name], self.good_moments[name]
            exp_avg = torch.lerp(state["exp_avg"], param.grad, 1 - beta1, out=good_avg)
            exp_avg_sq = torch.mul(state["exp_avg_sq"], beta2, out=good_avg_sq)
            exp_avg_sq.addcmul_(param.grad, param.grad, value=1 - beta2)
            # torch.optim.Adam's single-tensor step: same scalars, same kernels, same order.
            state["step"] += 1
            step = state["step"].item()
            step_size = lr / (1 - beta1**step)
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = torch.sqrt(exp_avg_sq, out=self._scratch[: param.numel()].view_as(param))
            denom.div_(bias_correction2_sqrt).add_(eps)
            updated = torch.addcdiv(param, exp_avg, denom, value=-step_size, out=good_param)
            self.good_params[name] = param.data
            self.good_moments[name] = (state["exp_avg"], state["exp_avg_sq"])
            param.data = updated
            state["exp_avg"], state["exp_avg_sq"] = exp_avg, exp_avg_sq

    def _remember(
        self, good: torch.Tensor, psnr_obs: torch.Tensor, optimizer: torch.optim.Optimizer
    ) -> None:
        self._copy_good(good, optimizer)
        self.good_psnr = torch.where(good, psnr_obs, self.good_psnr)

    @torch.no_grad()
    def _copy_good(self, good: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
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
