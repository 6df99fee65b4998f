"""Accelerated SAE training steps: hand-written forward and backward passes over sparse codes.

Owns the arithmetic that the architectures register as their `accelerated_step`: given a batch of
(normalised) activations and the current parameters, compute the losses and write the exact
gradients into `param.grad`, without autograd. Writing the backward by hand lets a step skip work
autograd would do: the gradient of `b_dec` through the encoder input is a mat-vec instead of a
[batch, d_in] matmul, and the sparse architectures (TopK, BatchTopK, and ReLU/JumpReLU once they
are sparse) decode, and compute `dW_dec` and `dW_enc`, only over the active latents (gather /
`embedding_bag` / sparse CSR products), as EleutherAI sparsify's fused encoder does. Every step
here is checked against its architecture's autograd `loss` in
tests/dictionaries/test_sparse_kernels.py. This module knows no architecture registry, data,
schedules, optimisers or files; parameters follow the layout of `training_spec.SAEParameters`.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saescope.dictionaries.training_spec import SAEParameters, StepStats

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

ENCODE_BLOCK_BYTES = 256 * 2**20  # CPU TopK's pre-activation workspace: larger batches go in row blocks
TOPK_GROUP = 8  # columns per group in the two-stage CPU top-k (`topk_rows`)
AUX_DENSE_FACTOR = 4  # AuxK runs dense over the dead latents' block while there are at most 4 * aux_k of them


def _zero_grad_like(p: nn.Parameter) -> Tensor:
    if p.grad is None:
        p.grad = torch.zeros_like(p)
    return p.grad


# ----------------------------------------------------------------------------------------------
# Dense ReLU + L1
# ----------------------------------------------------------------------------------------------


def relu_l1_step(
    params: SAEParameters,
    x: Tensor,  # [B, d_in] normalised activations
    l1: float,
    weight_l1_by_decoder_norm: bool = True,
    apply_b_dec_to_input: bool = True,
) -> StepStats:
    """ReLU SAE, loss = ||x_hat - x||^2 + l1 * sum_i f_i * ||W_dec[i]|| (or sum_i f_i)."""
    B = x.shape[0]
    W_encT, b_enc, W_dec, b_dec = params.W_encT, params.b_enc, params.W_dec, params.b_dec
    with torch.no_grad():
        x_in = x - b_dec if apply_b_dec_to_input else x  # [B, d]
        f = torch.addmm(b_enc, x_in, W_encT.t())  # [B, S] pre-activations
        f.clamp_(min=0.0)  # f = relu(pre), in place
        active = torch.sign(f)  # [B, S] float 0/1 (float reductions are much faster than bool ones)
        counts = active.sum(0)  # [S]
        fsum = f.sum(0)  # [S]
        e = torch.addmm(b_dec, f, W_dec).sub_(x)  # [B, d] x_hat - x
        mse = e.pow(2).sum() / B
        norms = W_dec.norm(dim=1) if weight_l1_by_decoder_norm else None  # [S]
        sparsity = (fsum @ norms if norms is not None else fsum.sum()) / B
        loss = mse + l1 * sparsity

        g = e.mul_(2.0 / B)  # [B, d] dL/dx_hat (reuses e)
        gW_dec = _zero_grad_like(W_dec)
        torch.mm(f.t(), g, out=gW_dec)  # [S, d]
        if norms is not None and l1 != 0.0:
            gW_dec.addcmul_(W_dec, (fsum * (l1 / B) / norms.clamp_min(1e-12))[:, None])
        df = torch.mm(g, W_dec.t())  # [B, S] dL/df
        if l1 != 0.0:
            df.add_(norms * (l1 / B) if norms is not None else torch.full_like(fsum, l1 / B))
        df.mul_(active)  # dL/dpre (relu derivative)
        gW_encT = _zero_grad_like(W_encT)
        torch.mm(df.t(), x_in, out=gW_encT)  # [S, d]
        gb_enc = _zero_grad_like(b_enc)
        torch.sum(df, 0, out=gb_enc)
        if b_dec.requires_grad:
            gb_dec = _zero_grad_like(b_dec)
            torch.sum(g, 0, out=gb_dec)
            if apply_b_dec_to_input:
                gb_dec.sub_(gb_enc @ W_encT)  # d/db_dec of x - b_dec: a mat-vec, not a matmul
    zero = torch.zeros((), device=x.device)
    return StepStats(loss, mse, sparsity, zero, counts.sum() / B, counts)


# ----------------------------------------------------------------------------------------------
# Sparse building blocks: codes stored row-major as CSR (crow [B+1], cols [nnz], vals [nnz])
# ----------------------------------------------------------------------------------------------


def _csr(crow: Tensor, cols: Tensor, values: Tensor, B: int, S: int) -> Tensor:
    return torch.sparse_csr_tensor(crow, cols, values, (B, S), check_invariants=False)


def crow_from_rows(rows: Tensor, B: int) -> Tensor:
    """CSR row pointer [B+1] for entries sorted by row."""
    crow = torch.zeros(B + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=B), 0, out=crow[1:])
    return crow


def sparse_decode(W_dec: Tensor, crow: Tensor, cols: Tensor, vals: Tensor) -> Tensor:
    """[B, d] = sum over each row's entries of vals * W_dec[cols] (no bias)."""
    return F.embedding_bag(cols, W_dec, crow[:-1], per_sample_weights=vals, mode="sum")


def sampled_rows_dot(crow: Tensor, cols: Tensor, g: Tensor, W: Tensor) -> Tensor:
    """[nnz]: for each entry (b, i), g[b] . W[i]  (an SDDMM; g [B, d], W [S, d])."""
    B, S = g.shape[0], W.shape[0]
    pattern = _csr(crow, cols, torch.zeros(cols.shape[0], dtype=g.dtype, device=g.device), B, S)
    return torch.sparse.sampled_addmm(pattern, g, W.t(), beta=0.0).values()


class TransposedPattern:
    """The codes' pattern grouped by latent, to compute C^T @ dense products (dW_dec = F^T g,
    dW_enc^T = dZ^T x) as one `embedding_bag` each: bag i sums the dense rows of the tokens where
    latent i is active, weighted by the entry values. The grouping is one stable sort of the latent
    ids, shared by every product of the step; embedding_bag then runs multi-threaded and gathers
    whole rows, where torch's sparse COO x dense product scatters entry by entry on one thread.
    Stable order keeps the sums of a bag in token order, so results are deterministic."""

    def __init__(self, crow: Tensor, cols: Tensor, B: int, S: int) -> None:
        rows = torch.repeat_interleave(
            torch.arange(B, device=cols.device), crow[1:] - crow[:-1], output_size=cols.shape[0]
        )
        self.order = torch.sort(cols, stable=True).indices  # entries grouped by latent, tokens ascending
        self.rows = rows[self.order]
        self.offsets = torch.zeros(S, dtype=torch.int64, device=cols.device)
        torch.cumsum(torch.bincount(cols, minlength=S)[:-1], 0, out=self.offsets[1:])
        self.B, self.S = B, S

    def mm(self, values: Tensor, dense: Tensor) -> Tensor:
        """[S, d] = C^T @ dense, C [B, S] having `values` (in row-major entry order)."""
        return F.embedding_bag(
            self.rows, dense, self.offsets, per_sample_weights=values[self.order].to(dense.dtype), mode="sum"
        )


def transposed_spmm(crow: Tensor, cols: Tensor, values: Tensor, dense: Tensor, S: int) -> Tensor:
    """[S, d] = C^T @ dense for the sparse C [B, S] given by (crow, cols, values), dense [B, d]."""
    return TransposedPattern(crow, cols, dense.shape[0], S).mm(values, dense)


def _sparse_backward(
    params: SAEParameters,
    x_in: Tensor,  # [B, d]
    g: Tensor,  # [B, d] dL/dx_hat
    crow: Tensor,
    cols: Tensor,
    vals: Tensor,  # [nnz] code values f
    dpre: Tensor,  # [nnz] dL/dpre at the entries
    accumulate: bool,
) -> None:
    """Write (or add) dW_dec, dW_encT, db_enc from one set of sparse codes."""
    S = params.d_sae
    pattern = TransposedPattern(crow, cols, g.shape[0], S)
    gW_dec = pattern.mm(vals, g)
    gW_encT = pattern.mm(dpre, x_in)
    gb_enc = torch.zeros(S, device=g.device).index_add_(0, cols, dpre)
    for p, grad in ((params.W_dec, gW_dec), (params.W_encT, gW_encT), (params.b_enc, gb_enc)):
        if accumulate and p.grad is not None:
            p.grad.add_(grad)
        else:
            p.grad = grad


def _finish_b_dec(params: SAEParameters, g: Tensor, apply_b_dec_to_input: bool) -> None:
    b_dec = params.b_dec
    if not b_dec.requires_grad:
        return
    gb = g.sum(0)
    if apply_b_dec_to_input:
        gb.sub_(params.b_enc.grad @ params.W_encT)  # encoder-input path, a mat-vec
    b_dec.grad = gb


def _aux_k_loss(
    params: SAEParameters,
    pre_dead: Tensor,  # [B, n_dead] pre-activations of the dead latents
    dead_idx: Tensor,  # [n_dead] their indices
    x_in: Tensor,
    residual: Tensor,  # [B, d] x - x_hat (treated as a constant)
    aux_k: int,
    coefficient: float,
) -> Tensor:
    """Gao et al.'s AuxK: the top `aux_k` dead latents reconstruct the residual. Adds gradients.

    When the dead latents are few (at most `AUX_DENSE_FACTOR * aux_k`) their codes fill a large
    share of the small [B, n_dead] block, and four dense matmuls over that block (decode, dW_dec,
    dpre, dW_enc) beat the sparse kernels, which at B * aux_k entries would cost several times
    the main step; otherwise the sparse kernels run, as for the main codes."""
    n_dead = dead_idx.numel()
    if n_dead == 0 or coefficient == 0.0:
        return torch.zeros((), device=x_in.device)
    B = pre_dead.shape[0]
    ka = min(aux_k, n_dead)
    scale = min(n_dead / aux_k, 1.0)  # SAELens: weaker while few latents are dead
    if n_dead <= AUX_DENSE_FACTOR * aux_k:
        if ka < n_dead:  # keep each row's top ka, zero the rest
            kth = pre_dead.topk(ka, dim=1, sorted=False).values.min(dim=1, keepdim=True).values
            codes = pre_dead.masked_fill(pre_dead < kth, 0.0).relu_()
        else:
            codes = pre_dead.relu()
        W_dead = params.W_dec.index_select(0, dead_idx)  # [n_dead, d]
        e_aux = torch.mm(codes, W_dead).sub_(residual)  # [B, d]
        aux = e_aux.pow(2).sum() / B
        ga = e_aux.mul_(2.0 * coefficient * scale / B)
        dpre = torch.mm(ga, W_dead.t()).mul_(codes > 0)  # [B, n_dead]
        params.W_dec.grad.index_add_(0, dead_idx, torch.mm(codes.t(), ga))
        params.W_encT.grad.index_add_(0, dead_idx, torch.mm(dpre.t(), x_in))
        params.b_enc.grad.index_add_(0, dead_idx, dpre.sum(0))
        return aux * scale
    avals, local = pre_dead.topk(ka, dim=1, sorted=False)  # [B, ka]
    acols = dead_idx[local].flatten()
    avals = avals.relu_().flatten()
    acrow = torch.arange(0, B * ka + 1, ka, device=x_in.device)
    e_aux = sparse_decode(params.W_dec, acrow, acols, avals).sub_(residual)  # [B, d]
    aux = e_aux.pow(2).sum() / B
    ga = e_aux.mul_(2.0 * coefficient * scale / B)
    dpre = sampled_rows_dot(acrow, acols, ga, params.W_dec).mul_(avals > 0)
    _sparse_backward(params, x_in, ga, acrow, acols, avals, dpre, accumulate=True)
    return aux * scale


def _sparse_main(
    params: SAEParameters, x: Tensor, x_in: Tensor, crow: Tensor, cols: Tensor, vals: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Decode sparse codes; returns (mse, g = dL/dx_hat = 2 (x_hat - x) / B), g computed in place
    (no [B, d] temporaries beyond the decode's own output)."""
    B = x.shape[0]
    e = sparse_decode(params.W_dec, crow, cols, vals).add_(params.b_dec).sub_(x)
    flat = e.view(-1)
    mse = torch.dot(flat, flat) / B
    return mse, e.mul_(2.0 / B)


# ----------------------------------------------------------------------------------------------
# TopK and BatchTopK (always sparse)
# ----------------------------------------------------------------------------------------------


def topk_rows(pre: Tensor, k: int, group: int = TOPK_GROUP) -> tuple[Tensor, Tensor]:
    """(values, columns) of each row's k largest entries of pre [R, S], unsorted (like
    `pre.topk(k, dim=1, sorted=False)`, same values; columns may differ only among ties).

    Two stages on CPU: the row's k largest entries all lie in the k groups of `group` consecutive
    columns with the largest maxima (a group holding one of them has a maximum at least the k-th
    largest value, and at most k groups can), so a max-pool, a top-k over S/group group maxima and
    a top-k over k*group candidates replace the top-k over S (torch's CPU top-k copies every row
    into (value, index) pairs first; docs/benchmarks.md has the figures)."""
    R, S = pre.shape
    if pre.device.type != "cpu" or S % group or k * group * 2 > S:
        return pre.topk(k, dim=1, sorted=False)
    group_max = F.max_pool1d(pre.unsqueeze(0), group).squeeze(0)  # [R, S / group]
    _, groups = group_max.topk(k, dim=1, sorted=False)  # [R, k]
    # each chosen group is `group` contiguous floats: copy them as rows of a [R * S / group, group] view
    flat = groups + torch.arange(R, device=pre.device).unsqueeze(1) * (S // group)
    candidates = pre.reshape(R * (S // group), group).index_select(0, flat.view(-1))  # [R * k, group]
    values, local = candidates.view(R, k * group).topk(k, dim=1, sorted=False)
    columns = groups.gather(1, local // group).mul_(group).add_(local % group)
    return values, columns


def _encode_topk(
    params: SAEParameters, x_in: Tensor, bias: Tensor, k: int, dead_idx: Tensor
) -> tuple[Tensor, Tensor, Tensor | None]:
    """(vals [B, k], cols [B, k], pre of the dead latents [B, n_dead] or None) of pre = x_in W_enc + bias.

    On CPU the pre-activations go into a workspace kept between steps: a fresh [B, S] output costs
    the GEMM a new mapping and its page faults. Past `ENCODE_BLOCK_BYTES` the batch is encoded
    in row blocks, each block's top-k (and dead columns) taken before the next, so the workspace
    stays bounded. A GPU (caching allocator) encodes the batch at once."""
    B, S = x_in.shape[0], params.d_sae
    n_dead = dead_idx.numel()
    if x_in.device.type != "cpu":
        pre = torch.addmm(bias, x_in, params.W_encT.t())  # [B, S]
        vals, cols = pre.topk(k, dim=1, sorted=False)  # entry order within a row is irrelevant
        return vals, cols, pre.index_select(1, dead_idx) if n_dead else None
    n_blocks = -(-B * S * 4 // ENCODE_BLOCK_BYTES)
    rows = -(-B // n_blocks)
    vals = torch.empty(B, k, dtype=x_in.dtype)
    cols = torch.empty(B, k, dtype=torch.int64)
    pre_dead = torch.empty(B, n_dead, dtype=x_in.dtype) if n_dead else None
    block = params.workspace("encode_block", (rows, S), x_in.dtype)
    W = params.W_encT.t()
    for start in range(0, B, rows):
        stop = min(start + rows, B)
        pre = block[: stop - start]
        torch.addmm(bias, x_in[start:stop], W, out=pre)
        vals[start:stop], cols[start:stop] = topk_rows(pre, k)
        if pre_dead is not None:
            torch.index_select(pre, 1, dead_idx, out=pre_dead[start:stop])
    return vals, cols, pre_dead


def topk_step(
    params: SAEParameters,
    x: Tensor,
    k: int,
    dead: Tensor,
    aux_k: int,
    aux_coefficient: float,
    apply_b_dec_to_input: bool = True,
) -> StepStats:
    """TopK SAE (f = ReLU(TopK(pre))), loss = MSE + AuxK, sparse decode and backward.

    With the decoder bias subtracted from the input, pre = (x - b_dec) W_enc + b_enc is computed as
    x W_enc + (b_enc - W_enc^T b_dec) and dW_enc as (sum over entries of dpre x) minus the rank-one
    db_enc b_dec^T: the same values without materialising x - b_dec ([B, d])."""
    B = x.shape[0]
    with torch.no_grad():
        bias = torch.addmv(params.b_enc, params.W_encT, params.b_dec, alpha=-1.0) if apply_b_dec_to_input else params.b_enc
        dead_idx = _aux_indices(dead, aux_coefficient)
        vals, cols, pre_dead = _encode_topk(params, x, bias, k, dead_idx)
        vals = vals.relu_()
        cols, vals = cols.flatten(), vals.flatten()
        crow = torch.arange(0, B * k + 1, k, device=x.device)
        stats = _sparse_step_rest(params, x, x, pre_dead, dead_idx, crow, cols, vals, aux_k, aux_coefficient,
                                  apply_b_dec_to_input)
        if apply_b_dec_to_input:
            params.W_encT.grad.addr_(params.b_enc.grad, params.b_dec, alpha=-1.0)
        return stats


def _aux_indices(dead: Tensor, aux_coefficient: float) -> Tensor:
    """Indices of the dead latents AuxK works on (none when it is off)."""
    if aux_coefficient == 0.0:
        return torch.zeros(0, dtype=torch.int64, device=dead.device)
    return dead.nonzero().flatten()


def _batch_topk_entries(pre: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """(rows, cols, vals) of the k*B largest positive entries of pre [B, S], sorted by row.

    Fast path: the kept entries are found among each row's top `4k` candidates ([B, 4k], a small
    selection problem) instead of over all B*S values; exact unless some row has all of its
    candidates kept, in which case the full-matrix selection runs instead."""
    B, S = pre.shape
    n_keep = min(k * B, B * S)
    per_row = min(S, 4 * k)
    if per_row < S:
        cand_vals, cand_cols = pre.topk(per_row, dim=1, sorted=False)  # [B, 4k]
        flat = cand_vals.reshape(-1)
        kth = torch.kthvalue(flat, flat.numel() - n_keep + 1).values
        if bool((cand_vals.min(dim=1).values < kth).all()):  # no row saturated: exact
            keep = (cand_vals >= kth) & (cand_vals > 0)
            rows, slot = keep.nonzero().unbind(1)
            cols = cand_cols[rows, slot]
            return rows, cols, cand_vals[rows, slot]
    flat = pre.reshape(-1)
    kth = torch.kthvalue(flat, flat.numel() - n_keep + 1).values if n_keep < flat.numel() else flat.min()
    rows, cols = ((pre >= kth) & (pre > 0)).nonzero().unbind(1)
    return rows, cols, pre[rows, cols]


def batchtopk_step(
    params: SAEParameters,
    x: Tensor,
    k: int,
    dead: Tensor,
    aux_k: int,
    aux_coefficient: float,
    apply_b_dec_to_input: bool = True,
) -> StepStats:
    """BatchTopK: keep the k*B largest positive pre-activations of the whole batch.

    `extra["min_kept"]` is the smallest kept activation (for the inference threshold EMA)."""
    B = x.shape[0]
    with torch.no_grad():
        x_in = x - params.b_dec if apply_b_dec_to_input else x
        pre = torch.addmm(params.b_enc, x_in, params.W_encT.t())  # [B, S]
        rows, cols, vals = _batch_topk_entries(pre, k)
        crow = crow_from_rows(rows, B)
        dead_idx = _aux_indices(dead, aux_coefficient)
        pre_dead = pre.index_select(1, dead_idx) if dead_idx.numel() else None
        del pre
        stats = _sparse_step_rest(params, x, x_in, pre_dead, dead_idx, crow, cols, vals, aux_k, aux_coefficient,
                                  apply_b_dec_to_input)
        stats.extra["min_kept"] = vals.min() if vals.numel() else torch.zeros((), device=x.device)
        return stats


def _sparse_step_rest(
    params: SAEParameters,
    x: Tensor,
    x_in: Tensor,
    pre_dead: Tensor | None,
    dead_idx: Tensor,
    crow: Tensor,
    cols: Tensor,
    vals: Tensor,
    aux_k: int,
    aux_coefficient: float,
    apply_b_dec_to_input: bool,
) -> StepStats:
    B, S = x.shape[0], params.d_sae
    mse, g = _sparse_main(params, x, x_in, crow, cols, vals)
    active = vals > 0
    dpre = sampled_rows_dot(crow, cols, g, params.W_dec).mul_(active)
    _sparse_backward(params, x_in, g, crow, cols, vals, dpre, accumulate=False)
    aux = (
        _aux_k_loss(params, pre_dead, dead_idx, x_in, g.mul(-B / 2.0), aux_k, aux_coefficient)  # x - x_hat
        if pre_dead is not None
        else torch.zeros((), device=x.device)
    )
    _finish_b_dec(params, g, apply_b_dec_to_input)
    counts = torch.zeros(S, device=x.device).index_add_(0, cols, active.float())
    zero = torch.zeros((), device=x.device)
    return StepStats(mse + aux_coefficient * aux, mse, zero, aux, counts.sum() / B, counts)


# ----------------------------------------------------------------------------------------------
# ReLU + L1 and JumpReLU on their sparse path (used once few latents are active)
# ----------------------------------------------------------------------------------------------


def relu_l1_sparse_step(
    params: SAEParameters,
    x: Tensor,
    l1: float,
    weight_l1_by_decoder_norm: bool = True,
    apply_b_dec_to_input: bool = True,
) -> StepStats:
    """Same maths as `relu_l1_step`, with decode and backward over the active latents only."""
    B, S = x.shape[0], params.d_sae
    with torch.no_grad():
        x_in = x - params.b_dec if apply_b_dec_to_input else x
        pre = torch.addmm(params.b_enc, x_in, params.W_encT.t())  # [B, S]
        rows, cols = (pre > 0).nonzero().unbind(1)
        vals = pre[rows, cols]
        crow = crow_from_rows(rows, B)
        mse, g = _sparse_main(params, x, x_in, crow, cols, vals)
        norms = params.W_dec.norm(dim=1) if weight_l1_by_decoder_norm else None
        fsum = torch.zeros(S, device=x.device).index_add_(0, cols, vals)
        sparsity = (fsum @ norms if norms is not None else fsum.sum()) / B
        dpre = sampled_rows_dot(crow, cols, g, params.W_dec)
        if l1 != 0.0:
            dpre.add_(norms[cols] * (l1 / B) if norms is not None else l1 / B)
        _sparse_backward(params, x_in, g, crow, cols, vals, dpre, accumulate=False)
        if norms is not None and l1 != 0.0:
            params.W_dec.grad.addcmul_(params.W_dec, (fsum * (l1 / B) / norms.clamp_min(1e-12))[:, None])
        _finish_b_dec(params, g, apply_b_dec_to_input)
        counts = torch.bincount(cols, minlength=S).float()
    zero = torch.zeros((), device=x.device)
    return StepStats(mse + l1 * sparsity, mse, sparsity, zero, counts.sum() / B, counts)


def jumprelu_step(
    params: SAEParameters,
    x: Tensor,
    l0: float,
    bandwidth: float,
    apply_b_dec_to_input: bool = True,
    sparse: bool = False,
) -> StepStats:
    """JumpReLU (f = pre * [pre > theta]), loss = MSE + l0 * ||f||_0 with the rectangle-kernel
    straight-through estimator for theta (Rajamanoharan et al.; SAELens "step" mode, STE to the
    threshold only)."""
    B, S = x.shape[0], params.d_sae
    theta = params.threshold
    assert theta is not None
    with torch.no_grad():
        x_in = x - params.b_dec if apply_b_dec_to_input else x
        pre = torch.addmm(params.b_enc, x_in, params.W_encT.t())  # [B, S]
        active = pre > theta  # theta >= 0, so active entries are positive
        band = (pre - theta).abs_() < bandwidth / 2  # rectangle kernel support
        counts = active.float().sum(0)
        l0_value = counts.sum() / B
        if sparse:
            rows, cols = (active | band).nonzero().unbind(1)
            crow = crow_from_rows(rows, B)
            ent_active = active[rows, cols]
            ent_band = band[rows, cols]
            ent_pre = pre[rows, cols]
            vals = ent_pre * ent_active
            mse, g = _sparse_main(params, x, x_in, crow, cols, vals)
            df = sampled_rows_dot(crow, cols, g, params.W_dec)
            kern = ent_band.float() / bandwidth
            g_theta = torch.zeros(S, device=x.device).index_add_(0, cols, -(df * theta[cols] + l0 / B) * kern)
            dpre = df * ent_active
            _sparse_backward(params, x_in, g, crow, cols, vals, dpre, accumulate=False)
        else:
            f = pre.mul_(active)  # [B, S] (pre is no longer needed)
            e = torch.addmm(params.b_dec, f, params.W_dec).sub_(x)
            mse = e.pow(2).sum() / B
            g = e.mul_(2.0 / B)
            params.W_dec.grad = torch.mm(f.t(), g)
            df = torch.mm(g, params.W_dec.t())  # [B, S]
            kern = band.float().div_(bandwidth)
            # d/dtheta of f: -(theta/eps) K ; of the L0 term: -(1/eps) K
            g_theta = -(theta * (df * kern).sum(0) + (l0 / B) * kern.sum(0))
            df.mul_(active)
            params.W_encT.grad = torch.mm(df.t(), x_in)
            params.b_enc.grad = df.sum(0)
        theta.grad = g_theta
        _finish_b_dec(params, g, apply_b_dec_to_input)
    zero = torch.zeros((), device=x.device)
    return StepStats(mse + l0 * l0_value, mse, l0_value, zero, l0_value, counts)
