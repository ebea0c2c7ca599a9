"""Deep Image Prior architectures, selectable by name.

``skip`` follows models/skip.py of Ulyanov et al. (DmitryUlyanov/deep-image-prior) with the
paper's denoising setup as defaults; ``encdec`` is the same hourglass without skip branches;
``resnet`` is the paper's residual net without downsampling; ``convdecoder`` is the
ConvDecoder / deep decoder of Heckel & Hand, which grows the image from a small input.

One deliberate deviation from the paper's code: convolutions directly followed by BatchNorm
carry no bias (BatchNorm removes it; see ``_conv_bn``). ``stack_networks`` merges K
networks of one architecture into the batched module the fitting engine trains.

DIP always trains with a batch of one image in train mode, so every BatchNorm uses batch
statistics only (``track_running_stats=False``): there are no buffers, which is what lets
the fitting engine stack K networks and ``vmap`` over them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "skip": {
        "depth": 5,
        "channels_down": 128,
        "channels_up": 128,
        "skip_channels": 4,
        "input_channels": 32,
        "input_scale": 0.1,
        "upsample": "bilinear",
    },
    "encdec": {
        "depth": 5,
        "channels_down": 128,
        "channels_up": 128,
        "input_channels": 32,
        "input_scale": 0.1,
        "upsample": "bilinear",
    },
    "resnet": {
        "blocks": 8,
        "channels": 64,
        "input_channels": 32,
        "input_scale": 0.1,
    },
    "convdecoder": {
        "layers": 4,
        "channels": 64,
        "input_scale": 0.1,
    },
}
ARCH_KINDS = tuple(ARCH_DEFAULTS)
UPSAMPLE_MODES = ("bilinear", "nearest")
# The coarsest feature map must keep at least this many pixels per side: BatchNorm with
# batch size 1 needs more than one value per channel and reflection padding needs side > 1.
MIN_BOTTOM_SIDE = 2


def resolve_params(kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The architecture's defaults overridden by ``params``; unknown keys are rejected."""
    if kind not in ARCH_DEFAULTS:
        raise ValueError(f"unknown DIP architecture {kind!r}; choose one of {ARCH_KINDS}")
    params = dict(params or {})
    unknown = sorted(set(params) - set(ARCH_DEFAULTS[kind]))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for DIP architecture {kind!r}; "
            f"allowed: {sorted(ARCH_DEFAULTS[kind])}"
        )
    return {**ARCH_DEFAULTS[kind], **params}


def _per_scale(name: str, value: int | Sequence[int], depth: int) -> list[int]:
    """Expand an int to one value per scale, or check a list has one per scale."""
    if isinstance(value, int):
        return [value] * depth
    values = [int(v) for v in value]
    if len(values) != depth:
        raise ValueError(f"{name} needs one entry per scale ({depth}); got {len(values)}")
    return values


def check_depth_fits(kind: str, depth: int, image_size: tuple[int, int], what: str) -> None:
    """Reject a number of halvings that the image cannot take.

    H and W must be divisible by 2**depth (so every skip branch meets its upsampled path
    without cropping) and the coarsest scale must stay at least 2x2.
    """
    h, w = image_size
    if depth < 1:
        raise ValueError(f"{kind} {what} must be >= 1; got {depth}")
    largest = 0
    while h % 2 ** (largest + 1) == 0 and w % 2 ** (largest + 1) == 0:
        if min(h, w) // 2 ** (largest + 1) < MIN_BOTTOM_SIDE:
            break
        largest += 1
    if depth <= largest:
        return
    bottom = f"{h / 2**depth:g}x{w / 2**depth:g}"
    if largest == 0:
        hint = "no depth fits this image (it cannot be halved once)"
    else:
        hint = (
            f"the largest {what} that fits is {largest} "
            f"({h // 2**largest}x{w // 2**largest} bottom)"
        )
    raise ValueError(
        f"{kind} {what} {depth} does not fit a {h}x{w} image: the bottom scale would be "
        f"{bottom} (it must be at least {MIN_BOTTOM_SIDE}x{MIN_BOTTOM_SIDE} and H, W divisible "
        f"by 2^{what}); {hint}"
    )


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution computed as a matrix product.

    Same parameters and result as ``nn.Conv2d(c_in, c_out, 1)``, but when the fitting engine
    stacks K networks it becomes one batched matmul (``StackedPointwiseConv2d``), which on
    the CPU rounds like the single network's matmul, keeping batched fits bit-identical.
    """

    def __init__(self, c_in: int, c_out: int, bias: bool = True) -> None:
        super().__init__(c_in, c_out, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        out = torch.matmul(self.weight.flatten(1), x.flatten(2))
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.view(n, -1, h, w)


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Module:
    """Conv with reflection padding, as the paper's ``pad='reflection'``."""
    if kernel == 1 and stride == 1:
        return PointwiseConv2d(c_in, c_out, bias=bias)
    pad = (kernel - 1) // 2
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=0, bias=bias)
    return nn.Sequential(nn.ReflectionPad2d(pad), conv) if pad else conv


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    """Conv followed by BatchNorm, without the conv bias.

    The paper's convs carry a bias even before BatchNorm, which subtracts it again: its
    true gradient is zero, so Adam normalises pure rounding noise into full learning-rate
    steps. Dropping it leaves the function class unchanged and keeps fits reproducible
    across batch sizes.
    """
    return [_conv(c_in, c_out, kernel, stride, bias=False), _bn(c_out)]


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, track_running_stats=False)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class _Concat(nn.Module):
    """Run branches on the same input and concatenate along channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def _skip_net(
    kind: str, out_channels: int, image_size: tuple[int, int], p: dict[str, Any]
) -> nn.Module:
    depth = int(p["depth"])
    check_depth_fits(kind, depth, image_size, "depth")
    if p["upsample"] not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}; got {p['upsample']!r}")
    down = _per_scale("channels_down", p["channels_down"], depth)
    up = _per_scale("channels_up", p["channels_up"], depth)
    skip = _per_scale("skip_channels", p["skip_channels"], depth)

    # Built from the bottom up: scale i wraps the (already built) deeper scales.
    inner: nn.Module | None = None
    for i in reversed(range(depth)):
        c_in = int(p["input_channels"]) if i == 0 else down[i - 1]
        deeper_out = down[i] if inner is None else up[i + 1]
        deeper = [
            *_conv_bn(c_in, down[i], 3, stride=2),
            _act(),
            *_conv_bn(down[i], down[i], 3),
            _act(),
        ]
        if inner is not None:
            deeper.append(inner)
        deeper.append(nn.Upsample(scale_factor=2, mode=p["upsample"]))
        deeper_path = nn.Sequential(*deeper)
        if skip[i]:
            branch = nn.Sequential(*_conv_bn(c_in, skip[i], 1), _act())
            merged: nn.Module = _Concat(branch, deeper_path)
        else:
            merged = deeper_path
        inner = nn.Sequential(
            merged,
            _bn(skip[i] + deeper_out),
            *_conv_bn(skip[i] + deeper_out, up[i], 3),
            _act(),
            *_conv_bn(up[i], up[i], 1),
            _act(),
        )
    assert inner is not None
    return nn.Sequential(inner, _conv(up[0], out_channels, 1), nn.Sigmoid())


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(channels, channels, 3),
            _act(),
            *_conv_bn(channels, channels, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _resnet(out_channels: int, image_size: tuple[int, int], p: dict[str, Any]) -> nn.Module:
    h, w = image_size
    if min(h, w) < MIN_BOTTOM_SIDE:
        raise ValueError(f"resnet needs an image of at least 2x2; got {h}x{w}")
    blocks, channels = int(p["blocks"]), int(p["channels"])
    if blocks < 0:
        raise ValueError(f"resnet blocks must be >= 0; got {blocks}")
    return nn.Sequential(
        _conv(int(p["input_channels"]), channels, 3),
        _act(),
        *[_ResidualBlock(channels) for _ in range(blocks)],
        *_conv_bn(channels, channels, 3),
        _conv(channels, out_channels, 3),
        nn.Sigmoid(),
    )


def _convdecoder(out_channels: int, image_size: tuple[int, int], p: dict[str, Any]) -> nn.Module:
    layers, channels = int(p["layers"]), int(p["channels"])
    check_depth_fits("convdecoder", layers, image_size, "layers")
    body: list[nn.Module] = []
    for _ in range(layers):
        body += [
            nn.Upsample(scale_factor=2, mode="bilinear"),
            _conv(channels, channels, 3),
            nn.ReLU(),
            _bn(channels),
        ]
    return nn.Sequential(*body, _conv(channels, out_channels, 1), nn.Sigmoid())


def build_dip_net(
    kind: str, out_channels: int, image_size: tuple[int, int], **params: Any
) -> nn.Module:
    """Build a DIP network mapping its fixed input (see ``make_dip_input``) to an image.

    ``kind`` is one of ``ARCH_KINDS``; ``params`` override ``ARCH_DEFAULTS[kind]``. Raises
    ValueError for unknown kinds or keys and for depths the image size cannot take.
    The output has ``out_channels`` channels, ``image_size`` pixels and values in (0, 1).
    """
    p = resolve_params(kind, params)
    if out_channels < 1:
        raise ValueError(f"out_channels must be >= 1; got {out_channels}")
    if kind == "skip":
        return _skip_net(kind, out_channels, image_size, p)
    if kind == "encdec":
        return _skip_net(kind, out_channels, image_size, {**p, "skip_channels": 0})
    if kind == "resnet":
        return _resnet(out_channels, image_size, p)
    return _convdecoder(out_channels, image_size, p)


def dip_input_shape(
    kind: str, params: dict[str, Any] | None, image_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Shape (1, C_in, h, w) of the fixed input: full size, except the convdecoder's small one."""
    p = resolve_params(kind, params)
    h, w = image_size
    if kind == "convdecoder":
        scale = 2 ** int(p["layers"])
        return (1, int(p["channels"]), h // scale, w // scale)
    return (1, int(p["input_channels"]), h, w)


def make_dip_input(
    kind: str,
    params: dict[str, Any] | None,
    image_size: tuple[int, int],
    generator: torch.Generator,
) -> torch.Tensor:
    """The fixed noise input z: uniform [0, 1) noise times ``input_scale`` (paper: 0.1)."""
    p = resolve_params(kind, params)
    shape = dip_input_shape(kind, p, image_size)
    return torch.rand(shape, generator=generator) * float(p["input_scale"])


# --- K networks as one: the fitting engine's batched form -------------------------------

CONV_MODES = ("loop", "grouped")


class StackedConv2d(nn.Module):
    """K independent convolutions applied to a (K, C, H, W) batch, image k with kernel k.

    ``loop`` runs one ordinary convolution per image: on the CPU that is faster than a
    grouped convolution (oneDNN's grouped kernels are 1.5-4x slower per image) and rounds
    exactly like a single fit, so a batched fit reproduces single fits bit for bit.
    ``grouped`` runs one convolution with K groups, which is what fills a GPU.
    """

    def __init__(self, convs: Sequence[nn.Conv2d], mode: str) -> None:
        super().__init__()
        if mode not in CONV_MODES:
            raise ValueError(f"conv mode must be one of {CONV_MODES}; got {mode!r}")
        first = convs[0]
        self.mode = mode
        self.stride = first.stride
        self.groups = len(convs)
        self.weight = nn.Parameter(torch.stack([c.weight.detach() for c in convs]))
        has_bias = first.bias is not None
        bias = torch.stack([c.bias.detach() for c in convs]) if has_bias else None
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "grouped":
            k, c, h, w = x.shape
            weight = self.weight.flatten(0, 1)
            bias = None if self.bias is None else self.bias.flatten()
            out = F.conv2d(x.reshape(1, k * c, h, w), weight, bias, self.stride, groups=k)
            return out.view(k, -1, *out.shape[-2:])
        # unbind, not indexing: its backward stacks the K gradients once instead of
        # summing K zero-padded copies.
        biases = [None] * self.groups if self.bias is None else self.bias.unbind(0)
        outs = [
            F.conv2d(image[None], weight, bias, self.stride)
            for image, weight, bias in zip(x.unbind(0), self.weight.unbind(0), biases, strict=True)
        ]
        return torch.cat(outs)


class StackedPointwiseConv2d(nn.Module):
    """K independent 1x1 convolutions as one batched matrix product."""

    def __init__(self, convs: Sequence[PointwiseConv2d]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([c.weight.detach() for c in convs]))
        has_bias = convs[0].bias is not None
        self.bias = (
            nn.Parameter(torch.stack([c.bias.detach() for c in convs])) if has_bias else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, _, h, w = x.shape
        out = torch.matmul(self.weight.flatten(2), x.flatten(2))
        if self.bias is not None:
            out = out + self.bias[:, :, None]
        return out.view(k, -1, h, w)


class StackedBatchNorm2d(nn.Module):
    """K BatchNorms with batch statistics, each over its own image of a (K, C, H, W) batch.

    Viewing the batch as one image with K*C channels gives every (image, channel) its own
    statistics, exactly as K separate BatchNorms on batches of one.
    """

    def __init__(self, norms: Sequence[nn.BatchNorm2d]) -> None:
        super().__init__()
        self.eps = norms[0].eps
        self.weight = nn.Parameter(torch.stack([n.weight.detach() for n in norms]))
        self.bias = nn.Parameter(torch.stack([n.bias.detach() for n in norms]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, c, h, w = x.shape
        out = F.batch_norm(
            x.reshape(1, k * c, h, w),
            None,
            None,
            self.weight.flatten(),
            self.bias.flatten(),
            training=True,
            eps=self.eps,
        )
        return out.view(k, c, h, w)


def _stack_leaf(modules: list[nn.Module], conv_mode: str) -> nn.Module | None:
    first = modules[0]
    if isinstance(first, PointwiseConv2d):
        return StackedPointwiseConv2d(modules)
    if isinstance(first, nn.Conv2d):
        if first.groups != 1 or first.dilation != (1, 1) or first.padding != (0, 0):
            raise ValueError(f"cannot stack {first}: only plain unpadded convolutions")
        return StackedConv2d(modules, conv_mode)
    if isinstance(first, nn.BatchNorm2d):
        if first.track_running_stats or not first.affine:
            raise ValueError(f"cannot stack {first}: DIP BatchNorm uses batch statistics")
        return StackedBatchNorm2d(modules)
    if list(first.parameters(recurse=False)) or list(first.buffers(recurse=False)):
        raise ValueError(f"cannot stack {type(first).__name__}: it holds parameters or buffers")
    return None


def stack_networks(nets: Sequence[nn.Module], conv_mode: str = "loop") -> nn.Module:
    """One module computing ``nets[k](x[k])`` for a (K, ...) batch, with stacked parameters.

    The networks must share one architecture. Parameter names are those of a single
    network, each tensor with a leading K dimension (image k's own values at index k).
    Parameter-free layers (activations, padding, upsampling, concatenation) act on each
    image of the batch independently already, so they are shared as they are.
    """
    stacked = copy.deepcopy(nets[0])
    for name, _ in list(stacked.named_modules()):
        if not name:
            continue
        sources = [net.get_submodule(name) for net in nets]
        if list(sources[0].children()):
            continue
        replacement = _stack_leaf(sources, conv_mode)
        if replacement is not None:
            parent_name, _, child = name.rpartition(".")
            setattr(stacked.get_submodule(parent_name), child, replacement)
    return stacked
