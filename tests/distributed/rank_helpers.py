"""Functions the distributed tests run on every rank (module level, so spawned ranks can import them)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saescope.dictionaries.training import SAETrainingConfig
from saescope.dictionaries.training_file import train_sae_from_file
from saescope.ranks import current_ranks


def train_file(data: str, config_json: str, out: str, checkpoint_every: int, die_at_step: int | None = None,
               first_step_file: str | None = None) -> None:
    """`train_sae_from_file` on this rank. Rank 1 kills itself (SIGKILL) after step `die_at_step`;
    rank 0 writes the index of the first step it ran to `first_step_file`."""
    config = SAETrainingConfig.model_validate_json(config_json)
    ranks = current_ranks()
    steps: list[int] = []

    def callback(step: int) -> None:
        if not steps and first_step_file is not None and ranks.is_main:
            Path(first_step_file).write_text(str(step))
        steps.append(step)
        if die_at_step is not None and ranks.rank == 1 and step >= die_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    train_sae_from_file(data, config, out, checkpoint_every=checkpoint_every, progress=False, callback=callback)


def tiny_contexts(model_dir: str, n: int, seed: int = 0) -> Any:
    """`n` random token contexts of 24 tokens (BOS first) for the tiny model, with repeated windows
    and shared prefixes so that duplicates and ties of activation occur."""
    from saescope.corpus.packing import PackedContexts

    from saescope.lm.loading import load_lm

    model = load_lm(model_dir, device="cpu")
    g = np.random.default_rng(seed)
    tokens = g.integers(1, int(model.cfg.d_vocab), size=(n, 24))
    tokens[:, 0] = 0
    tokens[1::7] = tokens[0::7][: len(tokens[1::7])]  # identical windows (one group)
    tokens[2::5, :8] = tokens[0, :8]  # a shared prefix: equal activations on its positions
    return PackedContexts(tokens=tokens, doc_ids=[f"doc{i // 3}" for i in range(n)], offsets=np.zeros(n, np.int64))


def publish_tiny(store_url: str, model_dir: str, sae_dirs: list[str], work_dir: str, n_contexts: int,
                 die_at_batch: int | None = None, first_batch_file: str | None = None) -> None:
    """`precompute_and_publish` of the SAE folders over `tiny_contexts` on this rank (no UMAP; the
    streaming state checkpointed after every batch). Rank 1 kills itself (SIGKILL) when it reaches
    batch `die_at_batch`, before that batch is checkpointed; with `first_batch_file`, each rank writes
    the first batch it streams to that path + `.rank{r}`."""
    from saescope.analysis.config import PrecomputeConfig
    from saescope.dictionaries.saelens_format import load_dictionary
    from saescope.lm.loading import load_lm
    from saescope.pipeline.publish import DictionaryEntry, ModelRecord, precompute_and_publish

    torch.set_num_threads(1)
    ranks = current_ranks()
    model = load_lm(model_dir, device="cpu")
    entries = [DictionaryEntry(id=Path(d).name, dictionary=load_dictionary(Path(d))) for d in sae_dirs]
    config = PrecomputeConfig(device="cpu", umap=False, progress=False, contexts_per_batch=16, checkpoint_every=1)

    def on_batch(batch: int) -> None:
        first = Path(f"{first_batch_file}.rank{ranks.rank}") if first_batch_file else None
        if first is not None and not first.exists():
            first.write_text(str(batch))
        if die_at_batch is not None and ranks.rank == 1 and batch >= die_at_batch:
            os.kill(os.getpid(), signal.SIGKILL)

    precompute_and_publish(store_url, model, ModelRecord(id="tiny"), entries, tiny_contexts(model_dir, n_contexts),
                           config, work_dir=work_dir, on_batch=on_batch)
