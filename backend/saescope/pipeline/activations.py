"""Activation files for `saescope train-sae --activations`: one forward pass over the corpus, saved.

Owns the `saescope cache-activations` step: run a model over contexts of the offline corpus and write
its activations at one hook point either as one matrix file (`.safetensors` / `.npy`) or, for any
other path, as an on-disk activation cache folder (memory-mapped shards, `activations.cache`) that
`train-sae --activations FOLDER` reads back. The writing itself lives in `saescope.activations.cache`.
"""

from __future__ import annotations

from pathlib import Path

from saescope.activations.cache import ActivationCache, save_activation_matrix
from saescope.errors import ConfigError
from saescope.pipeline.contexts import contexts_for_tokens, corpus_contexts, model_context_length
from saescope.pipeline.dictionaries import activation_rows, load_model

MATRIX_SUFFIXES = (".safetensors", ".npy")


def cache_activations_to_file(
    model_location: str, hook_name: str, n_tokens: int, out: Path, device: str = "auto", seed: int = 0
) -> Path:
    """Write `n_tokens` activation rows of `model_location` at `hook_name` to `out`: a matrix file when
    it ends in .safetensors or .npy, otherwise an activation cache folder; returns `out`."""
    if n_tokens < 1:
        raise ConfigError("--tokens must be positive")
    out = Path(out)
    if out.suffix and out.suffix not in MATRIX_SUFFIXES:
        raise ConfigError(f"--out {out}: use a .safetensors or .npy file name, or a folder name without a suffix")
    model = load_model(model_location, device)
    n_contexts = contexts_for_tokens(n_tokens, model_context_length(model))
    contexts = corpus_contexts(model, "train", n_contexts, seed)
    if out.suffix in MATRIX_SUFFIXES:
        return save_activation_matrix(activation_rows(model, contexts.tokens, hook_name, n_tokens), out)
    cache = ActivationCache.build(model, contexts.tokens, hook_name, out, model_name=str(model_location), reuse=False)
    return cache.folder
