"""Training SAEs from a seekable stream of activation chunks, with checkpoints and exact resume.

Owns `train_saes_from_chunks` (one SAE or a sweep fed the same batches, cut from a `ChunkSource`
by `activations.batches.ChunkedBatches`, which knows its position: the next chunk to read plus the
rows left over from the chunks already read). A
checkpoint is written every `checkpoint_every` tokens, at the first step after which fewer than
`batch_size` rows are left over (the next step reads a new chunk). It holds every trainer's state
and that position, so it stores at most one batch of activation rows, and a resumed run reads the
next chunk directly: no chunk, and so no model forward, is computed twice. The source (such as
`activations.chunked.ActivationChunks`) is duck-typed; this module knows nothing about language
models. The checkpoint format lives in `training_checkpoint.py`; training over several ranks in
`distributed.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from saescope.activations.batches import ChunkedBatches, ChunkSource
from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.distributed import attach_ranks
from saescope.dictionaries.training import (
    SAETrainer,
    SAETrainingConfig,
    TrainingResult,
    _check_sweep,
    init_statistics,
    run_trainers,
    training_results,
)
from saescope.dictionaries.training_checkpoint import (
    interrupted,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from saescope.ranks import current_ranks


def train_saes_from_chunks(
    configs: Sequence[SAETrainingConfig],
    source: ChunkSource,
    metadata: DictionaryMetadata | None = None,
    progress: bool = True,
    checkpoint_dir: Path | str | None = None,
    checkpoint_every: int | None = 1_000_000,
    resume: bool = True,
    keep_checkpoint: bool = False,
    callback: Callable[[int], None] | None = None,
) -> list[TrainingResult]:
    """Train every config in one pass over the chunks of `source`; one TrainingResult per config.

    With `checkpoint_dir` (a folder this run owns), every trainer's state and the stream position
    are saved to `<checkpoint_dir>/state.safetensors` every `checkpoint_every` tokens (at the next chunk
    boundary); `resume=True` continues an existing checkpoint exactly, after checking it was
    written for the same configs and the same data (ConfigError otherwise; nothing is deleted).
    On success the folder is removed, unless `keep_checkpoint`: then a final checkpoint is written
    so a rerun returns the results at once (the caller removes it once it has stored them). Ctrl-C
    raises TrainingInterrupted naming the last checkpoint. `callback(step)` runs after every step.

    In a job with several ranks (torchrun, `--nproc`, `distributed.train_distributed`) every rank
    cuts the same batches and trains on its share of each (`distributed.RankAverager`); only rank 0
    writes or removes the checkpoint, and every rank returns the same results.
    """
    ranks = current_ranks()
    progress = progress and ranks.is_main
    configs = list(configs)
    _check_sweep(configs)
    first = configs[0]
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    data = source.fingerprint() if folder is not None else {}

    loaded = load_checkpoint(folder, configs, data) if folder is not None and resume else None
    if loaded is not None:
        trainers = loaded.trainers
        stream = ChunkedBatches(
            source, first.batch_size, next_chunk=int(loaded.position["next_chunk"]), leftover=loaded.position["leftover"]
        )
        last_saved: int | None = loaded.tokens
    else:
        torch.manual_seed(first.seed)
        stream = ChunkedBatches(source, first.batch_size)
        sample = stream.peek(first.init_tokens)
        trainers = []
        for cfg in configs:
            scale, b_init = init_statistics(sample, cfg)
            trainer = SAETrainer(cfg, int(sample.shape[1]), scale, b_init)
            trainer.calibrate_encoder(sample * scale)
            trainers.append(trainer)
        del sample
        last_saved = None
    attach_ranks(trainers, ranks)
    resumed_from = trainers[0].tokens_seen
    total = first.tokens

    def on_step(ts: Sequence[SAETrainer]) -> None:
        nonlocal last_saved
        tokens = ts[0].tokens_seen
        if (
            folder is not None
            and ranks.is_main
            and checkpoint_every
            and tokens < total
            and tokens - (last_saved or 0) >= checkpoint_every
            and stream.at_chunk_boundary
        ):
            save_checkpoint(folder, ts, data, stream.position())
            last_saved = tokens
        if callback is not None:
            callback(ts[0].step_index)

    try:
        run_trainers(trainers, iter(stream), progress=progress, on_step=on_step)
    except KeyboardInterrupt:
        if folder is None:
            raise
        raise interrupted(folder, trainers[0].tokens_seen, total, last_saved) from None

    if folder is not None and ranks.is_main:
        if keep_checkpoint:
            save_checkpoint(folder, trainers, data, stream.position())
        else:
            remove_checkpoint(folder)
    return training_results(trainers, metadata, resumed_from)
