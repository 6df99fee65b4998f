"""Training the built-in model: learning, determinism, atomic checkpoints, reuse and resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from saescope.errors import ConfigError
from saescope.lm.builtin import BuildInterrupted, BuiltinLMConfig, build_builtin_lm, lr_at
from saescope.lm.loading import load_lm


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_model_learns_and_writes_a_complete_checkpoint(tiny_lm_dir):
    names = {p.name for p in tiny_lm_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer", "report.json"} <= names
    report = json.loads((tiny_lm_dir / "report.json").read_text())
    assert report["heldout_loss"] < report["heldout_loss_initial"] - 0.5
    assert report["train_loss_last"] < report["train_loss_first"]
    assert report["unigram_heldout_loss"] > 0 and report["steps"] == BuiltinLMConfig.tiny().n_steps
    config = json.loads((tiny_lm_dir / "config.json").read_text())
    assert config["hooked_transformer_config"]["d_model"] == 32
    assert config["builtin_config"]["seed"] == 0 and config["report"] == report
    assert not any(p.name.startswith(".") for p in tiny_lm_dir.parent.iterdir())  # no temp/work left


@pytest.mark.slow
def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path, tiny_lm_dir):
    config = BuiltinLMConfig.tiny(train_tokens=20 * 16 * 32)
    build_builtin_lm(config, tmp_path / "a", progress=False, num_threads=1)
    build_builtin_lm(config, tmp_path / "b", progress=False, num_threads=1)
    build_builtin_lm(config.model_copy(update={"seed": 1}), tmp_path / "c", progress=False, num_threads=1)
    assert _same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert not _same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "c"))


def test_rerun_reuses_the_finished_checkpoint(tiny_lm_dir):
    before = (tiny_lm_dir / "model.safetensors").stat().st_mtime_ns
    report = build_builtin_lm(BuiltinLMConfig.tiny(), tiny_lm_dir, progress=False, num_threads=1)
    assert report.reused
    assert (tiny_lm_dir / "model.safetensors").stat().st_mtime_ns == before


def test_rerun_with_a_different_config_refuses_to_overwrite(tiny_lm_dir):
    with pytest.raises(ConfigError, match="different configuration"):
        build_builtin_lm(BuiltinLMConfig.tiny(seed=5), tiny_lm_dir, progress=False, num_threads=1)


@pytest.mark.slow
def test_interrupted_build_resumes_to_the_same_weights(tmp_path):
    config = BuiltinLMConfig.tiny(train_tokens=30 * 16 * 32, checkpoint_every_steps=10)
    out = tmp_path / "resumed"
    with pytest.raises(BuildInterrupted):
        build_builtin_lm(config, out, progress=False, stop_after_steps=15, num_threads=1)
    assert not out.exists()  # nothing half-written is visible
    assert (tmp_path / ".resumed.partial" / "state.pt").exists()
    report = build_builtin_lm(config, out, progress=False, num_threads=1)
    assert report.resumed_from_step == 15 and not report.reused
    build_builtin_lm(config, tmp_path / "straight", progress=False, num_threads=1)
    assert _same_weights(_weights(out), _weights(tmp_path / "straight"))
    assert not (tmp_path / ".resumed.partial").exists()


def test_checkpoint_round_trip_gives_identical_logits(tiny_lm, tiny_lm_dir):
    again = load_lm(tiny_lm_dir)
    tokens = tiny_lm.to_tokens("for i in range(10):\n    print(i)")
    with torch.no_grad():
        assert torch.equal(tiny_lm(tokens), again(tokens))
    assert again.cfg.n_ctx == 32 and again.cfg.d_mlp == 128 and not again.training


def test_learning_rate_warms_up_then_decays():
    config = BuiltinLMConfig.tiny(train_tokens=100 * 16 * 32, warmup_steps=10, lr=1e-2, min_lr_ratio=0.1)
    lrs = [lr_at(s, config) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-2)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-3, rel=0.05)
