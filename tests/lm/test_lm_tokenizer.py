"""Byte-level BPE tokenizer: round trip, special token, readable tokens in transformer_lens."""

from __future__ import annotations

from saescope.corpus.stdlib import stdlib_documents
from saescope.lm.tokenizer import SPECIAL_TOKEN, load_tokenizer, readable_vocab, train_bpe_tokenizer


def test_trained_tokenizer_round_trips_text_exactly(tmp_path):
    tok = train_bpe_tokenizer([d.text for d in stdlib_documents("train", max_files=5)], 400, tmp_path)
    text = "def föo(x):\n\treturn x  # ünïcode ✓ 😀\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(tok) <= 400


def test_endoftext_is_bos_eos_and_pad_and_not_added_automatically(tmp_path):
    tok = train_bpe_tokenizer(["a b c " * 50], 300, tmp_path)
    assert tok.bos_token == tok.eos_token == tok.pad_token == SPECIAL_TOKEN
    assert tok.convert_tokens_to_ids(SPECIAL_TOKEN) == tok.bos_token_id == 0
    assert tok("a b")["input_ids"][0] != tok.bos_token_id


def test_saved_tokenizer_loads_back_identically(tmp_path):
    texts = [d.text for d in stdlib_documents("train", max_files=5)]
    tok = train_bpe_tokenizer(texts, 400, tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    sample = texts[0][:2000]
    assert tok(sample)["input_ids"] == again(sample)["input_ids"]


def test_training_twice_on_the_same_texts_gives_the_same_vocabulary(tmp_path):
    texts = [d.text for d in stdlib_documents("train", max_files=5)]
    a = train_bpe_tokenizer(texts, 400, tmp_path / "a")
    b = train_bpe_tokenizer(texts, 400, tmp_path / "b")
    assert a.get_vocab() == b.get_vocab()


def test_model_shows_readable_tokens(tiny_lm):
    tokens = tiny_lm.to_str_tokens("def foo():\n    return None")
    assert tokens[0] == SPECIAL_TOKEN
    assert "".join(tokens[1:]) == "def foo():\n    return None"
    assert "def" in tokens and not any("Ġ" in t or "Ċ" in t for t in tokens)


def test_readable_vocab_matches_to_str_tokens(tiny_lm):
    vocab = readable_vocab(tiny_lm.tokenizer)
    ids = tiny_lm.to_tokens("import os, sys")[0].tolist()
    assert [vocab[i] for i in ids] == tiny_lm.to_str_tokens("import os, sys")


def test_partial_utf8_byte_tokens_display_as_escaped_bytes_not_replacement_chars(tiny_lm_dir) -> None:
    from saescope.lm.tokenizer import load_tokenizer, readable_vocab

    tokenizer = load_tokenizer(tiny_lm_dir / "tokenizer")
    vocab = readable_vocab(tokenizer)
    assert len(vocab) == len(tokenizer)
    assert not any("\ufffd" in token for token in vocab)
    lone_byte = tokenizer.convert_tokens_to_ids(tokenizer.convert_ids_to_tokens(tokenizer.encode("é", add_special_tokens=False))[:1])[0]
    assert vocab[lone_byte] == "\\xc3"  # first byte of 'é' (0xC3 0xA9) on its own
    assert vocab[tokenizer.encode(" def", add_special_tokens=False)[0]].startswith(" ")
