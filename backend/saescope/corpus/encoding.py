"""The one rule by which text becomes token ids, shared by stored contexts and live inference.

Tokenizers disagree about BOS: GPT-2's adds nothing, a Llama tokenizer (and the one transformers
builds from the SmolLM2 GGUF) prepends its BOS id on `tokenizer(text)`, others append EOS. saescope
therefore never lets a tokenizer add special tokens: `encode_texts` encodes with
`add_special_tokens=False`, and `encode_text` prepends exactly one BOS id itself when `prepend_bos`
(the tokenizer's `bos_token_id`, else its EOS id, as GPT-2 style tokenizers use one token for both).
A text that itself begins with the BOS token's string does not yield a second BOS. The corpus packer
(`corpus/packing.py`), the built-in model's training contexts and the live engine all go through
these functions, so a stored context and the live tokens of the same text are identical. Knows
nothing about models.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from saescope.errors import InputError

ENCODE_BATCH_TEXTS = 64


def _bos_or_none(tokenizer: Any) -> int | None:
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return None


def bos_token_id(tokenizer: Any) -> int:
    """The id saescope puts at position 0: the tokenizer's BOS id, falling back to its EOS id."""
    value = _bos_or_none(tokenizer)
    if value is None:
        raise InputError("the tokenizer has neither a BOS nor an EOS token; pass prepend_bos=False")
    return value


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """True when `tokenizer(text)` itself prepends a BOS id (with its default special tokens).
    Informative only: saescope's own encoding never depends on it."""
    try:
        ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    except Exception:  # a tokenizer that cannot add special tokens adds no BOS
        return False
    bos = getattr(tokenizer, "bos_token_id", None)
    return bool(ids) and bos is not None and int(ids[0]) == int(bos)


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[np.ndarray]:
    """Token ids (int64) of each text, never with special tokens added by the tokenizer; a leading
    BOS id that the text's own characters produced is dropped (so prepending one never doubles it).
    Batched through the fast tokenizer's Rust encoder when there is one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    fast = getattr(backend, "encode_batch_fast", None)  # skips computing offsets, which we do not use
    bos = _bos_or_none(tokenizer)
    out: list[np.ndarray] = []
    for start in range(0, len(texts), ENCODE_BATCH_TEXTS):
        batch = list(texts[start : start + ENCODE_BATCH_TEXTS])
        if fast is not None:
            encoded = [e.ids for e in fast(batch, add_special_tokens=False)]
        else:
            encoded = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        for ids in encoded:
            array = np.asarray(ids, dtype=np.int64)
            if bos is not None and array.size and int(array[0]) == bos:
                array = array[1:]
            out.append(array)
    return out


def encode_text(tokenizer: Any, text: str, prepend_bos: bool = True) -> list[int]:
    """Token ids of `text`: exactly one BOS id first when `prepend_bos` (none otherwise), then the
    text's own tokens, never special tokens the tokenizer would add by itself."""
    body = [int(t) for t in encode_texts(tokenizer, [text])[0]]
    return [bos_token_id(tokenizer), *body] if prepend_bos else body
