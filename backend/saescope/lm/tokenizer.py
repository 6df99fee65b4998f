"""Byte-level BPE tokenizers for the built-in model.

Owns training a byte-level BPE with the `tokenizers` library (special token `<|endoftext|>` serving as
BOS, EOS and PAD, like GPT-2), saving it as a `PreTrainedTokenizerFast` folder and loading it back
with `AutoTokenizer.from_pretrained(folder)`. Loading from a folder matters: transformer_lens re-loads
a tokenizer by its `name_or_path` and rejects a bare in-memory one (KeyError 'name_or_path').
The decoder is byte-level, so `model.to_str_tokens` shows readable tokens (' foo', not 'Ġfoo').
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

from saescope.errors import InputError, NotFoundError

SPECIAL_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 1_000_000_000  # no truncation warnings when tokenising whole documents


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4096,
    out_dir: str | Path = "tokenizer",
    min_frequency: int = 2,
):  # -> transformers.PreTrainedTokenizerFast
    """Train a byte-level BPE on `texts`, save it to `out_dir`, and return it loaded from there.

    The vocabulary holds the 256 byte symbols, `<|endoftext|>` (id 0) and up to
    `vocab_size - 257` merges; it can be smaller when the texts are too short for that many merges.
    Deterministic for the same texts in the same order.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 258:
        raise InputError(f"vocab_size must be at least 258 (256 bytes + special + 1 merge), got {vocab_size}",
                         field="vocab_size")
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=[SPECIAL_TOKEN],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        pad_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(out))
    return load_tokenizer(out)


def load_tokenizer(folder: str | Path):  # -> transformers.PreTrainedTokenizerFast
    """Load a tokenizer folder written by `train_bpe_tokenizer` (or any HF tokenizer folder)."""
    from transformers import AutoTokenizer

    path = Path(folder)
    if not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists():
        raise NotFoundError(f"no tokenizer found in {path} (expected tokenizer.json)")
    # An absolute path: transformer_lens re-loads the tokenizer by this name.
    return AutoTokenizer.from_pretrained(str(path.resolve()), local_files_only=True)


def readable_vocab(tokenizer, size: int | None = None) -> list[str]:
    """Display string of every token id (`size` ids, default the tokenizer's length), decoded the way
    `model.to_str_tokens` shows it, except that a byte-level token holding a partial UTF-8 sequence
    is shown as its escaped bytes (e.g. '\\xe2\\x80') rather than the unreadable replacement character.
    """
    n = len(tokenizer) if size is None else size
    ids = list(range(min(n, len(tokenizer))))
    decoded = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    raw = tokenizer.convert_ids_to_tokens(ids)
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    out = []
    for text, token in zip(decoded, raw):
        if "\ufffd" in text and token and all(c in byte_of for c in token):
            text = bytes(byte_of[c] for c in token).decode("utf-8", errors="backslashreplace")
        out.append(text)
    return out + [f"<{i}>" for i in range(len(ids), n)]