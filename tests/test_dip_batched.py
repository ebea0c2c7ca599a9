"""The GPU path of the batched engine (one grouped convolution), checked on the CPU.

``conv_mode="auto"`` picks ``grouped`` on CUDA and ``loop`` elsewhere, so without these
tests the grouped path would only ever run on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dipddpm.dip import build_dip_net, fit_dip, make_dip_input
from dipddpm.dip.batched import resolve_conv_mode, stack_networks
from dipddpm.operators import Operator

SMALL = {
    "skip": {"depth": 2, "channels_down": 8, "channels_up": 8, "input_channels": 4},
    "encdec": {"depth": 2, "channels_down": 8, "channels_up": 8, "input_channels": 4},
    "resnet": {"blocks": 1, "channels": 8, "input_channels": 4},
    "convdecoder": {"layers": 2, "channels": 8},
}


# Bit-identity comparisons hold for a fixed thread count (conftest's one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_auto_conv_mode_is_grouped_on_cuda_and_loop_elsewhere():
    assert resolve_conv_mode("auto", torch.device("cuda", 0)) == "grouped"
    assert resolve_conv_mode("auto", torch.device("cpu")) == "loop"
    assert resolve_conv_mode("grouped", torch.device("cpu")) == "grouped"
    with pytest.raises(ValueError, match="conv_mode must be auto or one of"):
        resolve_conv_mode("vmap", torch.device("cpu"))


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_grouped_forward_equals_loop_forward(kind):
    # One float32 forward pass: the two paths differ only in how the convolution sums its
    # products (unit roundoff 6e-8 over a few hundred terms, then BatchNorm's rescaling),
    # which stays far below 1e-5 on outputs in (0, 1); a kernel applied to the wrong
    # image would differ by about the outputs' spread, 1e-2 or more.
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(build_dip_net(kind, 3, (16, 16), **SMALL[kind]))
    g = torch.Generator().manual_seed(0)
    z = torch.cat([make_dip_input(kind, SMALL[kind], (16, 16), g) for _ in nets])
    loop = stack_networks(nets, "loop")(z)
    grouped = stack_networks(nets, "grouped")(z)
    torch.testing.assert_close(grouped, loop, rtol=0, atol=1e-5)
    assert (loop[0] - loop[1]).abs().max() > 1e-2  # the images' networks do differ


def test_fit_dip_grouped_equals_the_default_path_in_float64():
    # Whole fits through the normal entry point. In float32 Adam turns rounding noise in
    # flat directions into learning-rate-sized steps (see DIPFitter), so the comparison is
    # made in float64: there rounding noise (1e-16) stays below Adam's eps (1e-8) and moves
    # a parameter by at most lr * 1e-8 per step, so 10 steps keep the paths ~1e-9 apart.
    # Trajectories are float64 (rtol 1e-7); snapshots are stored in float32, where that can
    # flip one rounding (6e-8), hence atol 1e-6. A wiring error shows as 1e-2 or more.
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 16, 16, generator=g)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    args = (noisy, Operator("denoise"), "skip", SMALL["skip"], [1, 2])
    common = dict(iters=10, snapshots=[5], clean=clean, progress=False, dtype=torch.float64)
    default = fit_dip(*args, **common)
    grouped = fit_dip(*args, conv_mode="grouped", **common)
    for t in (5, 10):
        np.testing.assert_allclose(grouped.snapshots[t], default.snapshots[t], rtol=0, atol=1e-6)
        np.testing.assert_allclose(
            grouped.snapshots_raw[t], default.snapshots_raw[t], rtol=0, atol=1e-6
        )
    columns = ["loss", "psnr_obs", "psnr_clean", "psnr_clean_ema"]
    np.testing.assert_allclose(
        grouped.trajectory[columns].to_numpy(), default.trajectory[columns].to_numpy(), rtol=1e-7
    )
    assert grouped.trajectory["backtracked"].equals(default.trajectory["backtracked"])
