"""A training run killed with SIGKILL after a checkpoint resumes to exactly the uninterrupted weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saescope.dictionaries.training import SAETrainingConfig
from saescope.dictionaries.training_checkpoint import read_checkpoint
from saescope.dictionaries.training_file import CHECKPOINT_DIR, CHECKPOINT_FILE, train_sae_from_file

from process_helpers import kill_once_file_exists

CHILD = r"""
import sys, time
import torch
torch.set_num_threads(1)
from saescope.dictionaries.training import SAETrainingConfig
from saescope.dictionaries.training_file import train_sae_from_file
cfg = SAETrainingConfig.model_validate_json(sys.argv[3])
train_sae_from_file(sys.argv[1], cfg, sys.argv[2], checkpoint_every=int(sys.argv[4]), progress=False,
                    callback=lambda step: time.sleep(0.01))
"""


def _matrix(path: Path, n: int = 3000, d: int = 16, seed: int = 0) -> Path:
    g = np.random.default_rng(seed)
    np.save(path, (g.standard_normal((n, d)) * g.exponential(1.0, (n, 1))).astype(np.float32))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["relu", "topk", "batchtopk"])
def test_killed_run_resumes_to_identical_weights(tmp_path: Path, architecture: str) -> None:
    torch.set_num_threads(1)
    data = _matrix(tmp_path / "acts.npy")
    cfg = SAETrainingConfig(
        architecture=architecture, d_sae=64, k=4, tokens=12_800, batch_size=128, seed=3, dead_tokens=1000
    )
    every = 128 * 10  # a checkpoint every 10 steps; 100 steps in all

    reference = tmp_path / "reference"
    train_sae_from_file(data, cfg, reference, checkpoint_every=every, progress=False)

    resumed = tmp_path / "resumed"
    ckpt = resumed / CHECKPOINT_DIR / CHECKPOINT_FILE
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data), str(resumed), cfg.model_dump_json(), str(every)], env=env
    )
    kill_once_file_exists(child, ckpt)
    assert ckpt.exists(), "the child should have written a checkpoint before being killed"
    assert not (resumed / "cfg.json").exists(), "the child was killed before it finished"
    step = read_checkpoint(ckpt.parent)["step"]
    assert 0 < step < cfg.total_steps

    train_sae_from_file(data, cfg, resumed, checkpoint_every=every, progress=False, resume=True)
    want = load_file(str(reference / "sae_weights.safetensors"))
    got = load_file(str(resumed / "sae_weights.safetensors"))
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert not ckpt.exists(), "the checkpoint is removed once the run completes"
