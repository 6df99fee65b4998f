"""Resume state on disk without pickle: tensors in a safetensors file, everything else as JSON.

Owns the one file format used for resumable state (SAE training checkpoints, the precompute
streaming state): a nested structure of dicts, lists, tuples, numbers, strings, tensors and numpy
arrays is split into its tensors (stored as safetensors) and a JSON skeleton (stored in the
safetensors header's metadata) that refers to them by key. Reading parses the header and tensor
bytes only, so a planted file can at worst be refused: nothing in it is ever executed. Writes go
through `atomic_files.atomic_file`. It must not know what the state means; callers check the `kind` and
`version` they expect and turn a `StateFileError` into a message that says how to start over.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from saescope.atomic_files import atomic_file

FORMAT = "saescope-state"
_TENSOR, _ARRAY, _TUPLE, _ITEMS, _FLOAT = "$tensor", "$ndarray", "$tuple", "$items", "$float"
_MAX_HEADER = 100_000_000


class StateFileError(ValueError):
    """A state file that cannot be read back: not safetensors, another kind or version, or malformed."""


class _Encoder:
    """Replaces each tensor (and numpy array) of a structure by a reference into `tensors`."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._seen: list[torch.Tensor] = []

    def _store(self, t: torch.Tensor) -> str:
        key = f"t{len(self.tensors)}"
        t = t.detach().cpu().contiguous()
        shared = any(t.untyped_storage().data_ptr() == o.untyped_storage().data_ptr() for o in self._seen)
        self.tensors[key] = t.clone() if shared else t  # safetensors refuses tensors that share memory
        self._seen.append(self.tensors[key])
        return key

    def encode(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return {_TENSOR: self._store(value)}
        if isinstance(value, np.ndarray):
            return {_ARRAY: self._store(torch.from_numpy(np.ascontiguousarray(value)))}
        if isinstance(value, np.generic):
            return self.encode(value.item())
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {_FLOAT: repr(value)}
        if isinstance(value, tuple):
            return {_TUPLE: [self.encode(v) for v in value]}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: self.encode(v) for k, v in value.items()}
            return {_ITEMS: [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        raise TypeError(f"cannot store a {type(value).__name__} in a state file")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (tag, inner), = value.items()
        if tag in (_TENSOR, _ARRAY):
            if not isinstance(inner, str) or inner not in tensors:
                raise StateFileError(f"it refers to a tensor {inner!r} that it does not hold")
            return tensors[inner] if tag == _TENSOR else tensors[inner].numpy()
        if tag == _TUPLE and isinstance(inner, list):
            return tuple(_decode(v, tensors) for v in inner)
        if tag == _FLOAT and inner in ("nan", "inf", "-inf"):
            return float(inner)
        if tag == _ITEMS and isinstance(inner, list):
            if not all(isinstance(p, list) and len(p) == 2 for p in inner):
                raise StateFileError("it holds a malformed mapping")
            return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in inner}
    if any(k.startswith("$") for k in value):
        raise StateFileError(f"it holds an unknown entry {min(value)!r}")
    return {k: _decode(v, tensors) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict, torch.Tensor, np.ndarray)):
        raise StateFileError("it holds a mapping with an unusable key")
    return key


def save_state_file(path: Path | str, state: dict[str, Any], kind: str, version: int) -> Path:
    """Write `state` to `path` atomically as safetensors with a JSON skeleton in its metadata."""
    path = Path(path)
    encoder = _Encoder()
    skeleton = encoder.encode(state)
    metadata = {"format": FORMAT, "kind": kind, "version": str(version), "state": json.dumps(skeleton)}
    with atomic_file(path) as tmp:
        save_file(encoder.tensors, str(tmp), metadata=metadata)
    return path


def _metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise StateFileError("it is too short to be a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if n > _MAX_HEADER or 8 + n > len(data):
        raise StateFileError("it is not a safetensors file")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StateFileError("it is not a safetensors file") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise StateFileError("it has no saescope state in its header")
    return meta


def load_state_file(path: Path | str, kind: str, version: int) -> dict[str, Any]:
    """The state saved by `save_state_file` with this `kind` and `version`; StateFileError otherwise."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise StateFileError(f"it cannot be read ({exc.strerror or exc})") from None
    meta = _metadata(data)
    if meta.get("format") != FORMAT or meta.get("kind") != kind:
        raise StateFileError(f"it is not a saescope {kind} file")
    if meta.get("version") != str(version):
        raise StateFileError(f"it is format version {meta.get('version')}, this version reads {version}")
    try:
        tensors = load_tensors(data)
        skeleton = json.loads(meta.get("state", ""))
    except Exception as exc:  # truncated or inconsistent tensor data, bad JSON: all mean "unusable"
        raise StateFileError(f"its contents are damaged ({type(exc).__name__})") from None
    state = _decode(skeleton, tensors)
    if not isinstance(state, dict):
        raise StateFileError("it does not hold a state mapping")
    return state
