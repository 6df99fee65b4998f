"""Fixtures for activation tests: a tiny random HookedTransformer (no tokenizer, d_vocab 100)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig


def build_random_lm(n_layers: int = 2, seed: int = 0) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=16, d_head=4, n_heads=4, d_mlp=64, d_vocab=100, n_ctx=16,
        act_fn="gelu", normalization_type="LN", seed=seed, device="cpu",
    )
    model = HookedTransformer(cfg)
    model.eval()
    return model


@pytest.fixture(scope="session")
def random_lm() -> HookedTransformer:
    torch.manual_seed(0)
    return build_random_lm()


@pytest.fixture(scope="session")
def random_tokens() -> np.ndarray:
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 100, size=(10, 16), dtype=np.int64)
    tokens[:, 0] = 0  # BOS column
    return tokens
