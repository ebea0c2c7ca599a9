"""Deep Image Prior architectures, selectable by name from one registry.

``skip`` follows models/skip.py of Ulyanov et al. (DmitryUlyanov/deep-image-prior) with the
paper's denoising setup as defaults; ``encdec`` is the same hourglass without skip branches;
``resnet`` is the paper's residual net without downsampling; ``convdecoder`` is the
ConvDecoder / deep decoder of Heckel & Hand, which grows the image from a small input.

``ARCHITECTURES`` maps each name to its builder, default hyperparameters and input shape;
``ARCH_DEFAULTS`` and ``ARCH_KINDS`` are live views of it. Adding an architecture is a
builder, an ``Architecture`` entry in ``ARCHITECTURES`` (or ``register_architecture`` from
outside) and a test; the config schema's ``arch.kind`` enum must list it too.

One deliberate deviation from the paper's code: convolutions directly followed by BatchNorm
carry no bias (BatchNorm removes it; see ``_conv_bn``).

DIP always trains with a batch of one image in train mode, so every BatchNorm uses batch
statistics only (``track_running_stats=False``): there are no buffers, which is what lets
the fitting engine stack K networks into one module (``batched.stack_networks``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

# bench_dip.py and the tests import the stacked layers and PointwiseConv2d from here.
from .batched import PointwiseConv2d, StackedConv2d, StackedPointwiseConv2d

__all__ = [
    "ARCHITECTURES",
    "ARCH_DEFAULTS",
    "ARCH_KINDS",
    "Architecture",
    "PointwiseConv2d",
    "StackedConv2d",
    "StackedPointwiseConv2d",
    "build_dip_net",
    "check_depth_fits",
    "dip_input_shape",
    "make_dip_input",
    "register_architecture",
    "resolve_params",
]

UPSAMPLE_MODES = ("bilinear", "nearest")
# The coarsest feature map must keep at least this many pixels per side: BatchNorm with
# batch size 1 needs more than one value per channel and reflection padding needs side > 1.
MIN_BOTTOM_SIDE = 2


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


def _skip(out_channels: int, image_size: tuple[int, int], p: dict[str, Any]) -> nn.Module:
    return _skip_net("skip", out_channels, image_size, p)


def _encdec(out_channels: int, image_size: tuple[int, int], p: dict[str, Any]) -> nn.Module:
    return _skip_net("encdec", out_channels, image_size, {**p, "skip_channels": 0})


def _full_size_input(image_size: tuple[int, int], p: Mapping[str, Any]) -> tuple[int, int, int]:
    return (int(p["input_channels"]), *image_size)


def _convdecoder_input(image_size: tuple[int, int], p: Mapping[str, Any]) -> tuple[int, int, int]:
    scale = 2 ** int(p["layers"])
    return (int(p["channels"]), image_size[0] // scale, image_size[1] // scale)


# --- The registry -------------------------------------------------------------------------

Builder = Callable[[int, tuple[int, int], dict[str, Any]], nn.Module]
InputShape = Callable[[tuple[int, int], Mapping[str, Any]], tuple[int, int, int]]


@dataclass(frozen=True)
class Architecture:
    """One DIP architecture: how to build it, its hyperparameters and its input.

    ``build(out_channels, image_size, params)`` gets ``defaults`` overridden by the user's
    values and returns a network mapping the input to (1, out_channels, *image_size) in
    (0, 1). For ``fit_dip`` it must consist of layers ``batched.stack_networks`` can stack.
    ``defaults`` names every hyperparameter the architecture accepts; it must hold
    ``input_scale`` (the input noise's amplitude). ``input_shape(image_size, params)`` is
    the (C, h, w) of the fixed input; by default ``input_channels`` at full size.
    """

    name: str
    build: Builder
    defaults: Mapping[str, Any]
    input_shape: InputShape = _full_size_input

    def __post_init__(self) -> None:
        # Read-only: every caller shares these defaults, so none may change them for all.
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        if "input_scale" not in self.defaults:
            raise ValueError(f"architecture {self.name!r} needs an 'input_scale' default")


_INPUT_SCALE = 0.1  # the paper's input noise amplitude
ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            "skip",
            _skip,
            {
                "depth": 5,
                "channels_down": 128,
                "channels_up": 128,
                "skip_channels": 4,
                "input_channels": 32,
                "input_scale": _INPUT_SCALE,
                "upsample": "bilinear",
            },
        ),
        Architecture(
            "encdec",
            _encdec,
            {
                "depth": 5,
                "channels_down": 128,
                "channels_up": 128,
                "input_channels": 32,
                "input_scale": _INPUT_SCALE,
                "upsample": "bilinear",
            },
        ),
        Architecture(
            "resnet",
            _resnet,
            {"blocks": 8, "channels": 64, "input_channels": 32, "input_scale": _INPUT_SCALE},
        ),
        Architecture(
            "convdecoder",
            _convdecoder,
            {"layers": 4, "channels": 64, "input_scale": _INPUT_SCALE},
            input_shape=_convdecoder_input,
        ),
    )
}


class _DefaultsView(Mapping[str, Mapping[str, Any]]):
    """kind -> default hyperparameters, read live from ``ARCHITECTURES``."""

    def __getitem__(self, kind: str) -> Mapping[str, Any]:
        return ARCHITECTURES[kind].defaults

    def __iter__(self) -> Iterator[str]:
        return iter(ARCHITECTURES)

    def __len__(self) -> int:
        return len(ARCHITECTURES)

    def __repr__(self) -> str:
        return repr({kind: dict(arch.defaults) for kind, arch in ARCHITECTURES.items()})


ARCH_DEFAULTS: Mapping[str, Mapping[str, Any]] = _DefaultsView()
ARCH_KINDS = ARCH_DEFAULTS.keys()  # live: includes architectures registered later


def register_architecture(arch: Architecture) -> None:
    """Make ``arch`` available by name to ``build_dip_net``, ``fit_dip`` and the rest."""
    if arch.name in ARCHITECTURES:
        raise ValueError(f"DIP architecture {arch.name!r} is already registered")
    ARCHITECTURES[arch.name] = arch


def _architecture(kind: str) -> Architecture:
    if kind not in ARCHITECTURES:
        raise ValueError(f"unknown DIP architecture {kind!r}; choose one of {tuple(ARCH_KINDS)}")
    return ARCHITECTURES[kind]


def resolve_params(kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The architecture's defaults overridden by ``params``; unknown keys are rejected."""
    defaults = _architecture(kind).defaults
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for DIP architecture {kind!r}; "
            f"allowed: {sorted(defaults)}"
        )
    return {**defaults, **params}


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
    return ARCHITECTURES[kind].build(out_channels, tuple(image_size), p)


def dip_input_shape(
    kind: str, params: dict[str, Any] | None, image_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Shape (1, C_in, h, w) of the fixed input: full size, except the convdecoder's small one."""
    p = resolve_params(kind, params)
    return (1, *ARCHITECTURES[kind].input_shape(tuple(image_size), p))


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
