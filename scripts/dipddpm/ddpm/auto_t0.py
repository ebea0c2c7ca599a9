"""Choosing the start step t0 of a DIP-prior chain from the data (Example 1).

A DIP output ``x_dip = x + e`` is forward-diffused to step t0 and a DDPM reverse chain
restores from there. After rescaling by ``1 / sqrt(abar_t0)`` the diffused prior is
``x + e + s(t0) eps`` in ``[0, 1]`` units, with ``s(t) = sqrt((1 - abar_t) / abar_t) / 2``
(model space is ``[-1, 1]``, hence the 2). The chain can remove the prior's error ``e`` when
``s(t0)`` is at least its size; a t0 far above wastes steps and discards what the prior got
right. Auto-t0 therefore maps an estimate of each image's error RMS, made without the clean
image, to the step whose noise level matches it.

The pieces, in the order an evaluation uses them:

* :func:`estimate_prior_error` estimates the per-image error RMS from the observation;
* :func:`prior_error` is the true error RMS, for tuning images where the clean image is known;
* :func:`fit_error_scale` (proportional) or :func:`fit_error_affine` calibrates the estimate
  on tuning images (the estimates are biased low, see :func:`estimate_prior_error`),
  :func:`error_correlation` says how informative it is;
* :func:`noise_level` is ``s(t)``; :func:`t_for_error` maps error RMS to t0 (clipped to a
  truncated model's range and snapped to the grid of t0 values that were sampled);
* :func:`auto_t0_evaluation` scores the chosen t0 against the best grid t0 of each image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from dipddpm.ddpm.diffusion import Diffusion
from dipddpm.ddpm.sample import t_for_sigma
from dipddpm.operators import Operator

ArrayLike = np.ndarray | torch.Tensor

SCALE_METHODS = ("lstsq", "median")
DEFAULT_TOLERANCE_DB = 0.3
# Regret comparisons are of PSNRs read from one table; this absorbs float rounding only.
REGRET_ATOL = 1e-9


# ------------------------------------------------------------------------ error estimates


def _batch(value: ArrayLike, name: str) -> torch.Tensor:
    tensor = value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value))
    if tensor.ndim != 4:
        raise ValueError(f"{name} must be a (N, C, H, W) batch; got shape {tuple(tensor.shape)}")
    # float64: the denoising estimate subtracts two nearly equal mean squares.
    return tensor.detach().to(device="cpu", dtype=torch.float64)


def _check_mask(operator: Operator, shape: tuple[int, ...]) -> None:
    n, _, h, w = shape
    mask_shape = tuple(operator.mask.shape)
    if mask_shape[0] not in (1, n) or mask_shape[2:] != (h, w):
        raise ValueError(
            f"operator.mask must have shape (1 or {n}, 1, {h}, {w}) for prior01 of shape "
            f"{tuple(shape)}; got {mask_shape}"
        )


def estimate_prior_error(
    prior01: ArrayLike,
    observation01: ArrayLike,
    operator: Operator,
    sigma01: float = 0.0,
    scale: float = 1.0,
) -> np.ndarray:
    """Per-image estimate of the prior's error RMS ``||x_dip - x|| / sqrt(d)`` in [0, 1] units.

    ``prior01`` (N, C, H, W) is the DIP output, ``observation01`` the observation it was
    fitted to (shape ``operator.observation_shape(prior01.shape)``), ``sigma01`` the std of
    the observation's Gaussian noise in [0, 1] units (``sigma / 255``; 0 for the pipeline's
    inpainting and SR observations, which are noise-free). The base estimate is
    ``sqrt(max(msd - sigma01**2, 0))`` with ``msd`` the mean squared residual
    ``||A(x_dip) - y||^2`` over observed entries (:meth:`Operator.residual`); the result is
    that times ``scale``, a calibration factor from :func:`fit_error_scale`. Shape (N,).

    What the residual measures, and its known bias, per task:

    * ``denoise``: ``msd = ||e||^2/d + ||n||^2/d - 2 <e, n>/d`` with ``E ||n||^2/d = sigma^2``.
      For a prior independent of the noise the cross term averages out and the estimate is
      consistent (relative scatter about ``sqrt(2/d) (r^2 + sigma^2) / (2 r^2)``). DIP is
      fitted to y, so its error contains part of the noise, ``<e, n> > 0``, and the estimate
      is biased LOW, the more the longer DIP fitted (at ``x_dip = y`` it is 0 while the true
      error is sigma). ``scale > 1`` from tuning images corrects the average bias.
    * ``inpaint``: the residual over known pixels is the prior's error there, since the
      observation is noise-free. It is the error the restoration needs only under the
      assumption that missing pixels are as wrong as known ones; DIP fits known pixels by
      construction and has to invent missing ones, so the estimate is biased LOW, often far
      below the full-image error. It is a guaranteed lower bound only after multiplying by
      ``sqrt(known fraction)`` (the known pixels' share of the full-image sum of squares),
      which we do not do, so that it stays in per-pixel units. Use it only with a calibrated
      ``scale``, and check with :func:`error_correlation` that it ranks images at all.
    * ``sr``: the residual ``down(x_dip) - y`` in the low-resolution domain sees only the
      error that survives the downsampling; error in its null space (high frequencies,
      exactly what SR has to invent) is invisible. With the ``area`` kernel the LR mean
      square can never exceed the HR one (a block mean squared is at most the block's mean
      square), so the base estimate is a lower bound; with ``bicubic`` the kernel's gain is
      slightly above 1 (up to ~1.4 % / 2.4 % in mean square at factor 2 / 4), so it is a lower
      bound up to that. Biased LOW, like inpainting; calibrate ``scale``.
    """
    if not (math.isfinite(sigma01) and sigma01 >= 0):
        raise ValueError(f"sigma01 (observation noise std) must be >= 0; got {sigma01}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number; got {scale}")
    prior = _batch(prior01, "prior01")
    observed = _batch(observation01, "observation01")
    expected = operator.observation_shape(tuple(prior.shape))
    if tuple(observed.shape) != expected:
        raise ValueError(
            f"observation01 must have shape {expected} for prior01 of shape "
            f"{tuple(prior.shape)} and a {operator.kind} operator; got {tuple(observed.shape)}"
        )
    if operator.kind == "inpaint":
        _check_mask(operator, tuple(prior.shape))
        operator = Operator(
            "inpaint", mask=operator.mask.detach().to(device="cpu", dtype=torch.float64)
        )
    with torch.no_grad():
        msd = operator.residual(prior, observed).numpy()
    return scale * np.sqrt(np.maximum(msd - sigma01**2, 0.0))


def prior_error(prior01: ArrayLike, clean01: ArrayLike) -> np.ndarray:
    """Per-image true error RMS ``||x_dip - x|| / sqrt(d)`` in [0, 1] units, shape (N,).

    Needs the clean image, so it is for tuning images (to fit the scale) and for reports.
    """
    prior = _batch(prior01, "prior01")
    clean = _batch(clean01, "clean01")
    if prior.shape != clean.shape:
        raise ValueError(
            f"clean01 must have the shape of prior01 {tuple(prior.shape)}; got {tuple(clean.shape)}"
        )
    return ((prior - clean) ** 2).mean(dim=(1, 2, 3)).sqrt().numpy()


# ---------------------------------------------------------------------------- calibration


def _paired(estimated, true) -> tuple[np.ndarray, np.ndarray]:
    est = np.asarray(estimated, dtype=float).ravel()
    tru = np.asarray(true, dtype=float).ravel()
    if est.size != tru.size:
        raise ValueError(
            f"estimated and true must have one value per image each; got {est.size} "
            f"estimated and {tru.size} true"
        )
    if est.size == 0:
        raise ValueError("estimated and true are empty; need at least one image")
    for name, values in (("estimated", est), ("true", tru)):
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"{name} error RMS values must be finite and >= 0")
    return est, tru


def fit_error_scale(estimated, true, method: str = "lstsq") -> float:
    """The factor ``c`` with ``true ~= c * estimated``, fitted on TUNING images only.

    ``lstsq`` (default): least squares through the origin, ``sum(est * true) / sum(est^2)``.
    The model has no intercept because zero estimated error should mean t0 = 0, and the
    least-squares fit weighs images by their error, which suits the use: where errors are
    large a wrong factor moves t0 by many steps, where they are small by few.
    ``median``: the median of ``true / est`` over images with ``est > 0``. Use it when a few
    tuning images are outliers (e.g. an inpainting prior that reproduces the known pixels
    exactly has ``est ~ 0`` and an arbitrarily large ratio, which the median ignores).
    Images to be evaluated must not be among those passed here, or the evaluation is
    optimistic.
    """
    if method not in SCALE_METHODS:
        raise ValueError(f"method must be one of {SCALE_METHODS}; got {method!r}")
    est, tru = _paired(estimated, true)
    positive = est > 0
    if not positive.any():
        raise ValueError("all estimated errors are 0, so no scale fits them")
    if method == "median":
        return float(np.median(tru[positive] / est[positive]))
    return float(np.dot(est, tru) / np.dot(est, est))


def fit_error_affine(estimated, true) -> tuple[float, float]:
    """``(intercept, slope)`` with ``true ~= intercept + slope * estimated``, fitted on TUNING
    images only by least squares, the slope held >= 0 (a larger residual never means a
    smaller error).

    Use it where the estimate has a floor the proportional model cannot express: a DIP run
    long enough to fit the noise has a residual below sigma, so :func:`estimate_prior_error`
    clips to 0 while the true error is not 0. An uninformative estimate (all equal) gives
    slope 0 and the tuning images' mean error: one t0 for every image.
    """
    est, tru = _paired(estimated, true)
    if np.ptp(est) == 0:
        return float(tru.mean()), 0.0
    slope, intercept = np.polyfit(est, tru, 1)
    if slope < 0:
        return float(tru.mean()), 0.0
    return float(intercept), float(slope)


def error_correlation(estimated, true) -> dict:
    """How well the estimate ranks and tracks the true error across images.

    Returns ``pearson`` (linear, what a single scale can exploit), ``spearman`` (ranks, what
    any monotone mapping to t0 can exploit) and ``n``. A coefficient is NaN when either side
    is constant or there are fewer than 3 images, where a correlation means nothing.
    """
    # scipy.stats costs about a second to import; every DDPM job imports this module.
    from scipy import stats

    est, tru = _paired(estimated, true)
    out = {"pearson": math.nan, "spearman": math.nan, "n": int(est.size)}
    if est.size >= 3 and np.ptp(est) > 0 and np.ptp(tru) > 0:
        out["pearson"] = float(stats.pearsonr(est, tru)[0])
        out["spearman"] = float(stats.spearmanr(est, tru)[0])
    return out


# ---------------------------------------------------------------------------- error -> t0


def noise_level(diffusion: Diffusion, t: int) -> float:
    """``s(t) = sqrt((1 - abar_t) / abar_t) / 2``: the [0, 1]-unit noise a step-t start adds."""
    abar = float(diffusion.alphas_cumprod[t])
    return math.sqrt((1.0 - abar) / abar) / 2.0


def _check_choices(choices: Sequence[int], t_max: int) -> np.ndarray:
    grid = np.asarray(sorted({int(t) for t in choices}), dtype=np.int64)
    if grid.size == 0:
        raise ValueError("choices (the allowed t0 values) must not be empty")
    if grid[0] < 0 or grid[-1] > t_max:
        raise ValueError(f"choices must lie in 0..{t_max} (t_max); got {grid.tolist()}")
    return grid


def t_for_error(
    diffusion: Diffusion,
    rms01,
    t_max: int | None = None,
    choices: Sequence[int] | None = None,
):
    """The t0 whose noise level ``s(t0)`` matches an error RMS (in [0, 1] units).

    Uses :func:`t_for_sigma`'s mapping, so an error of RMS ``r`` gets the step a Gaussian
    noise of std ``r`` gets (0 for 0 error); errors beyond the schedule's largest level get
    T. The step is then clipped to ``t_max`` (default T; a model trained on t <= t_max must
    not start above it) and, if ``choices`` is given, snapped to the nearest allowed t0 in
    steps (ties go to the smaller t0, which keeps more of the prior), since samples exist
    only for the grid of t0 values. Snapping is in t, the unit the grid is laid out in.

    ``rms01``: a number (returns an int) or per-image values (returns an int array).
    """
    t_max = diffusion.T if t_max is None else int(t_max)
    if not 1 <= t_max <= diffusion.T:
        raise ValueError(f"t_max must be in 1..T={diffusion.T}; got {t_max}")
    values = np.asarray(rms01, dtype=float)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("rms01 (error RMS) must be finite and >= 0")
    largest = noise_level(diffusion, diffusion.T)
    cache: dict[float, int] = {}
    for value in np.unique(values):
        cache[value] = diffusion.T if value > largest else t_for_sigma(diffusion, float(value))
    steps = np.vectorize(cache.__getitem__, otypes=[np.int64])(values)
    steps = np.minimum(steps, t_max)
    if choices is not None:
        grid = _check_choices(choices, t_max)
        # argmin takes the first minimum; grid is ascending, so ties go to the smaller t0.
        steps = grid[np.abs(steps[..., None] - grid).argmin(axis=-1)]
    return int(steps) if steps.ndim == 0 else steps


# ----------------------------------------------------------------------------- evaluation


def _auto_series(auto_t0) -> pd.Series:
    if isinstance(auto_t0, pd.Series):
        series = auto_t0.copy()
    elif isinstance(auto_t0, Mapping):
        series = pd.Series(dict(auto_t0))
    else:
        raise ValueError(
            f"auto_t0 must be a pandas Series or a mapping image -> t0; got {type(auto_t0)}"
        )
    if series.empty:
        raise ValueError("auto_t0 is empty; need a chosen t0 for at least one image")
    if series.index.has_duplicates:
        raise ValueError("auto_t0 has more than one t0 for some image")
    if series.isna().any():
        raise ValueError("auto_t0 has a missing t0 for some image")
    return series


def auto_t0_evaluation(
    psnr_by_t0: pd.DataFrame, auto_t0, tolerance_db: float = DEFAULT_TOLERANCE_DB
) -> dict:
    """Score per-image auto t0 against the best grid t0 of each image.

    ``psnr_by_t0`` has columns ``image``, ``t0``, ``psnr``: one row per image and grid t0,
    seeds already averaged. ``auto_t0`` maps image -> chosen t0 (a Series indexed by image,
    or a mapping); it must name only images of the table and t0 values on that image's
    grid (snap with :func:`t_for_error`), so its PSNR is looked up, not re-run. The images
    scored are those of ``auto_t0``: pass only held-out images, not the tuning ones.

    Regret is ``best grid PSNR - PSNR at the auto t0`` (>= 0, dB). Returns:

    * ``share_within_tolerance``: share of images with regret <= ``tolerance_db``;
    * ``mean_regret_db``, ``median_regret_db``, ``max_regret_db``;
    * ``n_images``, ``tolerance_db``;
    * ``best_fixed_t0`` / ``best_fixed_regret_db``: the single grid t0 (among those every
      scored image has) with the highest mean PSNR and its mean regret. It is chosen on the
      scored images themselves, so it is an optimistic baseline: auto-t0 is worth having
      only if its regret is clearly below it;
    * ``per_image``: DataFrame with ``image``, ``auto_t0``, ``psnr_auto``, ``best_t0``,
      ``psnr_best``, ``regret_db``.
    """
    if not (math.isfinite(tolerance_db) and tolerance_db >= 0):
        raise ValueError(f"tolerance_db must be >= 0; got {tolerance_db}")
    missing = {"image", "t0", "psnr"} - set(psnr_by_t0.columns)
    if missing:
        raise ValueError(f"psnr_by_t0 lacks column(s) {sorted(missing)}")
    if psnr_by_t0.empty:
        raise ValueError("psnr_by_t0 is empty; need one row per image and grid t0")
    table = psnr_by_t0[["image", "t0", "psnr"]].copy()
    if table["psnr"].isna().any():
        raise ValueError("psnr_by_t0 has missing psnr values")
    if table.duplicated(["image", "t0"]).any():
        raise ValueError(
            "psnr_by_t0 has more than one row for some (image, t0); average the seeds first"
        )
    auto = _auto_series(auto_t0)
    known = set(table["image"])
    absent = [image for image in auto.index if image not in known]
    if absent:
        raise ValueError(f"auto_t0 names images not in psnr_by_t0: {absent[:5]}")

    table = table[table["image"].isin(auto.index)]
    psnr = table.set_index(["image", "t0"])["psnr"]
    rows = []
    for image, t0 in auto.items():
        key = (image, int(t0))
        if key not in psnr.index:
            grid = sorted(table.loc[table["image"] == image, "t0"].tolist())
            raise ValueError(
                f"auto_t0 of image {image!r} is {t0}, not on its t0 grid {grid}; "
                "snap it with t_for_error(..., choices=grid)"
            )
        curve = psnr.loc[image]
        best_t0 = curve.idxmax()
        rows.append(
            {
                "image": image,
                "auto_t0": int(t0),
                "psnr_auto": float(psnr.loc[key]),
                "best_t0": int(best_t0),
                "psnr_best": float(curve.loc[best_t0]),
            }
        )
    per_image = pd.DataFrame(rows)
    per_image["regret_db"] = per_image["psnr_best"] - per_image["psnr_auto"]
    regret = per_image["regret_db"]

    wide = table.pivot(index="image", columns="t0", values="psnr").dropna(axis="columns")
    best_fixed_t0, best_fixed_regret = None, math.nan
    if wide.shape[1]:
        means = wide.mean()
        best_fixed_t0 = int(means.idxmax())
        best = per_image.set_index("image")["psnr_best"]
        best_fixed_regret = float((best - wide[best_fixed_t0]).mean())
    return {
        "share_within_tolerance": float((regret <= tolerance_db + REGRET_ATOL).mean()),
        "mean_regret_db": float(regret.mean()),
        "median_regret_db": float(regret.median()),
        "max_regret_db": float(regret.max()),
        "n_images": len(per_image),
        "tolerance_db": float(tolerance_db),
        "best_fixed_t0": best_fixed_t0,
        "best_fixed_regret_db": best_fixed_regret,
        "per_image": per_image,
    }
