"""Forward operators A of the restoration tasks: y = A(x) + n.

DIP fits through the operator (the loss is ||A(f(z)) - y||^2), the data stage uses the
same operator to make observations, and DDPM guidance uses it for data consistency, so
the three stages agree on what "the observation" means.

Images are tensors of shape (N, C, H, W) with values in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

TASK_KINDS = ("denoise", "inpaint", "sr")
SR_KERNELS = ("bicubic", "area")


def downsample(x: torch.Tensor, factor: int, kernel: str) -> torch.Tensor:
    """Anti-aliased downsampling by an integer factor (the SR degradation)."""
    if kernel == "area":
        return F.avg_pool2d(x, kernel_size=factor, stride=factor)
    if kernel == "bicubic":
        h, w = x.shape[-2:]
        size = (h // factor, w // factor)
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    raise ValueError(f"sr kernel must be one of {SR_KERNELS}; got {kernel!r}")


@lru_cache(maxsize=32)
def _axis_pinv(n_low: int, factor: int, kernel: str) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse, (n_low * factor, n_low) float64, of ``downsample``
    along one image axis of length n_low * factor.

    Both kernels are separable, ``D x = A_h x A_w^T``, and ``(A_h (x) A_w)^+`` is
    ``A_h^+ (x) A_w^+``, so two small matrices replace one of size (HW / f^2, HW). Rows of A
    sum to 1, so an image constant along the other axis maps row i to column i of A.
    """
    n = n_low * factor
    # Two output columns, not one: PyTorch's antialiased bicubic resize to a width of 1
    # does not act as the same per-axis filter.
    basis = torch.eye(n, dtype=torch.float64)[:, None, :, None].repeat(1, 1, 1, 2 * factor)
    matrix = downsample(basis, factor, kernel)[:, 0, :, 0].T
    return torch.linalg.pinv(matrix)


def upsample_pinv(y: torch.Tensor, factor: int, kernel: str) -> torch.Tensor:
    """``D^+ y``: the least-norm image on the (f H, f W) grid that ``downsample`` maps to y.

    ``downsample(upsample_pinv(y)) = y`` (D has full row rank) and
    ``upsample_pinv(downsample(.))`` is the orthogonal projection onto the images D can see.
    For ``area`` it is nearest-neighbour replication.
    """
    h, w = y.shape[-2:]
    rows = _axis_pinv(h, factor, kernel).to(y.device, y.dtype)
    cols = _axis_pinv(w, factor, kernel).to(y.device, y.dtype)
    return rows @ y @ cols.T


@dataclass
class Operator:
    """A task's forward operator.

    ``mask`` (N, 1, H, W), 1 = known pixel, is set for inpainting; ``factor`` and
    ``kernel`` for super-resolution. :meth:`residual` is DIP's data term: for inpainting it
    averages over known pixels only, so unknown pixels never enter the loss.
    """

    kind: str
    mask: torch.Tensor | None = None
    factor: int = 1
    kernel: str = "bicubic"

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task kind must be one of {TASK_KINDS}; got {self.kind!r}")
        if self.kind == "inpaint" and self.mask is None:
            raise ValueError("an inpainting operator needs a mask")
        if self.mask is not None and (self.mask.dim() != 4 or self.mask.shape[1] != 1):
            raise ValueError(
                f"an inpainting mask must be (N, 1, H, W); got shape {tuple(self.mask.shape)}"
            )
        if self.kind == "sr" and self.factor < 2:
            raise ValueError(f"super-resolution needs factor >= 2; got {self.factor}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "inpaint":
            return x * self.mask
        if self.kind == "sr":
            return downsample(x, self.factor, self.kernel)
        return x

    def pinv(self, observed: torch.Tensor) -> torch.Tensor:
        """``A^+ y``, the observation as an image on the clean grid: ``m * y`` for
        inpainting, :func:`upsample_pinv` for super-resolution, ``y`` for denoising."""
        if self.kind == "inpaint":
            return observed * self.mask
        if self.kind == "sr":
            return upsample_pinv(observed, self.factor, self.kernel)
        return observed

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``A^+ A x``, the orthogonal projection onto what the observation constrains: the
        known pixels for inpainting, the low-pass ``up(down(x))`` for super-resolution."""
        return self.pinv(self(x))

    def to(self, device: torch.device | str) -> Operator:
        mask = None if self.mask is None else self.mask.to(device)
        return Operator(self.kind, mask=mask, factor=self.factor, kernel=self.kernel)

    def select(self, index) -> Operator:
        """The operator restricted to some images of the batch (mask rows follow)."""
        mask = None if self.mask is None else self.mask[index]
        return Operator(self.kind, mask=mask, factor=self.factor, kernel=self.kernel)

    def observation_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.kind != "sr":
            return tuple(shape)
        *lead, h, w = shape
        return (*lead, h // self.factor, w // self.factor)

    def residual(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Per-image mean squared residual ||A(x) - y||^2 over observed entries, shape (N,)."""
        diff = (self(x) - observed) ** 2
        if self.kind == "inpaint":
            # Whatever the observation holds under unknown pixels must not count.
            diff = diff * self.mask
            known = self.mask.expand_as(diff).sum(dim=(1, 2, 3)).clamp_min(1.0)
            return diff.sum(dim=(1, 2, 3)) / known
        return diff.mean(dim=(1, 2, 3))

    @classmethod
    def from_arrays(cls, arrays: dict, params: dict) -> Operator:
        """Build from a degraded-data npz (``mask``) and its task params (``kind`` ...)."""
        kind = params["kind"]
        mask = arrays.get("mask")
        if mask is not None:
            check_mask_fits(mask.shape, arrays["observed"].shape, params)
        return cls(
            kind,
            mask=None if mask is None else torch.as_tensor(mask, dtype=torch.float32),
            factor=int(params.get("factor", 1)),
            kernel=params.get("kernel", "bicubic"),
        )


def check_mask_fits(mask_shape: tuple, observed_shape: tuple, params: dict) -> None:
    """A stored mask must cover the observation pixel for pixel: one per image, or one
    shared by all (N = 1); anything else would only fail later as a broadcasting error."""
    n, h, w = observed_shape[0], *observed_shape[-2:]
    if len(mask_shape) == 4 and mask_shape[0] in (1, n) and tuple(mask_shape[1:]) == (1, h, w):
        return
    task = params.get("task", params.get("name", params["kind"]))
    size = "x".join(str(side) for side in mask_shape[-2:])
    raise ValueError(
        f"the mask of task {task} is {size} (shape {tuple(mask_shape)}) but its "
        f"{n} observations are {h}x{w}; it must have shape (N or 1, 1, {h}, {w})"
    )
