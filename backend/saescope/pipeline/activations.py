"""Activation files for `saescope train-sae --activations`: one forward pass over the corpus, saved.

Owns the `saescope cache-activations` step: run a model over contexts of the offline corpus and write
its activations at one hook point either as one matrix file (`.safetensors` / `.npy`) or, for any
other path, as an on-disk activation cache folder (memory-mapped shards, `activations.cache`) that
`train-sae --activations FOLDER` trains on (through one matrix file exported into the folder, which
keeps the trainer's exact resume). The reading and writing live in `saescope.activations.cache`.

Also owns `train_sae_on_activations`, the `train-sae --activations` job: it records the hook point
and model name in the written folder's metadata (from the options, else from a cache folder's
manifest) so `evaluate` and `precompute` work on it, and trains for one pass over the file unless
told otherwise, saying how many passes a longer run makes.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saescope.activations.cache import MANIFEST_FILE, ActivationCache
from saescope.activations.matrix_file import ActivationMatrix, save_activation_matrix
from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.training import SAETrainingConfig, TrainingResult
from saescope.dictionaries.training_file import DEFAULT_MAX_NORM_RATIO, TRAINING_CONFIG_FILE, train_sae_from_file
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
    model = load_model(model_location, device, (hook_name,))
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


def _cache_manifest(path: Path) -> Any:
    """The manifest of the activation cache folder at `path`, or None for a matrix file."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST_FILE).is_file():
        return ActivationCache.open(path).manifest
    return None


def activations_metadata(path: Path, hook_name: str | None, model_name: str | None) -> DictionaryMetadata:
    """Metadata for an SAE trained on the activations at `path`: the given hook and model name,
    falling back to what a cache folder's manifest records. Raises ConfigError when `hook_name`
    contradicts the manifest."""
    manifest = _cache_manifest(path)
    fields: dict[str, Any] = {"dataset_path": str(path)}
    if manifest is not None:
        if hook_name and hook_name != manifest.hook_name:
            raise ConfigError(
                f"--hook {hook_name} does not match the activation cache {path}, written at {manifest.hook_name}; "
                "drop --hook or pass the cache's hook"
            )
        fields.update(hook_name=manifest.hook_name, hook_head_index=manifest.hook_head_index,
                      model_name=manifest.model_name, context_size=manifest.n_ctx)
    if hook_name:
        fields["hook_name"] = hook_name
    if model_name:
        fields["model_name"] = model_name
    return DictionaryMetadata(**fields)


def training_passes(n_rows: int, tokens: int) -> float:
    """How many passes over `n_rows` activation rows a run of `tokens` training tokens makes."""
    return tokens / max(n_rows, 1)


def train_sae_on_activations(
    path: Path,
    config_fields: dict[str, Any],
    out: Path,
    hook_name: str | None = None,
    model_name: str | None = None,
    checkpoint_every: int | None = 1_000_000,
    resume: bool = True,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    max_norm_ratio: float | None = DEFAULT_MAX_NORM_RATIO,
) -> TrainingResult:
    """Train one SAE on the activation matrix or cache folder at `path` and write `out` (SAELens).

    `config_fields` are `SAETrainingConfig` fields; without `tokens` the run makes one pass over
    the rows. More than one pass is announced through `say`, as is a folder without a hook point.
    Rows above `max_norm_ratio` times the median norm (massive activations) are left out of training
    and counted (None keeps them)."""
    metadata = activations_metadata(path, hook_name, model_name)
    matrix_path = training_matrix(path)
    n_rows = ActivationMatrix(matrix_path).n
    fields = dict(config_fields)
    fields.setdefault("tokens", n_rows)
    config = SAETrainingConfig(**fields)
    passes = training_passes(n_rows, config.tokens)
    if passes > 1:
        say(f"training on {config.tokens:,} tokens: {math.ceil(passes)} passes over the {n_rows:,} rows of {path} "
            f"({passes:.1f}x); leave out --tokens for one pass")
    if not metadata.hook_name:
        say("no --hook given: the SAE folder records no hook point, so evaluate and precompute will refuse it; "
            "pass --hook HOOK (and --model LOCATION to record the model)")
    result = train_sae_from_file(
        matrix_path, config, out, checkpoint_every=checkpoint_every, resume=resume, metadata=metadata,
        max_norm_ratio=max_norm_ratio,
    )
    excluded = json.loads((Path(out) / TRAINING_CONFIG_FILE).read_text()).get("excluded_massive_rows", 0)
    if excluded:
        say(f"left out {excluded:,} massive-activation rows (norm above {max_norm_ratio:g}x the median) from training")
    return result
