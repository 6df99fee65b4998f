"""Activation-matrix files: one `[n_tokens, d_in]` matrix in `.safetensors` (tensor `activations`) or `.npy`.

Owns the one reader and the one writer of these files (`saescope train-sae --activations FILE`,
`saescope cache-activations --out FILE`) and `MatrixChunks`, the file as a `ChunkSource` of
shuffled row blocks for `batches.ChunkedBatches`. The reader opens the file lazily (safetensors'
own `safe_open`, numpy's memory map), reads contiguous row ranges as float32 (F16, BF16 and F64
are converted), and names the file and the row in every error. Writes are atomic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from saescope.atomic_files import atomic_file
from saescope.errors import ConfigError, FormatError, NotFoundError

MATRIX_KEY = "activations"
SUFFIXES = (".safetensors", ".npy")
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


class ActivationMatrix:
    """A read-only `[n, d_in]` float matrix in a `.safetensors` or `.npy` file, read by row ranges."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise NotFoundError(f"activation file {self.path} does not exist")
        suffix = self.path.suffix.lower()
        if suffix == ".npy":
            self._array: Any = self._open_npy()
            shape, floating = tuple(self._array.shape), np.issubdtype(self._array.dtype, np.floating)
            dtype_name = str(self._array.dtype)
        elif suffix == ".safetensors":
            self._array, shape, dtype_name = self._open_safetensors()
            floating = dtype_name in _FLOAT_DTYPES
        else:
            raise FormatError(f"{self.path}: activation files must be .safetensors (tensor '{MATRIX_KEY}') or .npy")
        if len(shape) != 2:
            raise FormatError(f"{self.path}: activations must be a matrix [n_tokens, d_in], got shape {shape}")
        if not floating:
            raise FormatError(f"{self.path}: activations must be floating point, got {dtype_name}")
        if shape[0] == 0 or shape[1] == 0:
            raise FormatError(f"{self.path}: the activation matrix is empty {shape}")
        self.n, self.d_in = int(shape[0]), int(shape[1])

    def _open_npy(self) -> np.ndarray:
        try:
            return np.load(self.path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise FormatError(f"{self.path} is not a readable .npy file: {exc}") from exc

    def _open_safetensors(self) -> tuple[Any, tuple[int, ...], str]:
        try:
            handle = safe_open(str(self.path), framework="pt")
            names = list(handle.keys())
            if MATRIX_KEY not in names:
                raise FormatError(
                    f"{self.path} has no tensor named '{MATRIX_KEY}' (found: {', '.join(names) or 'none'}); "
                    f"save the matrix as {{'{MATRIX_KEY}': tensor[n_tokens, d_in]}}"
                )
            tensor_slice = handle.get_slice(MATRIX_KEY)
            return tensor_slice, tuple(tensor_slice.get_shape()), tensor_slice.get_dtype()
        except (SafetensorError, OSError) as exc:
            raise FormatError(f"{self.path} is not a valid .safetensors file: {exc}") from exc

    def rows(self, start: int, stop: int) -> Tensor:
        """float32 `[stop - start, d_in]`: rows start .. stop-1; FormatError naming a non-finite row."""
        block = self._array[start:stop]
        t = torch.from_numpy(np.array(block, dtype=np.float32)) if isinstance(block, np.ndarray) else block.float()
        finite = torch.isfinite(t).all(1)
        if not bool(finite.all()):
            bad = start + int(torch.nonzero(~finite)[0])
            raise FormatError(f"{self.path}: row {bad} contains NaN or infinite values; clean the activations first")
        return t

    def to_tensor(self) -> Tensor:
        """The whole matrix as float32."""
        return self.rows(0, self.n)

    def fingerprint(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "n": self.n, "d_in": self.d_in, "bytes": self.path.stat().st_size}


def save_activation_matrix(activations: Tensor | np.ndarray, path: Path | str) -> Path:
    """Write `[n, d_in]` activations to `path` (.safetensors tensor `activations`, or .npy), atomically."""
    path = Path(path)
    t = activations if isinstance(activations, Tensor) else torch.as_tensor(np.asarray(activations))
    if t.ndim != 2:
        raise ConfigError(f"an activation matrix must be [n, d_in]; got shape {tuple(t.shape)}")
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"{path}: activation matrix files must end in .safetensors or .npy")
    t = t.detach().cpu().float().contiguous()
    with atomic_file(path) as tmp:
        if path.suffix == ".safetensors":
            save_file({MATRIX_KEY: t}, str(tmp))
        else:
            with open(tmp, "wb") as fh:
                np.save(fh, t.numpy())
    return path


class MatrixChunks:
    """An `ActivationMatrix` as a `ChunkSource`: epoch e visits the file's blocks of `block_rows`
    contiguous rows in the order of a permutation seeded by (seed, e), each block's rows shuffled
    by (seed, chunk index); enough epochs to cover `tokens` rows. A pure function of the index."""

    def __init__(self, matrix: ActivationMatrix, block_rows: int, seed: int, tokens: int) -> None:
        if block_rows < 1:
            raise ConfigError("block_rows must be >= 1")
        self.matrix, self.block_rows, self.seed = matrix, int(block_rows), int(seed)
        self.blocks_per_epoch = math.ceil(matrix.n / self.block_rows)
        self.n_chunks = self.blocks_per_epoch * max(1, math.ceil(tokens / matrix.n))
        self._epoch, self._order = -1, np.zeros(0, dtype=np.int64)

    def _block_order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 17)
            self._order = torch.randperm(self.blocks_per_epoch, generator=g).numpy()
            self._epoch = epoch
        return self._order

    def chunk(self, index: int) -> Tensor:
        epoch, position = divmod(index, self.blocks_per_epoch)
        block = int(self._block_order(epoch)[position])
        rows = self.matrix.rows(block * self.block_rows, min((block + 1) * self.block_rows, self.matrix.n))
        g = torch.Generator().manual_seed(self.seed * 7_919 + index)
        return rows[torch.randperm(rows.shape[0], generator=g)]

    def fingerprint(self) -> dict[str, Any]:
        return {**self.matrix.fingerprint(), "block_rows": self.block_rows, "seed": self.seed}
