"""A seekable, shuffled activation stream: chunk `i` is a pure function of (token rows, seed, i).

Owns `ActivationChunks`: token contexts `[n, n_ctx]` (already shuffled by the caller) are cut into
chunks of `contexts_per_chunk` contexts; chunk `i` holds the hook-point activation rows of contexts
`[i*C, (i+1)*C)` (computed by `iter_activation_batches`, BOS column dropped), permuted by a
`torch.Generator` seeded from `(seed, i)`. Because no state carries from one chunk to the next, a
resumed training run asks for chunk `i` directly and never re-runs the model over the contexts of
earlier chunks. `fingerprint()` identifies the data (tokens, model weights, hook, chunking, seed) so
a checkpoint can refuse to continue on other data. It knows nothing about dictionaries or training.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from saescope.activations.hooks import validate_hook_name
from saescope.activations.stream import (
    as_token_tensor,
    check_tokens_fit_model,
    iter_activation_batches,
)
from saescope.errors import ConfigError


def chunk_seed(seed: int, index: int) -> int:
    """A 63-bit generator seed for chunk `index` of a stream seeded `seed` (no collisions in practice)."""
    digest = hashlib.sha256(f"saescope-chunk:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def model_fingerprint(model: Any) -> str:
    """sha256 of a model's parameter and buffer names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ActivationChunks:
    """Hook-point activations of `tokens [n_contexts, n_ctx]` as `n_chunks` shuffled chunks.

    `chunk(i)` returns `[rows, d_in]` float rows (rows = contexts in the chunk * tokens per context),
    permuted with a generator seeded by `chunk_seed(seed, i)` unless `shuffle=False`. Chunks are
    sized to about `chunk_tokens` rows (at least one context). The model runs over a chunk's contexts
    in forward batches of `contexts_per_batch`; each call recomputes the chunk (nothing is cached).
    """

    def __init__(
        self,
        model: Any,
        tokens: Any,
        hook_name: str,
        chunk_tokens: int = 65_536,
        seed: int = 0,
        shuffle: bool = True,
        contexts_per_batch: int = 32,
        include_bos: bool = False,
        hook_head_index: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if chunk_tokens < 1:
            raise ConfigError("chunk_tokens must be >= 1")
        if contexts_per_batch < 1:
            raise ConfigError("contexts_per_batch must be >= 1")
        validate_hook_name(model, hook_name, hook_head_index)
        self.model = model
        self.tokens = as_token_tensor(tokens).cpu()  # [n_contexts, n_ctx]
        check_tokens_fit_model(model, self.tokens)
        self.hook_name = hook_name
        self.hook_head_index = hook_head_index
        self.include_bos = include_bos
        self.seed = seed
        self.shuffle = shuffle
        self.contexts_per_batch = contexts_per_batch
        self.device = device
        self.tokens_per_context = int(self.tokens.shape[1]) - (0 if include_bos else 1)
        if self.tokens_per_context < 1:
            raise ConfigError("contexts need at least 2 tokens (position 0 is dropped as BOS)")
        self.contexts_per_chunk = max(1, chunk_tokens // self.tokens_per_context)
        self.n_chunks = math.ceil(int(self.tokens.shape[0]) / self.contexts_per_chunk)
        self._fingerprint: dict[str, Any] | None = None

    def context_range(self, index: int) -> tuple[int, int]:
        """The contexts `[start, end)` whose activations make up chunk `index`."""
        start = index * self.contexts_per_chunk
        return start, min(start + self.contexts_per_chunk, int(self.tokens.shape[0]))

    def chunk(self, index: int) -> Tensor:
        """Chunk `index` as `[rows, d_in]` (float32, on `device` or the model's device)."""
        if not 0 <= index < self.n_chunks:
            raise IndexError(f"chunk {index} is out of range [0, {self.n_chunks})")
        start, end = self.context_range(index)
        rows = torch.cat(
            list(
                iter_activation_batches(
                    self.model,
                    self.tokens[start:end],
                    self.hook_name,
                    contexts_per_batch=self.contexts_per_batch,
                    device=self.device,
                    include_bos=self.include_bos,
                    hook_head_index=self.hook_head_index,
                )
            )
        )
        if self.shuffle:
            g = torch.Generator().manual_seed(chunk_seed(self.seed, index))
            rows = rows[torch.randperm(rows.shape[0], generator=g).to(rows.device)]
        return rows

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the stream: a checkpoint taken on it is valid only for an equal fingerprint."""
        if self._fingerprint is None:
            tokens = np.ascontiguousarray(self.tokens.numpy())
            self._fingerprint = {
                "source": "activation_chunks",
                "tokens_sha256": hashlib.sha256(tokens.tobytes()).hexdigest(),
                "n_contexts": int(tokens.shape[0]),
                "n_ctx": int(tokens.shape[1]),
                "model_sha256": model_fingerprint(self.model),
                "hook_name": self.hook_name,
                "hook_head_index": self.hook_head_index,
                "include_bos": self.include_bos,
                "contexts_per_chunk": self.contexts_per_chunk,
                "contexts_per_batch": self.contexts_per_batch,
                "seed": self.seed,
                "shuffle": self.shuffle,
            }
        return dict(self._fingerprint)
