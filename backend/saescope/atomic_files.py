"""Atomic writes of files and folders: a reader sees the old content or the new one, never a half.

Owns the one pattern every stage uses to write an artefact: write to a temporary name beside the
target (same folder, so the final rename stays on one file system), then `os.replace` it into place;
on any error the temporary is removed and the target is left as it was. A shared module like
`errors`: any stage may import it, and it imports no stage.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _temporary_name(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on error it is removed.

    For writers that want a file name (`safetensors.save_file`, `np.save`, `torch.save`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path | str, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path | str, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, payload: Any, indent: int | None = 2) -> Path:
    """Write `payload` as JSON to `path` atomically (non-JSON values through `str`); returns the path."""
    return write_text(path, json.dumps(payload, indent=indent, default=str))


@contextmanager
def atomic_folder(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; on success it replaces the folder `path` (an old one
    is removed first), on error it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path, "partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
