"""The `saescope` command line: help for every sub-command, clean errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from saescope.cli import build_parser, main

SUBCOMMANDS = [
    "demo", "train-lm", "train-sae", "cache-activations", "evaluate", "precompute", "serve", "import-sae", "export-sae",
]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: saescope " + command in capsys.readouterr().out


def test_the_installed_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "saescope.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("saescope ")


def test_serve_without_an_atlas_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--atlas", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no atlas at" in err and "saescope demo" in err


def test_train_sae_on_a_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train-sae", "--activations", str(tmp_path / "nope.npy"), "--architecture", "relu",
                 "--d-sae", "16", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "nope.npy" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_train_sae_rejects_k_larger_than_d_sae(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "acts.npy"
    np.save(path, np.random.default_rng(0).standard_normal((256, 8)).astype(np.float32))
    code = main(["train-sae", "--activations", str(path), "--architecture", "topk", "--d-sae", "16", "--k", "32",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "k" in capsys.readouterr().err


def test_train_sae_from_a_matrix_file_writes_a_saelens_folder(tmp_path: Path) -> None:
    from saescope.dictionaries.saelens_format import load_dictionary

    path = tmp_path / "acts.npy"
    np.save(path, np.random.default_rng(0).standard_normal((4096, 8)).astype(np.float32))
    out = tmp_path / "sae"
    code = main(["train-sae", "--activations", str(path), "--architecture", "topk", "--d-sae", "32", "--k", "4",
                 "--tokens", "8192", "--batch-size", "512", "--out", str(out)])
    assert code == 0
    sae = load_dictionary(out)
    assert (sae.architecture, sae.d_in, sae.d_sae) == ("topk", 8, 32)


def test_parser_keeps_the_stable_forms() -> None:
    parser = build_parser()
    demo = parser.parse_args(["demo", "--atlas", "x", "--no-serve"])
    assert demo.atlas == Path("x") and demo.no_serve
    serve = parser.parse_args(["serve", "--atlas", "x", "--host", "0.0.0.0", "--port", "9000"])
    assert (serve.host, serve.port) == ("0.0.0.0", 9000)
