"""Training from an activation matrix on disk: formats, output folder, deterministic order, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from saescope.dictionaries.saelens_format import load_dictionary, read_sparsity
from saescope.dictionaries.training import SAETrainingConfig
from saescope.dictionaries.training_file import (
    HISTORY_FILE,
    TRAINING_CONFIG_FILE,
    TrainSAEOptions,
    train_sae_from_file,
    train_saes_from_file,
)
from saescope.dictionaries.training_synthetic import PlantedDictionary
from saescope.errors import ConfigError, FormatError, NotFoundError

torch.set_num_threads(1)
PLANTED = PlantedDictionary.random(48, 12, p_active=0.06, seed=1)


def _acts(n: int = 4000) -> torch.Tensor:
    return PLANTED.sample(n, torch.Generator().manual_seed(0))


def _cfg(**kw) -> SAETrainingConfig:
    base = dict(architecture="topk", d_sae=64, k=4, tokens=8_000, batch_size=200, lr=3e-3)
    base.update(kw)
    return SAETrainingConfig(**base)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_from_safetensors_writes_a_loadable_saelens_folder(tmp_path: Path, dtype: torch.dtype) -> None:
    path = tmp_path / "acts.safetensors"
    save_file({"activations": _acts().to(dtype)}, str(path))
    result = train_sae_from_file(path, _cfg(), tmp_path / "out", progress=False)
    out = tmp_path / "out"
    loaded = load_dictionary(out)
    assert loaded.architecture == "topk" and loaded.k == 4
    x = _acts(500)
    torch.testing.assert_close(loaded.encode(x), result.dictionary.encode(x))
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["k"] == 4 and cfg["architecture"] == "topk"
    assert read_sparsity(out).shape == (64,)
    history = json.loads((out / HISTORY_FILE).read_text())
    assert history[-1]["tokens"] == 8000
    assert json.loads((out / TRAINING_CONFIG_FILE).read_text())["config"]["k"] == 4
    assert not (out / "checkpoint").exists()


def test_batchtopk_is_saved_as_jumprelu_with_a_shared_threshold(tmp_path: Path) -> None:
    path = tmp_path / "acts.npy"
    np.save(path, _acts().numpy())
    train_sae_from_file(path, _cfg(architecture="batchtopk"), tmp_path / "out", progress=False)
    cfg = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["trained_as"] == "batchtopk"
    loaded = load_dictionary(tmp_path / "out")
    assert torch.all(loaded.threshold == loaded.threshold[0]) and float(loaded.threshold[0]) > 0


def test_the_same_seed_gives_the_same_weights_and_another_seed_does_not(tmp_path: Path) -> None:
    path = tmp_path / "acts.npy"
    np.save(path, _acts().numpy())
    a = train_sae_from_file(path, _cfg(architecture="relu"), tmp_path / "a", progress=False).dictionary
    b = train_sae_from_file(path, _cfg(architecture="relu"), tmp_path / "b", progress=False).dictionary
    c = train_sae_from_file(path, _cfg(architecture="relu", seed=1), tmp_path / "c", progress=False).dictionary
    assert torch.equal(a.W_dec, b.W_dec)
    assert not torch.equal(a.W_dec, c.W_dec)


def test_a_sweep_over_one_file_writes_one_folder_per_config(tmp_path: Path) -> None:
    path = tmp_path / "acts.npy"
    np.save(path, _acts().numpy())
    configs = [_cfg(d_sae=32), _cfg(d_sae=96, k=8)]
    train_saes_from_file(path, configs, [tmp_path / "x1", tmp_path / "x3"], progress=False)
    assert load_dictionary(tmp_path / "x1").d_sae == 32
    assert load_dictionary(tmp_path / "x3").d_sae == 96


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"acts": torch.ones(10, 4)}, "no tensor named 'activations' .found: acts"),
        ({"activations": torch.ones(10)}, r"matrix \[n_tokens, d_in\]"),
        ({"activations": torch.ones(10, 4, dtype=torch.int32)}, "I32"),
    ],
)
def test_malformed_safetensors_files_raise_input_errors(tmp_path: Path, tensors: dict, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(FormatError, match=message):
        train_sae_from_file(path, _cfg(d_sae=8, k=2), tmp_path / "out", progress=False)


def test_nan_rows_are_reported_with_their_index(tmp_path: Path) -> None:
    acts = _acts(400).numpy()
    acts[123, 3] = np.nan
    path = tmp_path / "acts.npy"
    np.save(path, acts)
    with pytest.raises(FormatError, match="row 123 contains NaN"):
        train_sae_from_file(path, _cfg(tokens=400), tmp_path / "out", progress=False)


def test_missing_file_and_unknown_suffix_raise_input_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        train_sae_from_file(tmp_path / "none.npy", _cfg(), tmp_path / "out", progress=False)
    (tmp_path / "acts.csv").write_text("1,2\n")
    with pytest.raises(FormatError, match=".safetensors .* or .npy"):
        train_sae_from_file(tmp_path / "acts.csv", _cfg(), tmp_path / "out", progress=False)


def test_cli_options_map_to_a_config_and_train(tmp_path: Path) -> None:
    path = tmp_path / "acts.npy"
    np.save(path, _acts(3000).numpy())
    options = TrainSAEOptions.parse(
        activations=path, architecture="topk", d_sae=32, k=4, tokens=None, seed=2, out=tmp_path / "o"
    )
    config = options.to_config(n_rows=3000)
    assert (config.architecture, config.d_sae, config.k, config.seed, config.tokens) == ("topk", 32, 4, 2, 3000)
    options.run(progress=False)
    assert load_dictionary(tmp_path / "o").d_sae == 32


def test_bad_cli_options_raise_config_errors_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--d-sae"):
        TrainSAEOptions.parse(activations=tmp_path / "a.npy", d_sae=0, out=tmp_path)
    with pytest.raises(ConfigError, match="--architecture"):
        TrainSAEOptions.parse(activations=tmp_path / "a.npy", architecture="matryoshka", d_sae=8, out=tmp_path)
    options = TrainSAEOptions.parse(activations=tmp_path / "a.npy", architecture="topk", d_sae=8, k=16, out=tmp_path)
    with pytest.raises(ConfigError, match="k=16 exceeds d_sae=8"):
        options.to_config()


def test_a_checkpoint_from_another_configuration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "acts.npy"
    np.save(path, _acts().numpy())
    train_sae_from_file(path, _cfg(), tmp_path / "out", checkpoint_every=1000, keep_checkpoint=True, progress=False)
    with pytest.raises(ConfigError, match="different configuration"):
        train_sae_from_file(path, _cfg(k=5), tmp_path / "out", progress=False)
    train_sae_from_file(path, _cfg(k=5), tmp_path / "out", resume=False, progress=False)


def test_training_hyperparameters_survive_a_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "acts.npy"
    np.save(path, _acts().numpy())
    trained = train_sae_from_file(path, _cfg(architecture="relu", l1=0.5), tmp_path / "out", progress=False)
    loaded = load_dictionary(tmp_path / "out")
    assert loaded.hyperparameters() == trained.dictionary.hyperparameters()
    assert loaded.hyperparameters()["l1_coefficient"] == 0.5
