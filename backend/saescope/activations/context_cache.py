"""Activations of whole contexts at several hook points, from ONE forward pass, kept on disk.

Owns `ContextCache`: for token contexts `[n, n_ctx]` it runs the model once per batch, only as far
as the deepest hook needs, and writes each hook's activations `[n, n_ctx, d]` (BOS column included)
to a memory-mapped `.npy` file per hook. The build's SAE training, baselines and precompute all read
these files, so the model runs over the training text once however many hooks and dictionaries
there are. The cache is resumable: a `progress.json` records how many contexts are written, and a
rerun of `build` with the same fingerprint continues from there; the folder is only published
(`complete: true`) when every context is in.

`ContextRowChunks` is the `batches.ChunkSource` over one hook of a cache: chunk `i` holds the rows
of a seeded permutation's contexts `[i*C, (i+1)*C)` with the BOS column dropped, shuffled by a
generator seeded from `(seed, i)` — a pure function of the index, so training checkpoints resume
exactly. It knows nothing about dictionaries or training.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import Tensor
from tqdm.auto import tqdm

from saescope.activations.chunked import chunk_seed
from saescope.activations.hooks import flatten_hook_activation
from saescope.activations.stream import as_token_tensor, check_tokens_fit_model, model_device, multi_hook_activations
from saescope.atomic_files import write_json
from saescope.errors import ConfigError, FormatError

PROGRESS_FILE = "progress.json"
_DTYPES = {"float32": np.float32, "float16": np.float16}


class ContextCacheManifest(BaseModel):
    """What a context cache holds (`progress.json`)."""

    fingerprint: str = Field(description="Hash of the tokens, hooks, dtype and model identity it was built for.")
    hooks: list[str] = Field(description="Hook points, one `.npy` file each.")
    files: dict[str, str] = Field(description="Hook point -> file name inside the folder.")
    n_contexts: int
    n_ctx: int
    dims: dict[str, int] = Field(description="Hook point -> activation width.")
    dtype: str = Field(description="Storage dtype: float32 or float16.")
    done: int = Field(0, description="Contexts written so far (all of them once complete).")

    @property
    def complete(self) -> bool:
        return self.done >= self.n_contexts


def _file_name(hook: str) -> str:
    return hook.replace("/", "_") + ".npy"


def cache_fingerprint(tokens: np.ndarray, hooks: Sequence[str], dtype: str, model_id: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"hooks": list(hooks), "dtype": dtype, "model": model_id, "shape": list(tokens.shape)}).encode())
    h.update(np.ascontiguousarray(tokens, dtype=np.int64).tobytes())
    return h.hexdigest()


class ContextCache:
    """Whole-context activations of several hooks in `folder` (see the module docstring)."""

    def __init__(self, folder: Path, manifest: ContextCacheManifest) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        self._arrays: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, folder: Path | str) -> "ContextCache":
        folder = Path(folder)
        try:
            manifest = ContextCacheManifest.model_validate_json((folder / PROGRESS_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise FormatError(f"{folder} is not an activation context cache ({exc})") from None
        return cls(folder, manifest)

    def array(self, hook: str) -> np.ndarray:
        """The memory-mapped `[n, n_ctx, d]` array of `hook` (read-only)."""
        if hook not in self.manifest.files:
            raise ConfigError(f"the activation cache holds {self.manifest.hooks}, not {hook!r}")
        if hook not in self._arrays:
            self._arrays[hook] = np.load(self.folder / self.manifest.files[hook], mmap_mode="r")
        return self._arrays[hook]

    def contexts(self, hook: str, start: int, stop: int) -> Tensor:
        """Activations `[stop - start, n_ctx, d]` (float32) of contexts `start..stop` at `hook`."""
        return torch.from_numpy(np.array(self.array(hook)[start:stop], dtype=np.float32))

    def batch(self, hooks: Sequence[str], indices: np.ndarray) -> dict[str, Tensor]:
        """Activations `[len(indices), n_ctx, d]` of the contexts at `indices` for every hook in `hooks`
        (what a forward pass over those contexts would give)."""
        picked = np.asarray(indices, dtype=np.int64)
        return {h: torch.from_numpy(np.array(self.array(h)[picked], dtype=np.float32)) for h in dict.fromkeys(hooks)}

    def chunks(self, hook: str, chunk_tokens: int, seed: int, rows: int | None = None) -> "ContextRowChunks":
        """`hook`'s rows as a training stream (see `ContextRowChunks`)."""
        return ContextRowChunks(self, hook, chunk_tokens, seed, rows)

    @classmethod
    def build(
        cls,
        model: Any,
        tokens: np.ndarray,
        hooks: Sequence[str],
        folder: Path | str,
        model_id: str,
        dtype: str = "float32",
        contexts_per_batch: int = 16,
        progress: bool = True,
        on_batch: Callable[[int], None] | None = None,
    ) -> "ContextCache":
        """Write (or finish writing) the cache of `tokens [n, n_ctx]` at `hooks` in `folder`.

        A folder holding a complete cache for the same fingerprint is reused as it is; one holding a
        partial cache for the same fingerprint is continued; any other content is replaced."""
        if dtype not in _DTYPES:
            raise ConfigError(f"activation cache dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        tok = np.ascontiguousarray(as_token_tensor(tokens).numpy())
        check_tokens_fit_model(model, torch.from_numpy(tok))
        hooks = list(dict.fromkeys(hooks))
        folder = Path(folder)
        fingerprint = cache_fingerprint(tok, hooks, dtype, model_id)
        existing = cls._matching(folder, fingerprint)
        if existing is not None and existing.manifest.complete:
            return existing
        n, n_ctx = tok.shape
        device = model_device(model)
        if existing is None:
            dims = {h: int(v.shape[-1]) for h, v in _flat(multi_hook_activations(
                model, torch.from_numpy(tok[:1]).to(device), hooks)).items()}
            manifest = ContextCacheManifest(fingerprint=fingerprint, hooks=hooks, files={h: _file_name(h) for h in hooks},
                                            n_contexts=n, n_ctx=n_ctx, dims=dims, dtype=dtype)
            cls._create_files(folder, manifest)
        else:
            manifest = existing.manifest
        arrays = {h: np.load(folder / manifest.files[h], mmap_mode="r+") for h in hooks}
        bar = tqdm(total=n, initial=manifest.done, desc="activations", unit="ctx", disable=not progress)
        for start in range(manifest.done, n, contexts_per_batch):
            stop = min(n, start + contexts_per_batch)
            raw = _flat(multi_hook_activations(model, torch.from_numpy(tok[start:stop]).to(device), hooks))
            for h in hooks:
                arrays[h][start:stop] = raw[h].float().cpu().numpy().astype(_DTYPES[dtype], copy=False)
            for a in arrays.values():
                a.flush()
            manifest.done = stop
            write_json(folder / PROGRESS_FILE, manifest.model_dump())
            bar.update(stop - start)
            if on_batch is not None:
                on_batch(stop)
        bar.close()
        del arrays
        return cls(folder, manifest)

    @staticmethod
    def _matching(folder: Path, fingerprint: str) -> "ContextCache | None":
        if not (folder / PROGRESS_FILE).is_file():
            return None
        try:
            cache = ContextCache.open(folder)
        except FormatError:
            return None
        return cache if cache.manifest.fingerprint == fingerprint else None

    @staticmethod
    def _create_files(folder: Path, manifest: ContextCacheManifest) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():  # another build's cache: replaced
            if stale.is_file():
                stale.unlink()
        for h in manifest.hooks:
            shape = (manifest.n_contexts, manifest.n_ctx, manifest.dims[h])
            np.lib.format.open_memmap(folder / manifest.files[h], mode="w+", dtype=_DTYPES[manifest.dtype],
                                      shape=shape).flush()
        write_json(folder / PROGRESS_FILE, manifest.model_dump())


def _flat(raw: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hook tensors as `[b, pos, d]` (per-head hooks concatenated over heads)."""
    return {h: flatten_hook_activation(t) for h, t in raw.items()}


class ContextRowChunks:
    """One hook of a `ContextCache` as a seekable, shuffled `ChunkSource` of `[rows, d]` rows, BOS column
    dropped. Each pass over the cache visits the contexts in a fresh seeded order; `rows` (None: one
    pass) sets how many rows the chunks hold in all, so a budget above the cache's size takes more passes."""

    def __init__(self, cache: ContextCache, hook: str, chunk_tokens: int, seed: int, rows: int | None = None) -> None:
        if chunk_tokens < 1:
            raise ConfigError("chunk_tokens must be >= 1")
        cache.array(hook)  # refuses a hook the cache does not hold
        self.cache, self.hook, self.seed = cache, hook, seed
        self.n_contexts = cache.manifest.n_contexts
        self.tokens_per_context = cache.manifest.n_ctx - 1
        if self.tokens_per_context < 1:
            raise ConfigError("contexts need at least 2 tokens (position 0 is dropped as BOS)")
        self.contexts_per_chunk = min(self.n_contexts, max(1, chunk_tokens // self.tokens_per_context))
        self.chunks_per_pass = math.ceil(self.n_contexts / self.contexts_per_chunk)
        one_pass = self.n_contexts * self.tokens_per_context
        passes = 1 if rows is None else rows / one_pass
        self.n_chunks = max(1, math.ceil(passes * self.chunks_per_pass))
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n_contexts)
        return self._orders[epoch]

    def chunk(self, index: int) -> Tensor:
        if not 0 <= index < self.n_chunks:
            raise IndexError(f"chunk {index} is out of range [0, {self.n_chunks})")
        epoch, j = divmod(index, self.chunks_per_pass)
        cpc = self.contexts_per_chunk
        picked = np.sort(self._order(epoch)[j * cpc:(j + 1) * cpc])
        acts = np.array(self.cache.array(self.hook)[picked, 1:, :], dtype=np.float32)
        rows = torch.from_numpy(acts.reshape(-1, acts.shape[-1]))
        g = torch.Generator().manual_seed(chunk_seed(self.seed, index))
        return rows[torch.randperm(rows.shape[0], generator=g)]

    def fingerprint(self) -> dict[str, Any]:
        return {"context_cache": self.cache.manifest.fingerprint, "hook": self.hook, "seed": self.seed,
                "contexts_per_chunk": self.contexts_per_chunk, "n_chunks": self.n_chunks}
