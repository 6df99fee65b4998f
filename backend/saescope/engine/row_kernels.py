"""Compiled (numba) CPU kernels behind `top_features.summarise_rows`: per-row totals, firing counts
and the top-k selection over lanes.

Owns `row_totals_and_counts` and `top_k_from_lanes`, plain loops over float32 NumPy arrays that numba
compiles to machine code on first use (about 0.8 s; `compile_kernels` does it ahead, when the server
loads its engine, so no request pays it). A live request summarises a [128, d_sae] matrix right after
the model forward. With torch ops that took 0.40-0.53 ms at d_sae 2048 on the 2-core Intel VM (a dozen
ops: two `topk` calls at ~0.07 ms each, a sum, a comparison and a second sum, gathers), with these
kernels 0.12-0.14 ms (the lane maxima still come from one torch `amax`). Both release the GIL while
they run. Nothing is written to disk (no numba cache): the server stays read-only.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

# numba compiles each kernel on its first call (no signature given); importing numba costs ~0.2 s


def compile_kernels() -> None:
    """Compile both kernels now (a tiny call each), so the first live request does not wait."""
    f = np.zeros((1, 4), np.float32)
    row_totals_and_counts(f)
    top_k_from_lanes(f, f.reshape(1, 2, 2).max(axis=1), 1)


def row_totals_and_counts(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum, number of entries > 0) of each row of the C-contiguous float32 matrix f [R, S]."""
    totals = np.empty(f.shape[0], np.float32)
    counts = np.empty(f.shape[0], np.int64)
    _row_totals_and_counts(f, totals, counts)
    return totals, counts


def top_k_from_lanes(f: np.ndarray, lane_max: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, columns) [R, k] of each row's k largest entries of f [R, S], largest first, given
    `lane_max` [R, W]: the maxima of the W strided lanes (lane w holds columns w, w + W, w + 2W, ...;
    S = G * W, W >= k). Picks the k lanes with the largest maxima, then the k largest of their G * k
    entries: every entry among a row's k largest sits in a lane whose maximum is at least the k-th
    largest value, and at most k - 1 lanes have a larger maximum, so those lanes hold k entries with
    the top-k values (ties included). Rows holding NaN are not ranked as torch.topk ranks them (NaN
    first); the columns picked are distinct in every row all the same."""
    values = np.empty((f.shape[0], k), np.float32)
    columns = np.empty((f.shape[0], k), np.int64)
    _top_k_from_lanes(f, lane_max, k, values, columns)
    return values, columns


# reassociation lets LLVM vectorise the sum; no `nnan`/`ninf`: NaN and inf keep their meaning
@numba.njit(nogil=True, boundscheck=False, fastmath={"reassoc", "nsz", "contract"})
def _row_totals_and_counts(f: Any, totals: Any, counts: Any) -> None:  # pragma: no cover - compiled
    rows, width = f.shape
    for r in range(rows):
        total = np.float32(0.0)
        count = 0
        for j in range(width):
            v = f[r, j]
            total += v
            count += v > 0
        totals[r] = total
        counts[r] = count


@numba.njit(nogil=True, boundscheck=False)
def _insert(values: Any, slots: Any, last: int, v: float, slot: int) -> None:  # pragma: no cover - compiled
    """Put (v, slot) into the descending list values[:last + 1] / slots, whose entry `last` is
    dropped (or not filled yet)."""
    p = last
    while p > 0 and values[p - 1] < v:
        values[p] = values[p - 1]
        slots[p] = slots[p - 1]
        p -= 1
    values[p] = v
    slots[p] = slot


@numba.njit(nogil=True, boundscheck=False)
def _top_k_from_lanes(f: Any, lane_max: Any, k: int, values: Any, columns: Any) -> None:  # pragma: no cover
    """The first k lanes, and the first k candidates, enter unconditionally, so the lanes and the
    columns picked are distinct whatever the values (all -inf, NaN)."""
    rows, width = f.shape
    n_lanes = lane_max.shape[1]
    groups = width // n_lanes
    lanes = np.empty(k, np.int64)
    lane_values = np.empty(k, np.float32)
    for r in range(rows):
        # the k lanes with the largest maxima
        for w in range(k):
            _insert(lane_values, lanes, w, lane_max[r, w], w)
        threshold = lane_values[k - 1]
        for w in range(k, n_lanes):
            v = lane_max[r, w]
            if v > threshold:
                _insert(lane_values, lanes, k - 1, v, w)
                threshold = lane_values[k - 1]
        # the k largest of those lanes' entries
        row_values = values[r]
        row_columns = columns[r]
        seen = 0
        for q in range(k):
            w = lanes[q]
            for g in range(groups):
                column = g * n_lanes + w
                v = f[r, column]
                if seen < k:
                    _insert(row_values, row_columns, seen, v, column)
                    seen += 1
                    if seen == k:
                        threshold = row_values[k - 1]
                elif v > threshold:
                    _insert(row_values, row_columns, k - 1, v, column)
                    threshold = row_values[k - 1]
