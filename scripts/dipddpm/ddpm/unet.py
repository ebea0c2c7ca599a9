"""The DDPM noise-prediction UNet of Ho et al. (2020), in PyTorch.

Layout follows the paper's TensorFlow model (and its PyTorch port): a 3x3 input conv, per
resolution level ``num_res_blocks`` residual blocks (GroupNorm + SiLU, time embedding added
between the two convs, dropout before the second) with single-head self-attention at the
resolutions in ``attn``, strided-conv downsampling; a middle res/attn/res; a mirrored
up path with ``num_res_blocks + 1`` blocks per level fed by skip connections and
nearest-neighbour + conv upsampling. With the ``ddpm-cifar10`` preset this is the paper's
35.7M-parameter CIFAR-10 model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PRESETS: dict[str, dict[str, Any]] = {
    # Small enough for CPU training and tests (0.63M parameters).
    "tiny": {
        "ch": 24,
        "ch_mult": (1, 2, 2),
        "num_res_blocks": 1,
        "attn": (8,),
        "dropout": 0.1,
        "norm_groups": 8,
    },
    # Ho et al. (2020), CIFAR-10: 35.7M parameters.
    "ddpm-cifar10": {
        "ch": 128,
        "ch_mult": (1, 2, 2, 2),
        "num_res_blocks": 2,
        "attn": (16,),
        "dropout": 0.1,
    },
}


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    # gcd keeps very narrow test models valid; at the presets' widths it is just ``groups``.
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)


def _norm_silu(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    return F.silu(norm(x), inplace=not torch.is_grad_enabled())


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (N,) timesteps, as in the Transformer and Ho et al."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1)
    )
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        # Zero-init the last conv so every block starts as the identity (as in the paper).
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # In place where autograd allows: the convs' outputs are saved by nothing, and
        # a norm's output only by the SiLU's backward.
        h = self.conv1(_norm_silu(self.norm1, x))
        h += self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(_norm_silu(self.norm2, h)))
        return h.add_(self.skip(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, residual."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = _norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # Pixels as tokens (N, HW, C): the 1x1 convs become plain matmuls and q, k, v come
        # out in the layout CPU flash attention takes, with no copies in between.
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        qkv = F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)
        q, k, v = qkv.unflatten(-1, (3, c)).unsqueeze(1).unbind(-2)
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        out = F.linear(out, self.proj.weight.flatten(1), self.proj.bias)
        return x + out.transpose(1, 2).reshape(n, c, h, w)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """eps- (or x0-) prediction network ``model(x, t)``: x (N, C, H, W), t (N,) timesteps.

    ``attn`` lists the feature-map resolutions (for ``image_size`` inputs) that get
    self-attention. Inputs must have H and W divisible by ``2 ** (len(ch_mult) - 1)``.
    """

    def __init__(
        self,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn: Sequence[int] = (16,),
        dropout: float = 0.1,
        in_channels: int = 3,
        out_channels: int | None = None,
        image_size: int = 32,
        norm_groups: int = 32,
    ):
        super().__init__()
        self.ch = ch
        self.levels = len(ch_mult)
        out_channels = out_channels or in_channels
        temb_ch = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, temb_ch), nn.SiLU(), nn.Linear(temb_ch, temb_ch))
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        def block(cin: int, cout: int, res: int) -> nn.ModuleList:
            layers = [ResBlock(cin, cout, temb_ch, dropout, norm_groups)]
            if res in attn:
                layers.append(AttnBlock(cout, norm_groups))
            return nn.ModuleList(layers)

        self.down = nn.ModuleList()
        skip_chs = [ch]
        cur, res = ch, image_size
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(block(cur, ch * mult, res))
                cur = ch * mult
                skip_chs.append(cur)
            if level != self.levels - 1:
                self.down.append(nn.ModuleList([Downsample(cur)]))
                res //= 2
                skip_chs.append(cur)

        self.mid = nn.ModuleList(
            [
                ResBlock(cur, cur, temb_ch, dropout, norm_groups),
                AttnBlock(cur, norm_groups),
                ResBlock(cur, cur, temb_ch, dropout, norm_groups),
            ]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(cur + skip_chs.pop(), ch * mult, res))
                cur = ch * mult
            if level != 0:
                self.up.append(nn.ModuleList([Upsample(cur)]))
                res *= 2

        self.norm_out = _norm(cur, norm_groups)
        self.conv_out = nn.Conv2d(cur, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        # Channels-last activations and weights let oneDNN convolve without reordering
        # either, and make the attention's token view contiguous.
        self.to(memory_format=torch.channels_last)

    def _run(self, layers: nn.ModuleList, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (self.levels - 1)
        if x.ndim != 4 or x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"UNet input must be (N, C, H, W) with H and W divisible by {factor}; "
                f"got shape {tuple(x.shape)}"
            )
        temb = self.temb(timestep_embedding(t.reshape(-1).expand(x.shape[0]), self.ch))
        hs = [self.conv_in(x.contiguous(memory_format=torch.channels_last))]
        for layers in self.down:
            hs.append(self._run(layers, hs[-1], temb))
        h = self._run(self.mid, hs[-1], temb)
        for layers in self.up:
            if isinstance(layers[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(layers, h, temb)
        return self.conv_out(_norm_silu(self.norm_out, h)).contiguous()


def unet_config(preset: str, **overrides: Any) -> dict[str, Any]:
    """The constructor arguments of a preset with ``overrides`` applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown UNet preset {preset!r}; allowed: {sorted(PRESETS)}")
    allowed = set(UNet.__init__.__code__.co_varnames[1 : UNet.__init__.__code__.co_argcount])
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"unknown UNet override(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return {**PRESETS[preset], **overrides}


def build_unet(preset: str, **overrides: Any) -> UNet:
    """A UNet from a named preset (``tiny``, ``ddpm-cifar10``); overrides replace its keys."""
    return UNet(**unet_config(preset, **overrides))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
