"""Packing tokenised documents into fixed-length contexts.

Owns `PackedContexts` (token ids [n, n_ctx] plus the document id and token offset of every context)
and `pack_documents`. Each context lies inside one document: position 0 holds the BOS token (when
`prepend_bos`), followed by n_ctx - 1 consecutive tokens of the document starting at `offset` (an
index into the document's own token sequence, BOS excluded). Documents are cut into non-overlapping
windows and a tail shorter than a full window is dropped; `one_window_per_document=True` instead takes
at most one window per document at a random offset (seeded, stable per document), as the auto-interp
protocol needs. Text becomes tokens only through `corpus/encoding.py` (the BOS rule live inference
shares). Takes any Hugging Face tokenizer; knows nothing about models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from saescope.corpus.documents import Document
from saescope.corpus.encoding import bos_token_id, encode_texts
from saescope.errors import InputError

__all__ = ["PackedContexts", "bos_token_id", "pack_documents", "pack_token_sequences", "tokenize_documents"]


@dataclass(frozen=True, eq=False)
class PackedContexts:
    """Fixed-length token windows and where each came from.

    tokens: int64 [n, n_ctx]; doc_ids: n document ids; offsets: int64 [n], the index in the
    document's token sequence of the first non-BOS token of each context.
    """

    tokens: np.ndarray  # int64 [n, n_ctx]
    doc_ids: list[str]
    offsets: np.ndarray  # int64 [n]
    prepend_bos: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tokens.ndim != 2:
            raise InputError(f"tokens must be 2-D [n, n_ctx], got shape {self.tokens.shape}")
        if len(self.doc_ids) != self.tokens.shape[0] or self.offsets.shape != (self.tokens.shape[0],):
            raise InputError("tokens, doc_ids and offsets must describe the same number of contexts")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_ctx(self) -> int:
        return int(self.tokens.shape[1])

    def select(self, indices: Sequence[int] | np.ndarray) -> "PackedContexts":
        """A new PackedContexts holding only the contexts at `indices` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return PackedContexts(
            tokens=self.tokens[idx],
            doc_ids=[self.doc_ids[i] for i in idx.tolist()],
            offsets=self.offsets[idx],
            prepend_bos=self.prepend_bos,
            metadata=dict(self.metadata),
        )


def tokenize_documents(documents: Sequence[Document], tokenizer: Any) -> list[np.ndarray]:
    """Token ids (int64, no special tokens, no BOS) of each document, by the shared encoding rule
    of `corpus/encoding.py`."""
    return encode_texts(tokenizer, [d.text for d in documents])


def _document_rng(seed: int, doc_id: str) -> np.random.Generator:
    """An RNG that depends only on the seed and the document id (stable when documents are added)."""
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "big")])


def pack_token_sequences(
    sequences: Iterable[tuple[str, np.ndarray]],
    n_ctx: int,
    *,
    bos_id: int | None,
    one_window_per_document: bool = False,
    seed: int = 0,
) -> PackedContexts:
    """Pack (doc_id, token ids) pairs; see `pack_documents`. `bos_id=None` packs without BOS."""
    if n_ctx < 2:
        raise InputError(f"n_ctx must be at least 2, got {n_ctx}", field="n_ctx")
    width = n_ctx - 1 if bos_id is not None else n_ctx
    rows: list[np.ndarray] = []
    doc_ids: list[str] = []
    offsets: list[int] = []
    for doc_id, ids in sequences:
        n = int(ids.shape[0])
        if n < width:
            continue
        if one_window_per_document:
            starts = [int(_document_rng(seed, doc_id).integers(0, n - width + 1))]
        else:
            starts = list(range(0, n - width + 1, width))
        for s in starts:
            rows.append(ids[s : s + width])
            doc_ids.append(doc_id)
            offsets.append(s)
    tokens = np.empty((len(rows), n_ctx), dtype=np.int64)
    if rows:
        body = np.stack(rows)
        if bos_id is not None:
            tokens[:, 0] = bos_id
            tokens[:, 1:] = body
        else:
            tokens[:] = body
    return PackedContexts(
        tokens=tokens,
        doc_ids=doc_ids,
        offsets=np.asarray(offsets, dtype=np.int64),
        prepend_bos=bos_id is not None,
    )


def pack_documents(
    documents: Sequence[Document],
    tokenizer: Any,
    n_ctx: int,
    prepend_bos: bool = True,
    one_window_per_document: bool = False,
    max_contexts: int | None = None,
    seed: int = 0,
) -> PackedContexts:
    """Tokenise `documents` and cut them into contexts of exactly `n_ctx` tokens (BOS included).

    Windows never cross document boundaries; a document shorter than one window yields nothing.
    With `max_contexts`, a seeded random subset of that size is kept, in corpus order.
    Raises InputError when no document is long enough for a single context.
    """
    if max_contexts is not None and max_contexts < 1:
        raise InputError(f"max_contexts must be positive, got {max_contexts}", field="max_contexts")
    bos_id = bos_token_id(tokenizer) if prepend_bos else None
    token_lists = tokenize_documents(documents, tokenizer)
    packed = pack_token_sequences(
        zip((d.id for d in documents), token_lists),
        n_ctx,
        bos_id=bos_id,
        one_window_per_document=one_window_per_document,
        seed=seed,
    )
    if len(packed) == 0:
        longest = max((len(t) for t in token_lists), default=0)
        raise InputError(
            f"no document is long enough for one context of n_ctx={n_ctx} tokens "
            f"(longest has {longest} tokens); lower n_ctx or add longer documents",
            field="n_ctx",
        )
    if max_contexts is not None and max_contexts < len(packed):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(packed), size=max_contexts, replace=False))
        packed = packed.select(keep)
    return packed
