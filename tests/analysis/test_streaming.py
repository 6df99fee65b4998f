"""The one-pass FeatureStream equals brute-force computations on small random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saescope.analysis.precompute import context_groups, context_keys
from saescope.analysis.streaming import EMPTY, FeatureStream


def _data(n=40, n_ctx=7, d=12, seed=0, sparsity=0.6):
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(n, n_ctx, d, generator=g).abs() * torch.linspace(0.1, 10.0, d)
    acts[torch.rand(n, n_ctx, d, generator=g) < sparsity] = 0.0
    # scale grows over the stream to exercise rescaling: later contexts reach higher
    acts *= torch.linspace(0.05, 1.0, n)[:, None, None] ** 2
    acts[:, :, 3] = 0.0  # a dead feature
    return acts


def _run(acts, groups, keys, batch=5, **kw):
    n, _, d = acts.shape
    s = FeatureStream(d, **kw)
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        s.update(acts[lo:hi], torch.arange(lo, hi), torch.as_tensor(groups[lo:hi]), torch.as_tensor(keys[lo:hi]))
    return s.result()


def test_stream_matches_brute_force_counts_histogram_and_top_k():
    acts = _data()
    n, n_ctx, d = acts.shape
    groups = np.arange(n)
    keys = context_keys(n, 0)
    r = _run(acts, groups, keys, top_k=6, n_intervals=4, examples_per_interval=3, n_random=4, histogram_bins=10)
    flat = acts.reshape(-1, d).double().numpy()
    fire = flat > 0
    assert r.n_tokens == n * n_ctx
    assert torch.equal(r.fire_count, torch.as_tensor(fire.sum(0)))
    np.testing.assert_allclose(r.density.numpy(), fire.mean(0))
    np.testing.assert_allclose(r.max_activation.numpy(), flat.max(0), rtol=1e-6)
    mean = np.where(fire.any(0), (flat * fire).sum(0) / np.maximum(fire.sum(0), 1), 0.0)
    np.testing.assert_allclose(r.mean_activation.numpy(), mean, rtol=1e-9)
    cmax = acts.amax(1).numpy()  # [n, d]
    for f in range(d):
        v = flat[fire[:, f], f]
        if len(v) == 0:
            assert r.fire_count[f] == 0 and r.hist_counts[f].sum() == 0
            assert (r.top.ctx[f] == EMPTY).all()
            continue
        edges = r.hist_edges[f].numpy()
        assert len(edges) == 11 and edges[0] == 0 and edges[-1] > v.max() and edges[-2] <= v.max() * 1.000001
        # covers the max with at most 1/9 of the range empty above it
        assert edges[-1] <= v.max() * (16 / 9) * 1.0001 + 1e-12
        brute = np.bincount(np.searchsorted(edges, v, side="right") - 1, minlength=10)
        np.testing.assert_array_equal(r.hist_counts[f].numpy(), brute)
        expect = np.argsort(-cmax[:, f], kind="stable")[:6]
        expect = [c for c in expect if cmax[c, f] > 0]
        got = [int(c) for c in r.top.ctx[f] if c >= 0]
        assert got == expect
        np.testing.assert_allclose(r.top.value[f][: len(got)].numpy(), cmax[expect, f])
        # interval shares and samples
        iedges = r.interval_edges[f].numpy()
        pos = cmax[:, f][cmax[:, f] > 0]
        in_int = np.searchsorted(iedges, pos, side="right") - 1
        np.testing.assert_allclose(r.interval_share[f].numpy(), np.bincount(in_int, minlength=4) / len(pos))
        for i in range(4):
            members = {c for c in range(n) if iedges[i] <= cmax[c, f] < iedges[i + 1] and cmax[c, f] > 0}
            got_i = [int(c) for c in r.intervals.ctx[f, i] if c >= 0]
            assert len(got_i) == min(3, len(members)) and set(got_i) <= members
        rnd = [int(c) for c in r.random.ctx[f] if c >= 0]
        firing_ctx = {c for c in range(n) if cmax[c, f] > 0}
        assert len(rnd) == min(4, len(firing_ctx)) and set(rnd) <= firing_ctx


def test_interval_samples_are_the_smallest_keys_so_batching_does_not_matter():
    acts = _data(seed=3)
    n = acts.shape[0]
    keys = context_keys(n, 1)
    a = _run(acts, np.arange(n), keys, batch=3, n_intervals=3, examples_per_interval=2, n_random=3)
    b = _run(acts, np.arange(n), keys, batch=40, n_intervals=3, examples_per_interval=2, n_random=3)
    assert torch.equal(a.intervals.ctx, b.intervals.ctx)
    assert torch.equal(a.random.ctx, b.random.ctx)
    assert torch.equal(a.top.ctx, b.top.ctx)
    assert torch.equal(a.hist_counts, b.hist_counts)


def test_top_k_keeps_one_window_per_document_and_drops_duplicate_windows():
    acts = _data(n=30, seed=5)
    n, _, d = acts.shape
    doc_ids = [f"doc{i // 4}" for i in range(n)]  # 4 consecutive windows per document
    groups = context_groups(np.arange(n * 2).reshape(n, 2), doc_ids, one_window_per_document=True)
    r = _run(acts, groups, context_keys(n, 0), batch=7, top_k=5)
    cmax = acts.amax(1).numpy()
    for f in range(d):
        got = [int(c) for c in r.top.ctx[f] if c >= 0]
        assert len({doc_ids[c] for c in got}) == len(got)
        best_per_doc = {}
        for c in range(n):
            if cmax[c, f] > 0 and cmax[c, f] > best_per_doc.get(doc_ids[c], (-1, 0))[1]:
                best_per_doc[doc_ids[c]] = (c, cmax[c, f])
        expect = [c for c, _ in sorted(best_per_doc.values(), key=lambda x: -x[1])][:5]
        assert got == expect
    # identical token windows count once
    tokens = np.array([[1, 2], [1, 2], [3, 4]])
    g = context_groups(tokens, ["a", "b", "c"], one_window_per_document=False)
    assert g[0] == g[1] != g[2]


def test_state_dict_round_trip_resumes_identically():
    acts = _data(seed=7)
    n, _, d = acts.shape
    keys = torch.as_tensor(context_keys(n, 0))
    groups = torch.arange(n)
    full = FeatureStream(d, top_k=4)
    half = FeatureStream(d, top_k=4)
    for lo in range(0, n, 10):
        full.update(acts[lo : lo + 10], torch.arange(lo, lo + 10), groups[lo : lo + 10], keys[lo : lo + 10])
        if lo < 20:
            half.update(acts[lo : lo + 10], torch.arange(lo, lo + 10), groups[lo : lo + 10], keys[lo : lo + 10])
    resumed = FeatureStream(d, top_k=4)
    resumed.load_state_dict(half.state_dict())
    for lo in range(20, n, 10):
        resumed.update(acts[lo : lo + 10], torch.arange(lo, lo + 10), groups[lo : lo + 10], keys[lo : lo + 10])
    a, b = full.result(), resumed.result()
    for name in ("fire_count", "hist_counts", "max_activation"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert torch.equal(a.top.ctx, b.top.ctx) and torch.equal(a.intervals.ctx, b.intervals.ctx)


def test_interval_and_random_samples_are_the_members_with_the_smallest_keys():
    acts = _data(seed=11)
    n, _, d = acts.shape
    keys = context_keys(n, 4)
    s = FeatureStream(d, n_intervals=3, examples_per_interval=2, n_random=3, seed=4)
    for lo in range(0, n, 6):
        hi = min(n, lo + 6)
        s.update(acts[lo:hi], torch.arange(lo, hi), torch.arange(lo, hi), torch.as_tensor(keys[lo:hi]))
    r = s.result()
    cmax = acts.amax(1).numpy()
    for f in range(d):
        firing = [c for c in range(n) if cmax[c, f] > 0]
        k_int = {c: (keys[c] + s.offset_interval[f].item()) % 1.0 for c in firing}
        k_rnd = {c: (keys[c] + s.offset_random[f].item()) % 1.0 for c in firing}
        assert [int(c) for c in r.random.ctx[f] if c >= 0] == sorted(firing, key=k_rnd.get)[:3]
        e = r.interval_edges[f].numpy()
        for i in range(3):
            members = [c for c in firing if e[i] <= cmax[c, f] < e[i + 1]]
            assert [int(c) for c in r.intervals.ctx[f, i] if c >= 0] == sorted(members, key=k_int.get)[:2]
