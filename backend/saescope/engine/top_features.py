"""Per-token summaries of feature activations for live inference: top-k, firing counts and totals.

Owns `RowSummaries`, `summarise_rows` and `top_k_rows`, the engine's one top-k routine for serving:
torch ops on the activations' own device (CPU or GPU alike), copied to the CPU once as NumPy arrays.
A live request summarises a [pos, d_sae] matrix of tens of thousands of columns right after the
forward, so each step is one vectorised pass over it (a lane maximum, a sum, a comparison) and the
selection itself runs on small matrices. Training keeps its own selection (in `dictionaries/`);
nothing here knows about HTTP or JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class RowSummaries:
    """Per row (token) of an activation matrix: its k largest activations, largest first, and their
    columns (`values`, `indices`: [..., k]), the sum of all its activations (`totals`) and how many are
    > 0 (`l0`: [...]), as NumPy arrays."""

    values: np.ndarray
    indices: np.ndarray
    totals: np.ndarray
    l0: np.ndarray

    def sequence(self, b: int, length: int) -> RowSummaries:
        """The first `length` rows of sequence `b` of [batch, pos, ...] summaries (views)."""
        return RowSummaries(self.values[b, :length], self.indices[b, :length], self.totals[b, :length], self.l0[b, :length])


LANE_GROUP = 16  # columns per lane: lane w holds columns w, w + S/16, w + 2S/16, ...


def summarise_rows(f: Tensor, top_k: int) -> RowSummaries:
    """`RowSummaries` of f [batch, pos, d_sae] on any device and dtype (the arrays are on the CPU).

    Totals sum every activation (baselines such as PCA and neurons can be negative); the firing count
    goes through a comparison written as floats, whose sum vectorises where a bool reduction does not."""
    batch, width, d_sae = f.shape
    rows = f.reshape(batch * width, d_sae)
    k = min(top_k, d_sae)
    values, indices = top_k_rows(rows, k)
    totals = rows.sum(dim=-1)
    l0 = torch.gt(rows, 0, out=torch.empty_like(rows)).sum(dim=-1).long()
    arrays = [t.cpu().numpy() for t in (values, indices, totals, l0)]
    return RowSummaries(*(a.reshape(batch, width, *a.shape[1:]) for a in arrays))


def top_k_rows(f: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(values, columns) [R, k] of each row's k largest entries of f [R, S], largest first: the values
    of `f.topk(k, dim=1)`, at distinct columns (among equal values the columns may differ).

    When S splits into LANE_GROUP x W strided lanes with W >= 2k: one pass takes the W lane maxima of
    each row (the element-wise max of the G contiguous slices of f viewed as [R, G, W]), the k lanes
    with the largest maxima are chosen, and the top-k of their G * k entries is the answer. Every entry
    among a row's k largest sits in a lane whose maximum is at least the k-th largest value, and at
    most k - 1 lanes have a larger maximum, so the chosen lanes hold k entries with the top-k values
    (ties included). Otherwise it is `torch.topk` over the whole row."""
    R, S = f.shape
    G = LANE_GROUP
    if S % G or S // G < 2 * k:
        return f.topk(k, dim=1)
    W = S // G
    _, lanes = f.reshape(R, G, W).amax(dim=1).topk(k, dim=1, sorted=False)  # [R, k]
    offsets = torch.arange(0, S, W, device=f.device).view(1, G, 1)  # column of each slice's lane 0
    candidates = (lanes.unsqueeze(1) + offsets).view(R, G * k)  # columns g * W + lanes[j]
    values, local = f.gather(1, candidates).topk(k, dim=1)
    return values, candidates.gather(1, local)
