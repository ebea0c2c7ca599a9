"""Batched Deep Image Prior fitting: K images at once, each an independent fit.

Each image has its own network (initialised from its own seed), its own BatchNorm
statistics, its own Adam moments and its own noise generators. The K networks are merged
into one module with stacked parameters (``batched.stack_networks``): BatchNorms, 1x1
convolutions and elementwise layers run once over the (K, C, H, W) batch; 3x3 convolutions
run per image on the CPU (faster there than grouped, and rounding exactly like a single
fit) or as one grouped convolution on a GPU. The loss is the SUM of the per-image losses:
the gradient of a sum w.r.t. image k's parameters is exactly image k's own gradient, and
Adam is elementwise, so one Adam over the stacked parameters equals K separate Adams.

The loss goes through the task operator (``Operator.residual``), so denoising, inpainting
(masked pixels never enter the loss) and super-resolution share the engine.

Paper details kept (Ulyanov et al., denoising.ipynb): input noise regularisation
``z + reg_noise_std * N(0, 1)`` redrawn every step, an exponential moving average of the
outputs (``exp_weight``) and backtracking (``backtracking``). A backtracked image's
divergent output is not folded into the EMA. What ``fit_dip`` records while it runs is in
``recording``; the hyperparameters' defaults are in ``defaults``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..metrics import psnr_from_mse
from ..operators import Operator
from .backtracking import BACKTRACK_DB, Backtracker, per_image
from .batched import resolve_conv_mode, stack_networks
from .defaults import DIP_DEFAULTS
from .models import build_dip_net, dip_input_shape, make_dip_input, resolve_params
from .recording import ChunkRecord, ChunkRecorder, FitResult, check_snapshots, merge_chunks

__all__ = [
    "BACKTRACK_DB",
    "DIPFitter",
    "FitResult",
    "default_chunk_size",
    "derive_seed",
    "fit_dip",
    "psnr_from_mse",
]

# Distinct random streams derived from one image seed (network init, input, per-step noise).
_INIT_STREAM, _INPUT_STREAM, _NOISE_STREAM = 0, 1, 2


def derive_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for one random stream of one image, independent across streams."""
    state = np.random.SeedSequence([int(seed), stream]).generate_state(2, dtype=np.uint32)
    return int(state[0]) | (int(state[1] & 0x7FFFFFFF) << 32)


def _init_network(kind: str, params: dict, out_shape: tuple[int, int, int], seed: int):
    # Module initialisers draw from the global generator; fork it so a fit neither
    # depends on nor disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, _INIT_STREAM))
        return build_dip_net(kind, out_shape[0], tuple(out_shape[1:]), **params)


def _check_hyperparameters(seeds: list[int], out_shape, exp_weight, reg_noise_std) -> None:
    if not seeds:
        raise ValueError("seeds must name at least one image (one seed per image)")
    if len(out_shape) != 3:
        raise ValueError(f"out_shape must be (C, H, W); got {tuple(out_shape)}")
    if not 0.0 <= exp_weight < 1.0:
        raise ValueError(f"exp_weight must be in [0, 1); got {exp_weight}")
    if reg_noise_std < 0:
        raise ValueError(f"reg_noise_std must be >= 0; got {reg_noise_std}")


class DIPFitter:
    """K independent DIP fits advanced together, one Adam step per ``step`` call.

    ``out_shape`` is the (C, H, W) of the restored images, ``seeds`` one seed per image
    (K = len(seeds)). Attributes: ``output_ema`` (K, C, H, W) EMA of the raw outputs (None
    before the first step), ``iteration`` (steps taken), ``last_backtracked`` (K,) bool and
    ``last_psnr_obs`` (K,) of the latest step, ``backtracker`` (the last good states).

    ``conv_mode``: ``auto`` = ``loop`` on the CPU, ``grouped`` on CUDA (see
    ``batched.StackedConv2d``).

    Numerics: the same seeds give bit-identical results on the CPU, and with ``loop`` an
    image's fit does not depend on the batch it is in. A ``grouped`` convolution rounds
    differently from a single one, and Adam turns rounding noise in directions the loss is
    flat in (e.g. the scale of a BatchNorm that feeds another BatchNorm, at initialisation)
    into learning-rate-sized steps, so grouped fits drift from single fits like a chaotic
    system (same quality statistically). ``dtype=torch.float64`` shrinks that drift for
    verification.
    """

    def __init__(
        self,
        kind: str,
        arch_params: dict | None,
        out_shape: tuple[int, int, int],
        seeds: Sequence[int],
        lr: float = DIP_DEFAULTS.lr,
        reg_noise_std: float = DIP_DEFAULTS.reg_noise_std,
        exp_weight: float = DIP_DEFAULTS.exp_weight,
        device: torch.device | str = "cpu",
        backtrack: bool = DIP_DEFAULTS.backtrack,
        backtrack_db: float = BACKTRACK_DB,
        dtype: torch.dtype = torch.float32,
        conv_mode: str = "auto",
    ) -> None:
        seeds = [int(s) for s in seeds]
        _check_hyperparameters(seeds, out_shape, exp_weight, reg_noise_std)
        self.kind = kind
        self.arch_params = resolve_params(kind, arch_params)
        self.out_shape = tuple(int(v) for v in out_shape)
        self.seeds = seeds
        self.reg_noise_std = float(reg_noise_std)
        self.exp_weight = float(exp_weight)
        self.device = torch.device(device)
        self.backtrack = bool(backtrack)
        self.dtype = dtype
        self.conv_mode = resolve_conv_mode(conv_mode, self.device)

        nets = [_init_network(kind, self.arch_params, self.out_shape, s) for s in seeds]
        self.net = stack_networks(nets, self.conv_mode).to(self.device, dtype)
        self.params = dict(self.net.named_parameters())
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=lr)
        self._init_inputs()

        self.output_ema: torch.Tensor | None = None
        self.iteration = 0
        self.last_backtracked = torch.zeros(len(seeds), dtype=torch.bool)
        self.last_psnr_obs = torch.full((len(seeds),), math.nan)
        self.backtracker = Backtracker(
            self.params, len(seeds), self.device, backtrack_db, enabled=self.backtrack
        )

    def _init_inputs(self) -> None:
        """The fixed inputs z and the per-step noise generators, one per image seed."""
        image_size = self.out_shape[1:]
        input_gens = [
            torch.Generator().manual_seed(derive_seed(s, _INPUT_STREAM)) for s in self.seeds
        ]
        self.inputs = torch.cat(
            [make_dip_input(self.kind, self.arch_params, image_size, g) for g in input_gens]
        ).to(self.device, self.dtype)
        self._input_shape = dip_input_shape(self.kind, self.arch_params, image_size)
        self.noise_generators = [
            torch.Generator().manual_seed(derive_seed(s, _NOISE_STREAM)) for s in self.seeds
        ]
        # Drawn into in place every step: no per-image tensors to concatenate.
        self._noise = torch.empty((self.num_images, *self._input_shape[1:]))

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
        for i, generator in enumerate(self.noise_generators):
            torch.randn(self._input_shape, generator=generator, out=self._noise[i : i + 1])
        noise = self._noise.to(self.device, self.dtype)
        return self.inputs + noise.mul_(self.reg_noise_std)

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
        backtracked = self.backtracker.before_step(psnr_obs, self.optimizer)

        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.backtracker.step(backtracked, self.optimizer)

        output = output.detach()
        self._update_ema(output, backtracked)
        self.iteration += 1
        self.last_backtracked = backtracked.cpu()
        self.last_psnr_obs = psnr_obs.cpu()
        return output, loss.detach()

    def reset_backtracking(self) -> None:
        """Forget the reference PSNRs, e.g. when the target changes: a step can only count
        as divergent again after a good step on the new target."""
        self.backtracker.reset()

    def _update_ema(self, output: torch.Tensor, backtracked: torch.Tensor) -> None:
        if self.output_ema is None:
            self.output_ema = output.clone()
            return
        blended = self.output_ema * self.exp_weight + output * (1.0 - self.exp_weight)
        self.output_ema = torch.where(per_image(backtracked, output), self.output_ema, blended)

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
            **self.backtracker.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()`` of a fitter built with the same arguments."""
        self._check_same_fit(state)
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
        self.backtracker.load_state_dict(state, self.device)
        self.iteration = int(state["iteration"])

    def _check_same_fit(self, state: dict[str, Any]) -> None:
        for key in ("kind", "out_shape", "seeds"):
            mine = getattr(self, key)
            theirs = tuple(state[key]) if key != "kind" else state[key]
            if (tuple(mine) if key != "kind" else mine) != theirs:
                raise ValueError(f"state {key} {theirs!r} does not match this fitter's {mine!r}")


def _as_tensor(name: str, value: Any, device: torch.device) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
    if tensor.dim() != 4:
        raise ValueError(f"{name} must be (K, C, H, W); got shape {tuple(tensor.shape)}")
    return tensor.to(device=device, dtype=torch.float32)


def _output_shape(observed: torch.Tensor, operator: Operator) -> tuple[int, int, int]:
    _, c, h, w = observed.shape
    factor = operator.factor if operator.kind == "sr" else 1
    return (c, h * factor, w * factor)


# Working set the CPU path aims at per chunk: with more, parameters, Adam state and
# activations stream from memory on every step and batching turns slower per image.
CPU_CHUNK_BYTES = 256 * 2**20
CPU_CHUNK_MAX = 64


def default_chunk_size(
    device: torch.device | str, num_params: int, image_size: tuple[int, int]
) -> int | None:
    """Images per fitter by default: all at once on a GPU. On the CPU, as many as keep the
    working set near ``CPU_CHUNK_BYTES``: parameters, gradient, two Adam moments and three
    backtracking copies (28 bytes a parameter) plus ~1000 float maps of activations
    (scripts/bench_dip.py measures where the rates peak)."""
    if torch.device(device).type == "cuda":
        return None
    per_image = 28 * num_params + 4000 * image_size[0] * image_size[1]
    return int(min(CPU_CHUNK_MAX, max(1, CPU_CHUNK_BYTES // per_image)))


def _chunk_length(
    chunk_size: int | None | str,
    num_images: int,
    device: torch.device,
    kind: str,
    arch_params: dict | None,
    out_shape: tuple[int, int, int],
) -> int:
    if chunk_size == "auto":
        with torch.device("meta"):  # shapes only: no memory, no draw from the global RNG
            probe = build_dip_net(kind, out_shape[0], out_shape[1:], **(arch_params or {}))
        num_params = sum(p.numel() for p in probe.parameters())
        chunk_size = default_chunk_size(device, num_params, out_shape[1:])
    chunk = num_images if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, None or 'auto'; got {chunk_size!r}")
    return chunk


def fit_dip(
    observed: torch.Tensor | np.ndarray,
    operator: Operator,
    kind: str,
    arch_params: dict | None,
    seeds: Sequence[int],
    iters: int,
    snapshots: Sequence[int] = (),
    lr: float = DIP_DEFAULTS.lr,
    reg_noise_std: float = DIP_DEFAULTS.reg_noise_std,
    exp_weight: float = DIP_DEFAULTS.exp_weight,
    backtrack: bool = DIP_DEFAULTS.backtrack,
    clean: torch.Tensor | np.ndarray | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    wmv_window: int = DIP_DEFAULTS.wmv_window,
    log_every: int = 1,
    dtype: torch.dtype = torch.float32,
    chunk_size: int | None | str = "auto",
    conv_mode: str = "auto",
    wmv_windows: Sequence[int] = (),
    until: Callable[[ChunkRecorder], int] | None = None,
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

    ES-WMV of the raw outputs is the ``wmv`` column (window ``wmv_window``); each of
    ``wmv_windows`` adds a column ``wmv_<W>`` from the same stored outputs, so one fit
    serves a grid of windows (``recording.WindowVariance``).

    ``until`` turns ``iters`` into a cap: each chunk of images runs in segments, and after
    each (and before the first) ``until(recorder)`` names the iteration the chunk must
    reach next, given its ``ChunkRecorder`` (``logged`` values so far; ``iters`` is the
    cap). The chunk ends once that is not past its iteration, or at the cap. Segment ends
    are rounded up to the ``log_every`` grid, so a chunk's last iteration is always logged
    and snapshotted. Segments step the same fitter and recorder as one run does, so a chunk
    that ends at T is bit for bit a fit of T iterations (``elapsed_s`` aside); chunks may
    end at different iterations (``FitResult``).
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
    wanted = set(check_snapshots(snapshots, iters))
    chunk = _chunk_length(chunk_size, n, device, kind, arch_params, out_shape)

    fitter_args = {
        "lr": lr,
        "reg_noise_std": reg_noise_std,
        "exp_weight": exp_weight,
        "device": device,
        "backtrack": backtrack,
        "dtype": dtype,
        "conv_mode": conv_mode,
    }
    bar = tqdm(total=iters * n, desc=f"DIP {kind} x{n}", unit="img-it", disable=not progress)
    records = []
    for first in range(0, n, chunk):
        index = slice(first, min(first + chunk, n))
        fitter = DIPFitter(kind, arch_params, out_shape, seeds[index], **fitter_args)
        clean_part = None if clean_t is None else clean_t[index]
        recorder = ChunkRecorder(
            first, iters, wanted, wmv_window, log_every, clean_part, wmv_windows
        )
        observed_part, operator_part = observed_t[index], _select(operator, index)
        run = (fitter, observed_part, operator_part, recorder, bar)
        records.append(_run_chunk(*run, iters) if until is None else _run_until(*run, until))
    bar.close()
    return merge_chunks(records, max(r.last_iteration for r in records))


def _select(operator: Operator, index: slice) -> Operator:
    """The operator of some images; a single shared mask stays shared."""
    if operator.mask is None or operator.mask.shape[0] == 1:
        return operator
    return operator.select(index)


def _run_chunk(
    fitter: DIPFitter,
    observed: torch.Tensor,
    operator: Operator,
    recorder: ChunkRecorder,
    bar: tqdm,
    iters: int,
) -> ChunkRecord:
    _advance(fitter, observed, operator, recorder, bar, iters)
    return recorder.finish()


def _advance(
    fitter: DIPFitter,
    observed: torch.Tensor,
    operator: Operator,
    recorder: ChunkRecorder,
    bar: tqdm,
    to_iteration: int,
) -> torch.Tensor | None:
    """Step and record until ``fitter`` has made ``to_iteration`` steps; the last output."""
    output = None
    while fitter.iteration < to_iteration:
        output, loss = fitter.step(observed, operator)
        recorder.record(fitter, output, loss)
        bar.update(fitter.num_images)
    return output


def _run_until(
    fitter: DIPFitter,
    observed: torch.Tensor,
    operator: Operator,
    recorder: ChunkRecorder,
    bar: tqdm,
    until: Callable[[ChunkRecorder], int],
) -> ChunkRecord:
    """The chunk in segments, each to the iteration ``until`` names (``fit_dip``)."""
    target = _segment_end(until, recorder)
    while fitter.iteration < target:
        output = _advance(fitter, observed, operator, recorder, bar, target)
        target = _segment_end(until, recorder)
    if fitter.iteration not in recorder.snapshots:
        recorder.snapshot(fitter, output)
    return recorder.finish()


def _segment_end(until: Callable[[ChunkRecorder], int], recorder: ChunkRecorder) -> int:
    """``until``'s next iteration on the log grid (so a chunk always ends on a logged
    row), at least the first logged one and at most the cap ``recorder.iters``."""
    wanted = max(1, int(until(recorder)))
    on_grid = -(-wanted // recorder.log_every) * recorder.log_every
    return min(recorder.iters, on_grid)
