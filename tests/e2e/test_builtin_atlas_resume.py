"""The demo build killed during SAE training resumes the sweep from ATLAS/work/saes when run again,
and ends with the dictionaries of an uninterrupted build. The precompute stage is stubbed out (it is
tested elsewhere) so the test stays short."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saescope.atlas_layout import AtlasLayout
from saescope.pipeline.build import build_atlas
from saescope.pipeline.build_config import builtin_tiny_preset
from saescope.dictionaries.training_checkpoint import CHECKPOINT_FILE, read_checkpoint

pytestmark = pytest.mark.slow

CONFIG = dict(sae_tokens=30_000, sae_shuffle_buffer_tokens=2_048, sae_checkpoint_every_tokens=4_096,
              explain={"explainer": "none"})

# The child builds the atlas with every SAE step slowed down, so it is killed mid-training.

from process_helpers import kill_once_file_exists

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from saescope.pipeline.build import build_atlas
from saescope.pipeline.build_config import builtin_tiny_preset
from saescope.dictionaries import training
step = training.SAETrainer.step
training.SAETrainer.step = lambda self, *a, **k: (time.sleep(0.01), step(self, *a, **k))[1]
build_atlas(sys.argv[1], builtin_tiny_preset(device="cpu", **json.loads(sys.argv[2])))
"""


def _fresh_atlas(root: Path, model_dir: Path) -> Path:
    shutil.copytree(model_dir, AtlasLayout(root=root).model_dir)
    return root


def _build_without_precompute(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("saescope.pipeline.build.precompute_and_publish", lambda **kwargs: None)
    build_atlas(root, builtin_tiny_preset(device="cpu", **CONFIG))


def test_a_demo_build_killed_during_sae_training_resumes_the_sweep(
    tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    reference = _fresh_atlas(tmp_path / "reference", tiny_lm_dir)
    _build_without_precompute(reference, monkeypatch)

    atlas = _fresh_atlas(tmp_path / "atlas", tiny_lm_dir)
    ckpt = AtlasLayout(root=atlas).sae_checkpoint_dir / CHECKPOINT_FILE
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(atlas), json.dumps(CONFIG)],
                             env=dict(os.environ, OMP_NUM_THREADS="1"), stderr=subprocess.DEVNULL)
    kill_once_file_exists(child, ckpt, timeout_s=120)
    assert ckpt.exists(), "the child should have checkpointed the SAE sweep before being killed"
    tokens = read_checkpoint(ckpt.parent)["tokens"]
    assert 0 < tokens < CONFIG["sae_tokens"]

    _build_without_precompute(atlas, monkeypatch)
    for name in ("relu-64", "relu-256"):
        folder = AtlasLayout(root=atlas).dictionary_dir(name)
        assert json.loads((folder / "training.json").read_text())["resumed_from_tokens"] == tokens
        want = load_file(str(AtlasLayout(root=reference).dictionary_dir(name) / "sae_weights.safetensors"))
        got = load_file(str(folder / "sae_weights.safetensors"))
        assert want.keys() == got.keys()
        for key in want:
            assert torch.equal(want[key], got[key]), (name, key)
    assert not ckpt.parent.exists(), "the checkpoint is removed once the dictionaries are written"
