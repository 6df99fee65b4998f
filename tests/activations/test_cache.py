"""ActivationCache and matrix files: round trips against streaming, atomic build, reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saescope.activations.batches import ChunkedBatches, IterableChunks
from saescope.activations.cache import ActivationCache, export_activation_matrix, load_activation_matrix
from saescope.activations.matrix_file import save_activation_matrix
from saescope.activations.stream import iter_activation_batches
from saescope.errors import ConfigError, FormatError, NotFoundError

HOOK = "blocks.0.mlp.hook_post"


def _streamed(model, tokens):
    return torch.cat(list(iter_activation_batches(model, tokens, HOOK)))


def test_cache_holds_the_streamed_activations_across_shards(random_lm, random_tokens, tmp_path):
    cache = ActivationCache.build(random_lm, random_tokens, HOOK, tmp_path / "c", shard_tokens=40, contexts_per_batch=3)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["n_tokens"] == 150 and manifest["d_in"] == 64 and manifest["hook_name"] == HOOK
    assert len(manifest["shards"]) == 4  # 40 + 40 + 40 + 30
    assert torch.allclose(cache.to_tensor(), _streamed(random_lm, random_tokens))
    ordered = torch.cat(list(ChunkedBatches(cache, 32)))
    assert torch.allclose(ordered, cache.to_tensor())
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # temp folder renamed away


def test_shuffled_batches_are_a_seeded_permutation(random_lm, random_tokens, tmp_path):
    cache = ActivationCache.build(random_lm, random_tokens, HOOK, tmp_path / "c", shard_tokens=64)
    shards = [cache.chunk(i) for i in range(cache.n_chunks)]
    a = torch.cat(list(ChunkedBatches(IterableChunks(shards, 200, seed=3), 16)))
    b = torch.cat(list(ChunkedBatches(IterableChunks(shards, 200, seed=3), 16)))
    assert torch.equal(a, b)
    full = cache.to_tensor()
    assert not torch.equal(a, full)
    key = lambda t: sorted(map(tuple, t.round(decimals=5).tolist()))  # noqa: E731
    assert key(a) == key(full)


def test_build_reuses_a_matching_cache_and_rebuilds_otherwise(random_lm, random_tokens, tmp_path):
    first = ActivationCache.build(random_lm, random_tokens, HOOK, tmp_path / "c")
    stamp = first.manifest.created_at
    again = ActivationCache.build(random_lm, random_tokens, HOOK, tmp_path / "c")
    assert again.manifest.created_at == stamp
    other = ActivationCache.build(random_lm, random_tokens, "blocks.1.hook_resid_post", tmp_path / "c")
    assert other.d_in == 16 and other.manifest.hook_name == "blocks.1.hook_resid_post"


def test_matrix_files_round_trip_in_both_formats(random_lm, random_tokens, tmp_path):
    expected = _streamed(random_lm, random_tokens)
    for name in ("acts.safetensors", "acts.npy"):
        path = export_activation_matrix(random_lm, random_tokens, HOOK, tmp_path / name)
        assert torch.allclose(load_activation_matrix(path), expected)
    with pytest.raises(ConfigError):
        save_activation_matrix(expected, tmp_path / "acts.txt")


def test_bad_inputs_raise_errors_naming_the_path(tmp_path):
    with pytest.raises(NotFoundError, match="nope"):
        ActivationCache.open(tmp_path / "nope")
    bad = tmp_path / "bad.npy"
    bad.write_text("not numpy")
    with pytest.raises(FormatError, match="bad.npy"):
        load_activation_matrix(bad)
    np.save(tmp_path / "vec.npy", np.zeros(5, dtype=np.float32))
    with pytest.raises(FormatError, match="vec.npy"):
        load_activation_matrix(tmp_path / "vec.npy")


def test_float16_cache_halves_storage_and_reads_back_as_float32(random_lm, random_tokens, tmp_path):
    cache = ActivationCache.build(random_lm, random_tokens, HOOK, tmp_path / "c16", dtype="float16")
    assert cache.manifest.dtype == "float16"
    assert np.load(tmp_path / "c16" / "shard_00000.npy", mmap_mode="r").dtype == np.float16
    batch = next(iter(ChunkedBatches(cache, 32)))
    assert batch.dtype == torch.float32
    assert torch.allclose(cache.to_tensor(), _streamed(random_lm, random_tokens), atol=1e-2)
