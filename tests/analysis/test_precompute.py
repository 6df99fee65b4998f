"""run_precompute: one forward per batch for all dictionaries, exact resume after an interruption."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saescope.analysis.config import PrecomputeConfig
from saescope.analysis.precompute import STATE_FILE, run_precompute
from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.architectures.standard import StandardSAE


def _model() -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, d_mlp=32, n_heads=2, d_head=8, n_ctx=12, d_vocab=40,
                                  act_fn="relu", seed=1, device="cpu")
    return HookedTransformer(cfg).eval()


def _sae(d_in, d_sae, hook, seed):
    s = StandardSAE(d_in, d_sae, DictionaryMetadata(hook_name=hook))
    s.reset_parameters(torch.Generator().manual_seed(seed))
    return s


def _tokens(n=30, n_ctx=12, seed=0):
    t = np.random.default_rng(seed).integers(1, 40, size=(n, n_ctx))
    t[:, 0] = 0
    return t


CFG = dict(progress=False, top_k=3, n_intervals=2, examples_per_interval=2, n_random=2, contexts_per_batch=4)


def test_one_forward_per_batch_feeds_dictionaries_at_several_hook_points():
    model = _model()
    dicts = [("a", _sae(32, 10, "blocks.0.mlp.hook_post", 0)), ("b", _sae(16, 8, "blocks.1.hook_resid_post", 1))]
    calls = []
    model.blocks[0].hook_resid_pre.add_hook(lambda act, hook: calls.append(1))
    tok = _tokens()
    res = run_precompute(model, dicts, tok, [str(i) for i in range(30)], PrecomputeConfig(**CFG))
    model.reset_hooks()
    n_stream_batches = 8
    n_gather_batches = len(calls) - n_stream_batches
    assert n_gather_batches <= n_stream_batches  # gather pass only over chosen contexts
    # density equals a brute-force count over the full cache
    _, cache = model.run_with_cache(torch.as_tensor(tok))
    for (did, d), a in zip(dicts, res.analyses):
        f = d.encode(cache[d.metadata.hook_name])[:, 1:, :]
        np.testing.assert_array_equal(a.stats.fire_count.numpy(), (f > 0).sum((0, 1)).numpy())
        np.testing.assert_allclose(a.stats.max_activation.numpy(), f.amax((0, 1)).detach().numpy(), rtol=1e-5)
    assert res.n_tokens == 30 * 11
    assert res.token_counts.sum() == 30 * 11


def test_interrupted_precompute_resumes_from_checkpoint_with_identical_results(tmp_path):
    model = _model()
    dicts = [("a", _sae(32, 10, "blocks.0.mlp.hook_post", 0))]
    tok, docs = _tokens(), [f"d{i}" for i in range(30)]
    cfg = PrecomputeConfig(**CFG, checkpoint_every=2)
    full = run_precompute(model, dicts, tok, docs, cfg)

    def boom(i):
        if i == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_precompute(model, dicts, tok, docs, cfg, work_dir=tmp_path, on_batch=boom)
    assert (tmp_path / STATE_FILE).is_file()
    resumed = run_precompute(model, dicts, tok, docs, cfg, work_dir=tmp_path)
    assert resumed.resumed_from_batch == 4
    assert not (tmp_path / STATE_FILE).exists()
    a, b = full.analyses[0], resumed.analyses[0]
    assert torch.equal(a.stats.fire_count, b.stats.fire_count)
    assert torch.equal(a.stats.hist_counts, b.stats.hist_counts)
    assert torch.equal(a.stats.top.ctx, b.stats.top.ctx)
    assert torch.equal(a.stats.intervals.ctx, b.stats.intervals.ctx)
    np.testing.assert_allclose(a.examples.activations, b.examples.activations, atol=1e-5)


def test_checkpoint_of_other_inputs_is_ignored(tmp_path):
    model = _model()
    dicts = [("a", _sae(32, 10, "blocks.0.mlp.hook_post", 0))]
    cfg = PrecomputeConfig(**CFG, checkpoint_every=1)

    def boom(i):
        if i == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        run_precompute(model, dicts, _tokens(seed=0), [str(i) for i in range(30)], cfg, work_dir=tmp_path, on_batch=boom)
    other = run_precompute(model, dicts, _tokens(seed=1), [str(i) for i in range(30)], cfg, work_dir=tmp_path)
    assert other.resumed_from_batch == 0


def test_encode_features_equals_full_encoding_for_standard_and_other_dictionaries():
    from saescope.analysis.precompute import encode_features

    class TopTwo(StandardSAE):
        def encode(self, x):
            pre = self.pre_activations(x)
            kth = pre.topk(2, dim=-1).values[..., -1:]
            return torch.where(pre >= kth, torch.relu(pre), torch.zeros_like(pre))

    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(0))
    feats = torch.tensor([7, 0, 3])
    for d in (_sae(16, 10, "h", 0), TopTwo(16, 10)):
        with torch.no_grad():
            d.b_enc.normal_()
            torch.testing.assert_close(encode_features(d, x, feats), d.encode(x)[..., feats])
