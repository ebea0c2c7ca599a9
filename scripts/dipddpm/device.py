"""Pick the compute device from what the job was given.

On a cluster the scheduler exposes the GPU it granted through
``CUDA_VISIBLE_DEVICES``; an empty value means the job got none, even on a GPU node.
"""

from __future__ import annotations

import os
import platform

import torch


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` uses CUDA when the job was granted a GPU, else the CPU."""
    if preference not in {"auto", "cpu", "cuda"}:
        raise ValueError(f"device must be one of auto, cpu, cuda; got {preference!r}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    granted = visible is None or visible.strip() not in {"", "-1"}
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA device is available")
    if preference == "cuda" or (preference == "auto" and granted and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def describe_device(device: torch.device) -> dict:
    """What a cell's JSON records about where it ran."""
    info = {
        "device": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def use_deterministic_kernels(enabled: bool = True, warn_only: bool = True) -> None:
    """Deterministic algorithms (a warning where an op has none), without torch's NaN fill.

    In deterministic mode torch by default fills every new tensor with NaN, so that a kernel
    reading memory it never wrote would show it. The kernels a DIP step runs overwrite their
    outputs, so the fill changes no result (tests/test_dip_overhead.py checks the fit is
    bit-identical), but on the CPU it is one extra pass per allocation, hundreds per step:
    about 5 % of a batched 32x32 skip step.
    """
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.utils.deterministic.fill_uninitialized_memory = not enabled
