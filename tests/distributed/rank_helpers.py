"""Functions the distributed tests run on every rank (module level, so spawned ranks can import them)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

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
