"""On-disk activation cache (memory-mapped `.npy` shards + `manifest.json`) and matrix files.

Owns persisting hook-point activations so that sweeps (several SAEs, baselines) reuse one forward
pass: `ActivationCache.build(model, tokens, hook_name, out_dir)` streams activations into shards
written to a temporary folder that is renamed into place only when complete (a crash leaves no
half cache). A cache is a `batches.ChunkSource` (one chunk per shard, read memory-mapped), so
`batches.ChunkedBatches` feeds it to training like any other source; `load_activation_matrix`
reads a cache folder or a matrix file (`matrix_file`) whole. It does not train or evaluate anything.

Layout: `out_dir/manifest.json`, `out_dir/shard_00000.npy`, ... each shard `[rows, d_in]`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import Tensor

from saescope.activations.matrix_file import ActivationMatrix, save_activation_matrix
from saescope.activations.stream import as_token_tensor, iter_activation_batches
from saescope.atomic_files import atomic_folder
from saescope.errors import ConfigError, FormatError, NotFoundError

MANIFEST_FILE = "manifest.json"
_DTYPES = {"float32": np.float32, "float16": np.float16}


class ShardInfo(BaseModel):
    file: str = Field(description="Shard file name inside the cache folder.")
    n_tokens: int = Field(description="Rows in this shard.")


class CacheManifest(BaseModel):
    """What a cache folder holds; `manifest.json`."""

    format_version: int = Field(1, description="Cache layout version.")
    hook_name: str = Field(description="Hook point the activations come from.")
    hook_head_index: int | None = Field(None, description="Head selected for per-head hooks.")
    model_name: str = Field("", description="Model the activations come from.")
    n_contexts: int = Field(description="Contexts forwarded.")
    n_ctx: int = Field(description="Tokens per context.")
    include_bos: bool = Field(False, description="Whether BOS positions are included.")
    n_tokens: int = Field(description="Total activation rows.")
    d_in: int = Field(description="Activation dimension.")
    dtype: str = Field("float32", description="numpy dtype of the shards (float32 or float16).")
    shards: list[ShardInfo] = Field(default_factory=list, description="Shards in row order.")
    created_at: float = Field(default_factory=time.time, description="Unix time of creation.")


class ActivationCache:
    """A read-only view of a cache folder; shards are opened memory-mapped."""

    def __init__(self, folder: Path, manifest: CacheManifest) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        self._shards = [np.load(self.folder / s.file, mmap_mode="r") for s in manifest.shards]
        self._offsets = np.cumsum([0] + [s.n_tokens for s in manifest.shards])

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: Path) -> "ActivationCache":
        """Open an existing cache; NotFoundError/FormatError name the path when it is missing/bad."""
        folder = Path(folder)
        path = folder / MANIFEST_FILE
        if not path.is_file():
            raise NotFoundError(f"{path} not found: build the cache first (ActivationCache.build)")
        try:
            manifest = CacheManifest.model_validate_json(path.read_text())
        except ValueError as exc:
            raise FormatError(f"{path} is not a valid activation-cache manifest: {exc}") from exc
        for shard in manifest.shards:
            if not (folder / shard.file).is_file():
                raise FormatError(f"{folder / shard.file} listed in {path} is missing")
        return cls(folder, manifest)

    @classmethod
    def build(
        cls,
        model: Any,
        tokens: Any,
        hook_name: str,
        out_dir: Path,
        hook_head_index: int | None = None,
        contexts_per_batch: int = 32,
        include_bos: bool = False,
        shard_tokens: int = 1 << 20,
        dtype: str = "float32",
        model_name: str = "",
        reuse: bool = True,
    ) -> "ActivationCache":
        """Forward `tokens [n, n_ctx]` once and write activations at `hook_name` to `out_dir`.

        With `reuse` an existing complete cache for the same hook, head, token count and BOS
        setting is opened instead of rebuilt; otherwise an existing folder is replaced.
        """
        if dtype not in _DTYPES:
            raise ConfigError(f"cache dtype {dtype!r} not supported; use float32 or float16")
        out_dir = Path(out_dir)
        all_tokens = as_token_tensor(tokens)
        n_contexts, n_ctx = all_tokens.shape
        if reuse and (out_dir / MANIFEST_FILE).is_file():
            try:
                existing = cls.open(out_dir)
            except (FormatError, NotFoundError):
                existing = None
            if existing is not None and _same_request(
                existing.manifest, hook_name, hook_head_index, n_contexts, n_ctx, include_bos
            ):
                return existing
        with atomic_folder(out_dir) as tmp:
            np_dtype = _DTYPES[dtype]
            shards: list[ShardInfo] = []
            pending: list[np.ndarray] = []
            held = 0
            d_in = 0

            def flush(rows: np.ndarray) -> None:
                name = f"shard_{len(shards):05d}.npy"
                np.save(tmp / name, rows)
                shards.append(ShardInfo(file=name, n_tokens=int(rows.shape[0])))

            for batch in iter_activation_batches(
                model, all_tokens, hook_name, contexts_per_batch, "cpu", include_bos, hook_head_index
            ):
                arr = batch.numpy().astype(np_dtype, copy=False)
                d_in = arr.shape[1]
                pending.append(arr)
                held += arr.shape[0]
                while held >= shard_tokens:
                    rows = np.concatenate(pending)
                    flush(rows[:shard_tokens])
                    rest = rows[shard_tokens:]
                    pending, held = ([rest] if rest.shape[0] else []), rest.shape[0]
            if held:
                flush(np.concatenate(pending))
            manifest = CacheManifest(
                hook_name=hook_name,
                hook_head_index=hook_head_index,
                model_name=model_name or str(getattr(model.cfg, "model_name", "")),
                n_contexts=int(n_contexts),
                n_ctx=int(n_ctx),
                include_bos=include_bos,
                n_tokens=int(sum(s.n_tokens for s in shards)),
                d_in=int(d_in),
                dtype=dtype,
                shards=shards,
            )
            (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
        return cls.open(out_dir)

    # ---- reading --------------------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return self.manifest.n_tokens

    @property
    def d_in(self) -> int:
        return self.manifest.d_in

    def __len__(self) -> int:
        return self.n_tokens

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """`[len(indices), d_in]` rows at global `indices` (any order)."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((indices.shape[0], self.d_in), dtype=_DTYPES[self.manifest.dtype])
        shard_of = np.searchsorted(self._offsets, indices, side="right") - 1
        for s in np.unique(shard_of):
            where = np.nonzero(shard_of == s)[0]
            local = indices[where] - self._offsets[s]
            order = np.argsort(local)
            out[where[order]] = self._shards[s][local[order]]
        return out

    @property
    def n_chunks(self) -> int:
        return len(self._shards)

    def chunk(self, index: int) -> Tensor:
        """Shard `index` as float32 rows, in stored order (a `ChunkSource` chunk)."""
        return torch.from_numpy(np.array(self._shards[index], dtype=np.float32))

    def fingerprint(self) -> dict[str, Any]:
        return {"cache": str(self.folder.resolve()), "created_at": self.manifest.created_at,
                "n_tokens": self.n_tokens, "d_in": self.d_in}

    def to_tensor(self) -> Tensor:
        """All rows `[n_tokens, d_in]` as one float32 tensor (loads the cache into memory)."""
        return torch.from_numpy(np.concatenate([np.asarray(s, dtype=np.float32) for s in self._shards]))

    def export_matrix(self, path: Path) -> Path:
        """Write all rows as one matrix file (`.safetensors` or `.npy`) for `train-sae --activations`."""
        return save_activation_matrix(self.to_tensor(), path)


def _same_request(
    m: CacheManifest, hook_name: str, head: int | None, n_contexts: int, n_ctx: int, include_bos: bool
) -> bool:
    return (
        m.hook_name == hook_name
        and m.hook_head_index == head
        and m.n_contexts == n_contexts
        and m.n_ctx == n_ctx
        and m.include_bos == include_bos
    )


def load_activation_matrix(path: Path) -> Tensor:
    """Read `[n, d_in]` float32 activations from a `.safetensors` / `.npy` file or a cache folder."""
    path = Path(path)
    if path.is_dir():
        return ActivationCache.open(path).to_tensor()
    return ActivationMatrix(path).to_tensor()


def export_activation_matrix(
    model: Any,
    tokens: Any,
    hook_name: str,
    path: Path,
    hook_head_index: int | None = None,
    contexts_per_batch: int = 32,
    include_bos: bool = False,
) -> Path:
    """Forward `tokens` and write the activations at `hook_name` as one matrix file."""
    rows = list(
        iter_activation_batches(model, tokens, hook_name, contexts_per_batch, "cpu", include_bos, hook_head_index)
    )
    return save_activation_matrix(torch.cat(rows), path)
