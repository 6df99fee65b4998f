"""Tiny components for store tests: a random 1-layer HookedTransformer, SAEs, packed contexts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.architectures.standard import StandardSAE


@dataclass
class Packed:
    """Same fields as saescope.corpus.packing.PackedContexts."""

    tokens: np.ndarray
    doc_ids: list[str]
    offsets: np.ndarray


def make_model(seed: int = 0) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=32, d_mlp=64, n_heads=4, d_head=8, n_ctx=16, d_vocab=50, act_fn="gelu",
        normalization_type="LN", seed=seed, device="cpu",
    )
    model = HookedTransformer(cfg)
    model.eval()
    return model


def make_sae(d_in: int, d_sae: int, hook: str, seed: int, bias: float = -0.05) -> StandardSAE:
    sae = StandardSAE(d_in, d_sae, DictionaryMetadata(model_name="tiny", hook_name=hook, context_size=16))
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.b_enc.fill_(bias)
    return sae


def make_contexts(n: int = 48, n_ctx: int = 16, vocab: int = 50, seed: int = 0, bos: int = 0) -> Packed:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab, size=(n, n_ctx)).astype(np.int64)
    tokens[:, 0] = bos
    doc_ids = [f"doc{i // 3}" for i in range(n)]
    offsets = np.array([(i % 3) * (n_ctx - 1) for i in range(n)], dtype=np.int64)
    return Packed(tokens, doc_ids, offsets)
