"""Batched Deep Image Prior fitting: K images at once, each an independent fit.

Each image has its own network (initialised from its own seed), its own BatchNorm
statistics, its own Adam moments and its own noise generators. The K networks are merged
into one module with stacked parameters (``models.stack_networks``): BatchNorms, 1x1
convolutions and elementwise layers run once over the (K, C, H, W) batch; 3x3 convolutions
run per image on the CPU (faster there than grouped, and rounding exactly like a single
fit) or as one grouped convolution on a GPU. The loss is the SUM of the per-image losses:
the gradient of a sum w.r.t. image k's parameters is exactly image k's own gradient, and
Adam is elementwise, so one Adam over the stacked parameters equals K separate Adams.

The loss goes through the task operator (``Operator.residual``), so denoising, inpainting
(masked pixels never enter the loss) and super-resolution share the engine.

Paper details kept (Ulyanov et al., denoising.ipynb): input noise regularisation
``z + reg_noise_std * N(0, 1)`` redrawn every step, an exponential moving average of the
outputs (``exp_weight`` 0.99) and backtracking when the PSNR to the observation drops by more
than 5 dB against the last good step. Where the paper's code is loose we are strict and per
image: a backtracked image gets its last good parameters AND Adam moments back (the paper
restores parameters and then still applies the divergent step's gradient), and its
divergent output is not folded into the EMA.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..operators import Operator
from .models import (
    CONV_MODES,
    build_dip_net,
    dip_input_shape,
    make_dip_input,
    resolve_params,
    stack_networks,
)

BACKTRACK_DB = 5.0
# Distinct random streams derived from one image seed (network init, input, per-step noise).
_INIT_STREAM, _INPUT_STREAM, _NOISE_STREAM = 0, 1, 2


def derive_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for one random stream of one image, independent across streams."""
    state = np.random.SeedSequence([int(seed), stream]).generate_state(2, dtype=np.uint32)
    return int(state[0]) | (int(state[1] & 0x7FFFFFFF) << 32)


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] from their mean squared error."""
    return -10.0 * torch.log10(mse.clamp_min(1e-20))


def _init_network(kind: str, params: dict, out_shape: tuple[int, int, int], seed: int):
    # Module initialisers draw from the global generator; fork it so a fit neither
    # depends on nor disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, _INIT_STREAM))
        return build_dip_net(kind, out_shape[0], tuple(out_shape[1:]), **params)


class DIPFitter:
    """K independent DIP fits advanced together, one Adam step per ``step`` call.

    ``out_shape`` is the (C, H, W) of the restored images, ``seeds`` one seed per image
    (K = len(seeds)). Attributes: ``output_ema`` (K, C, H, W) EMA of the raw outputs (None
    before the first step), ``iteration`` (steps taken), ``last_backtracked`` (K,) bool and
    ``last_psnr_obs`` (K,) of the latest step.

    ``conv_mode``: ``auto`` = ``loop`` on the CPU, ``grouped`` on CUDA (see StackedConv2d).

    Numerics: the same seeds give bit-identical results on the CPU, and with ``loop`` an
    image's fit does not depend on the batch it is in. A ``grouped`` convolution rounds
    differently from a single one (~1e-7 relative), and Adam turns rounding noise in
    directions the loss is flat in (e.g. the scale of a BatchNorm that feeds another
    BatchNorm, at initialisation) into learning-rate-sized steps, so grouped fits drift
    from single fits like a chaotic system (1e-3..1e-1 per pixel after tens of steps, same
    quality statistically). ``dtype=torch.float64`` shrinks that drift for verification.
    """

    def __init__(
        self,
        kind: str,
        arch_params: dict | None,
        out_shape: tuple[int, int, int],
        seeds: Sequence[int],
        lr: float = 0.01,
        reg_noise_std: float = 1 / 30,
        exp_weight: float = 0.99,
        device: torch.device | str = "cpu",
        backtrack: bool = True,
        backtrack_db: float = BACKTRACK_DB,
        dtype: torch.dtype = torch.float32,
        conv_mode: str = "auto",
    ) -> None:
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds must name at least one image (one seed per image)")
        if len(out_shape) != 3:
            raise ValueError(f"out_shape must be (C, H, W); got {tuple(out_shape)}")
        if not 0.0 <= exp_weight < 1.0:
            raise ValueError(f"exp_weight must be in [0, 1); got {exp_weight}")
        if reg_noise_std < 0:
            raise ValueError(f"reg_noise_std must be >= 0; got {reg_noise_std}")
        self.kind = kind
        self.arch_params = resolve_params(kind, arch_params)
        self.out_shape = tuple(int(v) for v in out_shape)
        self.seeds = seeds
        self.reg_noise_std = float(reg_noise_std)
        self.exp_weight = float(exp_weight)
        self.device = torch.device(device)
        self.backtrack = bool(backtrack)
        self.backtrack_db = float(backtrack_db)
        self.dtype = dtype

        if conv_mode == "auto":
            conv_mode = "grouped" if self.device.type == "cuda" else "loop"
        if conv_mode not in CONV_MODES:
            raise ValueError(f"conv_mode must be auto or one of {CONV_MODES}; got {conv_mode!r}")
        self.conv_mode = conv_mode

        nets = [_init_network(kind, self.arch_params, self.out_shape, s) for s in seeds]
        self.net = stack_networks(nets, conv_mode).to(self.device, dtype)
        self.params = dict(self.net.named_parameters())
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=lr)

        image_size = self.out_shape[1:]
        input_gens = [torch.Generator().manual_seed(derive_seed(s, _INPUT_STREAM)) for s in seeds]
        self.inputs = torch.cat(
            [make_dip_input(kind, self.arch_params, image_size, g) for g in input_gens]
        ).to(self.device, dtype)
        self._input_shape = dip_input_shape(kind, self.arch_params, image_size)
        self.noise_generators = [
            torch.Generator().manual_seed(derive_seed(s, _NOISE_STREAM)) for s in seeds
        ]

        self.output_ema: torch.Tensor | None = None
        self.iteration = 0
        self.last_backtracked = torch.zeros(len(seeds), dtype=torch.bool)
        self.last_psnr_obs = torch.full((len(seeds),), math.nan)
        # Last good state per image (parameters, Adam moments, its PSNR to the observation).
        self._good_params: dict[str, torch.Tensor] = {}
        self._good_moments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._good_psnr = torch.full((len(seeds),), -math.inf, device=self.device)
        if self.backtrack:
            for name, value in self.params.items():
                self._good_params[name] = value.detach().clone()
                zeros = torch.zeros_like(value)
                self._good_moments[name] = (zeros, zeros.clone())

    @property
    def num_images(self) -> int:
        return len(self.seeds)

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def _perturbed_inputs(self) -> torch.Tensor:
        if self.reg_noise_std == 0:
            return self.inputs
        # Drawn on the CPU from each image's own generator: the same noise on every device
        # and for an image whatever batch it is fitted in.
        noise = torch.cat(
            [torch.randn(self._input_shape, generator=g) for g in self.noise_generators]
        )
        return self.inputs + self.reg_noise_std * noise.to(self.device, self.dtype)

    @torch.no_grad()
    def predict(self) -> torch.Tensor:
        """Output (K, C, H, W) for the noise-free input z with the current parameters."""
        return self._forward(self.inputs)

    def _check_observation(self, observed: torch.Tensor, operator: Operator) -> None:
        expected = operator.observation_shape((self.num_images, *self.out_shape))
        if tuple(observed.shape) != tuple(expected):
            raise ValueError(
                f"observed has shape {tuple(observed.shape)} but {self.num_images} images of "
                f"{self.out_shape} under a {operator.kind!r} operator observe {tuple(expected)}"
            )
        if operator.mask is not None:
            mask_shape = (self.num_images, 1, *self.out_shape[1:])
            if tuple(operator.mask.shape) not in {mask_shape, (1, *mask_shape[1:])}:
                raise ValueError(
                    f"operator mask has shape {tuple(operator.mask.shape)}; "
                    f"expected {mask_shape} (one mask per image, 1 = known pixel)"
                )

    def step(self, observed: torch.Tensor, operator: Operator) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step of every image on sum_k ||A(f_k(z_k + noise)) - y_k||^2.

        Each image's loss is its mean squared residual over observed entries
        (``operator.residual``). Returns ``(output, loss)``: the detached output (K, C, H, W)
        of the NOISE-PERTURBED input with the parameters before this step (the output the
        loss was computed on, and the one the EMA averages, as in the paper) and the
        per-image loss (K,). ``predict()`` gives the noise-free output instead.
        """
        self._check_observation(observed, operator)
        observed = observed.to(self.device, self.dtype)
        if operator.mask is not None:
            # Operator.residual compares x * mask with y as given, so values a data file
            # left under mask = 0 would still enter the loss value (and the PSNR that
            # backtracking watches) though not the gradient; unknown pixels must not.
            observed = observed * operator.mask
        output = self._forward(self._perturbed_inputs())
        loss = operator.residual(output, observed)
        psnr_obs = psnr_from_mse(loss.detach())
        backtracked = psnr_obs < self._good_psnr - self.backtrack_db
        if self.backtrack:
            self._remember_good(~backtracked, psnr_obs)

        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.optimizer.step()
        if self.backtrack and bool(backtracked.any()):
            self._restore_good(backtracked)

        output = output.detach()
        self._update_ema(output, backtracked)
        self.iteration += 1
        self.last_backtracked = backtracked.cpu()
        self.last_psnr_obs = psnr_obs.cpu()
        return output, loss.detach()

    def reset_backtracking(self) -> None:
        """Forget the reference PSNRs, e.g. when the target changes: a step can only count
        as divergent again after a good step on the new target."""
        self._good_psnr.fill_(-math.inf)

    def _moments(self, param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        state = self.optimizer.state.get(param)
        if not state:
            return None
        return state["exp_avg"], state["exp_avg_sq"]

    @torch.no_grad()
    def _remember_good(self, good: torch.Tensor, psnr_obs: torch.Tensor) -> None:
        every = bool(good.all())
        for name, param in self.params.items():
            moments = self._moments(param)
            sources = (param, *(moments or (torch.zeros_like(param),) * 2))
            targets = (self._good_params[name], *self._good_moments[name])
            for source, target in zip(sources, targets, strict=True):
                if every:
                    target.copy_(source)
                else:
                    target.copy_(torch.where(_per_image(good, source), source, target))
        self._good_psnr = torch.where(good, psnr_obs, self._good_psnr)

    @torch.no_grad()
    def _restore_good(self, backtracked: torch.Tensor) -> None:
        for name, param in self.params.items():
            moments = self._moments(param) or ()
            targets = (param, *moments)
            sources = (self._good_params[name], *self._good_moments[name])
            for target, source in zip(targets, sources, strict=False):
                target.copy_(torch.where(_per_image(backtracked, target), source, target))

    def _update_ema(self, output: torch.Tensor, backtracked: torch.Tensor) -> None:
        if self.output_ema is None:
            self.output_ema = output.clone()
            return
        blended = self.output_ema * self.exp_weight + output * (1.0 - self.exp_weight)
        self.output_ema = torch.where(_per_image(backtracked, output), self.output_ema, blended)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit for bit: params, Adam, EMA, generators, iteration."""
        return {
            "kind": self.kind,
            "arch_params": dict(self.arch_params),
            "out_shape": self.out_shape,
            "seeds": list(self.seeds),
            "iteration": self.iteration,
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "output_ema": None if self.output_ema is None else self.output_ema.clone(),
            "inputs": self.inputs.clone(),
            "noise_generators": [g.get_state() for g in self.noise_generators],
            "good_params": {k: v.clone() for k, v in self._good_params.items()},
            "good_moments": {k: (a.clone(), b.clone()) for k, (a, b) in self._good_moments.items()},
            "good_psnr": self._good_psnr.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()`` of a fitter built with the same arguments."""
        for key in ("kind", "out_shape", "seeds"):
            mine = getattr(self, key)
            theirs = tuple(state[key]) if key != "kind" else state[key]
            if (tuple(mine) if key != "kind" else mine) != theirs:
                raise ValueError(f"state {key} {theirs!r} does not match this fitter's {mine!r}")
        with torch.no_grad():
            for name, value in self.params.items():
                value.copy_(state["params"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        ema = state["output_ema"]
        self.output_ema = None if ema is None else ema.to(self.device)
        self.inputs = state["inputs"].to(self.device)
        for generator, gen_state in zip(
            self.noise_generators, state["noise_generators"], strict=True
        ):
            generator.set_state(gen_state)
        self._good_params = {k: v.to(self.device) for k, v in state["good_params"].items()}
        self._good_moments = {
            k: (a.to(self.device), b.to(self.device)) for k, (a, b) in state["good_moments"].items()
        }
        self._good_psnr = state["good_psnr"].to(self.device)
        self.iteration = int(state["iteration"])


def _per_image(flags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) flags shaped to broadcast over a (K, ...) tensor."""
    return flags.to(like.device).view(-1, *([1] * (like.dim() - 1)))


@dataclass
class FitResult:
    """What ``fit_dip`` returns.

    ``snapshots[t]`` is the EMA output (K, C, H, W) after t steps and ``snapshots_raw[t]``
    the raw output of step t, exactly what a fit stopped at t would return. ``trajectory``
    has one row per (image, logged iteration) with columns image, iteration, loss,
    psnr_obs (A(x) vs y), psnr_clean, psnr_clean_ema (NaN without ``clean``), wmv
    (windowed moving variance of the raw outputs, ES-WMV; NaN until the window is full),
    elapsed_s and backtracked.
    """

    snapshots: dict[int, np.ndarray]
    snapshots_raw: dict[int, np.ndarray]
    trajectory: pd.DataFrame
    seconds: float
    iterations: int


TRAJECTORY_COLUMNS = (
    "image",
    "iteration",
    "loss",
    "psnr_obs",
    "psnr_clean",
    "psnr_clean_ema",
    "wmv",
    "elapsed_s",
    "backtracked",
)


class _WindowVariance:
    """ES-WMV (Wang et al.): mean over the last ``window`` outputs of the squared distance
    to their mean, per image and averaged over pixels."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"wmv_window must be >= 1; got {window}")
        self.window = window
        self._buffer: torch.Tensor | None = None
        self._count = 0

    def push(self, output: torch.Tensor) -> None:
        if self._buffer is None:
            self._buffer = output.new_empty((self.window, *output.shape))
        self._buffer[self._count % self.window] = output
        self._count += 1

    def value(self, num_images: int) -> torch.Tensor:
        if self._buffer is None or self._count < self.window:
            return torch.full((num_images,), math.nan)
        variance = self._buffer.var(dim=0, unbiased=False)
        return variance.flatten(1).mean(dim=1).cpu()


def _as_tensor(name: str, value: Any, device: torch.device) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
    if tensor.dim() != 4:
        raise ValueError(f"{name} must be (K, C, H, W); got shape {tuple(tensor.shape)}")
    return tensor.to(device=device, dtype=torch.float32)


def _output_shape(observed: torch.Tensor, operator: Operator) -> tuple[int, int, int]:
    _, c, h, w = observed.shape
    factor = operator.factor if operator.kind == "sr" else 1
    return (c, h * factor, w * factor)


def _check_snapshots(snapshots: Sequence[int], iters: int) -> list[int]:
    wanted = sorted({int(t) for t in snapshots} | {iters})
    bad = [t for t in wanted if not 1 <= t <= iters]
    if bad:
        raise ValueError(f"snapshot iterations {bad} are outside 1..iters={iters}")
    return wanted


# Working set the CPU path aims at per chunk: with more, parameters, Adam state and
# activations stream from memory on every step and batching turns slower per image.
CPU_CHUNK_BYTES = 256 * 2**20
CPU_CHUNK_MAX = 64


def default_chunk_size(
    device: torch.device | str, num_params: int, image_size: tuple[int, int]
) -> int | None:
    """Images per fitter by default: all at once on a GPU. On the CPU, as many as keep the
    working set near ``CPU_CHUNK_BYTES``: parameters, gradient, two Adam moments and three
    backtracking copies (28 bytes a parameter) plus ~1000 float maps of activations. That is
    about 64 images of a 32-channel skip net and 4 of the 128-channel default at 32x32,
    where scripts/bench_dip.py measured the best rates."""
    if torch.device(device).type == "cuda":
        return None
    per_image = 28 * num_params + 4000 * image_size[0] * image_size[1]
    return int(min(CPU_CHUNK_MAX, max(1, CPU_CHUNK_BYTES // per_image)))


def fit_dip(
    observed: torch.Tensor | np.ndarray,
    operator: Operator,
    kind: str,
    arch_params: dict | None,
    seeds: Sequence[int],
    iters: int,
    snapshots: Sequence[int] = (),
    lr: float = 0.01,
    reg_noise_std: float = 1 / 30,
    exp_weight: float = 0.99,
    backtrack: bool = True,
    clean: torch.Tensor | np.ndarray | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    wmv_window: int = 100,
    log_every: int = 1,
    dtype: torch.dtype = torch.float32,
    chunk_size: int | None | str = "auto",
    conv_mode: str = "auto",
) -> FitResult:
    """Fit one DIP per observed image (K = len(seeds)) for ``iters`` Adam steps.

    ``observed`` is y (K, C, h, w) in [0, 1] as the operator observes it (low resolution for
    SR); the restored images are (K, C, H, W). Snapshots are taken at every iteration in
    ``snapshots`` and always at ``iters``, so one long fit serves every duration.
    ``clean`` (K, C, H, W), when known, adds PSNR-to-ground-truth columns to the trajectory;
    it never influences the fit. The trajectory is logged every ``log_every`` iterations.

    Images are fitted ``chunk_size`` at a time (``auto``: ``default_chunk_size``; None: all
    at once); ``elapsed_s`` counts from the start of an image's chunk. On the CPU the
    result does not depend on the chunking. ``dtype`` float64 is for verification (see
    ``DIPFitter``); snapshots are float32 either way.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1; got {iters}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1; got {log_every}")
    device = torch.device(device)
    observed_t = _as_tensor("observed", observed, device)
    operator = operator.to(device)
    out_shape = _output_shape(observed_t, operator)
    seeds = list(seeds)
    n = len(seeds)
    if n != observed_t.shape[0]:
        raise ValueError(f"got {n} seeds for {observed_t.shape[0]} observed images")
    clean_t = None if clean is None else _as_tensor("clean", clean, device)
    if clean_t is not None and tuple(clean_t.shape) != (n, *out_shape):
        raise ValueError(f"clean has shape {tuple(clean_t.shape)}; expected {(n, *out_shape)}")
    wanted = set(_check_snapshots(snapshots, iters))
    if chunk_size == "auto":
        with torch.device("meta"):  # shapes only: no memory, no draw from the global RNG
            probe = build_dip_net(kind, out_shape[0], out_shape[1:], **(arch_params or {}))
        num_params = sum(p.numel() for p in probe.parameters())
        chunk_size = default_chunk_size(device, num_params, out_shape[1:])
    chunk = n if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, None or 'auto'; got {chunk_size!r}")

    fitter_args = dict(
        lr=lr, reg_noise_std=reg_noise_std, exp_weight=exp_weight, device=device,
        backtrack=backtrack, dtype=dtype, conv_mode=conv_mode,
    )  # fmt: skip
    bar = tqdm(total=iters * n, desc=f"DIP {kind} x{n}", unit="img-it", disable=not progress)
    parts = []
    for first in range(0, n, chunk):
        index = slice(first, min(first + chunk, n))
        fitter = DIPFitter(kind, arch_params, out_shape, seeds[index], **fitter_args)
        part = _fit_chunk(
            fitter, observed_t[index], _select(operator, index),
            None if clean_t is None else clean_t[index], iters, wanted, wmv_window, log_every, bar,
        )  # fmt: skip
        part[2]["image"] += first
        parts.append(part)
    bar.close()
    snaps = {t: np.concatenate([p[0][t] for p in parts]) for t in sorted(wanted)}
    snaps_raw = {t: np.concatenate([p[1][t] for p in parts]) for t in sorted(wanted)}
    trajectory = pd.concat([p[2] for p in parts], ignore_index=True)
    trajectory = trajectory.sort_values(["image", "iteration"], ignore_index=True)
    return FitResult(snaps, snaps_raw, trajectory, sum(p[3] for p in parts), iters)


def _select(operator: Operator, index: slice) -> Operator:
    """The operator of some images; a single shared mask stays shared."""
    if operator.mask is None or operator.mask.shape[0] == 1:
        return operator
    return operator.select(index)


def _fit_chunk(
    fitter: DIPFitter,
    observed: torch.Tensor,
    operator: Operator,
    clean: torch.Tensor | None,
    iters: int,
    wanted: set[int],
    wmv_window: int,
    log_every: int,
    bar: tqdm,
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], pd.DataFrame, float]:
    window = _WindowVariance(wmv_window)
    rows: list[pd.DataFrame] = []
    snaps: dict[int, np.ndarray] = {}
    snaps_raw: dict[int, np.ndarray] = {}
    start = time.perf_counter()
    for _ in range(iters):
        output, loss = fitter.step(observed, operator)
        window.push(output)
        t = fitter.iteration
        if t in wanted:
            snaps[t] = fitter.output_ema.float().cpu().numpy()
            snaps_raw[t] = output.float().cpu().numpy()
        if t % log_every == 0 or t == iters:
            rows.append(_log_rows(fitter, output, loss, clean, window, start))
        bar.update(fitter.num_images)
    return snaps, snaps_raw, pd.concat(rows, ignore_index=True), time.perf_counter() - start


def _log_rows(
    fitter: DIPFitter,
    output: torch.Tensor,
    loss: torch.Tensor,
    clean: torch.Tensor | None,
    window: _WindowVariance,
    start: float,
) -> pd.DataFrame:
    k = fitter.num_images
    nan = torch.full((k,), math.nan)
    if clean is None:
        psnr_clean = psnr_clean_ema = nan
    else:
        psnr_clean = psnr_from_mse(((output - clean) ** 2).flatten(1).mean(1)).cpu()
        ema_mse = ((fitter.output_ema - clean) ** 2).flatten(1).mean(1)
        psnr_clean_ema = psnr_from_mse(ema_mse).cpu()
    return pd.DataFrame(
        {
            "image": np.arange(k),
            "iteration": np.full(k, fitter.iteration),
            "loss": loss.cpu().double().numpy(),
            "psnr_obs": fitter.last_psnr_obs.double().numpy(),
            "psnr_clean": psnr_clean.double().numpy(),
            "psnr_clean_ema": psnr_clean_ema.double().numpy(),
            "wmv": window.value(k).double().numpy(),
            "elapsed_s": np.full(k, time.perf_counter() - start),
            "backtracked": fitter.last_backtracked.numpy(),
        }
    )
