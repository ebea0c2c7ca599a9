"""The fast paths of the DDPM UNet compute what the plain formulas say, and the benchmark
compares like with like.

Timings are not asserted (they belong to ``scripts/bench_ddpm.py``); what is asserted is
that the attention takes the fused kernel, that results stay exact for a fixed seed, and
that the diffusers network the benchmark races has our parameter count and FLOPs.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.profiler import profile

from dipddpm.ddpm.diffusion import Diffusion
from dipddpm.ddpm.sample import sample
from dipddpm.ddpm.unet import AttnBlock, build_unet, count_parameters


def attention_block(ch: int = 16, seed: int = 0) -> AttnBlock:
    torch.manual_seed(seed)
    block = AttnBlock(ch, 4)
    nn.init.normal_(block.proj.weight, std=0.1)
    nn.init.normal_(block.qkv.bias, std=0.1)
    return block.eval()


def reference_attention(block: AttnBlock, x: torch.Tensor) -> torch.Tensor:
    """Ho et al.'s single-head attention written out with 1x1 convs and a softmax."""
    n, c, h, w = x.shape
    q, k, v = block.qkv(block.norm(x)).reshape(n, 3, c, h * w).unbind(1)
    weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)
    out = (v @ weights.transpose(1, 2)).reshape(n, c, h, w)
    return x + block.proj(out)


def test_attention_matches_the_written_out_formula():
    block = attention_block()
    x = torch.randn(3, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_attention(block, x), atol=1e-5, rtol=1e-5)


def test_attention_takes_the_fused_kernel_without_pointwise_convs():
    block = attention_block()
    with torch.no_grad(), profile() as prof:
        block(torch.randn(2, 16, 4, 4))
    names = {event.name for event in prof.events()}
    assert "aten::_scaled_dot_product_attention_math" not in names
    assert not {"aten::convolution", "aten::_slow_conv2d_forward"} & names


def test_attention_gradients_match_the_written_out_formula():
    block = attention_block()
    x = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(2))
    grads = []
    for forward in (block, lambda inp: reference_attention(block, inp)):
        block.zero_grad()
        forward(x).square().sum().backward()
        grads.append(block.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_sampling_is_bitwise_repeatable_for_a_fixed_seed():
    torch.manual_seed(0)
    model = build_unet("tiny", ch=8, ch_mult=(1, 2), attn=(4,), image_size=8, norm_groups=4)
    nn.init.normal_(model.conv_out.weight, std=0.05)
    diffusion = Diffusion("linear", 50)
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    runs = [
        sample(
            model, diffusion, x_T, 50, 5, generator=torch.Generator().manual_seed(4), progress=False
        ).images
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.fixture(scope="module")
def bench_ddpm(root):
    pytest.importorskip("diffusers")
    spec = importlib.util.spec_from_file_location("bench_ddpm", root / "scripts" / "bench_ddpm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("preset", ["tiny", "ddpm-cifar10"])
def test_benchmarked_diffusers_network_has_our_size_and_flops(bench_ddpm, preset):
    ours, theirs = build_unet(preset), bench_ddpm.build_diffusers(preset)
    assert count_parameters(ours) == count_parameters(theirs)
    assert bench_ddpm.flops_per_eval(ours) == bench_ddpm.flops_per_eval(theirs)


def test_weights_stored_in_the_standard_layout_load_to_the_same_network():
    # Checkpoints written before the channels-last layout hold contiguous (NCHW) weights.
    torch.manual_seed(0)
    model = build_unet("tiny", ch=8, ch_mult=(1, 2), attn=(4,), image_size=8, norm_groups=4)
    nn.init.normal_(model.conv_out.weight, std=0.05)
    old_layout = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    loaded = build_unet("tiny", ch=8, ch_mult=(1, 2), attn=(4,), image_size=8, norm_groups=4)
    loaded.load_state_dict(old_layout)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 30])
    with torch.no_grad():
        out = loaded.eval()(x, t)
        torch.testing.assert_close(out, model.eval()(x, t), atol=0, rtol=0)
    assert out.is_contiguous()
