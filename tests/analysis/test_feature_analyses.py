"""Logit effects, neighbours, matches, UMAP layouts and LLM-free labels on tiny real components."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saescope.analysis.geometry import best_matches, nearest_neighbours, umap_layout
from saescope.analysis.labels import top_token_labels
from saescope.analysis.logit_effects import head_norm_share, logit_effects, residual_directions


@pytest.fixture(scope="module")
def two_layer_model():
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, d_mlp=24, n_heads=2, d_head=8, n_ctx=8, d_vocab=30,
                                  act_fn="gelu", normalization_type="LN", seed=3, device="cpu")
    return HookedTransformer(cfg).eval()


def test_logit_effects_of_residual_and_mlp_directions_match_a_direct_product(two_layer_model):
    dec = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    eff = logit_effects(two_layer_model, "blocks.1.hook_resid_post", dec, k=4, bins=7)
    centred = dec - dec.mean(1, keepdim=True)
    full = (centred @ (two_layer_model.ln_final.w[:, None] * two_layer_model.W_U)).detach()
    np.testing.assert_array_equal(eff.top_ids, torch.topk(full, 4).indices.numpy())
    np.testing.assert_allclose(eff.top_values, torch.topk(full, 4).values.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(eff.bottom_ids, torch.topk(full, 4, largest=False).indices.numpy())
    assert (eff.hist_counts.sum(1) == 30).all() and eff.hist_edges.shape == (5, 8)
    neuron_dirs = torch.randn(3, 24)
    resid = residual_directions(two_layer_model, "blocks.0.mlp.hook_post", neuron_dirs)
    torch.testing.assert_close(resid, neuron_dirs @ two_layer_model.blocks[0].mlp.W_out.detach())
    assert logit_effects(two_layer_model, "blocks.0.mlp.hook_pre", neuron_dirs) is None
    z_dirs = torch.randn(3, 2 * 8)  # attn.hook_z, both heads flattened
    w_o = two_layer_model.blocks[1].attn.W_O.detach()  # [n_heads, d_head, d_model]
    want = torch.einsum("fhd,hdm->fm", z_dirs.view(3, 2, 8), w_o)
    torch.testing.assert_close(residual_directions(two_layer_model, "blocks.1.attn.hook_z", z_dirs), want)
    torch.testing.assert_close(residual_directions(two_layer_model, "blocks.1.attn.hook_z", z_dirs[:, 8:], 1), z_dirs[:, 8:] @ w_o[1])


def test_neighbours_and_matches_equal_brute_force_cosines():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(40, 8, generator=g), torch.randn(25, 8, generator=g)
    n = nearest_neighbours(a, k=3, chunk=7)
    ua, ub = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    cos = ua @ ua.T
    cos.fill_diagonal_(-2)
    np.testing.assert_array_equal(n.index, torch.topk(cos, 3).indices.numpy())
    idx, mcs = best_matches(a, b, chunk=9)
    np.testing.assert_array_equal(idx, (ua @ ub.T).argmax(1).numpy())
    np.testing.assert_allclose(mcs, (ua @ ub.T).max(1).values.numpy(), rtol=1e-5)
    assert nearest_neighbours(a[:1], k=3).index.shape == (1, 0)


def test_tiny_dictionaries_get_a_layout_without_umap():
    out = umap_layout([torch.randn(2, 6), torch.randn(1, 6)])
    assert [o.shape for o in out] == [(2, 2), (1, 2)] and np.isfinite(np.concatenate(out)).all()


@pytest.mark.slow
def test_umap_co_embeds_two_dictionaries_deterministically():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(6, 10, generator=g)
    a = base.repeat_interleave(5, 0) + 0.05 * torch.randn(30, 10, generator=g)
    b = base.repeat_interleave(2, 0) + 0.05 * torch.randn(12, 10, generator=g)
    (xa, xb), (xa2, _) = umap_layout([a, b], seed=0, n_neighbors=5), umap_layout([a, b], seed=0, n_neighbors=5)
    np.testing.assert_allclose(xa, xa2)
    # b's copy of a cluster lands near a's copy of the same cluster, far from the other clusters
    ca = xa.reshape(6, 5, 2).mean(1)
    cb = xb.reshape(6, 2, 2).mean(1)
    d = np.linalg.norm(cb[:, None, :] - ca[None, :, :], axis=2)
    assert (d.argmin(1) == np.arange(6)).sum() >= 5


def test_labels_prefer_characteristic_tokens_over_frequent_ones():
    vocab = ["<bos>", " ", "\n", " def", " class", "x", "(", ")"]
    counts = np.array([0, 1000, 800, 10, 8, 50, 60, 60])
    tok = np.array([[0, 1, 3, 1, 5, 2], [0, 4, 1, 2, 1, 6], [0, 5, 3, 6, 7, 2]])
    acts = np.array([[0, 1.0, 3.0, 1.0, 0, 0], [0, 2.5, 1.0, 0, 1.0, 0], [0, 1.0, 2.8, 0, 0, 0]], dtype=np.float32)
    lab = top_token_labels(2, np.array([0, 0, 0]), acts, tok, counts, vocab, n_label=2, n_top=4)
    assert lab.label[0] == "' def', ' class'"
    assert lab.top_tokens[0].split()[:2] == ["def", "class"]
    assert lab.label[1] == "" and lab.top_tokens[1] == ""
    # a bigram at the maximum of most top examples leads the label
    tok2 = np.array([[0, 5, 6, 7], [0, 5, 6, 1], [0, 2, 5, 6]])
    acts2 = np.array([[0, 0, 2.0, 0], [0, 0, 1.5, 0.2], [0, 0, 0, 1.0]], dtype=np.float32)
    lab2 = top_token_labels(1, np.zeros(3, np.int64), acts2, tok2, counts, vocab)
    assert lab2.label[0].startswith("'x('")


def test_hook_z_logit_effects_go_through_every_heads_w_o(two_layer_model):
    z_dirs = torch.randn(4, 2 * 8, generator=torch.Generator().manual_seed(1))
    eff = logit_effects(two_layer_model, "blocks.1.attn.hook_z", z_dirs, k=3, bins=5)
    resid = torch.einsum("fhd,hdm->fm", z_dirs.view(4, 2, 8), two_layer_model.blocks[1].attn.W_O.detach())
    resid = resid - resid.mean(1, keepdim=True)
    full = (resid @ (two_layer_model.ln_final.w[:, None] * two_layer_model.W_U)).detach()
    np.testing.assert_array_equal(eff.top_ids, torch.topk(full, 3).indices.numpy())
    np.testing.assert_allclose(eff.top_values, torch.topk(full, 3).values.numpy(), rtol=1e-4, atol=1e-6)


def test_head_norm_share_splits_the_squared_decoder_norm_by_head(two_layer_model):
    dec = torch.zeros(3, 2 * 8)
    dec[0, 8:] = 1.0  # head 1 only
    dec[1, 0], dec[1, 8] = 3.0, 4.0  # 9 : 16
    share = head_norm_share(two_layer_model, "blocks.1.attn.hook_z", dec)
    np.testing.assert_allclose(share, [[0.0, 1.0], [0.36, 0.64], [0.0, 0.0]], atol=1e-6)
    eff = logit_effects(two_layer_model, "blocks.1.attn.hook_z", dec, k=2, bins=3)
    np.testing.assert_allclose(eff.head_norm_share, share)


def test_head_norm_share_is_none_outside_all_head_hook_z_dictionaries(two_layer_model):
    assert head_norm_share(two_layer_model, "blocks.1.hook_resid_post", torch.randn(2, 16)) is None
    assert head_norm_share(two_layer_model, "blocks.1.attn.hook_z", torch.randn(2, 8), hook_head_index=0) is None
    assert logit_effects(two_layer_model, "blocks.1.hook_resid_post", torch.randn(2, 16), k=2).head_norm_share is None
