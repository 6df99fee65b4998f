"""Planted-dictionary data for checking that SAE training recovers known features.

Owns a synthetic generator: `n_features` random unit directions in R^d_in, each active on a token
with a small probability, with exponentially distributed magnitudes; activations are the sum of the
active directions (optionally plus noise). Also `recovery`: the fraction of planted directions that
some learned decoder row matches at cosine > a threshold. Public: the tests, the benchmarks and
users checking a training setup on data with a known answer use it; it knows nothing about models
or files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PlantedDictionary:
    """`directions [n_features, d_in]` unit rows; `p_active` per-feature firing probability."""

    directions: Tensor
    p_active: float
    mean_magnitude: float = 1.0
    noise: float = 0.0
    offset: Tensor | None = None  # [d_in] constant added to every activation

    @classmethod
    def random(
        cls,
        n_features: int,
        d_in: int,
        p_active: float,
        seed: int = 0,
        noise: float = 0.0,
        offset_norm: float = 0.0,
    ) -> "PlantedDictionary":
        g = torch.Generator().manual_seed(seed)
        dirs = torch.randn(n_features, d_in, generator=g)
        dirs /= dirs.norm(dim=1, keepdim=True)
        offset = None
        if offset_norm > 0:
            offset = torch.randn(d_in, generator=g)
            offset *= offset_norm / offset.norm()
        return cls(dirs, p_active, noise=noise, offset=offset)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """[n, d_in] activations."""
        n_feat = self.directions.shape[0]
        active = torch.rand(n, n_feat, generator=generator) < self.p_active
        idx = active.nonzero()  # [nnz, 2]
        mags = torch.empty(idx.shape[0]).exponential_(1.0 / self.mean_magnitude, generator=generator)
        x = torch.zeros(n, self.directions.shape[1])
        x.index_add_(0, idx[:, 0], self.directions[idx[:, 1]] * mags[:, None])
        if self.noise > 0:
            x += self.noise * torch.randn(n, self.directions.shape[1], generator=generator)
        if self.offset is not None:
            x += self.offset
        return x

    def batches(self, tokens: int, batch: int = 4096, seed: int = 1) -> Iterator[Tensor]:
        g = torch.Generator().manual_seed(seed)
        done = 0
        while done < tokens:
            n = min(batch, tokens - done)
            yield self.sample(n, g)
            done += n


def max_cosines(planted: Tensor, learned: Tensor) -> Tensor:
    """[n_planted] max cosine similarity of each planted direction with any learned row."""
    a = planted / planted.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = learned / learned.norm(dim=1, keepdim=True).clamp_min(1e-12)
    best = torch.full((a.shape[0],), -1.0)
    for i in range(0, b.shape[0], 4096):
        best = torch.maximum(best, (a @ b[i : i + 4096].t()).max(1).values)
    return best


def recovery(planted: Tensor, learned: Tensor, threshold: float = 0.9) -> float:
    """Fraction of planted directions matched by a learned decoder row at cosine > threshold."""
    return float((max_cosines(planted, learned) > threshold).float().mean())
