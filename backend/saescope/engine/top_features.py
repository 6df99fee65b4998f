"""Per-token summaries of feature activations for live inference: top-k, firing counts and totals.

Owns `RowSummaries` and `summarise_rows`, the engine's one top-k routine for serving: plain torch ops
on the activations' own device (CPU or GPU alike), copied to the CPU once as NumPy arrays. Training
keeps its own selection (in `dictionaries/`); nothing here knows about HTTP or JSON.
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


def summarise_rows(f: Tensor, top_k: int) -> RowSummaries:
    """`RowSummaries` of f [batch, pos, d_sae] on any device and dtype (the arrays are on the CPU).

    The top values are `torch.topk`'s (distinct columns in every row; NaN ranks first, as torch
    ranks it); totals sum every activation (baselines such as PCA and neurons can be negative)."""
    k = min(top_k, f.shape[-1])
    values, indices = f.topk(k, dim=-1)  # [batch, pos, k], largest first
    totals = f.sum(dim=-1)
    l0 = torch.count_nonzero(f > 0, dim=-1)
    return RowSummaries(*(t.cpu().numpy() for t in (values, indices, totals, l0)))
