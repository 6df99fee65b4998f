"""One rule turns text into tokens: exactly one BOS when asked, none added by the tokenizer itself."""

from __future__ import annotations

import pytest

from saescope.corpus.documents import Document
from saescope.corpus.encoding import bos_token_id, encode_text, encode_texts, tokenizer_adds_bos
from saescope.corpus.packing import pack_documents
from saescope.errors import InputError


@pytest.fixture(scope="module", params=[True, False], ids=["adds-bos", "adds-nothing"])
def tokenizer(request, tmp_path_factory):
    """The tiny BPE saved with a BOS-prepending post-processor, and without one."""
    from model_fixtures import build_tiny_tokenizer

    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer", prepend_bos=request.param)


TEXT = "import os\n\ndef main():\n    return os.getcwd()\n"


def test_encode_text_starts_with_exactly_one_bos(tokenizer):
    ids = encode_text(tokenizer, TEXT, prepend_bos=True)
    bos = bos_token_id(tokenizer)
    assert ids[0] == bos and bos not in ids[1:]
    assert ids[1:] == tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert encode_text(tokenizer, TEXT, prepend_bos=False) == ids[1:]


def test_the_tokenizers_own_bos_never_doubles_it(tokenizer):
    plain = tokenizer(TEXT)["input_ids"]
    assert (plain[0] == 0) == tokenizer_adds_bos(tokenizer)
    assert encode_text(tokenizer, TEXT) == [0, *tokenizer(TEXT, add_special_tokens=False)["input_ids"]]


def test_a_text_that_begins_with_the_bos_string_gets_one_bos(tokenizer):
    ids = encode_text(tokenizer, "<s>" + TEXT)
    assert ids == encode_text(tokenizer, TEXT)
    assert encode_texts(tokenizer, ["<s>" + TEXT])[0].tolist() == ids[1:]


def test_packed_contexts_hold_the_same_tokens_as_encode_text(tokenizer):
    body = encode_text(tokenizer, TEXT, prepend_bos=False)
    packed = pack_documents([Document(id="doc", text=TEXT)], tokenizer, n_ctx=len(body) + 1)
    assert len(packed) == 1
    assert packed.tokens[0].tolist() == encode_text(tokenizer, TEXT)


def test_a_tokenizer_without_bos_or_eos_is_refused_when_bos_is_needed():
    class Bare:
        bos_token_id = None
        eos_token_id = None

        def __call__(self, texts, add_special_tokens=False, verbose=False):
            return {"input_ids": [[5, 6] for _ in texts]}

    with pytest.raises(InputError, match="neither a BOS nor an EOS"):
        encode_text(Bare(), "x", prepend_bos=True)
    assert encode_text(Bare(), "x", prepend_bos=False) == [5, 6]
