"""The `train-sae` / `evaluate` / `cache-activations` workflow as a new user meets it with a local model:
the hook and model are recorded in the SAE folder, `--tokens` defaults to one pass over the file,
the held-out evaluation is sized or skipped, `evaluate` prints a short table, and hook names are
checked before the model is loaded. The corpus is replaced by random contexts (tokenising the
standard library takes too long for a test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from saescope.cli import main
from saescope.corpus.packing import PackedContexts

HOOK = "blocks.0.mlp.hook_post"


@pytest.fixture(autouse=True)
def random_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    def contexts(model, split: str, n_contexts: int, seed: int) -> PackedContexts:
        rng = np.random.default_rng([seed, split == "train"])
        tokens = rng.integers(1, int(model.cfg.d_vocab), size=(n_contexts, int(model.cfg.n_ctx)), dtype=np.int64)
        return PackedContexts(tokens=tokens, doc_ids=["random"] * n_contexts, offsets=np.zeros(n_contexts, dtype=np.int64))

    monkeypatch.setattr("saescope.pipeline.dictionaries.corpus_contexts", contexts)
    monkeypatch.setattr("saescope.pipeline.activations.corpus_contexts", contexts)


def _matrix(tmp_path: Path, rows: int = 2048, d_in: int = 128) -> Path:
    path = tmp_path / "acts.npy"
    np.save(path, np.random.default_rng(0).standard_normal((rows, d_in)).astype(np.float32))
    return path


def _cfg(folder: Path) -> dict:
    return json.loads((folder / "cfg.json").read_text())


def test_train_sae_on_a_file_records_the_hook_and_model_in_cfg_json(tmp_path: Path, tiny_lm_dir: Path) -> None:
    out = tmp_path / "sae"
    code = main(["train-sae", "--activations", str(_matrix(tmp_path)), "--hook", HOOK, "--model", str(tiny_lm_dir),
                 "--d-sae", "32", "--batch-size", "256", "--out", str(out)])
    assert code == 0
    metadata = _cfg(out)["metadata"]
    assert metadata["hook_name"] == HOOK
    assert metadata["model_name"] == str(tiny_lm_dir)


def test_an_sae_trained_on_a_file_then_evaluates_on_the_model(tmp_path: Path, tiny_lm_dir: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sae"
    assert main(["train-sae", "--activations", str(_matrix(tmp_path)), "--hook", HOOK, "--d-sae", "32",
                 "--batch-size", "256", "--out", str(out)]) == 0
    code = main(["evaluate", "--model", str(tiny_lm_dir), "--sae", str(out), "--contexts", "4", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert "hook point" in capsys.readouterr().out


def test_train_sae_on_a_cache_folder_records_the_caches_hook(tmp_path: Path, tiny_lm_dir: Path) -> None:
    cache = tmp_path / "cache"
    assert main(["cache-activations", "--model", str(tiny_lm_dir), "--hook", HOOK, "--tokens", "2000",
                 "--device", "cpu", "--out", str(cache)]) == 0
    out = tmp_path / "sae"
    assert main(["train-sae", "--activations", str(cache), "--d-sae", "32", "--batch-size", "256",
                 "--out", str(out)]) == 0
    metadata = _cfg(out)["metadata"]
    assert metadata["hook_name"] == HOOK
    assert metadata["context_size"] == 32


def test_a_hook_contradicting_the_cache_folder_is_refused(tmp_path: Path, tiny_lm_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    assert main(["cache-activations", "--model", str(tiny_lm_dir), "--hook", HOOK, "--tokens", "500",
                 "--device", "cpu", "--out", str(cache)]) == 0
    code = main(["train-sae", "--activations", str(cache), "--hook", "blocks.0.hook_resid_post", "--d-sae", "32",
                 "--out", str(tmp_path / "sae")])
    assert code == 2
    assert "does not match the activation cache" in capsys.readouterr().err


def test_train_sae_without_a_hook_says_the_folder_records_none(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train-sae", "--activations", str(_matrix(tmp_path)), "--d-sae", "32", "--batch-size", "256",
                 "--out", str(tmp_path / "sae")])
    assert code == 0
    assert "records no hook point" in capsys.readouterr().err


def test_tokens_default_to_one_pass_over_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sae"
    assert main(["train-sae", "--activations", str(_matrix(tmp_path, rows=1500)), "--hook", HOOK, "--d-sae", "32",
                 "--batch-size", "256", "--out", str(out)]) == 0
    assert json.loads((out / "training_config.json").read_text())["config"]["tokens"] == 1500
    assert "passes over" not in capsys.readouterr().err


def test_more_than_one_pass_over_the_file_is_announced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-sae", "--activations", str(_matrix(tmp_path, rows=1000)), "--hook", HOOK, "--d-sae", "32",
                 "--tokens", "3000", "--batch-size", "250", "--out", str(tmp_path / "sae")]) == 0
    assert "3 passes over the 1,000 rows" in capsys.readouterr().err


@pytest.mark.slow
def test_train_sae_on_a_model_sizes_its_held_out_evaluation(tmp_path: Path, tiny_lm_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sae"
    assert main(["train-sae", "--model", str(tiny_lm_dir), "--hook", HOOK, "--d-sae", "32", "--tokens", "4000",
                 "--batch-size", "500", "--eval-contexts", "3", "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["n_contexts"] == 3
    assert "held-out evaluation" in capsys.readouterr().err  # the progress bar


@pytest.mark.slow
def test_eval_contexts_zero_skips_the_held_out_evaluation(tmp_path: Path, tiny_lm_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluate_dictionary must not run with --eval-contexts 0")

    monkeypatch.setattr("saescope.pipeline.dictionaries.evaluate_dictionary", no_evaluation)
    out = tmp_path / "sae"
    assert main(["train-sae", "--model", str(tiny_lm_dir), "--hook", HOOK, "--d-sae", "32", "--tokens", "4000",
                 "--batch-size", "500", "--eval-contexts", "0", "--device", "cpu", "--out", str(out)]) == 0
    assert _cfg(out)["metadata"]["hook_name"] == HOOK
    assert not (out / "metrics.json").exists() and not (out / "checkpoint").exists()


def test_evaluate_prints_a_headline_table_and_writes_the_full_json(tmp_path: Path, tiny_lm_dir: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sae"
    assert main(["train-sae", "--activations", str(_matrix(tmp_path)), "--hook", HOOK, "--d-sae", "32",
                 "--batch-size", "256", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tiny_lm_dir), "--sae", str(out), "--contexts", "4", "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    for label in ("L0", "explained variance", "CE recovered", "dead features", "dense features"):
        assert label in table
    assert "density_histogram" not in table and len(table.splitlines()) < 20
    assert "density_histogram" in json.loads((out / "metrics.json").read_text())
    assert main(["evaluate", "--model", str(tiny_lm_dir), "--sae", str(out), "--contexts", "4", "--device", "cpu",
                 "--json"]) == 0
    assert "density_histogram" in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("hook", "message"), [
    ("blocks.3.hook_resid_post", "the model has 1 layers"),
    ("blocks.0.mlp.hook_pots", "did you mean blocks.0.mlp.hook_post"),
])
def test_a_bad_hook_is_refused_before_the_model_loads(tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], hook: str, message: str) -> None:
    def no_loading(*args, **kwargs):
        raise AssertionError("the model must not be loaded for a hook its config rules out")

    monkeypatch.setattr("saescope.pipeline.dictionaries.load_lm", no_loading)
    for command in (["train-sae", "--model", str(tiny_lm_dir), "--d-sae", "8"],
                    ["cache-activations", "--model", str(tiny_lm_dir), "--tokens", "10"]):
        code = main([*command, "--hook", hook, "--out", str(tmp_path / "out")])
        assert code == 2
        assert message in capsys.readouterr().err


def test_massive_activation_rows_are_left_out_of_training_and_counted(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    acts = np.random.default_rng(0).standard_normal((2048, 128)).astype(np.float32)
    acts[::128] *= 50.0  # one position in 128 (a BOS-like position) with ~50x the typical norm
    path = tmp_path / "acts.npy"
    np.save(path, acts)
    out = tmp_path / "sae"
    assert main(["train-sae", "--activations", str(path), "--hook", HOOK, "--d-sae", "32", "--batch-size", "256",
                 "--out", str(out)]) == 0
    notes = json.loads((out / "training_config.json").read_text())
    assert (notes["max_norm_ratio"], notes["excluded_massive_rows"]) == (10.0, 16)
    assert "left out 16 massive-activation rows" in capsys.readouterr().err


def test_max_norm_ratio_zero_keeps_every_row(tmp_path: Path) -> None:
    acts = np.random.default_rng(0).standard_normal((2048, 128)).astype(np.float32)
    acts[::128] *= 50.0
    path = tmp_path / "acts.npy"
    np.save(path, acts)
    out = tmp_path / "sae"
    assert main(["train-sae", "--activations", str(path), "--hook", HOOK, "--d-sae", "32", "--batch-size", "256",
                 "--max-norm-ratio", "0", "--out", str(out)]) == 0
    assert json.loads((out / "training_config.json").read_text())["excluded_massive_rows"] == 0
