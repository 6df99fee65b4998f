"""The engine's per-token summaries (top-k, firing counts, totals) equal torch's on sparse, silent,
tied, dense, infinite and NaN rows, and the engine reads the firing entries among the top values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saescope.engine.engine import TopFeatures
from saescope.engine.top_features import LANE_GROUP, summarise_rows, top_k_rows


def _rows(kind: str, R: int = 64, S: int = 2048) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(R, S, generator=g)
    if kind == "sparse":  # a ReLU SAE: a few dozen firing features per token
        return torch.relu(x - 2.0)
    if kind == "silent":  # fewer firing than k: zeros tie for the remaining places
        out = torch.zeros(R, S)
        out[:, 7] = 1.0
        out[::2, 1500] = 3.0
        return out
    if kind == "ties":  # few distinct values, many ties across columns
        return torch.randint(0, 4, (R, S), generator=g).float()
    if kind == "extremes":  # overflowed activations and huge negatives
        x[:, 5] = float("inf")
        x[::3, 2000] = float("inf")
        x[:, 100:200] = -1e30
        return x
    return x  # dense with negatives (PCA / neuron baselines)


KINDS = ["sparse", "silent", "ties", "dense", "extremes"]


def _summary(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """(values, columns, totals, l0) of rows [R, S] through `summarise_rows`, as [R, ...] tensors."""
    s = summarise_rows(rows.unsqueeze(0), k)
    return tuple(torch.as_tensor(x[0]) for x in (s.values, s.indices, s.totals, s.l0))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 5, 50])
def test_summaries_give_torch_top_values_at_their_columns_counts_and_totals(kind, k):
    rows = _rows(kind)
    values, columns, totals, l0 = _summary(rows, k)
    assert torch.equal(values, rows.topk(k, dim=1).values)
    assert torch.equal(rows.gather(1, columns), values)  # each value sits at its column
    assert all(len(set(row)) == k for row in columns.tolist())  # no column twice
    assert torch.equal(l0.long(), (rows > 0).sum(dim=1))
    assert torch.allclose(totals.float(), rows.sum(dim=1), rtol=1e-5, atol=1e-3, equal_nan=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 5, 50])
def test_top_k_rows_gives_torch_values_in_order_at_their_columns(kind, k):
    f = _rows(kind)
    values, columns = top_k_rows(f, k)
    assert torch.equal(values, f.topk(k, dim=1).values)
    assert torch.equal(f.gather(1, columns), values)  # each value sits at its column
    assert all(len(set(row)) == k for row in columns.tolist())  # no column twice


def test_top_k_rows_takes_torch_topk_for_widths_without_enough_lanes():
    f = _rows("dense", S=LANE_GROUP * 3 + 1)
    assert torch.equal(top_k_rows(f, 4)[0], f.topk(4, dim=1).values)
    f = _rows("dense", S=LANE_GROUP * 4)
    assert torch.equal(top_k_rows(f, 3)[0], f.topk(3, dim=1).values)


@pytest.mark.parametrize("width,k", [(LANE_GROUP * 3 + 1, 5), (LANE_GROUP * 4, 5), (48, 48), (7, 1), (5, 9)])
def test_summaries_handle_any_width(width, k):
    rows = _rows("dense", R=9, S=width)
    values, columns, _, l0 = _summary(rows, k)
    want = rows.topk(min(k, width), dim=1).values
    assert torch.equal(values, want)
    assert torch.equal(rows.gather(1, columns), values)
    assert torch.equal(l0.long(), (rows > 0).sum(dim=1))


def test_counting_firing_entries_ignores_zeros_negatives_and_nan():
    f = torch.tensor([[0.0, 1.0, -2.0, 3.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 0.5, 0.5, float("nan")]])
    assert _summary(f, 2)[3].tolist() == [2, 0, 2]


@pytest.mark.parametrize("k", [1, 5, 50])
def test_summaries_pick_distinct_columns_whatever_the_values(k):
    rows = torch.full((4, 2048), float("-inf"))
    rows[1, 3::128] = 1.0  # sixteen equal finite values among -inf
    rows[2, 0] = float("nan")
    rows[3] = float("nan")
    values, columns, _, l0 = _summary(rows, k)
    assert all(len(set(row)) == k for row in columns.tolist())
    assert values[0].tolist() == [float("-inf")] * k  # as torch.topk
    assert values[1].tolist() == rows[1].topk(k).values.tolist()
    assert l0.tolist() == [0, 16, 0, 0]


def test_the_engine_reads_only_firing_entries_even_when_a_row_holds_nan():
    f = torch.zeros(1, 3, 8)
    f[0, 1, [2, 5]] = torch.tensor([2.0, 1.0])
    f[0, 2, [0, 4, 6]] = torch.tensor([float("nan"), 3.0, -1.0])
    top = TopFeatures.from_summaries(summarise_rows(f, 4).sequence(0, 3))
    assert top.indices == [[], [2, 5], [4]]
    assert top.values == [[], [2.0, 1.0], [3.0]]
    assert top.l0 == [0, 2, 1]


def test_summaries_keep_the_dtype_of_the_activations():
    f = _rows("sparse", R=6, S=64).view(2, 3, -1).double()
    summaries = summarise_rows(f, 5)
    rows = f.reshape(6, -1)
    assert summaries.values.dtype == np.float64
    assert summaries.values.reshape(6, 5).tolist() == rows.topk(5, dim=1).values.tolist()
    assert summaries.l0.reshape(6).tolist() == (rows > 0).sum(dim=1).tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_summarise_rows_counts_the_firing_entries_among_the_top_values(kind):
    f = _rows(kind, R=12).view(2, 6, -1)
    summaries = summarise_rows(f, 5)
    values, indices = summaries.values.tolist(), summaries.indices.tolist()
    totals, l0 = summaries.totals.tolist(), summaries.l0.tolist()
    n_pos = [[min(count, 5) for count in row] for row in l0]  # firing entries among the top values
    rows = f.reshape(12, -1)
    assert [v for b in values for v in b] == rows.topk(5, dim=1).values.tolist()
    assert [c for b in l0 for c in b] == (rows > 0).sum(dim=1).tolist()
    assert [n for b in n_pos for n in b] == [sum(v > 0 for v in row) for b in values for row in b]
    assert torch.allclose(torch.tensor(totals).view(-1), rows.sum(dim=1))
    assert [[f[b, p, i].item() for i in indices[b][p]] for b in range(2) for p in range(6)] == [
        row for b in values for row in b
    ]
    second = summaries.sequence(1, 4)  # one sequence's first rows, as the engine hands them out
    assert second.values.tolist() == values[1][:4] and second.l0.tolist() == l0[1][:4]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_summaries_on_a_gpu_equal_those_on_the_cpu():
    f = _rows("sparse").view(4, 16, -1)
    cpu, gpu = summarise_rows(f, 5), summarise_rows(f.cuda(), 5)
    assert np.array_equal(cpu.values, gpu.values) and np.array_equal(cpu.l0, gpu.l0)
