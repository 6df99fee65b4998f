"""Streaming activations: shapes, BOS handling, equality with run_with_cache, per-head hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saescope.activations.hooks import hook_dimension
from saescope.activations.stream import iter_activation_batches
from saescope.errors import ConfigError


def test_batches_drop_bos_and_flatten_tokens(random_lm, random_tokens):
    batches = list(iter_activation_batches(random_lm, random_tokens, "blocks.0.mlp.hook_post", contexts_per_batch=4))
    assert [b.shape for b in batches] == [(4 * 15, 64), (4 * 15, 64), (2 * 15, 64)]
    assert all(b.dtype == torch.float32 for b in batches)


def test_batches_match_run_with_cache_without_bos_column(random_lm, random_tokens):
    rows = torch.cat(list(iter_activation_batches(random_lm, random_tokens, "blocks.1.hook_resid_post", 3)))
    _, cache = random_lm.run_with_cache(torch.as_tensor(random_tokens))
    expected = cache["blocks.1.hook_resid_post"][:, 1:, :].reshape(-1, 16)
    assert torch.allclose(rows, expected, atol=1e-5)


def test_include_bos_keeps_position_zero(random_lm, random_tokens):
    rows = torch.cat(list(iter_activation_batches(random_lm, torch.as_tensor(random_tokens), "blocks.0.hook_resid_pre", include_bos=True)))
    assert rows.shape == (10 * 16, 16)


def test_per_head_hook_is_flattened_or_one_head_selected(random_lm, random_tokens):
    all_heads = next(iter_activation_batches(random_lm, random_tokens, "blocks.0.attn.hook_z"))
    head2 = next(iter_activation_batches(random_lm, random_tokens, "blocks.0.attn.hook_z", hook_head_index=2))
    assert all_heads.shape[-1] == hook_dimension(random_lm, "blocks.0.attn.hook_z") == 16
    assert head2.shape[-1] == hook_dimension(random_lm, "blocks.0.attn.hook_z", 2) == 4
    assert torch.allclose(all_heads.reshape(-1, 4, 4)[:, 2, :], head2)


def test_unknown_hook_raises_config_error_with_examples(random_lm, random_tokens):
    with pytest.raises(ConfigError, match="blocks.1.mlp.hook_post"):
        next(iter_activation_batches(random_lm, random_tokens, "blocks.7.mlp.hook_post"))


def test_tokens_that_do_not_fit_the_model_raise_input_errors(random_lm):
    from saescope.errors import InputError

    with pytest.raises(InputError, match="n_ctx"):
        next(iter_activation_batches(random_lm, np.zeros((2, 17), dtype=np.int64), "blocks.0.hook_resid_post"))
    with pytest.raises(InputError, match="token ids"):
        next(iter_activation_batches(random_lm, np.full((2, 8), 100), "blocks.0.hook_resid_post"))
    with pytest.raises(InputError, match="integer"):
        next(iter_activation_batches(random_lm, np.zeros((2, 8), dtype=np.float32), "blocks.0.hook_resid_post"))


def test_packed_contexts_are_accepted_and_feed_shuffled_batches(random_lm, random_tokens):
    from saescope.activations.batches import ChunkedBatches, IterableChunks
    from saescope.corpus.packing import PackedContexts

    packed = PackedContexts(tokens=random_tokens, doc_ids=[f"d{i}" for i in range(10)], offsets=np.zeros(10, dtype=np.int64))
    stream = iter_activation_batches(random_lm, packed, "blocks.0.hook_resid_post", contexts_per_batch=2)
    rows = torch.cat(list(ChunkedBatches(IterableChunks(stream, chunk_rows=64, seed=0), batch_size=16)))
    expected = torch.cat(list(iter_activation_batches(random_lm, random_tokens, "blocks.0.hook_resid_post")))
    assert rows.shape == expected.shape == (150, 16)
    key = lambda t: sorted(map(tuple, t.round(decimals=5).tolist()))  # noqa: E731
    assert key(rows) == key(expected)
