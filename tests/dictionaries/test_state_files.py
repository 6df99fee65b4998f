"""Resume state without pickle: the state-file codec, and planted pickles refused at each resume location.

A planted pickle's `__reduce__` writes a marker file; each test first proves that loading the plant
with pickle would write the marker, then shows saescope refuses the file and the marker never appears.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from saescope.dictionaries.state_files import StateFileError, load_state_file, save_state_file
from saescope.dictionaries.training import SAETrainingConfig
from saescope.dictionaries.training_checkpoint import CHECKPOINT_FILE, LEGACY_CHECKPOINT_FILE, read_checkpoint
from saescope.dictionaries.training_stream import train_saes_from_chunks
from saescope.dictionaries.training_synthetic import PlantedDictionary
from saescope.errors import ConfigError

torch.set_num_threads(1)


class Planted:
    """Unpickling this object runs code: it writes `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def plant(path: Path, marker: Path) -> None:
    """Write a pickle (in torch's zip format) at `path` that writes `marker` when loaded, and prove it does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.parent / "staged.pt"  # torch.load reads a *.safetensors name as safetensors
    torch.save({"trainers": [Planted(marker)], "step": 1, "fingerprint": Planted(marker)}, staged)
    torch.load(staged, weights_only=False)
    assert marker.exists(), "the plant must be live, or the test proves nothing"
    marker.unlink()
    staged.rename(path)


class Source:
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        planted = PlantedDictionary.random(32, 8, p_active=0.05, seed=0, offset_norm=2.0)
        self.chunks = [planted.sample(256, g) for _ in range(4)]
        self.n_chunks = 4

    def chunk(self, index: int) -> torch.Tensor:
        return self.chunks[index]

    def fingerprint(self) -> dict:
        return {"source": "test"}


def _configs() -> list[SAETrainingConfig]:
    return [SAETrainingConfig(architecture="relu", d_sae=16, l1=1.0, tokens=1_000, batch_size=128, seed=1)]


def test_a_nested_state_with_tensors_tuples_and_int_keys_round_trips(tmp_path: Path) -> None:
    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.Adam([p])
    p.sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "empty": torch.zeros(0, 4),
             "array": np.arange(5), "nan": float("nan"), "inf": float("-inf"), "pair": (1, "x"), "none": None}
    save_state_file(tmp_path / "s.safetensors", state, "test", 1)
    back = load_state_file(tmp_path / "s.safetensors", "test", 1)
    assert back["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(back["rng"], state["rng"]) and back["empty"].shape == (0, 4)
    assert np.array_equal(back["array"], state["array"]) and back["pair"] == (1, "x") and back["none"] is None
    assert np.isnan(back["nan"]) and back["inf"] == float("-inf")


def test_a_state_file_of_another_kind_or_version_is_refused(tmp_path: Path) -> None:
    save_state_file(tmp_path / "s.safetensors", {"a": 1}, "test", 1)
    with pytest.raises(StateFileError, match="not a saescope other"):
        load_state_file(tmp_path / "s.safetensors", "other", 1)
    with pytest.raises(StateFileError, match="format version 1, this version reads 2"):
        load_state_file(tmp_path / "s.safetensors", "test", 2)


@pytest.mark.parametrize("name", [CHECKPOINT_FILE, LEGACY_CHECKPOINT_FILE])
def test_a_planted_pickle_as_training_checkpoint_is_refused_without_running(tmp_path: Path, name: str) -> None:
    folder, marker = tmp_path / "checkpoint", tmp_path / "marker"
    plant(folder / name, marker)
    with pytest.raises(ConfigError, match=f"delete {folder} to start over") as info:
        train_saes_from_chunks(_configs(), Source(), progress=False, checkpoint_dir=folder)
    assert str(folder / name) in str(info.value)
    assert not marker.exists(), "nothing in the planted file ran"
    assert (folder / name).exists(), "a refused checkpoint is left in place"


def test_a_legacy_checkpoint_is_refused_by_read_checkpoint_with_its_name(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    plant(tmp_path / LEGACY_CHECKPOINT_FILE, marker)
    with pytest.raises(ConfigError, match=r"older format \(a pickle\), which is never loaded"):
        read_checkpoint(tmp_path)
    assert not marker.exists()


def test_training_without_resume_replaces_a_legacy_checkpoint(tmp_path: Path) -> None:
    folder, marker = tmp_path / "checkpoint", tmp_path / "marker"
    plant(folder / LEGACY_CHECKPOINT_FILE, marker)
    train_saes_from_chunks(_configs(), Source(), progress=False, checkpoint_dir=folder, resume=False,
                           keep_checkpoint=True)
    assert not (folder / LEGACY_CHECKPOINT_FILE).exists()
    assert read_checkpoint(folder) is not None and not marker.exists()
