"""Local corpus sources: folders, globs, .jsonl files, and clear errors."""

from __future__ import annotations

import json

import pytest

from saescope.corpus.documents import load_documents
from saescope.errors import FormatError, InputError, NotFoundError


def _write_folder(root):
    (root / "sub").mkdir(parents=True)
    (root / "b.md").write_text("# Title\nsome markdown")
    (root / "a.txt").write_text("plain text")
    (root / "sub" / "c.py").write_text("def f():\n    return 1\n")
    (root / "skip.bin").write_bytes(b"\x00\x01binary")
    (root / "sub" / "empty.txt").write_text("   ")


def test_folder_yields_text_files_sorted_by_relative_path(tmp_path):
    _write_folder(tmp_path)
    docs = load_documents(tmp_path)
    assert [d.id for d in docs] == ["a.txt", "b.md", "sub/c.py"]
    assert docs[2].text.startswith("def f()")


def test_glob_pattern_selects_matching_files(tmp_path):
    _write_folder(tmp_path)
    docs = load_documents(str(tmp_path / "**" / "*.py"))
    assert [d.text for d in docs] == ["def f():\n    return 1\n"]


def test_jsonl_reads_the_text_field_and_numbers_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"doc {i}", "meta": i}) for i in range(5)) + "\n")
    docs = load_documents(path)
    assert [d.id for d in docs] == [f"data.jsonl:{i}" for i in range(1, 6)]
    assert docs[3].text == "doc 3"
    assert len(load_documents(path, max_documents=2)) == 2


def test_jsonl_without_the_field_names_the_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(FormatError, match="text"):
        load_documents(path)


def test_split_of_a_local_corpus_is_stable_and_disjoint(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(200)) + "\n")
    train = load_documents(path, split="train", heldout_fraction=0.2)
    heldout = load_documents(path, split="heldout", heldout_fraction=0.2)
    assert not {d.id for d in train} & {d.id for d in heldout}
    assert len(train) + len(heldout) == 200
    assert [d.id for d in heldout] == [d.id for d in load_documents(path, split="heldout", heldout_fraction=0.2)]


def test_missing_path_and_bad_split_raise_clear_errors(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        load_documents(tmp_path / "nope" / "corpus.jsonl")
    with pytest.raises(InputError, match="split"):
        load_documents(tmp_path, split="validation")  # type: ignore[arg-type]


def test_stdlib_spec_gives_the_builtin_corpus():
    docs = load_documents("stdlib", split="heldout", max_documents=3)
    assert len(docs) == 3 and all(d.id.startswith("stdlib/") for d in docs)


@pytest.mark.slow
def test_unreachable_hugging_face_dataset_fails_with_a_clear_message():
    import os
    import subprocess
    import sys

    code = (
        "from saescope.corpus.documents import load_documents\n"
        "from saescope.errors import NotFoundError\n"
        "try:\n    load_documents('someone/some-dataset', max_documents=2)\n"
        "except NotFoundError as e:\n    print('ERR', e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERR no local file or folder 'someone/some-dataset' exists" in out.stdout, out.stderr[-2000:]
    assert "Hugging Face hub (offline?" in out.stdout
