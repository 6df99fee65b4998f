"""The built-in offline corpus: the .py files of the running interpreter's standard library.

Owns listing, reading and splitting those files. Deterministic: files are sorted by relative path,
site-packages/dist-packages and __pycache__ are skipped, unreadable or binary files are skipped, and
the held-out split is a stable hash of the relative path (no random state). Needs no network.
"""

from __future__ import annotations

import os
import sysconfig
from functools import lru_cache
from pathlib import Path

from saescope.corpus.documents import Document, Split, _read_text_file, check_split, is_heldout

SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
ID_PREFIX = "stdlib/"


def stdlib_root() -> Path:
    """Folder of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _is_test_path(rel: str) -> bool:
    parts = rel.split("/")
    return any(p in ("test", "tests", "idle_test") for p in parts[:-1])


@lru_cache(maxsize=4)
def _stdlib_relative_paths(root: str) -> tuple[str, ...]:
    """Sorted relative posix paths of every .py file under `root` (skipping SKIPPED_DIRS)."""
    rels: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                full = os.path.join(dirpath, name)
                rels.append(Path(os.path.relpath(full, root)).as_posix())
    return tuple(sorted(rels))


def stdlib_documents(
    split: Split = "all",
    heldout_fraction: float = 0.05,
    max_files: int | None = None,
    include_tests: bool = True,
) -> list[Document]:
    """The standard library's .py files as documents, sorted by id ('stdlib/<relative path>').

    `split` keeps the train or held-out part (stable hash of the relative path, share
    `heldout_fraction`); `max_files` keeps the first files of that split in sorted order;
    `include_tests=False` drops files under test/tests folders.
    """
    check_split(split, heldout_fraction)
    root = stdlib_root()
    docs: list[Document] = []
    for rel in _stdlib_relative_paths(str(root)):
        if not include_tests and _is_test_path(rel):
            continue
        if split != "all" and is_heldout(rel, heldout_fraction) != (split == "heldout"):
            continue
        text = _read_text_file(root / rel)
        if not text or not text.strip():
            continue
        docs.append(Document(id=ID_PREFIX + rel, text=text))
        if max_files is not None and len(docs) >= max_files:
            break
    return docs
