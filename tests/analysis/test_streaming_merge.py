"""FeatureStreams fed disjoint batches merge into exactly the stream fed every batch (what the ranks
of a distributed precompute rely on), ties of value included."""

from __future__ import annotations

import numpy as np
import torch

from saescope.analysis.precompute import context_keys
from saescope.analysis.streaming import FeatureStream, FeatureStreamResult

SETTINGS = dict(top_k=5, n_intervals=4, examples_per_interval=3, n_random=4, histogram_bins=10)


def _acts(n: int = 48, n_ctx: int = 6, d: int = 10, seed: int = 0) -> torch.Tensor:
    """Activations rounded to quarters (many ties of value), sparse, with a scale that grows along
    the stream (rescaling happens at different times in each part) and a dead feature."""
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(n, n_ctx, d, generator=g).abs() * torch.linspace(0.5, 6.0, d)
    acts[torch.rand(n, n_ctx, d, generator=g) < 0.6] = 0.0
    acts *= torch.linspace(0.1, 1.0, n)[:, None, None] ** 2
    acts = (acts * 4).round() / 4
    acts[:, :, 2] = 0.0
    return acts


def _stream(acts: torch.Tensor, batches: list[int], groups: np.ndarray, keys: np.ndarray, batch: int) -> FeatureStream:
    n, _, d = acts.shape
    s = FeatureStream(d, seed=1, **SETTINGS)
    for b in batches:
        lo, hi = b * batch, min(n, (b + 1) * batch)
        s.update(acts[lo:hi], torch.arange(lo, hi), torch.as_tensor(groups[lo:hi]), torch.as_tensor(keys[lo:hi]))
    return s


def _assert_same(a: FeatureStreamResult, b: FeatureStreamResult) -> None:
    assert a.n_tokens == b.n_tokens
    for name in ("fire_count", "density", "max_activation", "hist_edges", "hist_counts", "interval_edges",
                 "interval_share"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    torch.testing.assert_close(a.mean_activation, b.mean_activation, rtol=1e-12, atol=0)
    for name in ("top", "intervals", "random"):
        sa, sb = getattr(a, name), getattr(b, name)
        assert torch.equal(sa.ctx, sb.ctx), name
        assert torch.equal(sa.value, sb.value), name


def _merged(acts: torch.Tensor, n_batches: int, world: int, groups: np.ndarray, keys: np.ndarray,
            batch: int) -> FeatureStreamResult:
    parts = [_stream(acts, [b for b in range(n_batches) if b % world == r], groups, keys, batch) for r in range(world)]
    for other in parts[1:]:
        parts[0].merge_state(other.state_dict())
    return parts[0].result()


def test_streams_of_two_and_three_ranks_merge_into_the_one_stream_result() -> None:
    acts = _acts()
    n, batch = acts.shape[0], 4
    n_batches = n // batch
    groups, keys = np.arange(n), context_keys(n, 0)
    one = _stream(acts, list(range(n_batches)), groups, keys, batch).result()
    for world in (2, 3):
        _assert_same(one, _merged(acts, n_batches, world, groups, keys, batch))


def test_merge_keeps_one_context_per_group_across_ranks() -> None:
    acts = _acts(seed=4)
    n, batch = acts.shape[0], 4
    groups, keys = np.arange(n) // 3, context_keys(n, 2)  # three consecutive contexts share a group
    one = _stream(acts, list(range(n // batch)), groups, keys, batch).result()
    merged = _merged(acts, n // batch, 2, groups, keys, batch)
    _assert_same(one, merged)
    for f in range(acts.shape[2]):
        chosen = [int(c) for c in merged.top.ctx[f] if c >= 0]
        assert len({int(groups[c]) for c in chosen}) == len(chosen)


def test_top_k_ties_go_to_the_lower_context_whatever_the_batch_order() -> None:
    acts = torch.zeros(8, 2, 1)
    acts[:, 1, 0] = 1.0  # every context ties
    groups, keys = np.arange(8), context_keys(8, 0)
    forward = _stream(acts, [0, 1, 2, 3], groups, keys, 2).result()
    backward = _stream(acts, [3, 2, 1, 0], groups, keys, 2).result()
    assert forward.top.ctx[0].tolist() == [0, 1, 2, 3, 4]
    assert backward.top.ctx[0].tolist() == [0, 1, 2, 3, 4]
