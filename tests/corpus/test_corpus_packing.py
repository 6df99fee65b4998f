"""Packing documents into fixed-length contexts with BOS, doc ids and offsets."""

from __future__ import annotations

import numpy as np
import pytest

from saescope.corpus.documents import Document
from saescope.corpus.packing import pack_documents, tokenize_documents
from saescope.corpus.stdlib import stdlib_documents
from saescope.errors import InputError
from saescope.lm.tokenizer import train_bpe_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [d.text for d in stdlib_documents("train", max_files=6)]
    return train_bpe_tokenizer(texts, 400, tmp_path_factory.mktemp("packing_tokenizer"))


@pytest.fixture(scope="module")
def documents():
    return stdlib_documents("heldout", max_files=8)


def test_contexts_have_bos_first_and_the_documents_tokens_after_it(tokenizer, documents):
    packed = pack_documents(documents, tokenizer, n_ctx=16)
    assert packed.tokens.shape == (len(packed), 16) and packed.tokens.dtype == np.int64
    assert (packed.tokens[:, 0] == tokenizer.bos_token_id).all()
    ids = dict(zip((d.id for d in documents), tokenize_documents(documents, tokenizer)))
    for row, doc_id, offset in zip(packed.tokens, packed.doc_ids, packed.offsets):
        assert np.array_equal(row[1:], ids[doc_id][offset : offset + 15])


def test_windows_are_consecutive_and_cover_each_document(tokenizer, documents):
    packed = pack_documents(documents, tokenizer, n_ctx=16)
    ids = dict(zip((d.id for d in documents), tokenize_documents(documents, tokenizer)))
    for doc_id, tokens in ids.items():
        offsets = packed.offsets[[i for i, d in enumerate(packed.doc_ids) if d == doc_id]]
        assert list(offsets) == list(range(0, len(tokens) - 15 + 1, 15))


def test_without_bos_contexts_are_plain_windows(tokenizer, documents):
    packed = pack_documents(documents, tokenizer, n_ctx=16, prepend_bos=False)
    ids = dict(zip((d.id for d in documents), tokenize_documents(documents, tokenizer)))
    row, doc_id, offset = packed.tokens[3], packed.doc_ids[3], packed.offsets[3]
    assert np.array_equal(row, ids[doc_id][offset : offset + 16])


def test_one_window_per_document_takes_at_most_one_seeded_window(tokenizer, documents):
    a = pack_documents(documents, tokenizer, n_ctx=16, one_window_per_document=True, seed=1)
    b = pack_documents(documents, tokenizer, n_ctx=16, one_window_per_document=True, seed=1)
    c = pack_documents(documents, tokenizer, n_ctx=16, one_window_per_document=True, seed=2)
    assert len(set(a.doc_ids)) == len(a.doc_ids) == len(documents)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.offsets, b.offsets)
    assert not np.array_equal(a.offsets, c.offsets)


def test_max_contexts_keeps_a_seeded_subset_in_corpus_order(tokenizer, documents):
    full = pack_documents(documents, tokenizer, n_ctx=16)
    part = pack_documents(documents, tokenizer, n_ctx=16, max_contexts=10, seed=3)
    assert len(part) == 10
    keys = [(d, o) for d, o in zip(full.doc_ids, full.offsets.tolist())]
    picked = [keys.index((d, o)) for d, o in zip(part.doc_ids, part.offsets.tolist())]
    assert picked == sorted(picked)


def test_documents_shorter_than_a_context_raise_a_clear_error(tokenizer):
    with pytest.raises(InputError, match="n_ctx"):
        pack_documents([Document(id="short", text="x = 1")], tokenizer, n_ctx=32)


def test_tokenize_documents_matches_the_tokenizers_own_encoding(tokenizer, documents):
    ids = tokenize_documents(documents[:3], tokenizer)
    for doc, got in zip(documents[:3], ids):
        assert got.tolist() == tokenizer(doc.text, add_special_tokens=False)["input_ids"]
