"""K networks of one architecture as one module: the fitting engine's batched form.

``stack_networks`` merges K DIP networks (see ``models``) into one module whose parameters
carry a leading K dimension and which computes ``nets[k](x[k])`` for a (K, ...) batch.
BatchNorms and 1x1 convolutions run once over the batch; 3x3 convolutions run either per
image (``loop``, the CPU default) or as one grouped convolution (``grouped``, the CUDA
default; see ``resolve_conv_mode``).

Stacking needs networks made of the leaves below (and parameter-free layers): DIP trains
with a batch of one image in train mode, so its BatchNorms keep no running statistics and
hold no buffers to stack.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CONV_MODES = ("loop", "grouped")


def resolve_conv_mode(conv_mode: str, device: torch.device) -> str:
    """``auto`` is ``grouped`` on CUDA (one kernel fills a GPU) and ``loop`` elsewhere."""
    if conv_mode == "auto":
        conv_mode = "grouped" if device.type == "cuda" else "loop"
    if conv_mode not in CONV_MODES:
        raise ValueError(f"conv_mode must be auto or one of {CONV_MODES}; got {conv_mode!r}")
    return conv_mode


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution computed as a matrix product.

    Same parameters and result as ``nn.Conv2d(c_in, c_out, 1)``, but when K networks are
    stacked it becomes one batched matmul (``StackedPointwiseConv2d``), which on the CPU
    rounds like the single network's matmul, keeping batched fits bit-identical.
    """

    def __init__(self, c_in: int, c_out: int, bias: bool = True) -> None:
        super().__init__(c_in, c_out, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        out = torch.matmul(self.weight.flatten(1), x.flatten(2))
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.view(n, -1, h, w)


def _stacked_parameter(tensors: Sequence[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach() for t in tensors]))


def _stacked_bias(layers: Sequence[nn.Module]) -> nn.Parameter | None:
    if layers[0].bias is None:
        return None
    return _stacked_parameter([layer.bias for layer in layers])


class StackedConv2d(nn.Module):
    """K independent convolutions applied to a (K, C, H, W) batch, image k with kernel k.

    ``loop`` runs one ordinary convolution per image: on the CPU that is faster than a
    grouped convolution (oneDNN's grouped kernels are slower per image) and rounds exactly
    like a single fit, so a batched fit reproduces single fits bit for bit.
    ``grouped`` runs one convolution with K groups, which is what fills a GPU.
    """

    def __init__(self, convs: Sequence[nn.Conv2d], mode: str) -> None:
        super().__init__()
        if mode not in CONV_MODES:
            raise ValueError(f"conv mode must be one of {CONV_MODES}; got {mode!r}")
        self.mode = mode
        self.stride = convs[0].stride
        self.groups = len(convs)
        self.weight = _stacked_parameter([c.weight for c in convs])
        self.bias = _stacked_bias(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "grouped":
            return self._grouped(x)
        # unbind, not indexing: its backward stacks the K gradients once instead of
        # summing K zero-padded copies.
        biases = [None] * self.groups if self.bias is None else self.bias.unbind(0)
        outs = [
            F.conv2d(image[None], weight, bias, self.stride)
            for image, weight, bias in zip(x.unbind(0), self.weight.unbind(0), biases, strict=True)
        ]
        return torch.cat(outs)

    def _grouped(self, x: torch.Tensor) -> torch.Tensor:
        k, c, h, w = x.shape
        weight = self.weight.flatten(0, 1)
        bias = None if self.bias is None else self.bias.flatten()
        out = F.conv2d(x.reshape(1, k * c, h, w), weight, bias, self.stride, groups=k)
        return out.view(k, -1, *out.shape[-2:])


class StackedPointwiseConv2d(nn.Module):
    """K independent 1x1 convolutions as one batched matrix product."""

    def __init__(self, convs: Sequence[PointwiseConv2d]) -> None:
        super().__init__()
        self.weight = _stacked_parameter([c.weight for c in convs])
        self.bias = _stacked_bias(convs)

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
        self.weight = _stacked_parameter([n.weight for n in norms])
        self.bias = _stacked_parameter([n.bias for n in norms])

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
    """The stacked form of K copies of one leaf layer; None when it can be shared as is."""
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
