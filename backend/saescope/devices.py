"""Choosing the torch device: CUDA when present, else CPU, or what the user asked for.

Owns device resolution and the reduced-precision context (`compute_precision`: bf16 / fp16 autocast
for model forwards and SAE encodes, where the device supports it); imports no other stage.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from saescope.errors import ConfigError


def resolve_device(requested: str | None = "auto") -> torch.device:
    """Return `cuda` when available and `requested` is auto/None, else the requested device.

    Raises ConfigError for an unknown device string or for `cuda` on a machine without CUDA.
    """
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu")
    return device


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def compute_precision(device: torch.device, precision: str = "fp32") -> Any:
    """A context in which matmuls run in `precision` (fp32, bf16 or fp16) on `device` (torch
    autocast; fp32 changes nothing). Results that accumulate statistics must be cast back to
    float32 by the caller. ConfigError for an unknown precision, fp16 on CPU, or bf16 on a GPU
    without bf16 support."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cpu" and precision == "fp16":
        raise ConfigError("fp16 needs a CUDA device; on CPU use bf16 or fp32")
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{torch.cuda.get_device_name(device)} does not support bf16; use fp16 or fp32")
    return torch.autocast(device.type, dtype=PRECISIONS[precision])
