"""The build's whole-context activation cache: one forward pass for several hooks, equal to running the
model per hook, resumable after an interruption, and a seekable training stream over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from saescope.activations.context_cache import ContextCache
from saescope.activations.stream import multi_hook_activations
from saescope.errors import ConfigError

HOOKS = ["blocks.0.hook_resid_pre", "blocks.0.mlp.hook_post", "blocks.0.attn.hook_z"]


@pytest.fixture(scope="module")
def tokens(tiny_lm) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = rng.integers(1, int(tiny_lm.cfg.d_vocab), size=(10, 16))
    out[:, 0] = 0
    return out


def test_one_pass_caches_every_hook_exactly(tiny_lm, tokens: np.ndarray, tmp_path: Path) -> None:
    cache = ContextCache.build(tiny_lm, tokens, HOOKS, tmp_path / "c", model_id="tiny", contexts_per_batch=3,
                               progress=False)
    assert cache.manifest.complete and cache.manifest.dims["blocks.0.attn.hook_z"] == tiny_lm.cfg.d_model
    direct = multi_hook_activations(tiny_lm, torch.from_numpy(tokens), HOOKS)
    for hook in HOOKS:
        expected = direct[hook].reshape(*tokens.shape, -1)
        torch.testing.assert_close(cache.contexts(hook, 0, len(tokens)), expected, atol=1e-5, rtol=1e-5)


def test_an_interrupted_cache_continues_where_it_stopped(tiny_lm, tokens: np.ndarray, tmp_path: Path) -> None:
    reference = ContextCache.build(tiny_lm, tokens, HOOKS, tmp_path / "ref", model_id="tiny", progress=False)

    def stop(done: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ContextCache.build(tiny_lm, tokens, HOOKS, tmp_path / "c", model_id="tiny", contexts_per_batch=2,
                           progress=False, on_batch=stop)
    partial = ContextCache.open(tmp_path / "c")
    assert partial.manifest.done == 4 and not partial.manifest.complete
    seen: list[int] = []
    resumed = ContextCache.build(tiny_lm, tokens, HOOKS, tmp_path / "c", model_id="tiny", contexts_per_batch=2,
                                 progress=False, on_batch=seen.append)
    assert seen[0] == 6  # started at context 4, not 0
    for hook in HOOKS:
        assert np.array_equal(np.asarray(resumed.array(hook)), np.asarray(reference.array(hook)))


def test_a_cache_for_other_tokens_is_replaced(tiny_lm, tokens: np.ndarray, tmp_path: Path) -> None:
    ContextCache.build(tiny_lm, tokens, HOOKS[:1], tmp_path / "c", model_id="tiny", progress=False)
    other = tokens[::-1].copy()
    cache = ContextCache.build(tiny_lm, other, HOOKS[:1], tmp_path / "c", model_id="tiny", progress=False)
    direct = multi_hook_activations(tiny_lm, torch.from_numpy(other), HOOKS[:1])[HOOKS[0]]
    torch.testing.assert_close(cache.contexts(HOOKS[0], 0, len(other)), direct, atol=1e-5, rtol=1e-5)


def test_row_chunks_drop_bos_are_pure_and_take_more_passes_for_a_larger_budget(
    tiny_lm, tokens: np.ndarray, tmp_path: Path
) -> None:
    cache = ContextCache.build(tiny_lm, tokens, HOOKS, tmp_path / "c", model_id="tiny", progress=False)
    hook = "blocks.0.mlp.hook_post"
    one_pass = cache.chunks(hook, chunk_tokens=45, seed=3)
    rows = torch.cat([one_pass.chunk(i) for i in range(one_pass.n_chunks)])
    body = cache.contexts(hook, 0, len(tokens))[:, 1:, :].reshape(-1, rows.shape[1])
    assert rows.shape == body.shape  # every non-BOS row once
    assert torch.equal(rows.sum(0), body.sum(0)) or torch.allclose(rows.sum(0), body.sum(0), atol=1e-4)
    assert torch.equal(one_pass.chunk(1), cache.chunks(hook, chunk_tokens=45, seed=3).chunk(1))
    three = cache.chunks(hook, chunk_tokens=45, seed=3, rows=3 * body.shape[0])
    assert three.n_chunks == 3 * one_pass.n_chunks
    assert not torch.equal(three.chunk(0), three.chunk(one_pass.n_chunks))  # a fresh order per pass
    with pytest.raises(ConfigError, match="not"):
        cache.chunks("blocks.0.hook_resid_post", chunk_tokens=45, seed=0)


def test_precompute_from_the_cache_equals_precompute_from_the_model(tiny_lm, tokens: np.ndarray, tmp_path: Path) -> None:
    from saescope.analysis.config import PrecomputeConfig
    from saescope.analysis.precompute import run_precompute
    from saescope.dictionaries.architectures.standard import StandardSAE
    from saescope.dictionaries.base import DictionaryMetadata

    torch.manual_seed(0)
    d_mlp = int(tiny_lm.cfg.d_mlp)
    sae = StandardSAE(d_mlp, 24, metadata=DictionaryMetadata(hook_name="blocks.0.mlp.hook_post"))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.W_dec.copy_(sae.W_enc.T)
    cache = ContextCache.build(tiny_lm, tokens, HOOKS, tmp_path / "c", model_id="tiny", progress=False)
    config = PrecomputeConfig(top_k=3, n_intervals=2, examples_per_interval=1, n_random=2, contexts_per_batch=4,
                              progress=False, device="cpu")
    doc_ids = [f"d{i}" for i in range(len(tokens))]
    direct = run_precompute(tiny_lm, [("sae", sae)], tokens, doc_ids, config)
    cached = run_precompute(tiny_lm, [("sae", sae)], tokens, doc_ids, config, activation_source=cache.batch)
    a, b = direct.analyses[0], cached.analyses[0]
    assert torch.equal(a.stats.fire_count, b.stats.fire_count) and a.stats.fire_count.sum() > 0
    torch.testing.assert_close(a.stats.max_activation, b.stats.max_activation, atol=1e-5, rtol=1e-5)
    assert np.array_equal(a.examples.context, b.examples.context)
    assert np.allclose(a.examples.activations, b.examples.activations, atol=1e-5)
