"""DDPM: UNet, diffusion process, training with exact resume, samplers and DIP guidance.

The functions ``train`` and ``sample`` share their names with their modules, so they are
not re-exported here (that would shadow the modules): import them as
``from dipddpm.ddpm.train import train`` and ``from dipddpm.ddpm.sample import sample``.
"""

from dipddpm.ddpm.diffusion import Diffusion, make_schedule, timesteps, to_model_space, to_unit
from dipddpm.ddpm.sample import (
    Consistency,
    Guide,
    PosteriorMean,
    SampleResult,
    diffuse_prior,
    generate,
    noise_start,
    observation_start,
    sample_k,
    t_for_sigma,
)
from dipddpm.ddpm.train import load_model
from dipddpm.ddpm.unet import PRESETS, UNet, build_unet, count_parameters

__all__ = [
    "PRESETS",
    "Consistency",
    "Diffusion",
    "Guide",
    "PosteriorMean",
    "SampleResult",
    "UNet",
    "build_unet",
    "count_parameters",
    "diffuse_prior",
    "generate",
    "load_model",
    "make_schedule",
    "noise_start",
    "observation_start",
    "sample_k",
    "t_for_sigma",
    "timesteps",
    "to_model_space",
    "to_unit",
]
