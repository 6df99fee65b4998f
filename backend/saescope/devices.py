"""Choosing the torch device: CUDA when present, else CPU, or what the user asked for.

Owns only device resolution; imports no other stage.
"""

from __future__ import annotations

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
