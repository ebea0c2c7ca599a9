"""The DIP step's bookkeeping shortcuts change no result: each is checked against a plain
reference written out here.

The engine avoids per-step work outside the network (see dip/backtracking.py and
dip/recording.py): Adam writes into the last good state's buffers and swaps them instead
of copying the state every step, noise is drawn into one buffer, and the trajectory is
kept in preallocated tensors and built once. The reference below does it the plain way:
in-place ``torch.optim.Adam``, a copy of parameters and moments before every step,
per-image ``torch.where`` restores and one trajectory row per step. Everything but the
ES-WMV column must match bit for bit; ES-WMV now comes from running float64 sums, so it
is compared with a float64 variance of the stored outputs.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from dipddpm.device import use_deterministic_kernels
from dipddpm.dip import DIPFitter, fit_dip, psnr_from_mse
from dipddpm.dip.recording import WindowVariance
from dipddpm.operators import Operator

TINY = {"depth": 2, "channels_down": 8, "channels_up": 8, "input_channels": 4}
SHAPE = (3, 16, 16)


# Bit-identity comparisons hold for a fixed thread count (conftest's one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _images(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(k, 3, 4, 4, generator=g)
    clean = torch.nn.functional.interpolate(coarse, size=SHAPE[1:], mode="bilinear")
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return clean, noisy


class ReferenceStep:
    """The DIP step written out plainly, driving the network and Adam of ``fitter`` (a
    fresh ``DIPFitter`` built with the same arguments as the one under test)."""

    def __init__(self, fitter: DIPFitter, threshold_db: float = 5.0) -> None:
        self.f = fitter
        self.threshold_db = threshold_db
        self.params = list(fitter.params.values())
        self.good = [p.detach().clone() for p in self.params]
        self.good_moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]
        self.good_psnr = torch.full((fitter.num_images,), -math.inf)
        self.ema = None
        self.backtracked = None
        self.psnr_obs = None

    def _moments(self, param):
        state = self.f.optimizer.state.get(param)
        return (state["exp_avg"], state["exp_avg_sq"]) if state else None

    def __call__(self, observed: torch.Tensor, op: Operator):
        f = self.f
        noise = torch.cat([torch.randn(f._input_shape, generator=g) for g in f.noise_generators])
        output = f.net(f.inputs + f.reg_noise_std * noise.to(f.dtype))
        loss = op.residual(output, observed)
        psnr = psnr_from_mse(loss.detach())
        diverged = psnr < self.good_psnr - self.threshold_db
        good = ~diverged
        with torch.no_grad():
            for i, param in enumerate(self.params):
                moments = self._moments(param) or (torch.zeros_like(param),) * 2
                for source, target in zip(
                    (param, *moments), (self.good[i], *self.good_moments[i]), strict=True
                ):
                    keep = good.view(-1, *[1] * (param.dim() - 1))
                    target.copy_(torch.where(keep, source, target))
        self.good_psnr = torch.where(good, psnr, self.good_psnr)
        f.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        f.optimizer.step()
        with torch.no_grad():
            for i, param in enumerate(self.params):
                back = diverged.view(-1, *[1] * (param.dim() - 1))
                sources = (self.good[i], *self.good_moments[i])
                targets = (param, *(self._moments(param) or ()))
                # Before Adam's first step there are no moments to restore: values only.
                for target, source in zip(targets, sources, strict=False):
                    target.copy_(torch.where(back, source, target))
        output = output.detach()
        if self.ema is None:
            self.ema = output.clone()
        else:
            w = f.exp_weight
            blended = self.ema * w + output * (1.0 - w)
            self.ema = torch.where(diverged.view(-1, 1, 1, 1), self.ema, blended)
        self.backtracked, self.psnr_obs = diverged, psnr
        return output, loss.detach()


def _corrupted(noisy: torch.Tensor, t: int) -> torch.Tensor:
    """Observations that make some images (or all) diverge at a few steps."""
    observed = noisy.clone()
    if t == 12:
        observed[1] = 0.0  # one image of the batch
    if t == 18:
        observed[:] = 0.0  # every image
    if t == 24:
        observed[[0, 2]] = 1.0  # two of three
    return observed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fitter_step_equals_the_plain_reference_bit_for_bit(dtype):
    _, noisy = _images(3)
    op = Operator("denoise")
    make = lambda: DIPFitter("skip", TINY, SHAPE, [4, 5, 6], lr=0.02, dtype=dtype)
    fitter, reference = make(), ReferenceStep(make())
    flags = []
    for t in range(1, 31):
        observed = _corrupted(noisy, t).to(dtype)
        out, loss = fitter.step(observed, op)
        out_ref, loss_ref = reference(observed, op)
        assert torch.equal(out, out_ref), t
        assert torch.equal(loss, loss_ref), t
        assert torch.equal(fitter.last_backtracked, reference.backtracked), t
        assert torch.equal(fitter.last_psnr_obs, reference.psnr_obs), t
        assert torch.equal(fitter.output_ema, reference.ema), t
        flags.append(reference.backtracked.tolist())
    # The run covers good steps, one, two and all images backtracking.
    counts = {sum(f) for f in flags}
    assert {0, 1, 2, 3} <= counts
    for name, param in fitter.params.items():
        ref_param = reference.f.params[name]
        assert torch.equal(param, ref_param), name
        mine, theirs = fitter.optimizer.state[param], reference.f.optimizer.state[ref_param]
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(mine[key], theirs[key]), (name, key)


def test_a_good_step_swaps_buffers_instead_of_copying():
    _, noisy = _images(2)
    op = Operator("denoise")
    fitter = DIPFitter("skip", TINY, SHAPE, [0, 1])
    fitter.step(noisy, op)  # Adam's state exists from here on
    before = {name: p.data_ptr() for name, p in fitter.params.items()}
    fitter.step(noisy, op)
    assert not fitter.last_backtracked.any()
    for name, param in fitter.params.items():
        assert fitter.backtracker.good_params[name].data_ptr() == before[name], name
        assert param.data_ptr() != before[name], name


def _reference_trajectory(noisy, clean, seeds, iters, log_every, window) -> pd.DataFrame:
    """One row per image and logged step, built row by row from the reference step."""
    op = Operator("denoise")
    reference = ReferenceStep(DIPFitter("skip", TINY, SHAPE, seeds))
    outputs, frames = [], []
    for t in range(1, iters + 1):
        output, loss = reference(noisy, op)
        outputs.append(output)
        if t % log_every and t != iters:
            continue
        wmv = torch.full((len(seeds),), math.nan, dtype=torch.float64)
        if len(outputs) >= window:
            last = torch.stack(outputs[-window:]).double()
            wmv = last.var(dim=0, unbiased=False).flatten(1).mean(1)
        ema_mse = ((reference.ema - clean) ** 2).flatten(1).mean(1)
        frames.append(
            pd.DataFrame(
                {
                    "image": np.arange(len(seeds)),
                    "iteration": np.full(len(seeds), t),
                    "loss": loss.double().numpy(),
                    "psnr_obs": reference.psnr_obs.double().numpy(),
                    "psnr_clean": psnr_from_mse(((output - clean) ** 2).flatten(1).mean(1))
                    .double()
                    .numpy(),
                    "psnr_clean_ema": psnr_from_mse(ema_mse).double().numpy(),
                    "wmv": wmv.numpy(),
                    "backtracked": reference.backtracked.numpy(),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["image", "iteration"], ignore_index=True)


def test_fit_trajectory_equals_the_row_by_row_reference():
    clean, noisy = _images(3)
    seeds, iters, log_every, window = [7, 8, 9], 23, 3, 4
    result = fit_dip(
        noisy,
        Operator("denoise"),
        "skip",
        TINY,
        seeds,
        iters=iters,
        snapshots=[9],
        clean=clean,
        wmv_window=window,
        log_every=log_every,
        progress=False,
    )
    expected = _reference_trajectory(noisy, clean, seeds, iters, log_every, window)
    got = result.trajectory
    exact = ["image", "iteration", "loss", "psnr_obs", "psnr_clean", "psnr_clean_ema"]
    pd.testing.assert_frame_equal(got[exact], expected[exact], check_exact=True)
    assert got["backtracked"].equals(expected["backtracked"])
    assert got["wmv"].isna().equals(expected["wmv"].isna())
    full = expected["wmv"].notna()
    np.testing.assert_allclose(got["wmv"][full], expected["wmv"][full], rtol=1e-9, atol=0)
    assert (got["elapsed_s"].diff().fillna(0)[got["image"] == 0] >= 0).all()


def test_window_variance_tracks_a_float64_variance_over_many_windows():
    g = torch.Generator().manual_seed(3)
    window = WindowVariance(5)
    frames = []
    # Slowly drifting outputs in (0, 1) with a small spread, as late in a fit: the case
    # where a sum of squares minus a squared sum could cancel badly.
    base = torch.rand(2, 3, 8, 8, generator=g)
    for t in range(37):
        frame = (base + 1e-3 * torch.randn(base.shape, generator=g) + 1e-4 * t).clamp(0, 1)
        window.push(frame)
        frames.append(frame)
        value = window.value(2)
        if t < 4:
            assert value.isnan().all()
            continue
        last = torch.stack(frames[-5:]).double()
        expected = last.var(dim=0, unbiased=False).flatten(1).mean(1)
        torch.testing.assert_close(value, expected, rtol=1e-9, atol=0)


def _deterministic_fit(fill_uninitialized_memory: bool) -> dict[str, np.ndarray]:
    clean, noisy = _images(2)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    try:
        use_deterministic_kernels()
        torch.utils.deterministic.fill_uninitialized_memory = fill_uninitialized_memory
        result = fit_dip(
            noisy, Operator("denoise"), "skip", TINY, [3, 4], iters=12,
            snapshots=[6, 12], clean=clean, progress=False,
        )  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.utils.deterministic.fill_uninitialized_memory = before[2]
    return {"loss": result.trajectory["loss"].to_numpy(), **result.snapshots}


def test_deterministic_kernels_skip_the_nan_fill_and_change_no_bit():
    # A DIP job runs with use_deterministic_kernels (no NaN fill of new tensors, about 5 %
    # of a step); the fill only exposes reads of unwritten memory, and a fit has none.
    torch.utils.deterministic.fill_uninitialized_memory = True
    use_deterministic_kernels()
    try:
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.utils.deterministic.fill_uninitialized_memory
    finally:
        use_deterministic_kernels(False)
    assert torch.utils.deterministic.fill_uninitialized_memory
    without, with_fill = _deterministic_fit(False), _deterministic_fit(True)
    assert without.keys() == with_fill.keys()
    for key in without:
        np.testing.assert_array_equal(without[key], with_fill[key], err_msg=key)
