"""Decoder-direction geometry: nearest neighbours, cross-dictionary matches (MCS) and UMAP layouts.

Owns cosine similarities between decoder rows `W_dec [d_sae, d_in]`: top-k neighbours within a
dictionary (chunked matmul, self excluded), each feature's best match in another dictionary of the
same hook point (its max cosine similarity, "MCS"), and a 2-D UMAP (metric cosine by default, fixed
random_state) that co-embeds the chosen dictionaries of one hook point in one plane, leaving out the
rows a mask excludes (dead features: their decoder rows are still the random init and would fill the
plane with noise). Tiny inputs fall back gracefully (fewer neighbours; PCA for fewer than 4 points).
Arrays in, arrays out.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def unit_rows(w: Tensor) -> Tensor:
    """Rows scaled to unit norm (zero rows stay zero), float32."""
    w = w.detach().float()
    return w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)


@dataclass
class Neighbours:
    index: np.ndarray  # [n, k] int64
    cosine: np.ndarray  # [n, k] float32


def nearest_neighbours(w_dec: Tensor, k: int = 10, chunk: int = 2048) -> Neighbours:
    """Top-k decoder cosine neighbours of every feature, excluding itself."""
    u = unit_rows(w_dec)
    n = u.shape[0]
    k = min(k, n - 1)
    idx = np.zeros((n, max(k, 0)), np.int64)
    cos = np.zeros((n, max(k, 0)), np.float32)
    if k <= 0:
        return Neighbours(idx, cos)
    with torch.no_grad():
        for lo in range(0, n, chunk):
            sim = u[lo : lo + chunk] @ u.T  # [c, n]
            rows = torch.arange(sim.shape[0], device=sim.device)
            sim[rows, rows + lo] = -float("inf")
            v, i = torch.topk(sim, k, dim=1)
            idx[lo : lo + chunk] = i.cpu().numpy()
            cos[lo : lo + chunk] = v.cpu().numpy()
    return Neighbours(idx, cos)


def best_matches(w_a: Tensor, w_b: Tensor, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `w_a`, the index and cosine of the most similar row of `w_b` (MCS)."""
    ua, ub = unit_rows(w_a), unit_rows(w_b).to(w_a.device)
    n = ua.shape[0]
    idx = np.zeros(n, np.int64)
    cos = np.zeros(n, np.float32)
    with torch.no_grad():
        for lo in range(0, n, chunk):
            v, i = (ua[lo : lo + chunk] @ ub.T).max(dim=1)
            idx[lo : lo + chunk] = i.cpu().numpy()
            cos[lo : lo + chunk] = v.cpu().numpy()
    return idx, cos


def umap_layout(
    decoders: Sequence[Tensor], seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
    metric: str = "cosine",
) -> list[np.ndarray]:
    """2-D coordinates `[d_sae_i, 2]` for each decoder, all embedded together."""
    x = torch.cat([unit_rows(w).cpu() for w in decoders]).numpy().astype(np.float32)
    n = x.shape[0]
    if n == 0:
        return [np.zeros((0, 2), np.float32) for _ in decoders]
    if n < 4:
        xc = x - x.mean(0, keepdims=True)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        proj = xc @ vt[:2].T if vt.shape[0] >= 2 else np.concatenate([xc @ vt[:1].T, np.zeros((n, 1))], 1)
        coords = np.zeros((n, 2), np.float32)
        coords[:, : proj.shape[1]] = proj
    else:
        import umap  # heavy import (numba); only when needed

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reducer = umap.UMAP(
                n_components=2,
                n_neighbors=max(2, min(n_neighbors, n - 1)),
                min_dist=min_dist,
                metric=metric,
                random_state=seed,
                init="spectral" if n > 16 else "random",
            )
            coords = reducer.fit_transform(x).astype(np.float32)
    out, lo = [], 0
    for w in decoders:
        out.append(coords[lo : lo + w.shape[0]])
        lo += w.shape[0]
    return out


def masked_umap_layout(
    decoders: Sequence[Tensor], keep: Sequence[np.ndarray | None], seed: int = 0, n_neighbors: int = 15,
    min_dist: float = 0.1, metric: str = "cosine",
) -> list[np.ndarray]:
    """Like `umap_layout`, embedding only the rows where `keep[i]` (bool `[d_sae_i]`; None keeps all);
    the rows left out get NaN coordinates."""
    masks = [np.ones(w.shape[0], bool) if m is None else np.asarray(m, bool) for w, m in zip(decoders, keep)]
    kept = [w[torch.from_numpy(m).to(w.device)] for w, m in zip(decoders, masks)]
    coords = umap_layout(kept, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric)
    out = []
    for m, c in zip(masks, coords):
        full = np.full((m.shape[0], 2), np.nan, np.float32)
        full[m] = c
        out.append(full)
    return out
