"""Training from a seekable chunk stream: batch positions, checkpoints, exact resume, refused checkpoints.

Uses an in-memory chunk source (planted-dictionary activations) so every test runs in about a second;
the model-backed source and a SIGKILL'd subprocess are in test_resume_stream.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saescope.dictionaries.training import SAETrainingConfig
from saescope.dictionaries.training_checkpoint import CHECKPOINT_FILE, checkpoint_configs, read_checkpoint
from saescope.dictionaries.training_stream import ChunkedBatches, train_saes_from_chunks
from saescope.dictionaries.training_synthetic import PlantedDictionary
from saescope.errors import ConfigError, TrainingInterrupted

torch.set_num_threads(1)
PLANTED = PlantedDictionary.random(64, 16, p_active=0.05, seed=0, offset_norm=2.0)
CHUNK_ROWS = 300  # not a multiple of the batch size: leftovers cross chunk boundaries


class ListSource:
    """Chunks held in memory; records which chunk indices were read."""

    def __init__(self, n_chunks: int = 20, seed: int = 4) -> None:
        g = torch.Generator().manual_seed(seed)
        self.chunks = [PLANTED.sample(CHUNK_ROWS, g) for _ in range(n_chunks)]
        self.n_chunks = n_chunks
        self.seed = seed
        self.reads: list[int] = []

    def chunk(self, index: int) -> torch.Tensor:
        self.reads.append(index)
        return self.chunks[index]

    def fingerprint(self) -> dict:
        return {"source": "list", "seed": self.seed, "n_chunks": self.n_chunks}


def _configs(**kw) -> list[SAETrainingConfig]:
    base = dict(tokens=5_000, batch_size=128, seed=1, lr=3e-3, dead_tokens=1_000, init_tokens=500)
    base.update(kw)
    return [
        SAETrainingConfig(architecture="relu", d_sae=48, l1=1.0, **base),
        SAETrainingConfig(architecture="topk", d_sae=32, k=4, **base),
    ]


def _stop_at(step: int):
    def callback(s: int) -> None:
        if s == step:
            raise KeyboardInterrupt

    return callback


def _assert_same_weights(a, b) -> None:
    for ra, rb in zip(a, b, strict=True):
        sa, sb = ra.dictionary.state_dict(), rb.dictionary.state_dict()
        assert sa.keys() == sb.keys()
        for name in sa:
            assert torch.equal(sa[name], sb[name]), name


def test_a_stream_resumed_from_a_saved_position_yields_the_same_remaining_batches() -> None:
    source = ListSource()
    full = list(ChunkedBatches(source, 128))
    stream = ChunkedBatches(source, 128)
    positions = []
    for i, _ in enumerate(stream):
        if stream.at_chunk_boundary:
            positions.append((i + 1, stream.position()))
    i, position = positions[len(positions) // 2]
    assert position["next_chunk"] > 0 and 0 < position["leftover"].shape[0] < 128
    source.reads.clear()
    rest = list(ChunkedBatches(source, 128, **position))
    assert len(rest) == len(full) - i
    assert all(torch.equal(a, b) for a, b in zip(full[i:], rest))
    assert source.reads == list(range(position["next_chunk"], source.n_chunks)), "no chunk is read twice"


def test_peeked_chunks_are_not_read_again_when_iterating() -> None:
    source = ListSource(n_chunks=4)
    stream = ChunkedBatches(source, 128)
    first = stream.peek(500)
    batches = list(stream)
    assert torch.equal(first, torch.cat(batches)[:500])
    assert source.reads == [0, 1, 2, 3]
    assert sum(b.shape[0] for b in batches) == 4 * CHUNK_ROWS and batches[-1].shape[0] == 4 * CHUNK_ROWS % 128


def test_an_interrupted_sweep_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    reference = train_saes_from_chunks(_configs(), ListSource(), progress=False)
    folder = tmp_path / "ckpt"
    with pytest.raises(TrainingInterrupted, match=f"last checkpoint .* is in {folder}") as info:
        train_saes_from_chunks(_configs(), ListSource(), progress=False, checkpoint_dir=folder,
                               checkpoint_every=1_000, callback=_stop_at(30))
    assert isinstance(info.value, KeyboardInterrupt)
    saved = read_checkpoint(folder)
    assert 0 < saved["step"] < 30 and len(saved["trainers"]) == 2, "both SAEs of the sweep are in one checkpoint"
    assert saved["position"]["leftover"].shape[0] < 128, "a checkpoint stores less than one batch of rows"

    source = ListSource()
    resumed = train_saes_from_chunks(_configs(), source, progress=False, checkpoint_dir=folder, checkpoint_every=1_000)
    _assert_same_weights(reference, resumed)
    assert resumed[0].resumed_from_tokens == saved["tokens"]
    assert min(source.reads) == saved["position"]["next_chunk"], "consumed chunks are skipped, not recomputed"
    assert not folder.exists(), "the checkpoint is removed once the run completes"


def test_a_kept_final_checkpoint_returns_the_results_without_reading_the_stream(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    first = train_saes_from_chunks(_configs(), ListSource(), progress=False, checkpoint_dir=folder, keep_checkpoint=True)
    assert checkpoint_configs(folder) == _configs()
    source = ListSource()
    again = train_saes_from_chunks(_configs(), source, progress=False, checkpoint_dir=folder)
    _assert_same_weights(first, again)
    assert source.reads == []


@pytest.mark.parametrize(
    "change, message",
    [
        ("config", r"different configuration \(SAE 0: d_sae 48 -> 40"),
        ("data", r"different activation data \(seed differ\)"),
        ("corrupt", "cannot be read"),
    ],
)
def test_a_mismatched_or_corrupt_checkpoint_is_refused_and_kept(tmp_path: Path, change: str, message: str) -> None:
    folder = tmp_path / "ckpt"
    with pytest.raises(TrainingInterrupted):
        train_saes_from_chunks(_configs(), ListSource(), progress=False, checkpoint_dir=folder,
                               checkpoint_every=1_000, callback=_stop_at(20))
    path = folder / CHECKPOINT_FILE
    if change == "corrupt":
        path.write_bytes(path.read_bytes()[:1000])
    before = path.read_bytes()
    configs = _configs()
    source = ListSource()
    if change == "config":
        configs[0] = configs[0].model_copy(update={"d_sae": 40})
    if change == "data":
        source = ListSource(seed=5)
    with pytest.raises(ConfigError, match=message) as info:
        train_saes_from_chunks(configs, source, progress=False, checkpoint_dir=folder, checkpoint_every=1_000)
    assert f"delete {folder} to start over" in str(info.value)
    assert path.read_bytes() == before, "a refused checkpoint is left untouched"
    assert source.reads == []
    # resume=False ignores it and trains from scratch
    train_saes_from_chunks(configs, source, progress=False, checkpoint_dir=folder, resume=False)
    assert not folder.exists()
