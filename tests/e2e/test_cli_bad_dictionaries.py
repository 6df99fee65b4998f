"""Bad dictionaries are refused by the CLI with one clear error line, exit status 2, and nothing written.

Covers cfg.json widths that are negative, absurdly large, fractional or strings; a d_in that does
not match the hook point's width; NaN/Inf weights; and train-sae's --d-sae bounds; through
`import-sae`, `precompute`, `evaluate` and `train-sae`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from saescope.cli import main
from saescope.dictionaries.architectures.standard import StandardSAE
from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.saelens_format import CFG_FILE, WEIGHTS_FILE, save_dictionary

HOOK = "blocks.0.mlp.hook_post"  # width 128 in the tiny model

CFG_CASES = {
    "negative d_sae": ("d_sae", -5, "d_sae"),
    "huge d_sae": ("d_sae", 10**9, "d_sae"),
    "fractional d_sae": ("d_sae", 512.5, "d_sae must be a whole number"),
    "string d_sae": ("d_sae", "512", "d_sae must be a whole number"),
    "zero d_in": ("d_in", 0, "d_in"),
}


def _good_sae(folder: Path, d_in: int = 128, d_sae: int = 16) -> Path:
    sae = StandardSAE(d_in, d_sae, DictionaryMetadata(hook_name=HOOK, model_name="tiny"))
    sae.reset_parameters(torch.Generator().manual_seed(0))
    return save_dictionary(sae, folder)


def _edit_cfg(folder: Path, key: str, value: object) -> Path:
    cfg = json.loads((folder / CFG_FILE).read_text())
    cfg[key] = value
    (folder / CFG_FILE).write_text(json.dumps(cfg))
    return folder


def _poison_weights(folder: Path, value: float) -> Path:
    state = load_file(str(folder / WEIGHTS_FILE))
    state["W_enc"][0, 0] = value
    save_file(state, str(folder / WEIGHTS_FILE))
    return folder


def _bad_folders(root: Path) -> dict[str, tuple[Path, str]]:
    out = {}
    for name, (key, value, message) in CFG_CASES.items():
        out[name] = (_edit_cfg(_good_sae(root / name.replace(" ", "-")), key, value), message)
    out["nan weights"] = (_poison_weights(_good_sae(root / "nan"), float("nan")), "NaN or infinite")
    out["inf weights"] = (_poison_weights(_good_sae(root / "inf"), float("inf")), "NaN or infinite")
    return out


def _one_error_line(capsys: pytest.CaptureFixture[str], command: str, message: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"saescope {command}: error: ") and message in err, err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def bad_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return _bad_folders(tmp_path_factory.mktemp("bad_saes"))


@pytest.mark.parametrize("case", [*CFG_CASES, "nan weights", "inf weights"])
def test_import_sae_refuses_a_bad_dictionary_and_writes_nothing(
    bad_folders: dict[str, tuple[Path, str]], case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, message = bad_folders[case]
    out = tmp_path / "imported"
    assert main(["import-sae", str(folder), "--out", str(out)]) == 2
    _one_error_line(capsys, "import-sae", message)
    assert not out.exists()


@pytest.mark.parametrize("case", ["huge d_sae", "fractional d_sae", "nan weights"])
def test_precompute_refuses_a_bad_dictionary_and_leaves_no_atlas(
    bad_folders: dict[str, tuple[Path, str]], case: str, tiny_lm_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder, message = bad_folders[case]
    atlas = tmp_path / "atlas"
    code = main(["precompute", "--atlas", str(atlas), "--model", str(tiny_lm_dir), "--sae", str(folder),
                 "--contexts", "8", "--device", "cpu"])
    assert code == 2
    _one_error_line(capsys, "precompute", message)
    assert not atlas.exists(), "no atlas folder and no empty atlas.db"


def test_precompute_refuses_a_d_in_that_does_not_match_the_hook_before_writing(
    tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _good_sae(tmp_path / "wide", d_in=96)
    atlas = tmp_path / "atlas"
    code = main(["precompute", "--atlas", str(atlas), "--model", str(tiny_lm_dir), "--sae", str(folder),
                 "--contexts", "8", "--device", "cpu"])
    assert code == 2
    _one_error_line(capsys, "precompute", f"d_in is 96, but hook point '{HOOK}' of this model has width 128")
    assert not atlas.exists()


def test_evaluate_refuses_a_mismatched_d_in_and_writes_no_metrics(
    tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _good_sae(tmp_path / "wide", d_in=96)
    assert main(["evaluate", "--model", str(tiny_lm_dir), "--sae", str(folder), "--contexts", "4",
                 "--device", "cpu"]) == 2
    _one_error_line(capsys, "evaluate", "d_in is 96")
    assert not (folder / "metrics.json").exists()


@pytest.mark.parametrize("case", ["negative d_sae", "nan weights"])
def test_evaluate_refuses_a_bad_dictionary(
    bad_folders: dict[str, tuple[Path, str]], case: str, tiny_lm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, message = bad_folders[case]
    assert main(["evaluate", "--model", str(tiny_lm_dir), "--sae", str(folder), "--contexts", "4",
                 "--device", "cpu"]) == 2
    _one_error_line(capsys, "evaluate", message)
    assert not (folder / "metrics.json").exists()


@pytest.mark.parametrize("d_sae", ["-5", str(10**9)])
def test_train_sae_refuses_an_out_of_range_d_sae_and_writes_nothing(
    d_sae: str, tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sae"
    assert main(["train-sae", "--model", str(tiny_lm_dir), "--hook", HOOK, "--d-sae", d_sae,
                 "--tokens", "4096", "--device", "cpu", "--out", str(out)]) == 2
    _one_error_line(capsys, "train-sae", "d_sae")
    assert not out.exists()


def test_publishing_an_in_memory_dictionary_with_nan_weights_creates_no_store(tiny_lm, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from saescope.errors import FormatError
    from saescope.pipeline.publish import DictionaryEntry, ModelRecord, precompute_and_publish

    sae = StandardSAE(128, 16, DictionaryMetadata(hook_name=HOOK))
    sae.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.W_dec[3, 2] = float("nan")
    db = tmp_path / "atlas.db"
    with pytest.raises(FormatError, match="weight W_dec holds NaN or infinite values"):
        precompute_and_publish(f"sqlite:///{db}", tiny_lm, ModelRecord(id="tiny", source="builtin", location="m",
                               tokenizer="m"), [DictionaryEntry(id="nan", dictionary=sae, weights_path="")],
                               SimpleNamespace(tokens=[[1, 2, 3, 4]], doc_ids=["d"], offsets=[0]))
    assert not db.exists()
