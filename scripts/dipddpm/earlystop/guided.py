"""DDPM-guided DIP: the pipeline's trained DDPM as a learned denoiser inside the DIP objective.

The denoiser ``D`` is the DDPM's one-step x0 estimate (Tweedie's posterior mean) at one
diffusion step ``t``: the image is mapped to model space, forward-noised to ``t`` (or, for
an observation that already carries noise of the matching level, only scaled), and
``x0_hat = (x_t - sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(abar_t)``, clipped to [-1, 1].
Three forms (``form``):

``red``  RED-style regulariser. Each DIP step minimises
         ``||A(f(z)) - y||^2 + lam * ||f(z) - D(f(z))||^2`` (both per-pixel means), with
         ``D(f(z))`` computed under no_grad from the step's own output, forward-noised to
         the step ``t_g = t_for_sigma(guidance_sigma)`` with fresh noise: a fixed target per
         step. One tiled UNet pass per DIP step.
``mix``  Target mixing. The DIP target ``y`` is replaced, once, by
         ``(1 - lam) * y + lam * D(y)``, ``D(y)`` the x0 estimate from the observation at the
         sigma-matched step ``t_for_sigma(sigma_task)`` (``observation_start``). Denoising only.
``perc`` Perceptual loss on the generation metrics' classifier (CifarNet, ``classifier``).
         Each DIP step minimises ``||A(f(z)) - y||^2 + lam * ||phi(f(z)) - phi(D(y))||^2 /
         ||phi(D(y))||^2``, ``phi`` the classifier's penultimate features of every 32x32
         tile (the DDPM's tiles, concatenated), ``D(y)`` as for ``mix`` (one UNet pass per
         tile before the fit); the gradient goes through the frozen classifier (one forward
         and backward pass per tile per DIP step). The features carry what the classifier
         learned of CIFAR-10's natural images; the relative error makes lam unit-free.

``lam = 0`` is plain DIP bit for bit: no UNet is evaluated and no random number is drawn
(the guidance noise comes from its own per-image generator, stream ``GUIDANCE_STREAM``).

The DDPM is trained on 32x32 images. Larger images are denoised by 32x32 tiles
(``denoise_by_tiles``): tiles start every ``stride`` pixels (16 by default, so every interior
pixel is covered by two tiles per axis, four in all) plus one flush with the far edge, and
are blended with the separable window ``w(n) = sin^2(pi (n + 1/2) / tile)`` (a Hann window
shifted by half a pixel, positive at the tile's edges, summing to one at half-tile
overlap), normalised by the summed weights. Every UNet evaluation is counted (tiles x
images per DIP step for ``red``, once per image for ``mix``) and reported in the rows.

The variant's rows (``run`` = ``guided``): ``guided`` stops at the last iteration (the
question is whether guidance removes the need to stop early) and ``guided_oracle`` at the
run's own PSNR peak; both carry the peak and the final PSNR (``oracle_psnr`` and ``psnr``
of the ``guided`` row). Every PSNR is the EMA output's, like the plain run's oracle.

``run_guided`` fits the variant alone (``run_earlystop_cell`` adds a plain fit for the
post-hoc rules; a pipeline cell is paired with its lam-0 cell instead). ``ddpm_alone`` is the
DDPM by itself as a denoiser of the observation: the one-step x0 estimate at the
sigma-matched step (``ddpm-x0``) and the reverse chain from there (``ddpm-obs``), by the same
tiles.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..cifarnet import load_classifier
from ..ddpm.checkpoint import load_model
from ..ddpm.diffusion import Diffusion, to_model_space, to_unit
from ..ddpm.sample import observation_start, sample, t_for_sigma
from ..dip.defaults import DIP_DEFAULTS
from ..dip.fit import DIPFitter, derive_seed, psnr_from_mse
from ..dip.recording import ChunkRecorder, merge_chunks
from ..operators import Operator
from .registry import Problem, TrainingVariant, VariantRun, register_variant
from .run import fitter_arguments, make_problem, training_variant
from .table import TABLE_COLUMNS, ssim_of, table_row

FORMS = ("red", "mix", "perc")
# The random stream of the guidance noise: fit.py uses 0..2 for one image, targets.py 3.
GUIDANCE_STREAM = 4
# Columns the variant adds to TABLE_COLUMNS: UNet evaluations per DIP step and up to the
# row's stop, per image.
COST_COLUMNS = ["unet_evals_per_step", "unet_evals"]
GUIDED_DEFAULTS = {
    "form": "red",
    "lam": None,  # required: 0 is plain DIP
    "checkpoint": None,  # the DDPM checkpoint (training or exported weights)
    "guidance_sigma": 0.05,  # red: noise std (range 1) added before D; sets t_g
    "classifier": None,  # perc: the CifarNet weights whose features the penalty compares
    "tile": 32,
    "stride": 16,
}
BLENDING = "separable sin^2(pi (n + 1/2) / tile) window, normalised by the summed weights"

Denoiser = Callable[[torch.Tensor], torch.Tensor]
# A step's penalty: the output (detached) -> (the penalty per image (K,), lam times its
# gradient with respect to the output).
Penalty = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


# ------------------------------------------------------------------------------- tiles


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Offsets of the tiles along one axis of ``size`` pixels: every ``stride`` pixels,
    plus one flush with the far edge; one tile of the whole axis when it is <= ``tile``."""
    if tile < 1 or not 1 <= stride <= tile:
        raise ValueError(f"tiles need tile >= 1 and 1 <= stride <= tile; got {tile}, {stride}")
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def blend_window(height: int, width: int) -> torch.Tensor:
    """The (height, width) float64 blending weights: separable, positive everywhere (a tile
    edge that is also the image's edge still counts) and summing to one at half overlap."""

    def axis(n: int) -> torch.Tensor:
        return torch.sin(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n) ** 2

    return axis(height)[:, None] * axis(width)[None, :]


def cut_tiles(
    images: torch.Tensor, tile: int = 32, stride: int = 16
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The (N * tiles, C, th, tw) tiles of ``images`` (N, C, H, W), image-major, and their
    (y, x) offsets: tiles start every ``stride`` pixels plus one flush with the far edge
    (an axis shorter than ``tile`` is one tile of its own length)."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {tuple(images.shape)}")
    n, c, height, width = images.shape
    th, tw = min(tile, height), min(tile, width)
    offsets = [
        (y, x) for y in tile_starts(height, th, stride) for x in tile_starts(width, tw, stride)
    ]
    tiles = torch.stack([images[:, :, y : y + th, x : x + tw] for y, x in offsets], dim=1)
    return tiles.reshape(n * len(offsets), c, th, tw), offsets


def tiles_per_image(height: int, width: int, tile: int = 32, stride: int = 16) -> int:
    """How many tiles ``denoise_by_tiles`` cuts one (height, width) image into."""
    return len(tile_starts(height, tile, stride)) * len(tile_starts(width, tile, stride))


def denoise_by_tiles(
    images: torch.Tensor, denoiser: Denoiser, tile: int = 32, stride: int = 16
) -> torch.Tensor:
    """``denoiser`` applied to ``tile`` x ``tile`` tiles of ``images`` (N, C, H, W), blended.

    All tiles of all images (``cut_tiles``) go to ``denoiser`` in one batch; overlaps are
    blended with ``blend_window`` and normalised by the summed weights, accumulated in
    float64 so an identity denoiser gives the input back exactly.
    """
    tiles, offsets = cut_tiles(images, tile, stride)
    n, c, height, width = images.shape
    th, tw = tiles.shape[-2:]
    out = denoiser(tiles)
    if tuple(out.shape) != (n * len(offsets), c, th, tw):
        raise ValueError(
            f"the denoiser returned shape {tuple(out.shape)} for tiles of shape "
            f"{(n * len(offsets), c, th, tw)}"
        )
    out = out.reshape(n, len(offsets), c, th, tw).to(torch.float64)
    weight = blend_window(th, tw).to(images.device)
    total = torch.zeros((n, c, height, width), dtype=torch.float64, device=images.device)
    weights = torch.zeros((height, width), dtype=torch.float64, device=images.device)
    for k, (y, x) in enumerate(offsets):
        total[:, :, y : y + th, x : x + tw] += weight * out[:, k]
        weights[y : y + th, x : x + tw] += weight
    return (total / weights).to(images.dtype)


# --------------------------------------------------------------------------- the denoiser


class DdpmDenoiser:
    """A trained DDPM's one-step x0 estimate, applied by tiles, its UNet calls counted.

    ``evaluations`` counts the tiles that went through the UNet (one per tile and image).
    ``t_max`` is the largest step the model was trained on (default: the schedule's T).
    Images in and out are in [0, 1].
    """

    def __init__(
        self,
        model: nn.Module,
        diffusion: Diffusion,
        tile: int = 32,
        stride: int = 16,
        t_max: int | None = None,
    ) -> None:
        tile_starts(tile, tile, stride)  # checks tile and stride
        self.model, self.diffusion = model, diffusion
        self.tile, self.stride = int(tile), int(stride)
        self.t_max = int(t_max or diffusion.T)
        self.evaluations = 0

    def checked_step(self, t: int) -> int:
        """``t``, refused when the model was not trained up to it (a truncated run)."""
        if t > self.t_max:
            raise ValueError(
                f"the DDPM was trained on steps 1..{self.t_max} but guidance needs step {t}; "
                "use a checkpoint whose t_max covers the noise level"
            )
        return t

    @torch.no_grad()
    def x0_estimate(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """The clipped x0 estimate (model space) of ``x_t`` (model space) at step ``t``."""

        def one_pass(tiles: torch.Tensor) -> torch.Tensor:
            self.evaluations += tiles.shape[0]
            steps = torch.full((tiles.shape[0],), int(t), dtype=torch.long, device=tiles.device)
            eps = self.model(tiles, steps).float()
            return self.diffusion.predict_x0(eps, tiles, t).clamp(-1.0, 1.0)

        return denoise_by_tiles(x_t, one_pass, self.tile, self.stride)

    def denoise_observation(self, y01: torch.Tensor, sigma01: float) -> tuple[torch.Tensor, int]:
        """D(y): the x0 estimate from the observation at the sigma-matched step, and that
        step. The observation's own noise plays the forward noise: nothing is drawn."""
        x_t, t = observation_start(self.diffusion, y01, sigma01)
        return to_unit(self.x0_estimate(x_t.to(y01.device), t)), t

    def denoise_renoised(
        self, x01: torch.Tensor, t: int, generators: Sequence[torch.Generator]
    ) -> torch.Tensor:
        """D(x): ``x`` forward-noised to step ``t`` with noise from one generator per image
        (drawn on the CPU, so the draws do not depend on the device), then x0-estimated."""
        noise = torch.stack([torch.randn(x01.shape[1:], generator=g) for g in generators])
        x_t = self.diffusion.q_sample(to_model_space(x01), t, noise.to(x01.device, x01.dtype))
        return to_unit(self.x0_estimate(x_t, t))


def guidance_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One generator per image for the guidance noise, apart from every DIP stream."""
    return [torch.Generator().manual_seed(derive_seed(int(s), GUIDANCE_STREAM)) for s in seeds]


# ----------------------------------------------------------------------- the guided fitter


def fixed_target_penalty(target: Denoiser, lam: float) -> Penalty:
    """``mean((f - target(f))^2)`` per image, ``target(f)`` computed without gradient from
    the step's own output (a fixed target): its gradient is ``2 (f - target) / pixels``."""

    @torch.no_grad()
    def penalty(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        diff = output - target(output)
        values = diff.square().flatten(1).mean(1)
        return values, diff.mul_(2.0 * lam / diff[0].numel())

    return penalty


def feature_penalty(
    features: Callable[[torch.Tensor], torch.Tensor],
    reference: torch.Tensor,
    lam: float,
    tile: int = 32,
    stride: int = 16,
) -> Penalty:
    """``||phi(f) - phi(r)||^2 / ||phi(r)||^2`` per image, ``phi`` the concatenated
    ``features`` of every tile (``cut_tiles``) and ``r`` the fixed ``reference`` images;
    its gradient goes through ``features`` (whose parameters it leaves alone)."""

    def phi(images: torch.Tensor) -> torch.Tensor:
        return features(cut_tiles(images, tile, stride)[0]).reshape(len(images), -1)

    with torch.no_grad():
        target = phi(reference)
        scale = target.square().sum(1).clamp_min(torch.finfo(target.dtype).tiny)

    def penalty(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = output.detach().requires_grad_(True)
            values = (phi(x) - target).square().sum(1) / scale
            (grad,) = torch.autograd.grad(values.sum(), x)
        return values.detach(), grad.mul_(lam)

    return penalty


class GuidedDIPFitter(DIPFitter):
    """``DIPFitter`` whose step also minimises ``lam * penalty(f(z))`` per image: a
    ``Penalty`` (``penalty``), or ``fixed_target_penalty(target, lam)`` for a denoiser
    ``target`` (RED).

    The penalty's gradient is added where the network's output receives its gradient (a
    hook on the output), so ``DIPFitter.step`` runs unchanged: the loss it returns and the
    PSNR backtracking watches stay the data term, and with ``lam = 0`` or no penalty no
    hook is attached (plain DIP, bit for bit). ``last_penalty`` (K,) is the penalty of the
    latest step, without lam (NaN when unguided).
    """

    def __init__(
        self,
        *args,
        target: Denoiser | None = None,
        penalty: Penalty | None = None,
        lam: float = 0.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0; got {lam!r}")
        if target is not None and penalty is not None:
            raise ValueError("give the guided fitter a target or a penalty, not both")
        self.lam = float(lam)
        if target is not None:
            penalty = fixed_target_penalty(target, self.lam)
        self.penalty = penalty
        self.last_penalty = torch.full((self.num_images,), math.nan)

    @property
    def guided(self) -> bool:
        return self.penalty is not None and self.lam > 0

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output = super()._forward(inputs)
        if self.guided and output.requires_grad:  # a training step, not predict()
            self._add_penalty_gradient(output)
        return output

    def _add_penalty_gradient(self, output: torch.Tensor) -> None:
        values, extra = self.penalty(output.detach())
        self.last_penalty = values.cpu()
        output.register_hook(lambda grad: grad + extra)


# ------------------------------------------------------------------------------ the fit


@dataclass
class GuidedRun:
    """What one guided fit produced, per image (PSNRs of the EMA output)."""

    trajectory: pd.DataFrame  # fit_dip's columns plus guidance_penalty
    final_outputs: np.ndarray  # (N, C, H, W) EMA output at the last iteration
    best_iters: np.ndarray  # (N,) iteration of peak PSNR (the last one without a peak)
    best_outputs: np.ndarray  # (N, C, H, W) EMA output there
    psnr_final: np.ndarray  # (N,)
    psnr_peak: np.ndarray  # (N,)
    total_iters: int
    seconds: float


def fit_guided(
    fitter: DIPFitter,
    target: torch.Tensor,
    operator: Operator,
    iters: int,
    clean: np.ndarray | None = None,
    log_every: int = 1,
    wmv_window: int = DIP_DEFAULTS.wmv_window,
    progress: bool = True,
) -> GuidedRun:
    """Step ``fitter`` ``iters`` times on ``target``, recording what ``fit_dip`` records
    (same columns, same values for a plain fitter) and the EMA output's PSNR peak, taken
    over every iteration. ``clean`` is only read for the metrics."""
    device = fitter.device
    clean_t = None if clean is None else torch.as_tensor(clean, dtype=torch.float32).to(device)
    recorder = ChunkRecorder(0, iters, {iters}, wmv_window, log_every, clean_t)
    n = fitter.num_images
    best_psnr = torch.full((n,), -math.inf, device=device, dtype=torch.float64)
    best_iters = torch.full((n,), -1, dtype=torch.long, device=device)
    best_out, psnr = None, torch.full((n,), math.nan, dtype=torch.float64)
    penalties = []
    start = time.perf_counter()
    for _ in tqdm(range(iters), desc=f"guided DIP x{n}", disable=not progress):
        output, loss = fitter.step(target, operator)
        recorder.record(fitter, output, loss)
        t = fitter.iteration
        if t % log_every == 0 or t == iters:
            penalties.append((t, getattr(fitter, "last_penalty", torch.full((n,), math.nan))))
        ema = fitter.output_ema
        best_out = ema.clone() if best_out is None else best_out
        if clean_t is not None:
            # The recorder's expression: the peak's PSNR is the trajectory's value.
            psnr = psnr_from_mse(((ema - clean_t) ** 2).flatten(1).mean(1)).double()
            better = psnr > best_psnr
            best_psnr = torch.where(better, psnr, best_psnr)
            best_iters = torch.where(better, torch.full_like(best_iters, t), best_iters)
            best_out = torch.where(better.view(-1, 1, 1, 1), ema, best_out)
    seconds = time.perf_counter() - start
    final = fitter.output_ema.float().cpu().numpy()
    best_np = best_out.float().cpu().numpy()
    best_iters_np = best_iters.cpu().numpy()
    no_peak = best_iters_np < 0  # clean withheld: the last iteration stands in
    best_iters_np[no_peak], best_np[no_peak] = iters, final[no_peak]
    trajectory = merge_chunks([recorder.finish()], iters).trajectory
    trajectory = _with_penalties(trajectory, penalties)
    psnr_final = psnr.cpu().numpy()
    return GuidedRun(
        trajectory=trajectory,
        final_outputs=final,
        best_iters=best_iters_np,
        best_outputs=best_np,
        psnr_final=psnr_final,
        psnr_peak=np.where(no_peak, psnr_final, best_psnr.cpu().numpy()),
        total_iters=iters,
        seconds=seconds,
    )


def _with_penalties(trajectory: pd.DataFrame, penalties: list) -> pd.DataFrame:
    if not penalties:
        return trajectory.assign(guidance_penalty=math.nan)
    n = len(penalties[0][1])
    frame = pd.DataFrame(
        {
            "image": np.tile(np.arange(n), len(penalties)),
            "iteration": np.repeat([t for t, _ in penalties], n),
            "guidance_penalty": np.concatenate([p.double().numpy() for _, p in penalties]),
        }
    )
    return trajectory.merge(frame, on=["image", "iteration"], how="left")


# --------------------------------------------------------------------------- the variant


@register_variant("guided")
class GuidedDip(TrainingVariant):
    """DIP with the trained DDPM as a learned denoiser (see the module docstring).

    ``settings``: ``final_iters`` (the run's length; the cell's plain fit gets the same by
    default). ``params`` (``rule_params``): ``form`` (``red``, ``mix`` or ``perc``), ``lam``
    (required; ``mix`` needs it in [0, 1]), ``checkpoint`` (the DDPM, required when
    ``lam > 0``; it must be trained up to the step it is used at), ``guidance_sigma``
    (``red``: the noise std, range 1, that sets ``t_g``), ``classifier`` (``perc``: the
    CifarNet weights file), ``tile`` and ``stride``.
    """

    defaults = GUIDED_DEFAULTS

    def __init__(self, settings, params) -> None:
        super().__init__(settings, params)
        iters = settings["final_iters"]
        if int(iters) != iters or iters < 1:
            raise ValueError(f"final_iters must be an integer >= 1; got {iters!r}")
        self.iters = int(iters)
        self.form, self.lam = _check_form_and_lam(params["form"], params["lam"])
        sigma = float(params["guidance_sigma"])
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(
                f"guidance_sigma must be a number > 0; got {params['guidance_sigma']!r}"
            )
        self.guidance_sigma = sigma
        self.tile, self.stride = int(params["tile"]), int(params["stride"])
        tile_starts(self.tile, self.tile, self.stride)
        if self.lam > 0 and params["checkpoint"] is None:
            raise ValueError("the guided variant needs rule_params checkpoint when lam > 0")
        if self.form == "perc" and self.lam > 0 and params["classifier"] is None:
            raise ValueError("guided form 'perc' needs rule_params classifier when lam > 0")

    def fit(self, problem: Problem) -> VariantRun:
        height, width = problem.clean.shape[-2:]
        tiles = tiles_per_image(height, width, self.tile, self.stride)
        denoiser = self._denoiser(problem.device)
        target, step_t, observation_t, target_psnr = problem.observed, None, None, None
        fitter_kwargs, classifier_tiles = {}, 0
        if denoiser is not None and self.form == "mix":
            target, observation_t = self._mixed_target(denoiser, problem)
            target_psnr = _psnr_per_image(target, problem.clean)
        elif denoiser is not None and self.form == "perc":
            reference, observation_t = self._denoised_observation(denoiser, problem)
            target_psnr = _psnr_per_image(reference, problem.clean)
            fitter_kwargs = {"penalty": self._feature_penalty(reference), "lam": self.lam}
            classifier_tiles = tiles
        elif denoiser is not None:
            step_t = self._guidance_step(denoiser)
            gens = guidance_generators(problem.seeds)
            fitter_kwargs = {
                "target": lambda x: denoiser.denoise_renoised(x, step_t, gens),
                "lam": self.lam,
            }
        fitter = GuidedDIPFitter(
            problem.kind,
            problem.arch_params,
            problem.clean.shape[1:],
            problem.seeds,
            device=problem.device,
            **problem.fitter_args,
            **fitter_kwargs,
        )
        run = fit_guided(
            fitter,
            target,
            problem.operator,
            self.iters,
            clean=problem.clean,
            log_every=problem.log_every,
            progress=problem.progress,
        )
        per_step = tiles if step_t is not None else 0
        once = tiles if observation_t is not None else 0
        table = evaluate_guided(run, problem.clean, per_step, once)
        counted = 0 if denoiser is None else denoiser.evaluations
        info = {
            "form": self.form,
            "lam": self.lam,
            "checkpoint": None if denoiser is None else str(self.params["checkpoint"]),
            "t_guidance": step_t,
            "t_observation": observation_t,
            "tile": self.tile,
            "stride": self.stride,
            "blending": BLENDING,
            "tiles_per_image": tiles,
            "unet_evals_per_step": per_step * len(problem.seeds),
            "unet_evals_total": counted,
            # mix: the mixed target's PSNR; perc: that of D(y), the features' reference.
            "target_psnr": None if target_psnr is None else target_psnr.tolist(),
            "classifier": self.params.get("classifier") if self.form == "perc" else None,
            # perc: one forward and backward pass of the classifier per tile and image.
            "classifier_evals_per_step": classifier_tiles * len(problem.seeds),
            "output": "ema",
            "guided_iters": run.total_iters,
            "guided_seconds": run.seconds,
        }
        return VariantRun(
            table=table,
            curves=run.trajectory,
            stops=np.full(len(problem.seeds), run.total_iters),
            outputs_at_stop=run.final_outputs,
            total_iters=run.total_iters,
            info=info,
        )

    def _denoiser(self, device: torch.device) -> DdpmDenoiser | None:
        if self.lam == 0:
            return None
        model, diffusion, meta = load_model(Path(self.params["checkpoint"]), device)
        t_max = meta["config"].get("t_max")
        return DdpmDenoiser(model, diffusion, self.tile, self.stride, t_max)

    def _guidance_step(self, denoiser: DdpmDenoiser) -> int:
        return denoiser.checked_step(t_for_sigma(denoiser.diffusion, self.guidance_sigma))

    def _denoised_observation(
        self, denoiser: DdpmDenoiser, problem: Problem
    ) -> tuple[torch.Tensor, int]:
        """D(y) and its step, for the forms that denoise the observation itself."""
        if problem.operator.kind != "denoise":
            raise ValueError(
                f"guided form {self.form!r} denoises the observation itself: it needs a "
                f"denoising task; got {problem.operator.kind!r}"
            )
        denoiser.checked_step(t_for_sigma(denoiser.diffusion, float(problem.sigma_task)))
        return denoiser.denoise_observation(problem.observed, float(problem.sigma_task))

    def _mixed_target(self, denoiser: DdpmDenoiser, problem: Problem) -> tuple[torch.Tensor, int]:
        denoised, t = self._denoised_observation(denoiser, problem)
        mixed = (1.0 - self.lam) * problem.observed + self.lam * denoised
        return mixed, t

    def _feature_penalty(self, reference: torch.Tensor) -> Penalty:
        """The perceptual penalty against D(y) on the frozen classifier's features."""
        classifier, _ = load_classifier(self.params["classifier"], reference.device)
        classifier.requires_grad_(False)
        return feature_penalty(classifier.features, reference, self.lam, self.tile, self.stride)


def _check_form_and_lam(form: object, lam: object) -> tuple[str, float]:
    if form not in FORMS:
        raise ValueError(f"guided form must be one of {FORMS}; got {form!r}")
    if lam is None:
        raise ValueError("the guided variant needs rule_params lam (0 is plain DIP)")
    lam = float(lam)
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0; got {lam!r}")
    if form == "mix" and lam > 1:
        raise ValueError(f"guided form 'mix' needs lam in [0, 1]; got {lam}")
    return str(form), lam


def _psnr_per_image(images: torch.Tensor, clean: np.ndarray) -> np.ndarray:
    ref = torch.as_tensor(clean, dtype=torch.float32).to(images.device)
    return psnr_from_mse(((images - ref) ** 2).flatten(1).mean(1)).double().cpu().numpy()


def evaluate_guided(
    run: GuidedRun, clean: np.ndarray, evals_per_step: int, evals_once: int
) -> pd.DataFrame:
    """The variant's rows, TABLE_COLUMNS and COST_COLUMNS: ``guided`` at the last iteration
    and ``guided_oracle`` at the run's own peak; ``oracle_psnr`` is that peak in both.
    ``unet_evals`` counts one image's UNet evaluations up to the row's stop."""
    rows = []
    last = run.total_iters
    for i in range(len(clean)):
        best = int(run.best_iters[i])
        peak = float(run.psnr_peak[i])
        stops = [
            ("guided", last, float(run.psnr_final[i]), run.final_outputs[i]),
            ("guided_oracle", best, peak, run.best_outputs[i]),
        ]
        for name, stop, value, output in stops:
            row = table_row(
                "guided", name, i, stop, last, value, ssim_of(output, clean[i]), best, peak
            )
            row["unet_evals_per_step"] = evals_per_step
            row["unet_evals"] = evals_once + evals_per_step * stop
            rows.append(row)
    return pd.DataFrame(rows, columns=[*TABLE_COLUMNS, *COST_COLUMNS])


# ------------------------------------------------------------------ the variant alone


def run_guided(
    clean: np.ndarray,
    observed: np.ndarray,
    operator: Operator,
    sigma_task: float,
    kind: str,
    arch_params: dict | None,
    seeds: Sequence[int],
    iters: int,
    rule_params: dict,
    lr: float = DIP_DEFAULTS.lr,
    reg_noise_std: float = DIP_DEFAULTS.reg_noise_std,
    exp_weight: float = DIP_DEFAULTS.exp_weight,
    backtrack: bool = DIP_DEFAULTS.backtrack,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log_every: int = 1,
) -> VariantRun:
    """The guided variant's ``iters``-iteration fit of ``observed``, scored against
    ``clean``: ``run_earlystop_cell(..., variant="guided")`` without its plain fit (at
    ``lam = 0`` this fit is plain DIP, the reference a guided fit is paired with).
    ``rule_params``: the variant's keys (``GUIDED_DEFAULTS``)."""
    training = training_variant("guided", {"final_iters": iters}, rule_params)
    fitter_args = fitter_arguments(lr, reg_noise_std, exp_weight, backtrack)
    problem = make_problem(
        clean,
        observed,
        operator,
        sigma_task,
        kind,
        arch_params,
        seeds,
        fitter_args,
        device,
        progress,
        log_every,
    )
    return training.fit(problem)


# ----------------------------------------------------------------------- the DDPM alone

# The DDPM alone as a denoiser: its one-step x0 estimate, and its reverse chain (Example 1's
# name for a chain from the observation).
ONE_STEP, CHAIN = "ddpm-x0", "ddpm-obs"
DDPM_ALONE_COLUMNS = [
    "method",
    "image",
    "psnr",
    "ssim",
    "t_start",
    "chain_steps",
    "unet_evals",
    "seconds",
]


def ddpm_alone(
    denoiser: DdpmDenoiser,
    observed: torch.Tensor,
    sigma_task: float,
    clean: np.ndarray,
    steps: int,
    sampler: str = "ddim",
    eta: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """The DDPM alone as a denoiser of ``observed`` ((N, C, H, W) in [0, 1], on the model's
    device; noise std ``sigma_task``, range 1), per image (``DDPM_ALONE_COLUMNS``):

    ``ddpm-x0``   the one-step x0 estimate at the sigma-matched step t* (``D(y)`` of form mix);
    ``ddpm-obs``  the reverse chain from the scaled observation at t* (``sample``, with
                  min(steps, t*) steps of ``sampler`` and ``eta``, as Example 1's
                  ``ddpm-obs`` cells), its noise from one CPU generator seeded with ``seed``.

    Both go by the denoiser's tiles: each tile is restored on its own and the tiles are
    blended like the guidance's. ``unet_evals`` counts one image's UNet evaluations (tiles
    x chain steps for the chain); ``seconds`` is the batch's wall time over N.
    """
    n, (height, width) = len(clean), clean.shape[-2:]
    tiles = tiles_per_image(height, width, denoiser.tile, denoiser.stride)
    t_start = denoiser.checked_step(t_for_sigma(denoiser.diffusion, sigma_task))
    start = time.perf_counter()
    one_step = denoiser.denoise_observation(observed, sigma_task)[0].cpu()
    one_step_seconds = time.perf_counter() - start
    chain_steps = min(int(steps), t_start)
    generator = torch.Generator().manual_seed(int(seed))

    def chain(tiles01: torch.Tensor) -> torch.Tensor:
        x_start, t = observation_start(denoiser.diffusion, tiles01, sigma_task)
        result = sample(
            denoiser.model,
            denoiser.diffusion,
            x_start,
            t,
            chain_steps,
            sampler,
            eta,
            generator=generator,
            progress=progress,
        )
        return torch.as_tensor(result.images, device=tiles01.device)

    start = time.perf_counter()
    restored = denoise_by_tiles(observed, chain, denoiser.tile, denoiser.stride).cpu()
    chain_seconds = time.perf_counter() - start
    runs = [
        (ONE_STEP, one_step, 0, tiles, one_step_seconds),
        (CHAIN, restored, chain_steps, tiles * chain_steps, chain_seconds),
    ]
    rows = []
    for method, images, run_steps, evals, seconds in runs:
        psnr = _psnr_per_image(images, clean)
        for i in range(n):
            ssim = ssim_of(images[i].numpy(), clean[i])
            rows.append([method, i, psnr[i], ssim, t_start, run_steps, evals, seconds / n])
    return pd.DataFrame(rows, columns=DDPM_ALONE_COLUMNS)
