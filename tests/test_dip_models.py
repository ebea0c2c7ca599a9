"""DIP architectures: shapes, output range, depth checks, parameter validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dipddpm.dip import ARCH_DEFAULTS, build_dip_net, make_dip_input
from dipddpm.dip.models import PointwiseConv2d, dip_input_shape

SMALL = {
    "skip": {"depth": 3, "channels_down": 8, "channels_up": 8, "input_channels": 4},
    "encdec": {"depth": 3, "channels_down": 8, "channels_up": 8, "input_channels": 4},
    "resnet": {"blocks": 2, "channels": 8, "input_channels": 4},
    "convdecoder": {"layers": 3, "channels": 8},
}


def _run(kind: str, params: dict, size: tuple[int, int], out_channels: int = 3) -> torch.Tensor:
    torch.manual_seed(0)
    net = build_dip_net(kind, out_channels, size, **params)
    z = make_dip_input(kind, params, size, torch.Generator().manual_seed(1))
    return net(z)


@pytest.mark.parametrize("kind", sorted(ARCH_DEFAULTS))
@pytest.mark.parametrize("size", [(16, 16), (16, 32)])
def test_each_architecture_gives_image_shape_in_unit_range(kind, size):
    out = _run(kind, SMALL[kind], size, out_channels=3)
    assert out.shape == (1, 3, *size)
    assert torch.isfinite(out).all()
    assert out.min() > 0.0 and out.max() < 1.0
    assert out.std() > 0  # not a constant image


@pytest.mark.parametrize("kind", sorted(ARCH_DEFAULTS))
def test_networks_hold_no_buffers_so_batchnorm_uses_batch_statistics(kind):
    net = build_dip_net(kind, 1, (16, 16), **SMALL[kind])
    assert list(net.buffers()) == []
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(not m.track_running_stats for m in norms)


def test_skip_default_depth_fits_64_pixels_and_has_skip_branches():
    net = build_dip_net("skip", 3, (64, 64))  # depth 5 -> 2x2 bottom
    z = make_dip_input("skip", {}, (64, 64), torch.Generator().manual_seed(0))
    assert z.shape == (1, 32, 64, 64)
    assert net(z).shape == (1, 3, 64, 64)
    with_skip = sum(p.numel() for p in net.parameters())
    without = sum(p.numel() for p in build_dip_net("encdec", 3, (64, 64)).parameters())
    assert with_skip > without


def test_skip_depth_5_on_cifar_size_names_size_and_largest_depth():
    with pytest.raises(ValueError, match=r"32x32") as info:
        build_dip_net("skip", 3, (32, 32), depth=5)
    message = str(info.value)
    assert "largest depth that fits is 4" in message and "1x1" in message
    build_dip_net("skip", 3, (32, 32), depth=4, channels_down=4, channels_up=4)


def test_depth_must_divide_the_image_size():
    with pytest.raises(ValueError, match=r"24x24.*largest depth that fits is 3"):
        build_dip_net("encdec", 3, (24, 24), depth=4)
    with pytest.raises(ValueError, match=r"30x30.*largest depth that fits is 1"):
        build_dip_net("skip", 3, (30, 30), depth=2)


def test_convdecoder_layers_checked_like_depth():
    with pytest.raises(ValueError, match=r"convdecoder layers 5 .*32x32.*largest layers"):
        build_dip_net("convdecoder", 3, (32, 32), layers=5)
    assert dip_input_shape("convdecoder", {"layers": 4, "channels": 16}, (32, 64)) == (
        1,
        16,
        2,
        4,
    )


def test_unknown_kind_and_parameter_are_named():
    with pytest.raises(ValueError, match=r"'unet'"):
        build_dip_net("unet", 3, (32, 32))
    with pytest.raises(ValueError, match=r"'chanels'"):
        build_dip_net("resnet", 3, (32, 32), chanels=8)
    with pytest.raises(ValueError, match=r"channels_down needs one entry per scale \(3\)"):
        build_dip_net("skip", 3, (32, 32), depth=3, channels_down=[8, 8])
    with pytest.raises(ValueError, match=r"upsample"):
        build_dip_net("skip", 3, (32, 32), depth=3, upsample="bicubic")


def test_per_scale_channel_lists_are_used():
    params = {"depth": 2, "channels_down": [4, 6], "channels_up": [5, 7], "skip_channels": [1, 2]}
    out = _run("skip", {**params, "input_channels": 3}, (16, 16), out_channels=1)
    assert out.shape == (1, 1, 16, 16)


def test_input_is_scaled_uniform_noise_from_the_generator():
    params = {"input_channels": 6, "input_scale": 0.1}
    a = make_dip_input("skip", params, (8, 8), torch.Generator().manual_seed(3))
    b = make_dip_input("skip", params, (8, 8), torch.Generator().manual_seed(3))
    c = make_dip_input("skip", params, (8, 8), torch.Generator().manual_seed(4))
    assert a.shape == (1, 6, 8, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0.0 and a.max() < 0.1 and a.max() > 0.09


def test_pointwise_conv_matches_conv2d():
    torch.manual_seed(0)
    conv = PointwiseConv2d(5, 3)
    reference = nn.Conv2d(5, 3, 1)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(2, 5, 4, 6)
    torch.testing.assert_close(conv(x), reference(x), rtol=1e-5, atol=1e-6)
