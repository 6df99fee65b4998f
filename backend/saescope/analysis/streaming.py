"""One-pass, bounded-memory statistics of every feature of one dictionary (`FeatureStream`).

Owns the streaming accumulator that the precompute feeds with feature activations
`acts [batch, n_ctx, d_sae]` batch after batch: firing counts and sums (density, mean), maxima, an
exact activation histogram, top-k contexts (optionally one window per document, duplicates
removed), uniform samples of contexts from activation intervals, and uniform random activating
contexts. All updates are vectorised over features (torch ops over `[tokens, d_sae]`); nothing loops
over features in Python. Memory is O(d_sae * (k + intervals * samples + bins)), independent of the
number of tokens. It knows nothing about models, corpora or storage; the state round-trips through
`state_dict()` so an interrupted precompute can resume.

Design (why it is exact in one pass):
- Scale. Each feature keeps a power-of-two scale `S = 2**e > max activation seen`. Histogram bins
  are `H = histogram_bins * 16` equal-width "fine" bins over `[0, S)`. When a batch raises the max past
  `S`, `e` grows by `s` and fine bin `i` folds into bin `i >> s` (bins of a doubled range are unions
  of pairs of old bins), so counts stay exact without knowing the max in advance.
- Histogram shown. At the end the range `[0, t*S/16)` with the smallest `t` (9..16) that covers the max
  is cut into `histogram_bins` bins of `t` fine bins each: equal-width bins covering the max with at most
  1/9 empty range above it, and counts exactly those of `np.histogram` on those edges.
- Intervals. The same trick with `n_intervals * 8` fine intervals (shown range t/8 of S, t in 5..8) over the per-context maximum. Each
  fine interval keeps a bottom-r reservoir by a fixed pseudo-random key per (feature, context)
  (priority sampling): merging fine intervals (on rescale, and into the `n_intervals` shown intervals)
  keeps the r smallest keys of the union, which is a uniform sample of the union. Keys come from the
  seed, so results do not depend on batch order or on resuming.
- Random activating contexts: one such reservoir per feature over contexts where the feature fires.
- Top-k: candidates (per-context maxima) at or above a feature's current k-th value are merged with
  its buffer by one batched sort; duplicates of a group (same document when one window per document,
  else identical token windows) are dropped keeping the best. Ties of value go to the lower context
  index, so the top-k is a function of the set of contexts seen, not of their order.
- Merging (`merge_state`): two streams fed disjoint contexts (the ranks of a distributed precompute)
  combine into exactly the stream fed all of them: both are brought to the larger scale (the same
  exact folding), counts add, reservoirs keep the r smallest keys of the union and top-k buffers
  merge as candidates. Only the float64 activation sums may differ in their last bits (summation order).
Activations <= 0 count as "not firing" (ReLU/TopK/JumpReLU SAEs; baselines with negative values are
ranked by their positive side only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

FINE = 16  # histogram: fine bins per shown bin at full range; shown range is t/FINE of the scale, t in 9..16
FINE_INT = 8  # intervals: the same with t in 5..8 (fewer reservoir cells)
MIN_EXP = -60  # exponent of a feature that has not fired yet (its fine bins are all empty)
EMPTY = -1  # context id of an empty slot


@dataclass
class Samples:
    """Chosen contexts per feature: `ctx [d_sae, n]` (EMPTY where none), `value [d_sae, n]` (their max)."""

    ctx: Tensor
    value: Tensor


@dataclass
class FeatureStreamResult:
    """Final per-feature statistics of one dictionary (all tensors on CPU, first dim d_sae)."""

    n_tokens: int
    fire_count: Tensor  # [d_sae] int64, tokens with activation > 0
    density: Tensor  # [d_sae] float64
    max_activation: Tensor  # [d_sae] float32
    mean_activation: Tensor  # [d_sae] float64, mean over firing tokens (0 when dead)
    hist_edges: Tensor  # [d_sae, bins + 1] float64 (all zero for dead features)
    hist_counts: Tensor  # [d_sae, bins] int64
    top: Samples  # [d_sae, k], best first
    interval_edges: Tensor  # [d_sae, n_intervals + 1] float64, ascending
    interval_share: Tensor  # [d_sae, n_intervals] float64, share of firing contexts in each interval
    intervals: Samples  # [d_sae, n_intervals, r] (interval 0 = lowest)
    random: Samples  # [d_sae, n_random]


def _frexp_exponent(x: Tensor) -> Tensor:
    """`e` with `2**(e-1) <= x < 2**e` for x > 0 (int64)."""
    _, exponent = torch.frexp(x.float())
    return exponent.long()


def _pow2(e: Tensor) -> Tensor:
    return torch.pow(torch.tensor(2.0, dtype=torch.float64, device=e.device), e.double())


def _reservoir_insert(
    keys: Tensor, ctx: Tensor, vals: Tensor, cell: Tensor, c_key: Tensor, c_ctx: Tensor, c_val: Tensor
) -> None:
    """Keep, per cell, the r smallest keys among the stored items and the candidates (in place).

    `keys/ctx/vals [n_cells, r]` are sorted ascending by key (inf = empty); candidates are flat
    `[m]` arrays with `cell [m]` the cell index of each.
    """
    if cell.numel() == 0:
        return
    r = keys.shape[1]
    accept = c_key < keys[cell, r - 1]
    if not bool(accept.any()):
        return
    cell, c_key, c_ctx, c_val = cell[accept], c_key[accept], c_ctx[accept], c_val[accept]
    order = torch.argsort(cell, stable=True)
    cell, c_key, c_ctx, c_val = cell[order], c_key[order], c_ctx[order], c_val[order]
    cells, counts = torch.unique_consecutive(cell, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    slot = torch.arange(cell.numel(), device=cell.device) - torch.repeat_interleave(first, counts)
    row = torch.repeat_interleave(torch.arange(cells.numel(), device=cell.device), counts)
    width = int(counts.max())
    pad_k = torch.full((cells.numel(), width), float("inf"), dtype=keys.dtype, device=keys.device)
    pad_c = torch.full((cells.numel(), width), EMPTY, dtype=ctx.dtype, device=ctx.device)
    pad_v = torch.zeros((cells.numel(), width), dtype=vals.dtype, device=vals.device)
    pad_k[row, slot] = c_key
    pad_c[row, slot] = c_ctx
    pad_v[row, slot] = c_val
    all_k = torch.cat([keys[cells], pad_k], 1)
    all_c = torch.cat([ctx[cells], pad_c], 1)
    all_v = torch.cat([vals[cells], pad_v], 1)
    best_k, idx = torch.topk(all_k, r, dim=1, largest=False, sorted=True)
    keys[cells] = best_k
    ctx[cells] = all_c.gather(1, idx)
    vals[cells] = all_v.gather(1, idx)


class FeatureStream:
    """Streaming statistics of `d_sae` features. Call `update` per batch, then `result()`.

    `update(acts [b, n_ctx, d_sae], ctx_ids [b], groups [b], keys_u [b])`: `ctx_ids` are global context
    indices, `groups` dedupe ids for top-k (document or content), `keys_u` the context's uniform key.
    """

    def __init__(
        self,
        d_sae: int,
        top_k: int = 20,
        n_intervals: int = 10,
        examples_per_interval: int = 5,
        n_random: int = 5,
        histogram_bins: int = 50,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.d_sae = d_sae
        self.top_k = top_k
        self.n_intervals = n_intervals
        self.r = examples_per_interval
        self.n_random = n_random
        self.bins = histogram_bins
        self.seed = seed
        self.device = torch.device(device)
        d, dev = d_sae, self.device
        gen = torch.Generator().manual_seed(seed * 1_000_003 + d_sae)
        # per-feature key offsets: key(f, c) = frac(u_c + offset_f) is uniform and independent over c
        self.offset_interval = torch.rand(d, generator=gen, dtype=torch.float64).to(dev)
        self.offset_random = torch.rand(d, generator=gen, dtype=torch.float64).to(dev)
        self.n_tokens = 0
        self.fire_count = torch.zeros(d, dtype=torch.int64, device=dev)
        self.act_sum = torch.zeros(d, dtype=torch.float64, device=dev)
        self.act_max = torch.zeros(d, dtype=torch.float32, device=dev)
        self.exp = torch.full((d,), MIN_EXP, dtype=torch.int64, device=dev)
        self.n_hist = histogram_bins * FINE
        self.hist = torch.zeros(d, self.n_hist, dtype=torch.int64, device=dev)
        self.n_fine_int = n_intervals * FINE_INT
        self.int_count = torch.zeros(d, self.n_fine_int, dtype=torch.int64, device=dev)
        self.top_val = torch.zeros(d, top_k, dtype=torch.float32, device=dev)
        self.top_ctx = torch.full((d, top_k), EMPTY, dtype=torch.int64, device=dev)
        self.top_grp = torch.full((d, top_k), EMPTY, dtype=torch.int64, device=dev)
        r = max(self.r, 1)
        self.int_key = torch.full((d * self.n_fine_int, r), float("inf"), dtype=torch.float64, device=dev)
        self.int_ctx = torch.full((d * self.n_fine_int, r), EMPTY, dtype=torch.int64, device=dev)
        self.int_val = torch.zeros((d * self.n_fine_int, r), dtype=torch.float32, device=dev)
        nr = max(self.n_random, 1)
        self.rnd_key = torch.full((d, nr), float("inf"), dtype=torch.float64, device=dev)
        self.rnd_ctx = torch.full((d, nr), EMPTY, dtype=torch.int64, device=dev)
        self.rnd_val = torch.zeros((d, nr), dtype=torch.float32, device=dev)

    # ------------------------------------------------------------------ state
    _STATE = (
        "n_tokens fire_count act_sum act_max exp hist int_count top_val top_ctx top_grp "
        "int_key int_ctx int_val rnd_key rnd_ctx rnd_val"
    ).split()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (tensors moved to CPU)."""
        out: dict[str, Any] = {}
        for name in self._STATE:
            v = getattr(self, name)
            out[name] = v.detach().cpu().clone() if isinstance(v, Tensor) else v
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._STATE:
            v = state[name]
            setattr(self, name, v.to(self.device) if isinstance(v, Tensor) else v)

    # ------------------------------------------------------------------ update
    def update(
        self, acts: Tensor, ctx_ids: Tensor, groups: Tensor, keys_u: Tensor, n_tokens: int | None = None
    ) -> None:
        """Fold one batch of activations `acts [b, n_ctx, d_sae]` into the statistics.

        `n_tokens` is how many tokens the batch counts for density (default b * n_ctx; pass
        b * (n_ctx - 1) when position 0 is BOS and its activations were zeroed).
        """
        b, n_ctx, d = acts.shape
        dev = self.device
        acts = acts.to(dev)
        ctx_ids, groups, keys_u = ctx_ids.to(dev), groups.to(dev), keys_u.to(dev, torch.float64)
        flat = acts.reshape(b * n_ctx, d)
        cmax = acts.amax(dim=1)  # [b, d] per-context maximum
        bmax = cmax.amax(dim=0)  # [d]
        self._rescale(bmax)
        self.act_max = torch.maximum(self.act_max, bmax.float())

        # token-level: counts, sums, histogram (only over firing entries)
        nz = (flat > 0).nonzero()  # [m, 2] (token, feature)
        f_idx = nz[:, 1]
        vals = flat[nz[:, 0], f_idx].double()
        self.fire_count += torch.bincount(f_idx, minlength=d)
        self.act_sum += torch.bincount(f_idx, weights=vals, minlength=d)
        inv_scale = _pow2(-self.exp)  # [d] float64
        h_bin = torch.clamp((vals * inv_scale[f_idx] * self.n_hist).long(), max=self.n_hist - 1)
        flat_bin = f_idx * self.n_hist + h_bin
        self.hist.view(-1).index_add_(0, flat_bin, torch.ones_like(flat_bin))

        # context-level: intervals, random, top-k
        cnz = (cmax > 0).nonzero()  # [m, 2] (context-in-batch, feature)
        c_b, c_f = cnz[:, 0], cnz[:, 1]
        c_val = cmax[c_b, c_f].float()
        c_ctx = ctx_ids[c_b]
        q_bin = torch.clamp(
            (c_val.double() * inv_scale[c_f] * self.n_fine_int).long(), max=self.n_fine_int - 1
        )
        cell = c_f * self.n_fine_int + q_bin
        self.int_count.view(-1).index_add_(0, cell, torch.ones_like(cell))
        if self.r > 0:
            key = torch.frac(keys_u[c_b] + self.offset_interval[c_f])
            _reservoir_insert(self.int_key, self.int_ctx, self.int_val, cell, key, c_ctx, c_val)
        if self.n_random > 0:
            key = torch.frac(keys_u[c_b] + self.offset_random[c_f])
            _reservoir_insert(self.rnd_key, self.rnd_ctx, self.rnd_val, c_f, key, c_ctx, c_val)
        self._merge_top(cmax.T.float(), ctx_ids, groups)
        self.n_tokens += int(b * n_ctx if n_tokens is None else n_tokens)

    def _rescale(self, bmax: Tensor) -> None:
        """Grow the scale of features whose batch max reaches it, folding fine bins exactly."""
        self._raise_exponents(torch.where(bmax > 0, torch.maximum(self.exp, _frexp_exponent(bmax)), self.exp))

    def _raise_exponents(self, new_exp: Tensor) -> None:
        """Set the scale exponents to `new_exp [d] >= self.exp`, folding fine bins and reservoirs exactly."""
        shift = new_exp - self.exp
        rows = (shift > 0).nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        s = shift[rows]  # [n]
        was_empty = self.exp[rows] == MIN_EXP
        self.exp[rows] = new_exp[rows]
        rows = rows[~was_empty]  # never-fired features have nothing to fold
        s = s[~was_empty]
        if rows.numel() == 0:
            return
        for counts, n in ((self.hist, self.n_hist), (self.int_count, self.n_fine_int)):
            old = counts[rows]  # [n, bins]
            target = torch.arange(n, device=old.device)[None, :] >> s.clamp(max=62)[:, None]
            folded = torch.zeros_like(old)
            folded.scatter_add_(1, target, old)
            counts[rows] = folded
        if self.r > 0:
            nf, r = self.n_fine_int, self.int_key.shape[1]
            cells = (rows[:, None] * nf + torch.arange(nf, device=rows.device)[None, :]).reshape(-1)
            k, c, v = self.int_key[cells], self.int_ctx[cells], self.int_val[cells]  # [n*nf, r]
            self.int_key[cells] = float("inf")
            self.int_ctx[cells] = EMPTY
            self.int_val[cells] = 0.0
            fine = torch.arange(nf, device=rows.device).repeat(rows.numel())  # old fine index per cell
            new_fine = fine >> s.clamp(max=62).repeat_interleave(nf)
            new_cell = (rows.repeat_interleave(nf) * nf + new_fine)[:, None].expand(-1, r)
            keep = torch.isfinite(k)
            _reservoir_insert(
                self.int_key, self.int_ctx, self.int_val, new_cell[keep], k[keep], c[keep], v[keep]
            )

    def _merge_top(self, cand_val: Tensor, cand_ctx: Tensor, cand_grp: Tensor) -> None:
        """Merge candidates `cand_val [d, b]` into the top-k buffers, one entry per group.

        Only (feature, context) pairs above the feature's current k-th value are touched; they are
        padded into `[n_rows, w]` and merged with the `[n_rows, k]` buffers by one sort.
        """
        d, b = cand_val.shape
        self._merge_top_rows(cand_val, cand_ctx[None, :].expand(d, b), cand_grp[None, :].expand(d, b))

    def _merge_top_rows(self, cand_val: Tensor, cand_ctx: Tensor, cand_grp: Tensor) -> None:
        """Merge per-feature candidates `cand_val, cand_ctx, cand_grp [d, m]` into the top-k buffers.

        Ranked by value, ties by lower context index; a candidate equal to the k-th value is
        considered, so the result does not depend on the order candidates arrive in."""
        kth = self.top_val[:, -1]
        hit = ((cand_val >= kth[:, None]) & (cand_val > 0)).nonzero()  # [m, 2] (feature, column)
        if hit.numel() == 0:
            return
        f, j = hit[:, 0], hit[:, 1]  # sorted by feature (row-major nonzero)
        rows, counts = torch.unique_consecutive(f, return_counts=True)
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(f.numel(), device=f.device) - torch.repeat_interleave(first, counts)
        row = torch.repeat_interleave(torch.arange(rows.numel(), device=f.device), counts)
        n, w, k = rows.numel(), int(counts.max()), self.top_k
        pv = torch.zeros((n, w), dtype=self.top_val.dtype, device=f.device)
        pc = torch.full((n, w), EMPTY, dtype=torch.int64, device=f.device)
        pg = torch.full((n, w), EMPTY, dtype=torch.int64, device=f.device)
        pv[row, slot] = cand_val[f, j]
        pc[row, slot] = cand_ctx[f, j]
        pg[row, slot] = cand_grp[f, j]
        val = torch.cat([self.top_val[rows], pv], 1)  # [n, k+w]
        ctx = torch.cat([self.top_ctx[rows], pc], 1)
        grp = torch.cat([self.top_grp[rows], pg], 1)
        # rank by (value descending, context ascending; empty slots last): two stable sorts
        ctx_key = torch.where(ctx >= 0, ctx, torch.full_like(ctx, torch.iinfo(torch.int64).max))
        order = torch.argsort(ctx_key, dim=1, stable=True)
        val, ctx, grp = val.gather(1, order), ctx.gather(1, order), grp.gather(1, order)
        order = torch.argsort(val, dim=1, descending=True, stable=True)
        val, ctx, grp = val.gather(1, order), ctx.gather(1, order), grp.gather(1, order)
        m = val.shape[1]
        earlier = torch.ones(m, m, dtype=torch.bool, device=val.device).tril(-1)  # [j, j'] j' < j
        dup = ((grp[:, :, None] == grp[:, None, :]) & earlier[None]).any(dim=2) & (grp >= 0)
        val = torch.where(dup, torch.zeros_like(val), val)
        idx = torch.argsort(val, dim=1, descending=True, stable=True)[:, :k]  # duplicates sink, order kept
        best = val.gather(1, idx)
        new_ctx = ctx.gather(1, idx)
        new_grp = grp.gather(1, idx)
        empty = best <= 0
        self.top_val[rows] = best
        self.top_ctx[rows] = torch.where(empty, torch.full_like(new_ctx, EMPTY), new_ctx)
        self.top_grp[rows] = torch.where(empty, torch.full_like(new_grp, EMPTY), new_grp)

    # ------------------------------------------------------------------ merge
    def merge_state(self, state: dict[str, Any]) -> None:
        """Fold in the `state_dict()` of a stream with the same settings that saw other contexts:
        afterwards this stream holds what one stream fed both sets of contexts would hold."""
        other = FeatureStream(
            self.d_sae, self.top_k, self.n_intervals, self.r, self.n_random, self.bins, self.seed, self.device
        )
        other.load_state_dict(state)
        common = torch.maximum(self.exp, other.exp)
        self._raise_exponents(common)
        other._raise_exponents(common)
        self.n_tokens += other.n_tokens
        self.fire_count += other.fire_count
        self.act_sum += other.act_sum
        self.act_max = torch.maximum(self.act_max, other.act_max)
        self.hist += other.hist
        self.int_count += other.int_count
        for mine, theirs in (
            ((self.int_key, self.int_ctx, self.int_val), (other.int_key, other.int_ctx, other.int_val)),
            ((self.rnd_key, self.rnd_ctx, self.rnd_val), (other.rnd_key, other.rnd_ctx, other.rnd_val)),
        ):
            keep = torch.isfinite(theirs[0])  # [cells, r]
            cell = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)[keep]
            _reservoir_insert(*mine, cell, theirs[0][keep], theirs[1][keep], theirs[2][keep])
        self._merge_top_rows(other.top_val, other.top_ctx, other.top_grp)

    # ------------------------------------------------------------------ result
    def result(self) -> FeatureStreamResult:
        """Final statistics (CPU tensors); the stream can keep updating afterwards."""
        d = self.d_sae
        cpu = torch.device("cpu")
        fire = self.fire_count.to(cpu)
        amax = self.act_max.to(cpu)
        n_tok = max(self.n_tokens, 1)
        density = fire.double() / n_tok
        mean = torch.where(fire > 0, self.act_sum.to(cpu) / fire.clamp(min=1).double(), torch.zeros(d, dtype=torch.float64))
        exp = self.exp.to(cpu)
        scale = _pow2(exp)  # [d] float64
        alive = fire > 0
        # t in 9..16: shown range t/FINE * S covers the max strictly
        t = torch.where(alive, torch.floor(amax.double() / scale * FINE).long() + 1, torch.full((d,), FINE))
        t = t.clamp(1, FINE)
        ti = torch.where(alive, torch.floor(amax.double() / scale * FINE_INT).long() + 1, torch.full((d,), FINE_INT))
        ti = ti.clamp(1, FINE_INT)
        hist_counts, hist_edges = _coarsen(self.hist.to(cpu), t, self.bins, scale)
        int_counts, int_edges = _coarsen(self.int_count.to(cpu), ti, self.n_intervals, scale)
        hist_edges[~alive] = 0.0
        int_edges[~alive] = 0.0
        n_ctx_fire = int_counts.sum(1, keepdim=True).clamp(min=1)
        share = int_counts.double() / n_ctx_fire
        r = self.r
        if r > 0:
            nf = self.n_fine_int
            keys = self.int_key.to(cpu).view(d, nf, -1)
            ctxs = self.int_ctx.to(cpu).view(d, nf, -1)
            vals = self.int_val.to(cpu).view(d, nf, -1)
            # shown interval i = fine intervals [i*t, (i+1)*t)
            j = torch.arange(FINE_INT)
            fine = torch.arange(self.n_intervals)[None, :, None] * ti[:, None, None] + j[None, None, :]
            valid = j[None, None, :] < ti[:, None, None]
            fine = fine.clamp(max=nf - 1)  # [d, n_int, FINE_INT]
            idx = fine.reshape(d, -1)[:, :, None].expand(-1, -1, keys.shape[2])
            gk = keys.gather(1, idx).view(d, self.n_intervals, FINE_INT, -1)
            gk = torch.where(valid[..., None], gk, torch.full_like(gk, float("inf")))
            gc = ctxs.gather(1, idx).view(d, self.n_intervals, FINE_INT, -1)
            gv = vals.gather(1, idx).view(d, self.n_intervals, FINE_INT, -1)
            gk, gc, gv = (x.reshape(d, self.n_intervals, -1) for x in (gk, gc, gv))
            best, sel = torch.topk(gk, r, dim=2, largest=False, sorted=True)
            int_ctx = torch.where(torch.isfinite(best), gc.gather(2, sel), torch.full_like(sel, EMPTY))
            int_val = gv.gather(2, sel)
        else:
            int_ctx = torch.full((d, self.n_intervals, 0), EMPTY, dtype=torch.int64)
            int_val = torch.zeros((d, self.n_intervals, 0))
        if self.n_random > 0:
            rnd = Samples(self.rnd_ctx.to(cpu).clone(), self.rnd_val.to(cpu).clone())
        else:
            rnd = Samples(torch.full((d, 0), EMPTY, dtype=torch.int64), torch.zeros(d, 0))
        return FeatureStreamResult(
            n_tokens=self.n_tokens,
            fire_count=fire,
            density=density,
            max_activation=amax,
            mean_activation=mean,
            hist_edges=hist_edges,
            hist_counts=hist_counts,
            top=Samples(self.top_ctx.to(cpu).clone(), self.top_val.to(cpu).clone()),
            interval_edges=int_edges,
            interval_share=share,
            intervals=Samples(int_ctx, int_val),
            random=rnd,
        )


def _coarsen(fine_counts: Tensor, t: Tensor, n_out: int, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Sum runs of `t[f]` fine bins into `n_out` bins per feature; edges `[d, n_out+1]` float64."""
    d, n_fine = fine_counts.shape
    cs = torch.cat([torch.zeros(d, 1, dtype=fine_counts.dtype), fine_counts.cumsum(1)], 1)
    bounds = torch.arange(n_out + 1)[None, :] * t[:, None]  # [d, n_out+1] in fine units
    c = cs.gather(1, bounds.clamp(max=n_fine))
    counts = c[:, 1:] - c[:, :-1]
    edges = bounds.double() * scale[:, None] / n_fine
    return counts, edges
