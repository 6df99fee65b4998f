"""Training SAEs from a seekable stream of activation chunks, with checkpoints and exact resume.

Owns `ChunkedBatches` (cuts chunks 0, 1, 2, ... of a `ChunkSource` into `[batch_size, d_in]`
batches in order, and knows its position: the next chunk to read plus the rows left over from the
chunks already read) and `train_saes_from_chunks` (one SAE or a sweep fed the same batches). A
checkpoint is written every `checkpoint_every` tokens, at the first step after which fewer than
`batch_size` rows are left over (the next step reads a new chunk). It holds every trainer's state
and that position, so it stores at most one batch of activation rows, and a resumed run reads the
next chunk directly: no chunk, and so no model forward, is computed twice. The source (such as
`activations.chunked.ActivationChunks`) is duck-typed; this module knows nothing about language
models. The checkpoint format lives in `training_checkpoint.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.training import (
    SAETrainer,
    SAETrainingConfig,
    TrainingResult,
    _as_batch,
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
from saescope.errors import ConfigError, InputError


class ChunkSource(Protocol):
    """A finite sequence of activation chunks, each a pure function of its index."""

    n_chunks: int

    def chunk(self, index: int) -> Tensor:
        """`[rows, d_in]` activation rows of chunk `index` (shuffled as the source sees fit)."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """A JSON-like dict identifying the data; a checkpoint resumes only on an equal one."""
        ...


class ChunkedBatches:
    """`[batch_size, d_in]` batches cut from the rows of chunks `next_chunk, next_chunk + 1, ...`,
    preceded by `leftover` rows (what a checkpoint saved). Only the last batch may be smaller.

    `position()` is what a checkpoint stores; `ChunkedBatches(source, batch_size, **position)`
    continues the same batch sequence. `peek(n)` returns the first n upcoming rows without
    consuming them (the chunks it reads are kept for iteration, not recomputed)."""

    def __init__(
        self, source: ChunkSource, batch_size: int, next_chunk: int = 0, leftover: Tensor | None = None
    ) -> None:
        if batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        self.source = source
        self.batch_size = batch_size
        self.next_chunk = int(next_chunk)
        self.d_in: int | None = None
        self._rows = torch.zeros(0, 0)  # rows read and not yet emitted start at self._offset
        self._offset = 0
        if leftover is not None and leftover.shape[0]:
            self._rows = _as_batch(leftover, None)
            self.d_in = int(self._rows.shape[1])
        self._peeked: list[Tensor] = []  # chunks next_chunk, next_chunk + 1, ... read by peek

    @property
    def leftover(self) -> Tensor:
        """`[rows < batch_size (at a chunk boundary), d_in]` rows read but not yet emitted."""
        return self._rows[self._offset :]

    @property
    def at_chunk_boundary(self) -> bool:
        """True when the next batch starts by reading a new chunk (the position is cheap to save)."""
        return self.leftover.shape[0] < self.batch_size

    def position(self) -> dict[str, Any]:
        """`{"next_chunk", "leftover"}`: the keyword arguments that continue this exact sequence."""
        return {"next_chunk": self.next_chunk, "leftover": self.leftover.clone()}

    def _read(self) -> Tensor | None:
        """The next non-empty chunk, validated, or None when the source is exhausted."""
        while True:
            if self._peeked:
                t = self._peeked.pop(0)
            elif self.next_chunk < self.source.n_chunks:
                t = self._load(self.next_chunk)
            else:
                return None
            self.next_chunk += 1
            if t.shape[0]:
                return t

    def _load(self, index: int) -> Tensor:
        t = _as_batch(self.source.chunk(index), self.d_in)
        self.d_in = int(t.shape[1])
        return t

    def peek(self, rows: int) -> Tensor:
        """The first `rows` upcoming rows (fewer if the stream is shorter); InputError when it is empty."""
        have = self.leftover.shape[0] + sum(int(t.shape[0]) for t in self._peeked)
        while have < rows and self.next_chunk + len(self._peeked) < self.source.n_chunks:
            t = self._load(self.next_chunk + len(self._peeked))
            self._peeked.append(t)
            have += int(t.shape[0])
        parts = [p for p in [self.leftover, *self._peeked] if p.shape[0]]
        if not parts:
            raise InputError("the activation stream is empty: no batches to train on", field="batches")
        return torch.cat(parts)[:rows]

    def __iter__(self) -> Iterator[Tensor]:
        B = self.batch_size
        while True:
            parts = [self.leftover] if self.leftover.shape[0] else []
            have = parts[0].shape[0] if parts else 0
            while have < B:
                t = self._read()
                if t is None:
                    break
                parts.append(t)
                have += int(t.shape[0])
            if have == 0:
                return
            self._rows = torch.cat(parts) if len(parts) > 1 else parts[0]
            self._offset = 0
            if have < B:  # the end of the stream: one short batch
                self._offset = have
                yield self._rows
                return
            while self._rows.shape[0] - self._offset >= B:
                batch = self._rows[self._offset : self._offset + B]
                self._offset += B
                yield batch


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
    are saved to `<checkpoint_dir>/state.pt` every `checkpoint_every` tokens (at the next chunk
    boundary); `resume=True` continues an existing checkpoint exactly, after checking it was
    written for the same configs and the same data (ConfigError otherwise; nothing is deleted).
    On success the folder is removed, unless `keep_checkpoint`: then a final checkpoint is written
    so a rerun returns the results at once (the caller removes it once it has stored them). Ctrl-C
    raises TrainingInterrupted naming the last checkpoint. `callback(step)` runs after every step.
    """
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
    resumed_from = trainers[0].tokens_seen
    total = first.tokens

    def on_step(ts: Sequence[SAETrainer]) -> None:
        nonlocal last_saved
        tokens = ts[0].tokens_seen
        if (
            folder is not None
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

    if folder is not None:
        if keep_checkpoint:
            save_checkpoint(folder, trainers, data, stream.position())
        else:
            remove_checkpoint(folder)
    return training_results(trainers, metadata, resumed_from)
