"""DDPM-guided DIP: tiles, the penalty's gradient, lam = 0 is plain DIP, UNet evaluations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dipddpm.cifarnet import build_model, save_classifier
from dipddpm.ddpm.diffusion import Diffusion
from dipddpm.ddpm.unet import build_unet
from dipddpm.dip.fit import DIPFitter, fit_dip
from dipddpm.earlystop import TRAINING_VARIANTS, run_earlystop_cell
from dipddpm.earlystop.guided import (
    COST_COLUMNS,
    DdpmDenoiser,
    GuidedDIPFitter,
    blend_window,
    cut_tiles,
    denoise_by_tiles,
    feature_penalty,
    tile_starts,
    tiles_per_image,
)
from dipddpm.earlystop.table import TABLE_COLUMNS
from dipddpm.operators import Operator

MICRO_ARCH = {
    "depth": 2,
    "channels_down": 8,
    "channels_up": 8,
    "skip_channels": 2,
    "input_channels": 8,
}
UNET = {"ch": 8, "ch_mult": (1, 2), "attn": (4,), "image_size": 8, "norm_groups": 4}
SEEDS = [11, 12]
SIGMA = 25 / 255
ITERS = 6
# 16x16 images in 8x8 tiles every 4 pixels: 3 x 3 tiles per image.
TILES = {"tile": 8, "stride": 4}


def _tiny_unet() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_unet("tiny", **UNET)
        # The output layer starts at zero (eps = 0); a random one makes the UNet matter.
        torch.nn.init.normal_(model.conv_out.weight, std=0.05)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny randomly initialised DDPM saved as a training checkpoint (T = 100)."""

    def write(t_max: int = 100):
        path = tmp_path_factory.mktemp("ddpm") / "tiny.pt"
        config = {
            "preset": "tiny",
            "unet": {k: list(v) if isinstance(v, tuple) else v for k, v in UNET.items()},
            "schedule": "linear",
            "T": 100,
            "prediction": "eps",
            "mode": "full" if t_max == 100 else "truncated",
            "t_max": t_max,
        }
        torch.save({"ema": _tiny_unet().state_dict(), "config": config, "step": 1}, path)
        return str(path)

    return write


def _problem(size: int = 16):
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = np.stack(
        [
            np.stack([0.5 + 0.3 * np.sin(5 * xx + c) * np.cos(3 * yy) for c in range(3)]),
            np.stack([(xx > 0.5) * 0.5 + 0.2 + 0.1 * c for c in range(3)]),
        ]
    ).astype(np.float32)
    noise = np.random.default_rng(3).standard_normal(clean.shape)
    return clean, (clean + SIGMA * noise).astype(np.float32)


def _cell(rule_params, iters: int = ITERS):
    clean, observed = _problem()
    return run_earlystop_cell(
        clean,
        observed,
        Operator("denoise"),
        SIGMA,
        "skip",
        MICRO_ARCH,
        SEEDS,
        final_iters=iters,
        variant="guided",
        rule_params=rule_params,
        baseline_params={"wmv_window": 3, "patience": 3},
        progress=False,
    )


# ------------------------------------------------------------------------------- tiles


@pytest.mark.parametrize(
    ("shape", "tile", "stride"),
    [
        ((2, 3, 16, 16), 8, 4),
        ((1, 3, 64, 64), 32, 16),
        ((1, 3, 40, 50), 32, 16),
        ((1, 3, 20, 24), 32, 16),
    ],
)
def test_tiles_of_an_identity_denoiser_reproduce_the_input_exactly(shape, tile, stride):
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    calls = []

    def identity(tiles):
        calls.append(tuple(tiles.shape))
        return tiles.clone()

    out = denoise_by_tiles(images, identity, tile, stride)
    assert torch.equal(out, images)
    n, c, h, w = shape
    assert calls == [(n * tiles_per_image(h, w, tile, stride), c, min(tile, h), min(tile, w))]


def test_a_constant_image_stays_constant_and_blends_are_convex():
    constant = torch.full((2, 3, 64, 64), 0.37)
    out = denoise_by_tiles(constant, lambda t: t.mean(dim=(1, 2, 3), keepdim=True).expand_as(t))
    torch.testing.assert_close(out, constant, rtol=0, atol=1e-6)
    # A denoiser that returns one value per tile: every pixel is a weighted mean of the
    # values of the tiles covering it, so the output stays within their range.
    values = torch.linspace(0.1, 0.9, 2 * 9).view(-1, 1, 1, 1)
    out = denoise_by_tiles(constant, lambda t: values.expand_as(t).clone())
    assert out[0].min() >= 0.1 - 1e-6 and out[0].max() <= values[8].item() + 1e-6
    assert out[1].min() >= values[9].item() - 1e-6 and out[1].max() <= 0.9 + 1e-6


def test_tile_layout_and_window():
    assert tile_starts(64, 32, 16) == [0, 16, 32]
    assert tile_starts(40, 32, 16) == [0, 8]  # the last tile flush with the edge
    assert tile_starts(20, 32, 16) == [0]
    assert tiles_per_image(64, 64) == 9 and tiles_per_image(32, 32) == 1
    assert tiles_per_image(128, 128) == 49
    with pytest.raises(ValueError, match="stride"):
        tile_starts(64, 32, 40)
    # Half-overlapping windows sum to one away from the edges; every weight is positive.
    window = blend_window(32, 32)
    assert window.min() > 0
    total = torch.zeros(64, 64, dtype=torch.float64)
    for y in (0, 16, 32):
        for x in (0, 16, 32):
            total[y : y + 32, x : x + 32] += window
    torch.testing.assert_close(total[16:48, 16:48], torch.ones(32, 32, dtype=torch.float64))


def test_ddpm_denoiser_counts_one_evaluation_per_tile_and_image():
    model = build_unet("tiny", **UNET).eval().requires_grad_(False)
    denoiser = DdpmDenoiser(model, Diffusion("linear", 100), tile=8, stride=4)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = denoiser.denoise_renoised(images, 3, [torch.Generator().manual_seed(s) for s in (1, 2)])
    assert out.shape == images.shape and denoiser.evaluations == 2 * 9
    assert out.min() >= 0 and out.max() <= 1
    denoiser.denoise_observation(images, SIGMA)
    assert denoiser.evaluations == 4 * 9


# ----------------------------------------------------------------------- the guided fitter


def _fitter(cls=DIPFitter, **kw):
    return cls("skip", MICRO_ARCH, (3, 16, 16), SEEDS, **kw)


def test_an_identity_target_adds_exactly_nothing():
    """f - D(f) = 0: the hook adds a zero gradient, so the fit is plain DIP bit for bit."""
    _, observed = _problem()
    y, op = torch.from_numpy(observed), Operator("denoise")
    plain, guided = _fitter(), _fitter(GuidedDIPFitter, target=lambda x: x.clone(), lam=3.0)
    for _ in range(5):
        plain.step(y, op)
        guided.step(y, op)
    assert torch.equal(plain.output_ema, guided.output_ema)
    for name, value in plain.params.items():
        assert torch.equal(value, guided.params[name]), name
    np.testing.assert_array_equal(guided.last_penalty.numpy(), 0.0)


def test_the_penalty_gradient_is_that_of_the_explicit_loss():
    _, observed = _problem()
    y, op, lam = torch.from_numpy(observed), Operator("denoise"), 0.7
    grey = lambda x: torch.full_like(x, 0.5)
    guided = _fitter(GuidedDIPFitter, target=grey, lam=lam)
    op.residual(guided._forward(guided.inputs), y).sum().backward()
    plain = _fitter()
    out = plain._forward(plain.inputs)
    explicit = op.residual(out, y) + lam * ((out - 0.5) ** 2).flatten(1).mean(1)
    explicit.sum().backward()
    for name, value in plain.params.items():
        torch.testing.assert_close(guided.params[name].grad, value.grad, rtol=1e-5, atol=1e-7)
    expected = ((out.detach() - 0.5) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(guided.last_penalty, expected)


def _tiny_classifier() -> torch.nn.Module:
    model = build_model(width=4, seed=0)
    model.eval().requires_grad_(False)
    # Fresh batch-norm statistics are identities; random ones make the features nonlinear.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifarnet") / "cifarnet.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        save_classifier(path, _tiny_classifier(), {"accuracy": 0.1})
    return str(path)


def test_the_feature_penalty_and_its_gradient_are_those_of_the_explicit_loss():
    """Relative squared error of the tiles' concatenated features, gradient through phi;
    the classifier's parameters get no gradient and a reference image costs nothing."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = _tiny_classifier()
    gen = torch.Generator().manual_seed(5)
    reference, output = torch.rand(2, 3, 16, 16, generator=gen), torch.rand(2, 3, 16, 16)
    lam = 0.3
    values, grad = feature_penalty(model.features, reference, lam, **TILES)(output)

    def phi(x):
        return model.features(cut_tiles(x, **TILES)[0]).reshape(2, -1)

    x = output.clone().requires_grad_(True)
    explicit = (phi(x) - phi(reference)).square().sum(1) / phi(reference).square().sum(1)
    (lam * explicit.sum()).backward()
    torch.testing.assert_close(values, explicit.detach())
    torch.testing.assert_close(grad, x.grad)
    assert all(p.grad is None for p in model.parameters())
    same, _ = feature_penalty(model.features, reference, lam, **TILES)(reference)
    np.testing.assert_array_equal(same.numpy(), 0.0)


# --------------------------------------------------------------------------- the variant


def test_guided_variant_is_registered_with_its_defaults():
    cls = TRAINING_VARIANTS["guided"]
    assert cls.defaults["lam"] is None and cls.defaults["form"] == "red"
    assert (cls.defaults["tile"], cls.defaults["stride"]) == (32, 16)


@pytest.mark.parametrize("form", ["red", "mix"])
def test_lambda_zero_is_plain_dip_bit_for_bit(form, checkpoint):
    res = _cell({"form": form, "lam": 0.0, "checkpoint": checkpoint(), **TILES})
    guided = res.stage_curves.sort_values(["image", "iteration"], ignore_index=True)
    plain = res.trajectory.sort_values(["image", "iteration"], ignore_index=True)
    for column in ["image", "iteration", "loss", "psnr_obs", "psnr_clean", "psnr_clean_ema"]:
        np.testing.assert_array_equal(guided[column].to_numpy(), plain[column].to_numpy())
    clean, observed = _problem()
    direct = fit_dip(
        observed, Operator("denoise"), "skip", MICRO_ARCH, SEEDS, ITERS, progress=False
    )
    np.testing.assert_array_equal(res.outputs_at_stop, direct.snapshots[ITERS])
    table = res.table.set_index(["rule", "image"])
    for i in range(len(SEEDS)):
        assert table.loc[("guided_oracle", i), "psnr"] == table.loc[("oracle", i), "psnr"]
        assert table.loc[("guided_oracle", i), "stop_iter"] == table.loc[("oracle", i), "stop_iter"]
        last = plain[(plain["image"] == i) & (plain["iteration"] == ITERS)]["psnr_clean_ema"]
        assert table.loc[("guided", i), "psnr"] == float(last.iloc[0])
    assert res.info["unet_evals_total"] == 0 and (table["unet_evals"].dropna() == 0).all()


def test_red_guidance_counts_its_unet_evaluations_and_reports_final_and_peak(checkpoint):
    params = {"form": "red", "lam": 0.5, "checkpoint": checkpoint(), **TILES}
    res = _cell(params)
    rows = res.table[res.table["run"] == "guided"]
    assert list(rows.columns[: len(TABLE_COLUMNS) + 2]) == [*TABLE_COLUMNS, *COST_COLUMNS]
    assert res.info["tiles_per_image"] == 9 and res.info["t_guidance"] >= 1
    assert res.info["unet_evals_per_step"] == 9 * len(SEEDS)
    assert res.info["unet_evals_total"] == 9 * len(SEEDS) * ITERS  # counted, not computed
    assert (rows["unet_evals_per_step"] == 9).all()
    np.testing.assert_array_equal(rows["unet_evals"], 9 * rows["stop_iter"])
    curves = res.stage_curves
    assert (curves["guidance_penalty"] > 0).all()
    for i in range(len(SEEDS)):
        mine = curves[curves["image"] == i]
        final = rows[(rows["rule"] == "guided") & (rows["image"] == i)].iloc[0]
        peak = rows[(rows["rule"] == "guided_oracle") & (rows["image"] == i)].iloc[0]
        assert final["stop_iter"] == ITERS and final["oracle_psnr"] == peak["psnr"]
        assert peak["psnr"] == mine["psnr_clean_ema"].max()
        assert peak["stop_iter"] == mine.loc[mine["psnr_clean_ema"].idxmax(), "iteration"]
        assert final["psnr"] == mine["psnr_clean_ema"].iloc[-1]
    # Guidance changes the fit, and the same seeds give the same guided fit.
    assert not np.array_equal(curves["loss"], res.trajectory["loss"])
    again = _cell(params)
    np.testing.assert_array_equal(again.outputs_at_stop, res.outputs_at_stop)


def test_mix_guidance_denoises_the_observation_once(checkpoint):
    res = _cell({"form": "mix", "lam": 0.5, "checkpoint": checkpoint(), **TILES})
    rows = res.table[res.table["run"] == "guided"]
    assert res.info["unet_evals_total"] == 9 * len(SEEDS) and res.info["t_observation"] >= 1
    assert (rows["unet_evals_per_step"] == 0).all() and (rows["unet_evals"] == 9).all()
    assert len(res.info["target_psnr"]) == len(SEEDS)


def test_perc_guidance_denoises_once_and_backpropagates_through_the_classifier(
    checkpoint, classifier
):
    params = {"form": "perc", "lam": 1.0, "checkpoint": checkpoint(), "classifier": classifier}
    res = _cell(params | TILES)
    rows = res.table[res.table["run"] == "guided"]
    assert res.info["unet_evals_total"] == 9 * len(SEEDS) and res.info["t_observation"] >= 1
    assert (rows["unet_evals_per_step"] == 0).all() and (rows["unet_evals"] == 9).all()
    assert res.info["classifier_evals_per_step"] == 9 * len(SEEDS)
    assert res.info["classifier"] == classifier and len(res.info["target_psnr"]) == len(SEEDS)
    curves = res.stage_curves
    assert (curves["guidance_penalty"] > 0).all()
    assert not np.array_equal(curves["loss"], res.trajectory["loss"])
    again = _cell(params | TILES)
    np.testing.assert_array_equal(again.outputs_at_stop, res.outputs_at_stop)


def test_guided_parameters_are_checked(checkpoint):
    with pytest.raises(ValueError, match="needs rule_params lam"):
        _cell({})
    with pytest.raises(ValueError, match="needs rule_params checkpoint"):
        _cell({"lam": 0.5})
    with pytest.raises(ValueError, match=r"lam in \[0, 1\]"):
        _cell({"form": "mix", "lam": 1.5, "checkpoint": checkpoint()})
    with pytest.raises(ValueError, match="needs rule_params classifier"):
        _cell({"form": "perc", "lam": 0.5, "checkpoint": checkpoint()})
    with pytest.raises(ValueError, match="guided form must be one of"):
        _cell({"form": "perceptual", "lam": 0.5})
    with pytest.raises(ValueError, match=r"trained on steps 1\.\.2 but guidance needs step"):
        _cell({"lam": 0.5, "checkpoint": checkpoint(t_max=2), **TILES})
