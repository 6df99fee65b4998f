"""Dictionary steps of the pipeline: train SAEs, fit baselines, prune, fine-tune, evaluate, write folders.

Owns the steps that turn activations into evaluated dictionary folders (SAELens format plus
`metrics.json`, `training.json` and, when pruned, `pruning.json`), each written atomically as a whole
folder so an interrupted run never leaves a half-written dictionary; and the generic model commands
`saescope train-sae --model` and `saescope evaluate`. The algorithms (trainers, baselines, pruning
rule, decoder fine-tuning, metrics) live in `saescope.dictionaries`; this module only calls them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import Tensor

from saescope.activations.chunked import ActivationChunks
from saescope.activations.hooks import check_hook_name_for_layers
from saescope.activations.stream import iter_activation_batches
from saescope.atomic_files import atomic_folder, write_json
from saescope.devices import resolve_device
from saescope.dictionaries.base import Dictionary, DictionaryMetadata
from saescope.dictionaries.baselines import fit_baseline
from saescope.dictionaries.evaluation import (
    METRICS_FILE,
    DictionaryMetrics,
    evaluate_dictionary,
    load_metrics,
    save_metrics,
)
from saescope.dictionaries.postprocess import (
    FinetuneConfig,
    PruneConfig,
    PruneResult,
    feature_statistics,
    finetune_decoder,
    load_prune_result,
    prune_mask,
    save_prune_result,
)
from saescope.dictionaries.saelens_format import CFG_FILE, WEIGHTS_FILE, load_dictionary, save_dictionary
from saescope.dictionaries.training import SAETrainingConfig, TrainingResult
from saescope.dictionaries.training_checkpoint import CHECKPOINT_DIR, remove_checkpoint
from saescope.dictionaries.training_file import DEFAULT_MAX_NORM_RATIO, MassiveRowFilter, without_massive_rows
from saescope.dictionaries.training_stream import train_saes_from_chunks
from saescope.errors import ConfigError
from saescope.lm.loading import load_lm, peek_layer_count
from saescope.pipeline.contexts import (
    CORPUS_NAME,
    contexts_for_tokens,
    corpus_contexts,
    model_context_length,
    shuffled_rows,
)
from saescope.pipeline.validation import check_fits_model
from saescope.ranks import current_ranks

TRAINING_FILE = "training.json"
CONTEXTS_PER_BATCH = 32
EVAL_FORWARDS_PER_CONTEXT = 4  # evaluate_dictionary runs clean, spliced, zero- and mean-ablated forwards


class DictionaryBuild(BaseModel):
    """One dictionary of an atlas and its held-out metrics."""

    id: str
    kind: str
    architecture: str
    d_sae: int
    folder: str
    reused: bool
    seconds: float
    metrics: dict[str, Any]


def folder_is_complete(folder: Path) -> bool:
    """True when `folder` holds a written dictionary with its metrics."""
    return all((folder / name).is_file() for name in (CFG_FILE, WEIGHTS_FILE, METRICS_FILE))


def write_dictionary_folder(folder: Path, dictionary: Dictionary, metrics: DictionaryMetrics,
                            training: dict[str, Any]) -> None:
    """Write weights, metrics and training notes to `folder` as a whole (it replaces any old folder)."""
    log10 = metrics.log10_density() if metrics.feature_density is not None else None
    with atomic_folder(folder) as partial:
        save_dictionary(dictionary, partial, log10_sparsity=log10)
        save_metrics(metrics, partial)
        write_json(partial / TRAINING_FILE, training)


def read_training_notes(folder: Path) -> dict[str, Any]:
    """`training.json` of a dictionary folder ({} when absent)."""
    path = Path(folder) / TRAINING_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def reused_build(folder: Path, name: str) -> DictionaryBuild:
    """The build record of a dictionary folder written by an earlier run."""
    dictionary = load_dictionary(folder)
    return DictionaryBuild(
        id=name, kind=dictionary.kind, architecture=dictionary.architecture, d_sae=dictionary.d_sae,
        folder=str(folder), reused=True, seconds=0.0, metrics=load_metrics(folder).model_dump(mode="json"),
    )


def new_build(folder: Path, name: str, dictionary: Dictionary, metrics: DictionaryMetrics,
              seconds: float) -> DictionaryBuild:
    """The build record of a dictionary written now."""
    return DictionaryBuild(
        id=name, kind=dictionary.kind, architecture=dictionary.architecture, d_sae=dictionary.d_sae,
        folder=str(folder), reused=False, seconds=seconds, metrics=metrics.model_dump(mode="json"),
    )


def activation_chunks(model: Any, token_rows: np.ndarray, hook_name: str, config: SAETrainingConfig) -> ActivationChunks:
    """The seekable SAE training stream over pre-shuffled contexts: chunks of about one shuffle
    buffer (at least one batch) of rows, each permuted by (seed, chunk index)."""
    return ActivationChunks(
        model,
        token_rows,
        hook_name,
        chunk_tokens=max(config.shuffle_buffer_tokens, config.batch_size),
        seed=config.seed,
        shuffle=config.shuffle_buffer_tokens > 0,
        contexts_per_batch=CONTEXTS_PER_BATCH,
    )


def activation_rows(model: Any, tokens: np.ndarray, hook_name: str, n_rows: int) -> Tensor:
    """The first `n_rows` activation vectors `[n_rows, d_in]` of `model` at `hook_name` over `tokens` (CPU)."""
    return torch.cat([b.cpu() for b in iter_activation_batches(model, tokens, hook_name)])[:n_rows]


# --------------------------------------------------------------------------- baselines


def build_baseline(model: Any, kind: str, rows: Tensor, heldout: np.ndarray, folder: Path, seed: int,
                   metadata: DictionaryMetadata) -> DictionaryBuild:
    """Fit baseline `kind` (neurons | random | pca | ica) on `rows [n, d_in]`, evaluate it on the held-out
    contexts `heldout [n, n_ctx]` and write its folder."""
    t0 = time.perf_counter()
    dictionary = fit_baseline(kind, rows, seed=seed, metadata=metadata)  # type: ignore[arg-type]
    metrics = evaluate_dictionary(model, dictionary, heldout, metadata.hook_name)
    write_dictionary_folder(folder, dictionary.cpu(), metrics, {"baseline": kind, "fit_rows": int(rows.shape[0])})
    return new_build(folder, folder.name, dictionary, metrics, time.perf_counter() - t0)


# --------------------------------------------------------------------------- post-processing


class PostprocessConfig(BaseModel):
    """Post-processing of trained SAEs (OpenMOSS 2024): pruning flags and decoder fine-tuning."""

    prune: bool = Field(False, description="Flag the features the pruning rule rejects (stored as `pruned`).")
    prune_thresholds: PruneConfig = Field(default_factory=PruneConfig, description="Pruning thresholds.")
    finetune: bool = Field(False, description="Also publish each SAE with its decoder fine-tuned "
                           "against feature suppression, as dictionary `{id}-finetuned`.")
    finetune_config: FinetuneConfig = Field(default_factory=FinetuneConfig, description="Fine-tuning options.")


FINETUNED_SUFFIX = "-finetuned"


def prune_folder(folder: Path, rows: Tensor, thresholds: PruneConfig) -> PruneResult:
    """Apply the pruning rule to the dictionary in `folder` over `rows [n, d_in]`; writes `pruning.json`.

    Indices stay stable: the weights are unchanged, the flagged features are stored as pruned."""
    dictionary = load_dictionary(folder)
    result = prune_mask(feature_statistics(dictionary, rows), thresholds)
    save_prune_result(result, folder)
    return result


def pruned_indices(folder: Path) -> list[int]:
    """Feature indices flagged by an earlier `prune_folder` ([] when never pruned)."""
    result = load_prune_result(folder)
    return [i for i, p in enumerate(result.pruned) if p] if result is not None else []


def finetune_folder(model: Any, source: Path, out: Path, rows: Tensor, heldout: np.ndarray,
                    config: FinetuneConfig) -> DictionaryBuild:
    """Fine-tune the decoder of the dictionary in `source` on `rows [n, d_in]` and write it to `out`,
    evaluated on the held-out contexts `heldout`."""
    t0 = time.perf_counter()
    dictionary = load_dictionary(source)
    tuned, result = finetune_decoder(dictionary, rows, config)
    metrics = evaluate_dictionary(model, tuned, heldout, dictionary.metadata.hook_name)
    notes = {"finetuned_from": source.name, "config": config.model_dump(), "before": result.before.model_dump(),
             "after": result.after.model_dump(), "steps": result.steps}
    write_dictionary_folder(out, tuned.cpu(), metrics, notes)
    return new_build(out, out.name, tuned, metrics, time.perf_counter() - t0)


# --------------------------------------------------------------------------- generic model commands


def load_model(location: str, device: str, hook_names: tuple[str, ...] = ()) -> Any:
    """The model at `location` on the chosen device (load_lm raises NotFoundError with a clear message).

    `hook_names` are checked against the model's config before its weights are loaded, where the
    config can be read on its own (ConfigError names the problem without waiting for the load)."""
    check_hooks_before_loading(location, hook_names)
    return load_lm(location, device=resolve_device(device))


def check_hooks_before_loading(location: str, hook_names: tuple[str, ...]) -> None:
    """Refuse hook names that cannot exist in the model at `location` (block out of range, unknown
    suffix, MLP hook of an attention-only model), reading only its config; no-op where the config is
    not readable without loading (hub names)."""
    layers = peek_layer_count(location) if hook_names else None
    if layers is None:
        return
    n_layers, attn_only = layers
    for hook_name in hook_names:
        check_hook_name_for_layers(hook_name, n_layers, attn_only)


@contextmanager
def evaluation_progress(model: Any, n_contexts: int, desc: str = "held-out evaluation") -> Iterator[None]:
    """A progress bar over an `evaluate_dictionary` run of `n_contexts` contexts, advanced by each
    forward pass through the model's unembedding (the evaluation makes several per context)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=n_contexts * EVAL_FORWARDS_PER_CONTEXT, desc=desc, unit="ctx-pass")

    def advance(module: Any, inputs: Any, output: Tensor) -> None:  # returns None: the output is unchanged
        bar.update(int(output.shape[0]))

    handle = model.unembed.register_forward_hook(advance)
    try:
        yield
    finally:
        handle.remove()
        bar.close()


def train_sae_on_model(
    model_location: str,
    hook_name: str,
    config: SAETrainingConfig,
    out: Path,
    device: str = "auto",
    checkpoint_every: int | None = 1_000_000,
    resume: bool = True,
    eval_contexts: int = 128,
    max_norm_ratio: float | None = DEFAULT_MAX_NORM_RATIO,
) -> TrainingResult:
    """Train one SAE on activations streamed from `model_location` at `hook_name`; write an SAELens folder.

    Checkpoints every `checkpoint_every` tokens to `out/checkpoint/`, as `train-sae --activations`
    does; with `resume=True` a rerun continues an interrupted run exactly, without re-running the
    model over the contexts it already trained on. The final held-out evaluation runs over
    `eval_contexts` contexts with a progress bar; 0 skips it (metrics.json then holds no metrics).
    Rows above `max_norm_ratio` times their chunk's median norm (massive activations, e.g. at BOS)
    are left out of training and counted in training.json (None keeps them)."""
    if eval_contexts < 0:
        raise ConfigError("--eval-contexts must be 0 (skip the evaluation) or positive")
    model = load_model(model_location, device, (hook_name,))
    n_ctx = model_context_length(model)
    contexts = corpus_contexts(model, "train", contexts_for_tokens(config.tokens, n_ctx) + 1, config.seed)
    metadata = DictionaryMetadata(
        model_name=str(model_location), hook_name=hook_name, context_size=n_ctx, dataset_path=CORPUS_NAME
    )
    chunks = without_massive_rows(
        activation_chunks(model, shuffled_rows(contexts.tokens, config.seed), hook_name, config), max_norm_ratio
    )
    checkpoint_dir = Path(out) / CHECKPOINT_DIR
    result = train_saes_from_chunks(
        [config], chunks, metadata, progress=True, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, resume=resume, keep_checkpoint=True,
    )[0]
    if not current_ranks().is_main:  # over several ranks, rank 0 evaluates and writes the folder
        return result
    notes = {"config": config.model_dump(), "history": result.history, "normalization_scale": result.normalization_scale,
             "resumed_from_tokens": result.resumed_from_tokens, "eval_contexts": eval_contexts,
             "max_norm_ratio": max_norm_ratio,
             "excluded_massive_rows": chunks.excluded if isinstance(chunks, MassiveRowFilter) else 0}
    if eval_contexts == 0:
        with atomic_folder(Path(out)) as partial:  # replaces `out` as a whole, the checkpoint folder included
            save_dictionary(result.dictionary.cpu(), partial, log10_sparsity=result.log10_density)
            write_json(partial / TRAINING_FILE, notes)
    else:
        heldout = corpus_contexts(model, "heldout", eval_contexts, config.seed)
        with evaluation_progress(model, heldout.tokens.shape[0]):
            metrics = evaluate_dictionary(model, result.dictionary, heldout.tokens, hook_name)
        write_dictionary_folder(Path(out), result.dictionary.cpu(), metrics, notes)  # replaces `out` as a whole
    remove_checkpoint(checkpoint_dir)
    return result


def evaluate_sae_folder(model_location: str, folder: Path, n_contexts: int = 256, device: str = "auto") -> DictionaryMetrics:
    """Evaluate a dictionary folder on held-out stdlib contexts, with a progress bar, and write the
    full metrics to metrics.json in the folder."""
    if n_contexts < 1:
        raise ConfigError("--contexts must be positive")
    dictionary = load_dictionary(Path(folder))
    hook_name = dictionary.metadata.hook_name
    if not hook_name:
        raise ConfigError(
            f"{folder} records no hook point (metadata.hook_name in {CFG_FILE} is empty): set it, e.g. with "
            "saescope import-sae FOLDER --hook-name HOOK --out FIXED, or retrain with train-sae --hook HOOK"
        )
    model = load_model(model_location, device, (hook_name,))
    check_fits_model(model, dictionary, str(folder))
    heldout = corpus_contexts(model, "heldout", n_contexts, 0)
    with evaluation_progress(model, heldout.tokens.shape[0]):
        metrics = evaluate_dictionary(model, dictionary, heldout.tokens)
    save_metrics(metrics, Path(folder))
    return metrics
