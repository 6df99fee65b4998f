"""ActivationChunks: chunk i is the shuffled activations of its contexts, a pure function of (tokens, seed, i)."""

from __future__ import annotations

import copy

import torch

from saescope.activations.chunked import ActivationChunks
from saescope.activations.stream import iter_activation_batches

HOOK = "blocks.0.mlp.hook_post"


def _sorted_rows(t: torch.Tensor) -> list:
    return sorted(map(tuple, t.round(decimals=5).tolist()))


def _count_contexts(model) -> tuple[list[int], object]:
    seen: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0].shape[0]), with_kwargs=True)
    return seen, handle


def test_a_chunk_holds_the_shuffled_activations_of_its_contexts(random_lm, random_tokens) -> None:
    chunks = ActivationChunks(random_lm, random_tokens, HOOK, chunk_tokens=45, seed=0)
    assert (chunks.contexts_per_chunk, chunks.n_chunks) == (3, 4)  # 15 tokens per context after BOS
    got = chunks.chunk(1)
    plain = torch.cat(list(iter_activation_batches(random_lm, random_tokens[3:6], HOOK)))
    assert got.shape == plain.shape == (45, 64)
    assert _sorted_rows(got) == _sorted_rows(plain)
    assert not torch.equal(got, plain), "rows are permuted"
    assert chunks.chunk(3).shape == (15, 64), "the last chunk holds the remaining context"


def test_a_chunk_depends_only_on_tokens_seed_and_index_and_runs_only_its_contexts(random_lm, random_tokens) -> None:
    chunks = ActivationChunks(random_lm, random_tokens, HOOK, chunk_tokens=45, seed=7)
    in_order = [chunks.chunk(i) for i in range(chunks.n_chunks)]
    fresh = ActivationChunks(random_lm, random_tokens, HOOK, chunk_tokens=45, seed=7)
    seen, handle = _count_contexts(random_lm)
    try:
        direct = fresh.chunk(2)
    finally:
        handle.remove()
    assert torch.equal(direct, in_order[2])
    assert sum(seen) == 3, "only chunk 2's contexts go through the model"
    other_seed = ActivationChunks(random_lm, random_tokens, HOOK, chunk_tokens=45, seed=8).chunk(2)
    assert not torch.equal(other_seed, direct) and _sorted_rows(other_seed) == _sorted_rows(direct)


def test_the_fingerprint_changes_with_tokens_model_and_seed(random_lm, random_tokens) -> None:
    base = ActivationChunks(random_lm, random_tokens, HOOK, seed=0).fingerprint()
    assert base == ActivationChunks(random_lm, random_tokens.copy(), HOOK, seed=0).fingerprint()
    other_tokens = random_tokens.copy()
    other_tokens[0, 5] = (other_tokens[0, 5] + 1) % 100
    assert ActivationChunks(random_lm, other_tokens, HOOK, seed=0).fingerprint()["tokens_sha256"] != base["tokens_sha256"]
    other_model = copy.deepcopy(random_lm)
    with torch.no_grad():
        other_model.blocks[0].mlp.W_in[0, 0] += 1e-3
    assert ActivationChunks(other_model, random_tokens, HOOK, seed=0).fingerprint()["model_sha256"] != base["model_sha256"]
    assert ActivationChunks(random_lm, random_tokens, HOOK, seed=1).fingerprint() != base
