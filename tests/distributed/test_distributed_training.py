"""SAE training over 2 gloo ranks ends with the weights of one process fed the same global batches."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saescope.dictionaries.distributed import train_distributed
from saescope.dictionaries.training import SAETrainingConfig
from saescope.dictionaries.training_checkpoint import read_checkpoint
from saescope.dictionaries.training_file import CHECKPOINT_DIR, train_sae_from_file
from saescope.ranks import RankFailed

from rank_helpers import train_file

BATCH = 128
EVERY = BATCH * 10  # a checkpoint every 10 steps, at the next chunk boundary (chunks of 4 batches)


def _config(architecture: str, steps: int = 40) -> SAETrainingConfig:
    return SAETrainingConfig(
        architecture=architecture, d_sae=64, k=4, tokens=BATCH * steps, batch_size=BATCH, seed=3, dead_tokens=1000,
        shuffle_buffer_tokens=BATCH * 4,
    )


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "sae_weights.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=name)


def _reference(data: Path, cfg: SAETrainingConfig, out: Path) -> Path:
    torch.set_num_threads(1)
    train_sae_from_file(data, cfg, out, checkpoint_every=EVERY, progress=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu"])
def test_two_ranks_train_the_weights_of_one_process(tmp_path: Path, activation_matrix: Path, architecture: str) -> None:
    cfg = _config(architecture)
    reference = _reference(activation_matrix, cfg, tmp_path / "one")
    two = tmp_path / "two"
    train_distributed(train_file, str(activation_matrix), cfg.model_dump_json(), str(two), EVERY, nproc=2)
    _assert_same_weights(reference, two)
    assert not (two / CHECKPOINT_DIR).exists(), "rank 0 removes the checkpoint once the folder is written"


@pytest.mark.slow
def test_a_rank_that_dies_stops_the_job_and_a_rerun_resumes_from_the_checkpoint(
    tmp_path: Path, activation_matrix: Path
) -> None:
    cfg = _config("topk")
    reference = _reference(activation_matrix, cfg, tmp_path / "one")
    out = tmp_path / "two"
    with pytest.raises(RankFailed, match=r"rank 1 of 2 was killed by signal SIGKILL.*run the same command again"):
        train_distributed(train_file, str(activation_matrix), cfg.model_dump_json(), str(out), EVERY,
                          die_at_step=25, nproc=2)
    saved = read_checkpoint(out / CHECKPOINT_DIR)
    assert saved is not None and 10 <= saved["step"] <= 25, "the checkpoint rank 0 wrote before the failure is intact"
    assert not (out / "sae_weights.safetensors").exists()

    first = tmp_path / "first_step"
    train_distributed(train_file, str(activation_matrix), cfg.model_dump_json(), str(out), EVERY,
                      first_step_file=str(first), nproc=2)
    assert int(first.read_text()) == saved["step"] + 1, "the rerun continued from the checkpoint"
    _assert_same_weights(reference, out)


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_on_two_ranks(tmp_path: Path, activation_matrix: Path) -> None:
    cfg = _config("relu")
    reference = _reference(activation_matrix, cfg, tmp_path / "one")
    out = tmp_path / "two"

    def stop_after_checkpoint(step: int) -> None:
        if step == 15:
            raise KeyboardInterrupt

    torch.set_num_threads(1)
    with pytest.raises(KeyboardInterrupt):
        train_sae_from_file(activation_matrix, cfg, out, checkpoint_every=EVERY, progress=False,
                            callback=stop_after_checkpoint)
    train_distributed(train_file, str(activation_matrix), cfg.model_dump_json(), str(out), EVERY, nproc=2)
    _assert_same_weights(reference, out)


def _cli(*argv: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = (launcher or [sys.executable, "-m", "saescope.cli"]) + list(argv)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_train_sae_nproc_2_and_torchrun_write_the_one_process_weights(tmp_path: Path, activation_matrix: Path) -> None:
    cfg = _config("topk")
    options = ["--activations", str(activation_matrix), "--architecture", "topk", "--d-sae", "64", "--k", "4",
               "--tokens", str(cfg.tokens), "--batch-size", str(BATCH), "--seed", "3", "--max-norm-ratio", "0"]
    one = _cli("train-sae", *options, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = _cli("train-sae", *options, "--nproc", "2", "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("saved topk SAE") == 1, "only rank 0 reports"
    _assert_same_weights(tmp_path / "one", tmp_path / "two")

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this python")
    run = _cli("train-sae", *options, "--out", str(tmp_path / "torchrun"),
               launcher=[torchrun, "--nproc-per-node", "2", "-m", "saescope.cli"])
    assert run.returncode == 0, run.stderr
    _assert_same_weights(tmp_path / "one", tmp_path / "torchrun")


def test_nproc_below_one_is_refused_with_a_message(tmp_path: Path, activation_matrix: Path) -> None:
    run = _cli("train-sae", "--activations", str(activation_matrix), "--d-sae", "8", "--nproc", "0",
               "--out", str(tmp_path / "x"))
    assert run.returncode == 2
    assert "--nproc must be at least 1" in run.stderr
    assert not (tmp_path / "x").exists()
