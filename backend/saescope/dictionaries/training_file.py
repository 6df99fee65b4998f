"""Training SAEs from an activation matrix on disk, with checkpoints and exact resume.

Owns `train_sae_from_file` / `train_saes_from_file` (a sweep over one file) and the
`TrainSAEOptions` pydantic model that maps 1:1 to `saescope train-sae` options. The file is read by
`activations.matrix_file` and fed through the same chunked path as a model's activations
(`training_stream.train_saes_from_chunks`), so checkpoints (`<out>/checkpoint/state.safetensors`) and exact
resume work the same way: a run killed at any point and restarted with `resume=True` ends with
exactly the weights of an uninterrupted run. The result folder is written in SAELens format through
`saelens_format.save_dictionary`, plus `history.json` and `training_config.json`. It knows nothing
about language models.

Massive activations: a few positions of many language models (the first token, BOS, some
delimiters) carry residual-stream norms ten or more times the typical one. Left in, they dominate
the reconstruction loss and the normalisation scale. `MassiveRowFilter` drops, from every training
chunk, the rows whose L2 norm exceeds `max_norm_ratio` times the chunk's median row norm; the
number dropped is counted and written to `training_config.json` (`excluded_massive_rows`).
`max_norm_ratio=None` keeps every row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import Tensor

from saescope.activations.batches import ChunkSource
from saescope.activations.matrix_file import ActivationMatrix, MatrixChunks
from saescope.atomic_files import write_json
from saescope.dictionaries.architectures import TRAINING_NAMES, check_training_name
from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.training import SAETrainingConfig, TrainingResult
from saescope.dictionaries.training_checkpoint import CHECKPOINT_DIR, CHECKPOINT_FILE  # re-exported for callers
from saescope.dictionaries.training_stream import train_saes_from_chunks
from saescope.errors import ConfigError
from saescope.ranks import current_ranks

__all__ = [
    "CHECKPOINT_DIR", "CHECKPOINT_FILE", "DEFAULT_MAX_NORM_RATIO", "MassiveRowFilter", "TrainSAEOptions",
    "train_sae_from_file", "train_saes_from_file",
]

HISTORY_FILE = "history.json"
TRAINING_CONFIG_FILE = "training_config.json"
DEFAULT_MAX_NORM_RATIO = 10.0  # rows above this multiple of the median norm are massive activations


class MassiveRowFilter:
    """A `ChunkSource` that passes on the chunks of `source` without their massive-activation rows:
    rows whose L2 norm exceeds `max_norm_ratio` times the chunk's median row norm. A pure function
    of the chunk index, like its source, so checkpoints resume exactly; `excluded` counts the rows
    dropped per chunk index (each chunk counted once however often it is read)."""

    def __init__(self, source: ChunkSource, max_norm_ratio: float) -> None:
        if max_norm_ratio <= 1:
            raise ConfigError(f"max_norm_ratio must be above 1 (a multiple of the median norm); got {max_norm_ratio}")
        self.source, self.max_norm_ratio = source, float(max_norm_ratio)
        self.n_chunks = source.n_chunks
        self._excluded: dict[int, int] = {}

    def chunk(self, index: int) -> Tensor | None:
        rows = self.source.chunk(index)
        if rows is None or rows.shape[0] == 0:
            return rows
        norms = rows.float().norm(dim=-1)  # [rows]
        keep = norms <= self.max_norm_ratio * norms.median()
        self._excluded[index] = int((~keep).sum())
        return rows if bool(keep.all()) else rows[keep]

    @property
    def excluded(self) -> int:
        """Rows dropped from the chunks read so far."""
        return sum(self._excluded.values())

    def fingerprint(self) -> dict[str, Any]:
        return {**self.source.fingerprint(), "max_norm_ratio": self.max_norm_ratio}


def without_massive_rows(source: ChunkSource, max_norm_ratio: float | None) -> ChunkSource:
    """`source` wrapped in a `MassiveRowFilter`, or `source` itself when `max_norm_ratio` is None."""
    return source if max_norm_ratio is None else MassiveRowFilter(source, max_norm_ratio)


class TrainSAEOptions(BaseModel):
    """Options of `saescope train-sae`, one field per command-line option."""

    model_config = ConfigDict(extra="forbid")

    activations: Path = Field(description="--activations FILE: .safetensors (tensor 'activations') or .npy, [n, d_in].")
    architecture: str = Field("relu", description=f"--architecture {{{','.join(TRAINING_NAMES)}}}.")
    d_sae: int = Field(description="--d-sae N: number of latents.", ge=1)
    k: int | None = Field(None, ge=1, description="--k K: active latents per token (k-sparse architectures; default 32).")
    l1: float | None = Field(None, ge=0, description="--l1 C: sparsity coefficient (L1 or L0 penalty architectures).")
    tokens: int | None = Field(None, ge=1, description="--tokens N: training tokens (default: one pass over the file).")
    seed: int = Field(0, description="--seed S.")
    out: Path = Field(description="--out DIR: output SAELens folder.")
    lr: float | None = Field(None, gt=0, description="--lr: peak learning rate (default depends on d_sae).")
    batch_size: int | None = Field(None, ge=1, description="--batch-size: tokens per step (default 1024).")
    checkpoint_every: int | None = Field(
        1_000_000, ge=1, description="--checkpoint-every N: checkpoint every N tokens (resumable)."
    )
    resume: bool = Field(True, description="--no-resume sets False: ignore an existing checkpoint.")

    _registered = field_validator("architecture")(check_training_name)

    @classmethod
    def parse(cls, **values: Any) -> "TrainSAEOptions":
        """Build from CLI values, turning validation failures into a ConfigError naming the option."""
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            option = "--" + str(first["loc"][0]).replace("_", "-") if first.get("loc") else "options"
            raise ConfigError(f"{option}: {first['msg']}") from None

    def to_config(self, n_rows: int | None = None, **overrides: Any) -> SAETrainingConfig:
        values: dict[str, Any] = {"architecture": self.architecture, "d_sae": self.d_sae, "seed": self.seed}
        if self.k is not None:
            values["k"] = self.k
        if self.l1 is not None:
            values["l1"] = self.l1
        if self.lr is not None:
            values["lr"] = self.lr
        if self.batch_size is not None:
            values["batch_size"] = self.batch_size
        if self.tokens is not None:
            values["tokens"] = self.tokens
        elif n_rows is not None:
            values["tokens"] = n_rows
        values.update(overrides)
        try:
            return SAETrainingConfig(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"{'.'.join(map(str, first['loc'])) or 'config'}: {first['msg']}") from None

    def run(self, progress: bool = True, **overrides: Any) -> TrainingResult:
        """Train as the CLI does; returns the result (the folder is at `self.out`)."""
        matrix = ActivationMatrix(self.activations)
        config = self.to_config(matrix.n, **overrides)
        return train_sae_from_file(
            self.activations, config, self.out, checkpoint_every=self.checkpoint_every,
            resume=self.resume, progress=progress,
        )


def train_saes_from_file(
    path: Path | str,
    configs: Sequence[SAETrainingConfig],
    out_dirs: Sequence[Path | str],
    checkpoint_every: int | None = None,
    resume: bool = True,
    metadata: DictionaryMetadata | None = None,
    progress: bool = True,
    keep_checkpoint: bool = False,
    callback: Callable[[int], None] | None = None,
    max_norm_ratio: float | None = None,
) -> list[TrainingResult]:
    """Train every config in one pass over the matrix at `path`, writing one SAELens folder each.

    `max_norm_ratio` drops massive-activation rows (norm above that multiple of the chunk median)
    from training; the count is written to each folder's training_config.json.

    The file is read as `MatrixChunks` (blocks of `shuffle_buffer_tokens` rows in a seeded order,
    shuffled within) through `train_saes_from_chunks`; `checkpoint_every` (tokens) writes
    `<out_dirs[0]>/checkpoint/state.safetensors` and `resume=True` continues an existing checkpoint exactly.
    `callback(step)` runs after every step. Returns the results in config order. Over several
    ranks (`distributed.py`) rank 0 writes the folders and every rank returns once they are written.
    """
    from saescope.dictionaries.saelens_format import save_dictionary

    configs = list(configs)
    if not configs:
        raise ConfigError("give at least one training config")
    if len(out_dirs) != len(configs):
        raise ConfigError("give one output folder per config")
    first = configs[0]
    for c in configs[1:]:
        if (c.batch_size, c.tokens, c.seed, c.shuffle_buffer_tokens) != (
            first.batch_size, first.tokens, first.seed, first.shuffle_buffer_tokens
        ):
            raise ConfigError("a sweep over one file needs equal batch_size, tokens, seed and shuffle_buffer_tokens")
    matrix = ActivationMatrix(path)
    out_dirs = [Path(o) for o in out_dirs]
    source = without_massive_rows(
        MatrixChunks(matrix, max(first.shuffle_buffer_tokens, first.batch_size), first.seed, first.tokens),
        max_norm_ratio,
    )
    if metadata is None:
        metadata = DictionaryMetadata(dataset_path=str(matrix.path))
    results = train_saes_from_chunks(
        configs, source, metadata, progress=progress, checkpoint_dir=out_dirs[0] / CHECKPOINT_DIR,
        checkpoint_every=checkpoint_every, resume=resume, keep_checkpoint=keep_checkpoint, callback=callback,
    )
    ranks = current_ranks()
    for config, result, out in zip(configs, results, out_dirs):
        if not ranks.is_main:
            continue
        save_dictionary(result.dictionary, out, log10_sparsity=result.log10_density)
        write_json(out / HISTORY_FILE, result.history, indent=1)
        write_json(out / TRAINING_CONFIG_FILE, {
            "config": config.model_dump(),
            "normalization_scale": result.normalization_scale,
            "activations": matrix.fingerprint(),
            "max_norm_ratio": max_norm_ratio,
            "excluded_massive_rows": source.excluded if isinstance(source, MassiveRowFilter) else 0,
        })
    ranks.barrier()
    return results


def train_sae_from_file(
    path: Path | str,
    config: SAETrainingConfig,
    out_dir: Path | str,
    checkpoint_every: int | None = 1_000_000,
    resume: bool = True,
    metadata: DictionaryMetadata | None = None,
    progress: bool = True,
    keep_checkpoint: bool = False,
    callback: Callable[[int], None] | None = None,
    max_norm_ratio: float | None = None,
) -> TrainingResult:
    """Train one SAE on the matrix at `path` (.safetensors tensor 'activations' or .npy, [n, d_in]);
    write the SAELens folder `out_dir` (+ history.json, training_config.json). Checkpoints every
    `checkpoint_every` tokens to `out_dir/checkpoint/`; `resume=True` continues one exactly;
    `max_norm_ratio` drops massive-activation rows (see the module docstring)."""
    return train_saes_from_file(
        path,
        [config],
        [out_dir],
        checkpoint_every=checkpoint_every,
        resume=resume,
        metadata=metadata,
        progress=progress,
        keep_checkpoint=keep_checkpoint,
        callback=callback,
        max_norm_ratio=max_norm_ratio,
    )[0]
