"""Activation files for `saescope train-sae --activations`: one forward pass over the corpus, saved.

Owns the `saescope cache-activations` step: run a model over contexts of the offline corpus and write
its activations at one hook point either as one matrix file (`.safetensors` / `.npy`) or, for any
other path, as an on-disk activation cache folder (memory-mapped shards, `activations.cache`) that
`train-sae --activations FOLDER` trains on (through one matrix file exported into the folder, which
keeps the trainer's exact resume). The reading and writing live in `saescope.activations.cache`.
"""

from __future__ import annotations

from pathlib import Path

from saescope.activations.cache import MANIFEST_FILE, ActivationCache
from saescope.activations.matrix_file import save_activation_matrix
from saescope.errors import ConfigError
from saescope.pipeline.contexts import contexts_for_tokens, corpus_contexts, model_context_length
from saescope.pipeline.dictionaries import activation_rows, load_model

MATRIX_SUFFIXES = (".safetensors", ".npy")
CACHE_MATRIX_FILE = "activations.safetensors"


def cache_activations_to_file(
    model_location: str, hook_name: str, n_tokens: int, out: Path, device: str = "auto", seed: int = 0
) -> Path:
    """Write `n_tokens` activation rows of `model_location` at `hook_name` to `out`: a matrix file when
    it ends in .safetensors or .npy, otherwise an activation cache folder of whole contexts (at least
    `n_tokens` rows); returns `out`."""
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


def training_matrix(path: Path) -> Path:
    """The matrix file `train-sae --activations` reads for `path`: `path` itself, or for an activation
    cache folder the matrix exported into it (written once, atomically)."""
    path = Path(path)
    if not (path.is_dir() and (path / MANIFEST_FILE).is_file()):
        return path
    matrix = path / CACHE_MATRIX_FILE
    if not matrix.is_file():
        ActivationCache.open(path).export_matrix(matrix)
    return matrix
