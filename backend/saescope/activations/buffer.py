"""A seeded shuffling buffer over a stream of activation batches.

Owns the decorrelation step between streaming activations (consecutive rows come from the same
context) and training: it holds `capacity_batches * batch_size` rows, shuffles them with its own
`torch.Generator`, emits half of them as batches and refills from the source. Deterministic for a
given seed and source. It knows nothing about models or dictionaries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from saescope.errors import ConfigError


class ShufflingBuffer:
    """Iterate shuffled batches `[batch_size, d_in]` from `source` (an iterable of `[n, d_in]`).

    `capacity_batches` output batches are held at a time (more = better mixing, more memory);
    `drop_last` drops a final batch smaller than `batch_size`. Every source row is yielded exactly
    once. Re-iterating the buffer re-iterates the source (which must then be re-iterable).
    """

    def __init__(
        self,
        source: Iterable[Tensor],
        batch_size: int,
        capacity_batches: int = 16,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if capacity_batches < 2:
            raise ConfigError("capacity_batches must be >= 2 (the buffer emits half of itself at a time)")
        self.source = source
        self.batch_size = batch_size
        self.capacity_batches = capacity_batches
        self.seed = seed
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        capacity = self.capacity_batches * self.batch_size
        half = (self.capacity_batches // 2) * self.batch_size
        pending: list[Tensor] = []
        held = 0
        for chunk in self.source:
            if chunk.ndim != 2:
                raise ConfigError(f"activation batches must be [n, d_in]; got shape {tuple(chunk.shape)}")
            pending.append(chunk)
            held += chunk.shape[0]
            if held >= capacity:
                buffer = self._shuffled(pending, generator)
                yield from self._emit(buffer[:half], final=False)
                pending = [buffer[half:]]
                held = buffer.shape[0] - half
        if held:
            buffer = self._shuffled(pending, generator)
            yield from self._emit(buffer, final=True)

    @staticmethod
    def _shuffled(parts: list[Tensor], generator: torch.Generator) -> Tensor:
        buffer = torch.cat(parts) if len(parts) > 1 else parts[0]
        perm = torch.randperm(buffer.shape[0], generator=generator).to(buffer.device)
        return buffer[perm]

    def _emit(self, rows: Tensor, final: bool) -> Iterator[Tensor]:
        for start in range(0, rows.shape[0], self.batch_size):
            batch = rows[start : start + self.batch_size]
            if batch.shape[0] < self.batch_size and final and self.drop_last:
                return
            yield batch
