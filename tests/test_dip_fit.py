"""DIP fitting engine: batched == independent fits, snapshots, masks, determinism, quality."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dipddpm.dip import DIPFitter, fit_dip, psnr_from_mse
from dipddpm.operators import Operator

TINY = {"depth": 2, "channels_down": 8, "channels_up": 8, "input_channels": 4}


# Bit-identity comparisons hold for a fixed thread count (conftest's one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _images(k: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images and their noisy observations."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(k, 3, size // 4, size // 4, generator=g)
    clean = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return clean, noisy


def test_batched_fit_equals_independent_fits():
    clean, noisy = _images(3)
    seeds = [11, 12, 13]
    common = dict(iters=20, snapshots=[10], backtrack=True, progress=False)
    batched = fit_dip(noisy, Operator("denoise"), "skip", TINY, seeds, **common)
    for k, seed in enumerate(seeds):
        single = fit_dip(noisy[k : k + 1], Operator("denoise"), "skip", TINY, [seed], **common)
        for t in (10, 20):
            assert np.abs(batched.snapshots[t][k] - single.snapshots[t][0]).max() < 1e-5
            assert np.abs(batched.snapshots_raw[t][k] - single.snapshots_raw[t][0]).max() < 1e-5
        losses_b = batched.trajectory.query("image == @k")["loss"].to_numpy()
        losses_s = single.trajectory["loss"].to_numpy()
        np.testing.assert_allclose(losses_b, losses_s, rtol=1e-6)


def test_grouped_batched_fit_equals_independent_fits_in_float64():
    # The GPU path (one grouped convolution) rounds differently from single convolutions;
    # float64 keeps Adam from amplifying that, so the engine's independence shows tightly.
    _, noisy = _images(3)
    common = dict(iters=20, backtrack=True, progress=False, dtype=torch.float64)
    op = Operator("denoise")
    batched = DIPFitter(
        "skip", TINY, (3, 16, 16), [1, 2, 3], conv_mode="grouped", dtype=torch.float64
    )
    for _ in range(20):
        out_b, _ = batched.step(noisy, op)
    for k in range(3):
        single = fit_dip(noisy[k : k + 1], op, "skip", TINY, [k + 1], **common)
        assert np.abs(out_b[k].numpy() - single.snapshots_raw[20][0]).max() < 1e-5
        assert np.abs(batched.output_ema[k].numpy() - single.snapshots[20][0]).max() < 1e-5


def test_images_get_different_networks_and_inputs_from_their_seeds():
    fitter = DIPFitter("skip", TINY, (3, 16, 16), [5, 6])
    assert not torch.equal(fitter.inputs[0], fitter.inputs[1])
    weight = next(iter(fitter.params.values()))
    assert not torch.equal(weight[0], weight[1])


def test_snapshot_equals_a_shorter_fit():
    _, noisy = _images(2)
    args = (noisy, Operator("denoise"), "skip", TINY, [3, 4])
    long = fit_dip(*args, iters=20, snapshots=[10], progress=False)
    short = fit_dip(*args, iters=10, progress=False)
    assert sorted(long.snapshots) == [10, 20]
    assert np.array_equal(long.snapshots[10], short.snapshots[10])
    assert np.array_equal(long.snapshots_raw[10], short.snapshots_raw[10])
    assert not np.array_equal(long.snapshots[10], long.snapshots[20])


def test_same_seeds_give_bit_identical_results():
    clean, noisy = _images(2)
    args = (noisy, Operator("denoise"), "resnet", {"blocks": 1, "channels": 8}, [7, 8])
    first = fit_dip(*args, iters=8, clean=clean, progress=False)
    second = fit_dip(*args, iters=8, clean=clean, progress=False)
    assert np.array_equal(first.snapshots[8], second.snapshots[8])
    columns = ["loss", "psnr_obs", "psnr_clean", "psnr_clean_ema"]
    assert first.trajectory[columns].equals(second.trajectory[columns])
    other = fit_dip(*args[:-1], [7, 9], iters=8, progress=False)
    assert np.array_equal(first.snapshots[8][0], other.snapshots[8][0])
    assert not np.array_equal(first.snapshots[8][1], other.snapshots[8][1])


def test_inpainting_ignores_values_under_the_mask():
    clean, _ = _images(2)
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()
    observed = clean * mask
    tampered = observed + (1 - mask) * torch.rand(observed.shape, generator=g)
    op = Operator("inpaint", mask=mask)
    args = ("skip", TINY, [1, 2])
    a = fit_dip(observed, op, *args, iters=6, progress=False)
    b = fit_dip(tampered, op, *args, iters=6, progress=False)
    assert np.array_equal(a.snapshots[6], b.snapshots[6])
    assert a.trajectory["loss"].equals(b.trajectory["loss"])
    # ... while a change on a known pixel does change the fit.
    c = fit_dip(observed + mask * 0.05, op, *args, iters=6, progress=False)
    assert not np.array_equal(a.snapshots[6], c.snapshots[6])


def test_super_resolution_fits_high_resolution_images():
    clean, _ = _images(2)
    op = Operator("sr", factor=2, kernel="area")
    arch = ("convdecoder", {"layers": 2, "channels": 8})
    result = fit_dip(op(clean), op, *arch, [0, 1], iters=5, clean=clean, progress=False)
    assert result.snapshots[5].shape == (2, 3, 16, 16)
    assert result.trajectory["psnr_clean"].notna().all()


def test_trajectory_columns_rows_and_window_variance():
    _, noisy = _images(2)
    args = (noisy, Operator("denoise"), "skip", TINY, [0, 1])
    result = fit_dip(*args, iters=12, progress=False, wmv_window=4, log_every=2)
    frame = result.trajectory
    columns = "image iteration loss psnr_obs psnr_clean psnr_clean_ema wmv elapsed_s backtracked"
    assert list(frame.columns) == columns.split()
    assert len(frame) == 2 * 6 and frame["iteration"].max() == 12
    assert frame["psnr_clean"].isna().all()  # no clean image given
    np.testing.assert_allclose(frame["psnr_obs"], -10 * np.log10(frame["loss"]), rtol=1e-5)
    assert frame.query("iteration < 4")["wmv"].isna().all()
    assert (frame.query("iteration >= 4")["wmv"] > 0).all()
    assert result.iterations == 12 and result.seconds > 0


def test_window_variance_is_the_variance_of_the_last_outputs():
    from dipddpm.dip.recording import WindowVariance

    window = WindowVariance(3)
    frames = [torch.full((1, 1, 2, 2), v) for v in (5.0, 1.0, 2.0, 3.0)]
    for frame in frames:
        window.push(frame)
    assert window.value(1).item() == pytest.approx(np.var([1.0, 2.0, 3.0]))


def test_backtracking_restores_only_the_diverging_image():
    target = torch.full((2, 3, 16, 16), 0.8)
    op = Operator("denoise")
    fitter = DIPFitter("skip", TINY, (3, 16, 16), [0, 1], lr=0.01)
    for _ in range(30):
        fitter.step(target, op)
    before_last = {name: value[1].clone() for name, value in fitter.backtracker.good_params.items()}
    ema_before = fitter.output_ema.clone()
    corrupted = target.clone()
    corrupted[1] = 0.0  # image 1's PSNR to its observation collapses
    fitter.step(corrupted, op)
    assert fitter.last_backtracked.tolist() == [False, True]
    for name, value in fitter.params.items():
        assert torch.equal(value[1], before_last[name]), name
    assert torch.equal(fitter.output_ema[1], ema_before[1])
    assert not torch.equal(fitter.output_ema[0], ema_before[0])


def test_state_dict_resumes_bit_for_bit():
    _, noisy = _images(2)
    op = Operator("denoise")
    make = lambda: DIPFitter("skip", TINY, (3, 16, 16), [3, 4])
    reference = make()
    for _ in range(5):
        reference.step(noisy, op)
    resumed = make()
    resumed.load_state_dict(reference.state_dict())
    for _ in range(3):
        out_ref, _ = reference.step(noisy, op)
        out_res, _ = resumed.step(noisy, op)
    assert torch.equal(out_ref, out_res)
    assert torch.equal(reference.output_ema, resumed.output_ema)
    assert resumed.iteration == 8


def test_bad_inputs_raise_clear_errors():
    _, noisy = _images(2)
    op = Operator("denoise")
    with pytest.raises(ValueError, match=r"observed has shape \(2, 3, 16, 16\)"):
        DIPFitter("skip", TINY, (3, 32, 32), [0, 1]).step(noisy, op)
    with pytest.raises(ValueError, match=r"outside 1..iters=10"):
        fit_dip(noisy, op, "skip", TINY, [0, 1], iters=10, snapshots=[0, 11], progress=False)
    with pytest.raises(ValueError, match=r"3 seeds for 2 observed"):
        fit_dip(noisy, op, "skip", TINY, [0, 1, 2], iters=1, progress=False)
    with pytest.raises(ValueError, match=r"depth 5 does not fit a 16x16"):
        fit_dip(noisy, op, "skip", {"depth": 5}, [0, 1], iters=1, progress=False)


def test_fit_leaves_global_random_state_alone():
    _, noisy = _images(1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit_dip(noisy, Operator("denoise"), "skip", TINY, [0], iters=2, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_denoising_astronaut_improves_over_noisy_input():
    from skimage import data, transform

    image = transform.resize(data.astronaut()[:384, 64:448], (32, 32), anti_aliasing=True)
    clean = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    g = torch.Generator().manual_seed(0)
    noisy = (clean + 25 / 255 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    noisy_psnr = psnr_from_mse(((noisy - clean) ** 2).mean()).item()
    params = {"depth": 3, "channels_down": 32, "channels_up": 32}
    args = (noisy, Operator("denoise"), "skip", params, [0])
    result = fit_dip(*args, iters=300, clean=clean, progress=False, log_every=50)
    final = result.trajectory.iloc[-1]
    assert final["iteration"] == 300 and not final["backtracked"]
    assert final["psnr_clean_ema"] > noisy_psnr + 2.0
    assert result.trajectory["psnr_clean"].max() > noisy_psnr + 2.0
    ema_psnr = psnr_from_mse(((torch.from_numpy(result.snapshots[300]) - clean) ** 2).mean())
    assert math.isclose(ema_psnr.item(), final["psnr_clean_ema"], rel_tol=1e-4)


def test_batched_float32_fit_matches_single_fits_bit_for_bit_on_cpu():
    # The CPU path convolves image by image, so batch composition cannot change a result.
    _, noisy = _images(3)
    common = dict(iters=15, progress=False)
    batched = fit_dip(noisy, Operator("denoise"), "skip", TINY, [4, 5, 6], **common)
    single = fit_dip(noisy[1:2], Operator("denoise"), "skip", TINY, [5], **common)
    assert np.array_equal(batched.snapshots[15][1], single.snapshots[15][0])


def test_reset_backtracking_forgets_the_reference():
    target = torch.full((1, 3, 16, 16), 0.8)
    fitter = DIPFitter("skip", TINY, (3, 16, 16), [0])
    for _ in range(10):
        fitter.step(target, Operator("denoise"))
    fitter.reset_backtracking()
    fitter.step(torch.zeros_like(target), Operator("denoise"))
    assert fitter.last_backtracked.tolist() == [False]


def test_chunked_fit_equals_one_batch_on_cpu():
    clean, _ = _images(3)
    g = torch.Generator().manual_seed(2)
    mask = (torch.rand(3, 1, 16, 16, generator=g) > 0.3).float()
    op = Operator("inpaint", mask=mask)
    args = (clean * mask, op, "skip", TINY, [1, 2, 3])
    whole = fit_dip(*args, iters=6, snapshots=[3], clean=clean, chunk_size=None, progress=False)
    chunked = fit_dip(*args, iters=6, snapshots=[3], clean=clean, chunk_size=2, progress=False)
    for t in (3, 6):
        assert np.array_equal(whole.snapshots[t], chunked.snapshots[t])
    columns = ["image", "iteration", "loss", "psnr_clean_ema"]
    assert whole.trajectory[columns].equals(chunked.trajectory[columns])
