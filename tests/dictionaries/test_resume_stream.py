"""SAE training straight from a model's activation stream, killed with SIGKILL and resumed: the weights
equal an uninterrupted run's, and the resumed run never runs the model over contexts already trained on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from saescope.activations.chunked import ActivationChunks
from saescope.dictionaries.training import SAETrainingConfig
from saescope.dictionaries.training_checkpoint import CHECKPOINT_FILE, read_checkpoint
from saescope.dictionaries.training_stream import train_saes_from_chunks
from saescope.lm.loading import load_lm

HOOK = "blocks.0.mlp.hook_post"
CHUNK_TOKENS = 310  # 10 contexts of 31 tokens (n_ctx 32 minus BOS); not a multiple of the batch size
CHECKPOINT_EVERY = 1_500

from process_helpers import kill_once_file_exists

CHILD = r"""
import json, sys, time
import numpy as np
import torch
torch.set_num_threads(1)
from saescope.activations.chunked import ActivationChunks
from saescope.dictionaries.training import SAETrainingConfig
from saescope.dictionaries.training_stream import train_saes_from_chunks
from saescope.lm.loading import load_lm
model_dir, tokens, folder, spec = sys.argv[1:5]
spec = json.loads(spec)
model = load_lm(model_dir, device="cpu")
chunks = ActivationChunks(model, np.load(tokens), spec["hook"], chunk_tokens=spec["chunk_tokens"], seed=spec["seed"])
configs = [SAETrainingConfig(**c) for c in spec["configs"]]
train_saes_from_chunks(configs, chunks, progress=False, checkpoint_dir=folder, checkpoint_every=spec["every"],
                       callback=lambda step: time.sleep(0.01))
"""


def _configs() -> list[SAETrainingConfig]:
    base = dict(tokens=12_288, batch_size=128, seed=3, dead_tokens=2_000, init_tokens=1_000)
    return [
        SAETrainingConfig(architecture="relu", d_sae=96, l1=1.0, **base),
        SAETrainingConfig(architecture="topk", d_sae=64, k=4, **base),
    ]


def _train(model, tokens: np.ndarray, **kwargs) -> tuple[list, int]:
    """Results and the number of contexts the model ran over."""
    seen: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, args, kw: seen.append(args[0].shape[0]), with_kwargs=True)
    try:
        chunks = ActivationChunks(model, tokens, HOOK, chunk_tokens=CHUNK_TOKENS, seed=3)
        return train_saes_from_chunks(_configs(), chunks, progress=False, **kwargs), sum(seen)
    finally:
        handle.remove()


@pytest.mark.slow
def test_a_killed_stream_training_resumes_to_identical_weights_without_rerunning_the_model(
    tmp_path: Path, tiny_lm_dir: Path
) -> None:
    torch.set_num_threads(1)
    model = load_lm(tiny_lm_dir, device="cpu")
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, int(model.cfg.d_vocab), size=(450, 32), dtype=np.int64)
    np.save(tmp_path / "tokens.npy", tokens)

    reference, reference_contexts = _train(model, tokens)
    assert reference_contexts == 400, "40 chunks of 10 contexts cover the 12,288-token budget"

    folder = tmp_path / "checkpoint"
    ckpt = folder / CHECKPOINT_FILE
    spec = {"hook": HOOK, "chunk_tokens": CHUNK_TOKENS, "seed": 3, "every": CHECKPOINT_EVERY,
            "configs": [c.model_dump() for c in _configs()]}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tiny_lm_dir), str(tmp_path / "tokens.npy"), str(folder), json.dumps(spec)],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    kill_once_file_exists(child, ckpt)
    assert ckpt.exists(), "the child should have written a checkpoint before being killed"
    saved = read_checkpoint(ckpt.parent)
    assert 0 < saved["tokens"] < 12_288 and len(saved["trainers"]) == 2
    next_chunk = saved["position"]["next_chunk"]
    assert next_chunk > 0

    resumed, resumed_contexts = _train(model, tokens, checkpoint_dir=folder, checkpoint_every=CHECKPOINT_EVERY)
    for want, got in zip(reference, resumed, strict=True):
        w, g = want.dictionary.state_dict(), got.dictionary.state_dict()
        assert w.keys() == g.keys()
        for name in w:
            assert torch.equal(w[name], g[name]), name
        assert got.history == want.history
    assert resumed[0].resumed_from_tokens == saved["tokens"]
    assert resumed_contexts == reference_contexts - 10 * next_chunk, "consumed contexts are not run again"
    assert not folder.exists(), "the checkpoint is removed once the run completes"
