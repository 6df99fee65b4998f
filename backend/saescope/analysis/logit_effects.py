"""Direct logit effects of feature decoder directions (`logit_effects`).

Owns the map from a dictionary's decoder directions to the unembedding: for `blocks.L.mlp.hook_post`
the direction in neuron space is first written into the residual stream through `W_out[L]`
(pre-activation hooks have no linear path and get no logit effects); for residual-stream hooks (`hook_resid_*`, `hook_attn_out`,
`hook_mlp_out`) the direction is already in the residual stream; for `attn.hook_z` (all heads
flattened) it goes through `W_O[L]`. The residual direction then goes through the final LayerNorm's
linear part and `W_U`. The LayerNorm's data-dependent scale is ignored (it divides every logit by
the same positive number, so rankings are exact, absolute values are "per unit of normalised
residual"); its centring (LayerNorm, not RMSNorm) and weight `ln_final.w` are applied when the model
has them (after `fold_ln` they are already inside `W_U`). For `attn.hook_z` over all heads it also
says which heads a direction lives in (`head_norm_share`: each head's share of the squared decoder
norm, the heads whose `W_O` slices carry the direction). Returns arrays only; chunked over features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from saescope.activations.hooks import hook_layer, hook_suffix


@dataclass
class LogitEffects:
    """Per-feature direct logit effects of a dictionary (`n = d_sae`)."""

    top_ids: np.ndarray  # [n, k] int64, most promoted tokens first
    top_values: np.ndarray  # [n, k] float32
    bottom_ids: np.ndarray  # [n, k] int64, most suppressed first
    bottom_values: np.ndarray  # [n, k] float32
    hist_edges: np.ndarray  # [n, bins + 1] float32
    hist_counts: np.ndarray  # [n, bins] int64
    head_norm_share: np.ndarray | None = None  # [n, n_heads] float32, rows sum to 1; attn.hook_z only


def head_norm_share(model: Any, hook_name: str, decoder: Tensor, hook_head_index: int | None = None) -> np.ndarray | None:
    """`[d_sae, n_heads]` share of each head in the squared norm of every decoder row, for an
    `attn.hook_z` dictionary over all heads concatenated (`d_in = n_heads * d_head`, head-major as
    transformer_lens flattens `[n_heads, d_head]`); None for any other hook point or a single head.

    A row of zero norm gets zero shares (it has no direction to attribute)."""
    if hook_suffix(hook_name) != "attn.hook_z" or hook_head_index is not None:
        return None
    n_heads = int(model.cfg.n_heads)
    dec = decoder.detach().float().cpu()
    if dec.shape[1] % n_heads:
        return None
    per_head = dec.reshape(dec.shape[0], n_heads, -1).pow(2).sum(dim=2)  # [d_sae, n_heads]
    total = per_head.sum(dim=1, keepdim=True)
    share = torch.where(total > 0, per_head / total.clamp(min=torch.finfo(torch.float32).tiny), torch.zeros_like(per_head))
    return share.numpy().astype(np.float32)


def residual_directions(model: Any, hook_name: str, decoder: Tensor, hook_head_index: int | None = None) -> Tensor | None:
    """`[d_sae, d_model]` residual-stream directions written by `decoder [d_sae, d_in]`, or None when the
    hook point has no direct path to the logits we know how to follow."""
    suffix = hook_suffix(hook_name)
    layer = hook_layer(hook_name)
    dec = decoder.detach().float()
    w_dev = model.W_U.device
    dec = dec.to(w_dev)
    if suffix in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out") or hook_name in (
        "hook_embed",
        "hook_pos_embed",
    ):
        return dec
    if layer is not None and suffix in ("mlp.hook_post",):
        w_out = model.blocks[layer].mlp.W_out.detach().float()  # [d_mlp, d_model]
        return dec @ w_out
    if layer is not None and suffix == "attn.hook_z":
        w_o = model.blocks[layer].attn.W_O.detach().float()  # [n_heads, d_head, d_model]
        if hook_head_index is not None:
            return dec @ w_o[int(hook_head_index)]
        return dec @ w_o.reshape(-1, w_o.shape[-1])
    return None


def _unembed_matrix(model: Any) -> tuple[Tensor, bool]:
    """`W_U [d_model, d_vocab]` with ln_final's weight folded in, and whether to centre directions."""
    w_u = model.W_U.detach().float()
    ln = getattr(model, "ln_final", None)
    centre = False
    if ln is not None:
        w = getattr(ln, "w", None)
        if isinstance(w, Tensor):
            w_u = w.detach().float()[:, None] * w_u
        centre = type(ln).__name__ in ("LayerNorm", "LayerNormPre")
    return w_u, centre


def logit_effects(
    model: Any,
    hook_name: str,
    decoder: Tensor,
    k: int = 10,
    bins: int = 50,
    hook_head_index: int | None = None,
    chunk: int = 1024,
) -> LogitEffects | None:
    """Top/bottom-k tokens and a histogram over the vocabulary of each feature's direct logit effect."""
    resid = residual_directions(model, hook_name, decoder, hook_head_index)
    if resid is None:
        return None
    w_u, centre = _unembed_matrix(model)
    if centre:
        resid = resid - resid.mean(dim=1, keepdim=True)
    n = resid.shape[0]
    vocab = w_u.shape[1]
    k = min(k, vocab)
    out_ti = np.zeros((n, k), np.int64)
    out_tv = np.zeros((n, k), np.float32)
    out_bi = np.zeros((n, k), np.int64)
    out_bv = np.zeros((n, k), np.float32)
    edges = np.zeros((n, bins + 1), np.float32)
    counts = np.zeros((n, bins), np.int64)
    with torch.no_grad():
        for lo in range(0, n, chunk):
            eff = resid[lo : lo + chunk] @ w_u  # [c, vocab]
            tv, ti = torch.topk(eff, k, dim=1)
            bv, bi = torch.topk(eff, k, dim=1, largest=False)
            out_ti[lo : lo + chunk], out_tv[lo : lo + chunk] = ti.cpu().numpy(), tv.cpu().numpy()
            out_bi[lo : lo + chunk], out_bv[lo : lo + chunk] = bi.cpu().numpy(), bv.cpu().numpy()
            lo_v, hi_v = eff.min(dim=1).values, eff.max(dim=1).values
            width = (hi_v - lo_v).clamp(min=1e-12)
            e = lo_v[:, None] + width[:, None] * torch.linspace(0, 1, bins + 1, device=eff.device)[None, :]
            b = ((eff - lo_v[:, None]) / width[:, None] * bins).long().clamp(0, bins - 1)
            c = torch.zeros(eff.shape[0], bins, dtype=torch.int64, device=eff.device)
            c.scatter_add_(1, b, torch.ones_like(b))
            edges[lo : lo + chunk] = e.cpu().numpy()
            counts[lo : lo + chunk] = c.cpu().numpy()
    heads = head_norm_share(model, hook_name, decoder, hook_head_index)
    return LogitEffects(out_ti, out_tv, out_bi, out_bv, edges, counts, heads)
