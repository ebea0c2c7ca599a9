"""The CUDA speed-ups (bf16 autocast, torch.compile), run on the CPU with tiny shapes, train
like the default float32 eager path within stated tolerances.

Dropout is off here: eager PyTorch and Inductor-compiled code draw different dropout masks
from the same seed, which would compare two different random draws instead of two
numerical paths.

The loss of the first steps is dominated by the noise target (the UNet's output layer
starts at zero), so it is a coarse check; the sensitive one is the weight update after a
few AdamW steps, compared as ||update - fp32 update|| / ||fp32 update||. AdamW's first
updates are close to lr * sign(gradient), so a gradient error shows up as flipped signs
of the smallest gradient entries.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from dipddpm.ddpm.train import train
from dipddpm.ddpm.unet import build_unet
from dipddpm.grid import checkpoint_name

UNET = {"ch": 8, "ch_mult": (1, 2), "attn": (4,), "norm_groups": 4, "dropout": 0.0}
SEED, STEPS = 7, 3
# bf16 keeps 8 mantissa bits (relative rounding ~0.4 % per operation); measured update
# difference about 4 %. Compiled float32 only reorders operations; measured about 2e-6.
BF16_UPDATE_RTOL, COMPILE_UPDATE_RTOL = 0.15, 1e-4
BF16_LOSS_RTOL, COMPILE_LOSS_RTOL = 1e-3, 1e-5


def fit(out_dir, **kwargs) -> tuple[np.ndarray, torch.Tensor, dict]:
    """(losses, weight update, checkpoint config) of a few training steps."""
    rng = np.random.default_rng(0)
    curve = train(
        rng.random((12, 3, 8, 8), dtype=np.float32),
        out_dir,
        preset="tiny",
        unet_overrides=UNET,
        T=50,
        steps=STEPS,
        batch_size=5,
        lr=1e-3,
        ema_decay=0.99,
        checkpoint_steps=[STEPS],
        seed=SEED,
        device="cpu",
        warmup=2,
        progress=False,
        **kwargs,
    )
    state = torch.load(out_dir / checkpoint_name(STEPS), weights_only=True)
    return curve["loss"].to_numpy(), update(state["model"]), state["config"]


def update(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """Trained minus initial weights (train seeds the initialisation with the run seed)."""
    torch.manual_seed(SEED)
    initial = build_unet("tiny", image_size=8, **UNET).state_dict()
    return torch.cat([(weights[k] - v).flatten() for k, v in initial.items()])


def relative_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


@pytest.fixture(scope="module")
def float32(tmp_path_factory):
    return fit(tmp_path_factory.mktemp("fp32"))


def test_bf16_autocast_trains_like_float32(tmp_path, float32):
    losses, delta, config = fit(tmp_path, bf16=True, cpu_speedups=True)
    assert config["bf16"] and not config["compile"]
    np.testing.assert_allclose(losses, float32[0], rtol=BF16_LOSS_RTOL)
    assert relative_difference(delta, float32[1]) < BF16_UPDATE_RTOL


@pytest.mark.slow  # Inductor builds C++ kernels: over a minute at first, seconds once cached
def test_compiled_unet_trains_like_eager(tmp_path, float32):
    compiler = os.environ.get("CXX", "g++")  # what Inductor builds its CPU kernels with
    if shutil.which(compiler) is None:
        pytest.skip(f"torch.compile on the CPU needs a C++ compiler; {compiler!r} not found")
    losses, delta, config = fit(tmp_path, compile=True, cpu_speedups=True)
    assert config["compile"] and not config["bf16"]
    np.testing.assert_allclose(losses, float32[0], rtol=COMPILE_LOSS_RTOL)
    assert relative_difference(delta, float32[1]) < COMPILE_UPDATE_RTOL


def test_speedups_requested_on_the_cpu_fall_back_to_float32_eager(tmp_path, float32):
    """The pipeline's default: bf16/compile in the config change nothing on a CPU run."""
    with pytest.warns(UserWarning, match="CUDA only"):
        losses, delta, config = fit(tmp_path, bf16=True, compile=True)
    assert not config["bf16"] and not config["compile"]
    np.testing.assert_array_equal(losses, float32[0])
    assert torch.equal(delta, float32[1])
