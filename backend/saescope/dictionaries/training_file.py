"""Training SAEs from an activation matrix on disk, with checkpoints and exact resume.

Owns `train_sae_from_file` / `train_saes_from_file` (a sweep over one file), the `TrainSAEOptions`
pydantic model that maps 1:1 to `saescope train-sae` options, reading `.safetensors` (one tensor
named `activations`, [n, d_in]) and `.npy` matrices through memory maps, the deterministic sample
order (batch `s` is a function of seed and `s` only: rows of a per-epoch permutation), and where
checkpoints go (`<out>/checkpoint/state.pt`, in the format of `training_checkpoint.py`: every
trainer's state plus the file's fingerprint and the step). A run killed at any point and restarted
with `resume=True` ends with exactly the weights of an uninterrupted run. The result folder is written
in SAELens format through `saelens_format.save_dictionary`, plus `history.json` and
`training_config.json`. It knows nothing about language models.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import Tensor

from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.architectures import TRAINING_NAMES
from saescope.dictionaries.training import (
    SAETrainer,
    SAETrainingConfig,
    TrainingResult,
    init_statistics,
    run_trainers,
    training_results,
)
from saescope.dictionaries.training_checkpoint import (  # CHECKPOINT_FILE re-exported for callers
    CHECKPOINT_DIR,
    CHECKPOINT_FILE,
    interrupted,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from saescope.errors import ConfigError, InputError

TENSOR_NAME = "activations"
HISTORY_FILE = "history.json"
TRAINING_CONFIG_FILE = "training_config.json"

_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": np.uint16}


class ActivationMatrix:
    """A read-only, memory-mapped [n, d_in] float matrix from `.npy` or `.safetensors`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"activation file {self.path} does not exist", field="activations")
        suffix = self.path.suffix.lower()
        self.bfloat16 = False
        if suffix == ".npy":
            try:
                array = np.load(self.path, mmap_mode="r")
            except (ValueError, OSError) as exc:
                raise InputError(f"{self.path} is not a readable .npy file: {exc}", field="activations") from exc
        elif suffix == ".safetensors":
            array = self._open_safetensors()
        else:
            raise InputError(
                f"{self.path}: activation files must be .safetensors (tensor 'activations') or .npy",
                field="activations",
            )
        if array.ndim != 2:
            raise InputError(
                f"{self.path}: activations must be a matrix [n_tokens, d_in], got shape {tuple(array.shape)}",
                field="activations",
            )
        if not (np.issubdtype(array.dtype, np.floating) or self.bfloat16):
            raise InputError(f"{self.path}: activations must be floating point, got {array.dtype}", field="activations")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise InputError(f"{self.path}: the activation matrix is empty {tuple(array.shape)}", field="activations")
        self.array = array
        self.n, self.d_in = int(array.shape[0]), int(array.shape[1])

    def _open_safetensors(self) -> np.ndarray:
        try:
            with open(self.path, "rb") as fh:
                (header_len,) = struct.unpack("<Q", fh.read(8))
                if header_len > 100_000_000:
                    raise ValueError("header too large")
                header = json.loads(fh.read(header_len))
        except (OSError, ValueError, struct.error) as exc:
            raise InputError(f"{self.path} is not a valid .safetensors file: {exc}", field="activations") from exc
        names = [k for k in header if k != "__metadata__"]
        if TENSOR_NAME not in header:
            raise InputError(
                f"{self.path} has no tensor named '{TENSOR_NAME}' (found: {', '.join(names) or 'none'}); "
                f"save the matrix as {{'{TENSOR_NAME}': tensor[n_tokens, d_in]}}",
                field="activations",
            )
        info = header[TENSOR_NAME]
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise InputError(
                f"{self.path}: tensor '{TENSOR_NAME}' has dtype {info['dtype']}; use F32, F16, BF16 or F64",
                field="activations",
            )
        self.bfloat16 = info["dtype"] == "BF16"
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        count = int(np.prod(shape)) if shape else 1
        if end - start != count * np.dtype(dtype).itemsize:
            raise InputError(f"{self.path}: tensor '{TENSOR_NAME}' size does not match its shape", field="activations")
        return np.memmap(self.path, dtype=dtype, mode="r", offset=8 + header_len + start, shape=shape)

    def rows(self, index: np.ndarray) -> Tensor:
        """float32 [len(index), d_in] for sorted row indices."""
        block = np.asarray(self.array[index])
        if self.bfloat16:
            t = torch.from_numpy(block.view(np.int16).astype(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.ascontiguousarray(block))
        t = t.to(torch.float32)
        if not torch.isfinite(t).all():
            bad = int(index[int(torch.nonzero(~torch.isfinite(t).all(1))[0])])
            raise InputError(
                f"{self.path}: row {bad} contains NaN or infinite values; clean the activations first",
                field="activations",
            )
        return t

    def fingerprint(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "n": self.n, "d_in": self.d_in, "bytes": self.path.stat().st_size}


class SampleOrder:
    """Batch `step` = rows at positions [step*B, (step+1)*B) of the token stream in which epoch e
    visits every row once in the order of `randperm(n, seed=(seed, e))`. Pure function of (seed, step)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 17)
            self._perm = torch.randperm(self.n, generator=g).numpy()
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def positions(self, start: int, count: int) -> np.ndarray:
        out = []
        t = start
        end = start + count
        while t < end:
            epoch, pos = divmod(t, self.n)
            take = min(end - t, self.n - pos)
            out.append(self._permutation(epoch)[pos : pos + take])
            t += take
        return np.concatenate(out)

    def batch(self, step: int) -> np.ndarray:
        return np.sort(self.positions(step * self.batch_size, self.batch_size))


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

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        if value not in TRAINING_NAMES:
            raise ValueError(f"unknown architecture {value!r}; choose one of {', '.join(TRAINING_NAMES)}")
        return value

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


def _check_file_configs(configs: Sequence[SAETrainingConfig], matrix: ActivationMatrix) -> None:
    first = configs[0]
    for c in configs[1:]:
        if (c.batch_size, c.tokens, c.seed) != (first.batch_size, first.tokens, first.seed):
            raise ConfigError("a sweep over one file needs equal batch_size, tokens and seed in every config")


def _file_batches(matrix: ActivationMatrix, order: SampleOrder, start_step: int, total_steps: int, tokens: int) -> Iterator[Tensor]:
    for step in range(start_step, total_steps):
        count = min(order.batch_size, tokens - step * order.batch_size)
        rows = np.sort(order.positions(step * order.batch_size, count))
        yield matrix.rows(rows)


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
) -> list[TrainingResult]:
    """Train every config in one pass over the matrix at `path`, writing one SAELens folder each.

    `checkpoint_every` (tokens) writes `<out_dirs[0]>/checkpoint/state.pt`; with `resume=True` an
    existing checkpoint is continued exactly. `callback(step)` runs after every step (and after
    any checkpoint of that step). Returns the results in config order.
    """
    from saescope.dictionaries.saelens_format import save_dictionary

    configs = list(configs)
    if not configs:
        raise ConfigError("give at least one training config")
    if len(out_dirs) != len(configs):
        raise ConfigError("give one output folder per config")
    matrix = ActivationMatrix(Path(path))
    _check_file_configs(configs, matrix)
    first = configs[0]
    out_dirs = [Path(o) for o in out_dirs]
    ckpt_dir = out_dirs[0] / CHECKPOINT_DIR
    order = SampleOrder(matrix.n, first.batch_size, first.seed)

    loaded = load_checkpoint(ckpt_dir, configs, matrix.fingerprint()) if resume else None
    last_saved = loaded.tokens if loaded is not None else None
    if loaded is not None:
        trainers = loaded.trainers
    else:
        torch.manual_seed(first.seed)
        init_rows = np.sort(order.positions(0, min(first.init_tokens, matrix.n)))
        sample = matrix.rows(init_rows)
        trainers = []
        for cfg in configs:
            scale, b_init = init_statistics(sample, cfg)
            trainer = SAETrainer(cfg, matrix.d_in, scale, b_init)
            trainer.calibrate_encoder(sample * scale)
            trainers.append(trainer)

    total_steps = first.total_steps
    start_step = trainers[0].step_index
    every_steps = max(1, checkpoint_every // first.batch_size) if checkpoint_every else None

    def on_step(ts: Sequence[SAETrainer]) -> None:
        nonlocal last_saved
        step = ts[0].step_index
        if every_steps and step % every_steps == 0 and step < total_steps:
            save_checkpoint(ckpt_dir, ts, matrix.fingerprint(), {"step": step})
            last_saved = ts[0].tokens_seen
        if callback is not None:
            callback(step)

    batches = _file_batches(matrix, order, start_step, total_steps, first.tokens)
    try:
        run_trainers(trainers, batches, progress=progress, on_step=on_step)
    except KeyboardInterrupt:
        raise interrupted(ckpt_dir, trainers[0].tokens_seen, first.tokens, last_saved) from None

    if metadata is None:
        metadata = DictionaryMetadata(dataset_path=str(matrix.path))
    results = training_results(trainers, metadata)
    for trainer, result, out in zip(trainers, results, out_dirs):
        save_dictionary(result.dictionary, out, log10_sparsity=result.log10_density)
        (out / HISTORY_FILE).write_text(json.dumps(result.history, indent=1))
        (out / TRAINING_CONFIG_FILE).write_text(
            json.dumps(
                {
                    "config": trainer.config.model_dump(),
                    "normalization_scale": trainer.scale,
                    "activations": matrix.fingerprint(),
                },
                indent=2,
            )
        )
    if not keep_checkpoint:
        remove_checkpoint(ckpt_dir)
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
) -> TrainingResult:
    """Train one SAE on the matrix at `path` (.safetensors tensor 'activations' or .npy, [n, d_in]);
    write the SAELens folder `out_dir` (+ history.json, training_config.json). Checkpoints every
    `checkpoint_every` tokens to `out_dir/checkpoint/`; `resume=True` continues one exactly."""
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
    )[0]
