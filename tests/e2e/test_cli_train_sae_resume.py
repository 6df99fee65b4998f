"""`saescope train-sae --model`: Ctrl-C leaves a checkpoint and says where it is, the same command resumes
it exactly, and a checkpoint of another configuration is refused until --no-resume. The corpus is
replaced by random contexts (tokenising the standard library takes too long for a test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saescope.cli import main
from saescope.corpus.packing import PackedContexts
from saescope.dictionaries import training
from saescope.dictionaries.training_checkpoint import CHECKPOINT_DIR, CHECKPOINT_FILE, read_checkpoint

pytestmark = pytest.mark.slow

HOOK = "blocks.0.mlp.hook_post"


@pytest.fixture(autouse=True)
def random_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    def contexts(model, split: str, n_contexts: int, seed: int) -> PackedContexts:
        rng = np.random.default_rng([seed, split == "train"])
        tokens = rng.integers(1, int(model.cfg.d_vocab), size=(n_contexts, int(model.cfg.n_ctx)), dtype=np.int64)
        return PackedContexts(tokens=tokens, doc_ids=["random"] * n_contexts, offsets=np.zeros(n_contexts, dtype=np.int64))

    monkeypatch.setattr("saescope.pipeline.dictionaries.corpus_contexts", contexts)
    torch.set_num_threads(1)


def _train_sae(model_dir: Path, out: Path, *extra: str, d_sae: int = 32) -> int:
    # 200k tokens in chunks of ~65k rows (the default shuffle buffer): checkpoints fall inside the run
    return main(["train-sae", "--model", str(model_dir), "--hook", HOOK, "--d-sae", str(d_sae),
                 "--tokens", "200000", "--batch-size", "4096", "--checkpoint-every", "65536",
                 "--device", "cpu", "--out", str(out), *extra])


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, steps: int) -> None:
    step = training.SAETrainer.step
    calls = []

    def interrupted_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > steps:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(training.SAETrainer, "step", interrupted_step)


def test_ctrl_c_leaves_a_checkpoint_that_the_same_command_resumes_exactly(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _train_sae(tiny_lm_dir, tmp_path / "reference") == 0

    out = tmp_path / "sae"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 40)
        assert _train_sae(tiny_lm_dir, out) == 130
    err = capsys.readouterr().err
    ckpt = out / CHECKPOINT_DIR / CHECKPOINT_FILE
    tokens = read_checkpoint(ckpt.parent)["tokens"]
    assert 0 < tokens < 40 * 4096
    assert f"the last checkpoint ({tokens:,} tokens) is in {out / CHECKPOINT_DIR}" in err
    assert "running the same command again resumes" in err

    assert _train_sae(tiny_lm_dir, out) == 0
    assert json.loads((out / "training.json").read_text())["resumed_from_tokens"] == tokens
    want = load_file(str(tmp_path / "reference" / "sae_weights.safetensors"))
    got = load_file(str(out / "sae_weights.safetensors"))
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert not (out / CHECKPOINT_DIR).exists()


def test_a_checkpoint_of_another_configuration_is_refused_until_no_resume(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sae"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 40)
        assert _train_sae(tiny_lm_dir, out) == 130
    ckpt = out / CHECKPOINT_DIR / CHECKPOINT_FILE
    before = ckpt.read_bytes()
    capsys.readouterr()

    assert _train_sae(tiny_lm_dir, out, d_sae=48) == 2
    err = capsys.readouterr().err
    assert "different configuration (SAE 0: d_sae 32 -> 48)" in err and "--no-resume" in err
    assert ckpt.read_bytes() == before and not (out / "cfg.json").exists()

    assert _train_sae(tiny_lm_dir, out, "--no-resume", d_sae=48) == 0
    assert json.loads((out / "training.json").read_text())["resumed_from_tokens"] == 0
    assert not (out / CHECKPOINT_DIR).exists()
