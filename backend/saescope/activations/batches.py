"""Feeding activations to training: one way to cut shuffled `[batch_size, d_in]` batches from a source.

Owns `ChunkSource` (what any activation source offers: chunks by index, already shuffled within
the chunk as the source sees fit, and a fingerprint), `ChunkedBatches` (the one feeder: it cuts
chunks 0, 1, 2, ... into batches and knows its position, so a checkpoint can resume the exact
batch sequence), `IterableChunks` (an iterable of tensors as a one-pass source, shuffled through
chunks of a fixed number of rows) and `as_batch`, the validation every batch passes. The sources
are `chunked.ActivationChunks` (a model's activations, computed chunk by chunk),
`matrix_file.MatrixChunks` (a matrix file), `cache.ActivationCache` (cached shards) and
`IterableChunks`. It knows nothing about models or dictionaries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor

from saescope.errors import ConfigError, InputError


def as_batch(t: Any, d_in: int | None) -> Tensor:
    """`t` as a float32 CPU `[rows, d_in]` tensor; InputError saying what is wrong otherwise."""
    if not isinstance(t, Tensor):
        raise InputError(f"activation batches must be torch tensors, got {type(t).__name__}", field="batches")
    if t.dim() != 2:
        raise InputError(f"activation batches must be [batch, d_in], got shape {tuple(t.shape)}", field="batches")
    if d_in is not None and t.shape[1] != d_in:
        raise InputError(f"activation batch has d_in={t.shape[1]}, expected {d_in}", field="batches")
    if not t.is_floating_point():
        raise InputError(f"activation batches must be floating point, got {t.dtype}", field="batches")
    t = t.detach().to("cpu", torch.float32)
    if not torch.isfinite(t).all():
        raise InputError("activation batch contains NaN or infinite values", field="batches")
    return t


class ChunkSource(Protocol):
    """A sequence of activation chunks. A seekable source (a matrix file, a cache, a model stream)
    knows `n_chunks` and computes each chunk as a pure function of its index; a one-pass source
    (an iterable) has `n_chunks = None`, is read in order and returns None after its last chunk."""

    n_chunks: int | None

    def chunk(self, index: int) -> Tensor | None:
        """`[rows, d_in]` activation rows of chunk `index` (shuffled as the source sees fit)."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """A JSON-like dict identifying the data; a checkpoint resumes only on an equal one."""
        ...


class ChunkedBatches:
    """`[batch_size, d_in]` batches cut from the rows of chunks `next_chunk, next_chunk + 1, ...`,
    preceded by `leftover` rows (what a checkpoint saved). Only the last batch may be smaller.

    `position()` is what a checkpoint stores; `ChunkedBatches(source, batch_size, **position)`
    continues the same batch sequence. `peek(n)` returns the first n upcoming rows without
    consuming them (the chunks it reads are kept for iteration, not recomputed)."""

    def __init__(
        self, source: ChunkSource, batch_size: int, next_chunk: int = 0, leftover: Tensor | None = None
    ) -> None:
        if batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        self.source = source
        self.batch_size = batch_size
        self.next_chunk = int(next_chunk)
        self.d_in: int | None = None
        self._rows = torch.zeros(0, 0)  # rows read and not yet emitted start at self._offset
        self._offset = 0
        if leftover is not None and leftover.shape[0]:
            self._rows = as_batch(leftover, None)
            self.d_in = int(self._rows.shape[1])
        self._peeked: list[Tensor] = []  # chunks next_chunk, next_chunk + 1, ... read by peek

    @property
    def leftover(self) -> Tensor:
        """`[rows < batch_size (at a chunk boundary), d_in]` rows read but not yet emitted."""
        return self._rows[self._offset :]

    @property
    def at_chunk_boundary(self) -> bool:
        """True when the next batch starts by reading a new chunk (the position is cheap to save)."""
        return self.leftover.shape[0] < self.batch_size

    def position(self) -> dict[str, Any]:
        """`{"next_chunk", "leftover"}`: the keyword arguments that continue this exact sequence."""
        return {"next_chunk": self.next_chunk, "leftover": self.leftover.clone()}

    def _read(self) -> Tensor | None:
        """The next non-empty chunk, validated, or None when the source is exhausted."""
        while True:
            if self._peeked:
                t = self._peeked.pop(0)
            else:
                t = self._load(self.next_chunk)
                if t is None:
                    return None
            self.next_chunk += 1
            if t.shape[0]:
                return t

    def _load(self, index: int) -> Tensor | None:
        """Chunk `index` validated, or None past the end of the source."""
        n_chunks = self.source.n_chunks
        raw = self.source.chunk(index) if n_chunks is None or index < n_chunks else None
        if raw is None:
            return None
        t = as_batch(raw, self.d_in)
        self.d_in = int(t.shape[1])
        return t

    def peek(self, rows: int) -> Tensor:
        """The first `rows` upcoming rows (fewer if the stream is shorter); InputError when it is empty."""
        have = self.leftover.shape[0] + sum(int(t.shape[0]) for t in self._peeked)
        while have < rows:
            t = self._load(self.next_chunk + len(self._peeked))
            if t is None:
                break
            self._peeked.append(t)
            have += int(t.shape[0])
        parts = [p for p in [self.leftover, *self._peeked] if p.shape[0]]
        if not parts:
            raise InputError("the activation stream is empty: no batches to train on", field="batches")
        return torch.cat(parts)[:rows]

    def __iter__(self) -> Iterator[Tensor]:
        B = self.batch_size
        while True:
            parts = [self.leftover] if self.leftover.shape[0] else []
            have = parts[0].shape[0] if parts else 0
            while have < B:
                t = self._read()
                if t is None:
                    break
                parts.append(t)
                have += int(t.shape[0])
            if have == 0:
                return
            self._rows = torch.cat(parts) if len(parts) > 1 else parts[0]
            self._offset = 0
            if have < B:  # the end of the stream: one short batch
                self._offset = have
                yield self._rows
                return
            while self._rows.shape[0] - self._offset >= B:
                batch = self._rows[self._offset : self._offset + B]
                self._offset += B
                yield batch


class IterableChunks:
    """An iterable of `[n, d_in]` tensors as a one-pass `ChunkSource`: its rows are regrouped into
    chunks of `chunk_rows` rows, each shuffled by a generator seeded with `seed` (`chunk_rows` 0:
    chunks as they come, unshuffled). Chunks must be read in order, once."""

    n_chunks = None

    def __init__(self, tensors: Iterable[Tensor], chunk_rows: int, seed: int) -> None:
        self._source: Iterator[Tensor] = iter(tensors)
        self.chunk_rows = chunk_rows
        self._generator = torch.Generator().manual_seed(seed + 7919)
        self._next = 0
        self._end: int | None = None  # index of the first chunk past the end, once known
        self._d_in: int | None = None

    def chunk(self, index: int) -> Tensor | None:
        if self._end is not None and index >= self._end:
            return None
        if index != self._next:
            raise ConfigError("an iterable of activations is read once, in order")
        self._next += 1
        parts: list[Tensor] = []
        rows = 0
        for t in self._source:
            t = as_batch(t, self._d_in)
            self._d_in = int(t.shape[1])
            parts.append(t)
            rows += int(t.shape[0])
            if rows >= self.chunk_rows:
                break
        if not parts:
            self._end = index
            return None
        data = torch.cat(parts) if len(parts) > 1 else parts[0]
        if self.chunk_rows > 0:
            data = data[torch.randperm(data.shape[0], generator=self._generator)]
        return data

    def fingerprint(self) -> dict[str, Any]:
        return {"iterable": True, "chunk_rows": self.chunk_rows}
