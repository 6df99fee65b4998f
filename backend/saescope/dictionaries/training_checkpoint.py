"""The checkpoint of an SAE training run (one SAE or a sweep), written atomically, loaded with checks.

Owns the file `<folder>/state.safetensors` (written by `state_files`: tensors as safetensors, the
rest as JSON, never pickle): every trainer's `state_dict` (parameters, Adam state, step and
token counters, dead-latent and density counters, generator state, history, normalisation scale;
the b_dec init lives in the parameters), torch's global RNG state, a fingerprint of the training
data and the data position (whatever the data source needs to continue exactly: a step for a
matrix file, a chunk index plus the rows left over from the previous chunk for an activation
stream). Writes go to a temporary file renamed over the old one, so a run killed at any moment
leaves the previous checkpoint intact. Loading refuses, with a ConfigError naming the file and what
to do, a checkpoint of another configuration, of other data, one that cannot be read, or a
`state.pt` of an older format (a pickle, which is never loaded because it could run code); it
never deletes anything. Used by `training_file.py` and `training_stream.py`; knows nothing about where the
data comes from.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from saescope.dictionaries.state_files import StateFileError, load_state_file, save_state_file
from saescope.dictionaries.training import SAETrainer, SAETrainingConfig
from saescope.errors import ConfigError, TrainingInterrupted

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.safetensors"
LEGACY_CHECKPOINT_FILE = "state.pt"
CHECKPOINT_KIND = "sae-training-checkpoint"
FORMAT_VERSION = 4


@dataclass
class LoadedCheckpoint:
    """Trainers restored from a checkpoint and the data position saved with them."""

    trainers: list[SAETrainer]
    position: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def tokens(self) -> int:
        return self.trainers[0].tokens_seen


def checkpoint_path(folder: Path | str) -> Path:
    return Path(folder) / CHECKPOINT_FILE


def _start_over(folder: Path) -> str:
    return f"delete {folder} to start over, or train with resume=False (train-sae --no-resume)"


def save_checkpoint(
    folder: Path | str,
    trainers: Sequence[SAETrainer],
    data: dict[str, Any],
    position: dict[str, Any] | None = None,
) -> Path:
    """Write every trainer's state, the data fingerprint and `position` to `<folder>/state.safetensors` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "version": FORMAT_VERSION,
        "data": data,
        "step": trainers[0].step_index,
        "tokens": trainers[0].tokens_seen,
        "trainers": [t.state_dict() for t in trainers],
        "torch_rng": torch.get_rng_state(),
        "position": dict(position or {}),
    }
    path = save_state_file(checkpoint_path(folder), state, CHECKPOINT_KIND, FORMAT_VERSION)
    (folder / LEGACY_CHECKPOINT_FILE).unlink(missing_ok=True)  # this run owns the folder now
    return path


def read_checkpoint(folder: Path | str) -> dict[str, Any] | None:
    """The raw checkpoint dict in `folder`, None when there is none; ConfigError when unreadable."""
    folder = Path(folder)
    path = checkpoint_path(folder)
    legacy = folder / LEGACY_CHECKPOINT_FILE
    if legacy.exists():
        raise ConfigError(
            f"{legacy} is a training checkpoint in an older format (a pickle), which is never loaded "
            f"because it could run code; {_start_over(folder)}"
        )
    if not path.is_file():
        return None
    try:
        state = load_state_file(path, CHECKPOINT_KIND, FORMAT_VERSION)
    except StateFileError as exc:
        raise ConfigError(f"the training checkpoint {path} cannot be read ({exc}); {_start_over(folder)}") from None
    if not {"trainers", "step"} <= state.keys() or not isinstance(state["trainers"], list) or not state["trainers"]:
        raise ConfigError(f"{path} is not a saescope training checkpoint; {_start_over(folder)}")
    return state


def _saved_configs(state: dict[str, Any], path: Path) -> list[SAETrainingConfig]:
    try:
        return [SAETrainingConfig(**t["config"]) for t in state["trainers"]]
    except (ValidationError, ConfigError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} holds a training configuration this version cannot read ({exc}); {_start_over(path.parent)}"
        ) from None


def checkpoint_configs(folder: Path | str) -> list[SAETrainingConfig] | None:
    """The configs of the trainers saved in `folder` (None when there is no checkpoint)."""
    state = read_checkpoint(folder)
    return None if state is None else _saved_configs(state, checkpoint_path(folder))


def _config_difference(saved: list[SAETrainingConfig], wanted: list[SAETrainingConfig]) -> str:
    if len(saved) != len(wanted):
        return f"it trains {len(saved)} SAE(s), this run {len(wanted)}"
    for i, (a, b) in enumerate(zip(saved, wanted)):
        da, db = a.model_dump(), b.model_dump()
        diff = [f"{k} {da[k]!r} -> {db[k]!r}" for k in da if da[k] != db.get(k)]
        if diff:
            return f"SAE {i}: " + ", ".join(diff)
    return "unknown difference"


def load_checkpoint(
    folder: Path | str, configs: Sequence[SAETrainingConfig], data: dict[str, Any]
) -> LoadedCheckpoint | None:
    """Trainers and data position from `<folder>/state.safetensors` (None when there is no checkpoint).

    ConfigError (nothing deleted) when the checkpoint cannot be read, was written for other configs
    or for data with another fingerprint. Restores torch's global RNG state."""
    folder = Path(folder)
    path = checkpoint_path(folder)
    state = read_checkpoint(folder)
    if state is None:
        return None
    saved = _saved_configs(state, path)
    if saved != list(configs):
        raise ConfigError(
            f"{path} belongs to a run with a different configuration ({_config_difference(saved, list(configs))}); "
            f"{_start_over(folder)}"
        )
    saved_data = state.get("data", state.get("file"))  # format 1 (training_file) called it "file"
    if saved_data != data:
        keys = sorted(k for k in set(saved_data or {}) | set(data) if (saved_data or {}).get(k) != data.get(k))
        raise ConfigError(
            f"{path} was written for different activation data ({', '.join(keys)} differ); {_start_over(folder)}"
        )
    try:
        trainers = [SAETrainer.from_state_dict(t) for t in state["trainers"]]
    except Exception as exc:
        raise ConfigError(f"{path} holds trainer state that cannot be restored ({exc}); {_start_over(folder)}") from None
    try:
        torch.set_rng_state(state["torch_rng"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"{path} holds an unusable random-number state ({exc}); {_start_over(folder)}") from None
    return LoadedCheckpoint(trainers=trainers, position=dict(state.get("position") or {}), path=path)


def remove_checkpoint(folder: Path | str) -> None:
    """Delete the checkpoint folder (after the run's results are safely written)."""
    shutil.rmtree(Path(folder), ignore_errors=True)


def interrupted(folder: Path, tokens_seen: int, total_tokens: int, checkpoint_tokens: int | None) -> TrainingInterrupted:
    """The exception to raise on Ctrl-C: where training stopped and where the last checkpoint is."""
    where = f"SAE training stopped at {tokens_seen:,} of {total_tokens:,} tokens"
    if checkpoint_tokens is None:
        return TrainingInterrupted(f"{where}; no checkpoint had been written yet, so a rerun starts SAE training over")
    return TrainingInterrupted(
        f"{where}; the last checkpoint ({checkpoint_tokens:,} tokens) is in {folder}, "
        "and running the same command again resumes from it"
    )
