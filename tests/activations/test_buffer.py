"""ShufflingBuffer: every row once, shuffled, deterministic per seed."""

from __future__ import annotations

import pytest
import torch

from saescope.activations.buffer import ShufflingBuffer
from saescope.errors import ConfigError


def _source(n_chunks: int = 10, rows: int = 7):
    return [torch.arange(i * rows, (i + 1) * rows, dtype=torch.float32).unsqueeze(1).repeat(1, 3) for i in range(n_chunks)]


def test_buffer_yields_every_row_exactly_once_in_full_batches():
    batches = list(ShufflingBuffer(_source(), batch_size=8, capacity_batches=4, seed=0))
    assert all(b.shape[0] == 8 for b in batches[:-1])
    values = torch.cat(batches)[:, 0]
    assert sorted(values.tolist()) == list(range(70))


def test_buffer_shuffles_and_is_deterministic_per_seed():
    a = torch.cat(list(ShufflingBuffer(_source(), 8, 4, seed=1)))
    b = torch.cat(list(ShufflingBuffer(_source(), 8, 4, seed=1)))
    c = torch.cat(list(ShufflingBuffer(_source(), 8, 4, seed=2)))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[:, 0], torch.arange(70, dtype=torch.float32))


def test_buffer_drop_last_drops_the_short_batch():
    batches = list(ShufflingBuffer(_source(), 8, 4, seed=0, drop_last=True))
    assert len(batches) == 70 // 8 and all(b.shape[0] == 8 for b in batches)


def test_buffer_rejects_tiny_capacity():
    with pytest.raises(ConfigError):
        ShufflingBuffer(_source(), 8, capacity_batches=1)
