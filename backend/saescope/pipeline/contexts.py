"""Corpus contexts for the pipeline's steps: training, held-out evaluation, precompute.

Owns choosing which packed contexts of the offline standard-library corpus a step reads (split,
count, seed, context length) and the seeded row orders of a training stream. It tokenises through
`corpus.packing`; it runs no model.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from saescope.corpus.packing import PackedContexts, pack_documents
from saescope.corpus.stdlib import stdlib_documents
from saescope.errors import ConfigError
from saescope.lm.builtin import BuiltinLMConfig

CORPUS_NAME = f"python-stdlib-{sys.version_info.major}.{sys.version_info.minor}"
MAX_CONTEXT_TOKENS = 128  # context length of the generic commands (any model): short windows, many features


def builtin_contexts(split: str, lm_config: BuiltinLMConfig, tokenizer: Any, n: int, seed: int) -> PackedContexts:
    """`n` contexts of the built-in model's corpus selection (same files, same held-out split)."""
    docs = stdlib_documents(
        split,  # type: ignore[arg-type]
        heldout_fraction=lm_config.heldout_fraction,
        max_files=lm_config.corpus_max_files,
        include_tests=lm_config.corpus_include_tests,
    )
    return pack_documents(docs, tokenizer, lm_config.n_ctx, max_contexts=n, seed=seed)


def model_context_length(model: Any) -> int:
    """Context length the generic commands use for `model`."""
    return min(int(model.cfg.n_ctx), MAX_CONTEXT_TOKENS)


def corpus_contexts(model: Any, split: str, n_contexts: int, seed: int) -> PackedContexts:
    """Contexts of the offline stdlib corpus, tokenised with `model`'s tokenizer at its context size."""
    if getattr(model, "tokenizer", None) is None:
        raise ConfigError("the model has no tokenizer attached; saescope needs one to read the corpus")
    docs = stdlib_documents(split)  # type: ignore[arg-type]
    return pack_documents(docs, model.tokenizer, model_context_length(model), max_contexts=n_contexts, seed=seed)


def contexts_for_tokens(n_tokens: int, n_ctx: int) -> int:
    """Contexts needed for `n_tokens` activation rows (BOS positions excluded)."""
    return int(np.ceil(n_tokens / (n_ctx - 1)))


def shuffled_rows(tokens: np.ndarray, seed: int) -> np.ndarray:
    """`tokens [n, n_ctx]` in a seeded random row order."""
    return tokens[np.random.default_rng(seed).permutation(tokens.shape[0])]


def training_rows(tokens: np.ndarray, n_ctx: int, n_tokens: int, seed: int) -> np.ndarray:
    """Shuffled context rows covering `n_tokens`; fewer distinct contexts than that are cycled over in
    fresh orders (more epochs)."""
    have = tokens.shape[0] * (n_ctx - 1)
    if have >= n_tokens:
        return shuffled_rows(tokens, seed)
    reps = int(np.ceil(n_tokens / have))
    return np.concatenate([shuffled_rows(tokens, seed + r) for r in range(reps)])
