"""Prompts of the LLM explainer, simulator and classifiers, and the parsers of their answers.

Owns the chat messages (written for this project: a system message with the task, a user message
with the fragments, JSON requested back) and turning an answer into values, raising `AnswerError`
for malformed JSON or an answer of the wrong length so the caller can fail that one feature and go
on. Tokens are shown as their display strings; activating tokens are marked `[[token|7]]` with their
0-10 activation, highlighted tokens (fuzzing) `[[token]]`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from saescope.interpret.fragments import Fragment, rescale

Messages = list[dict[str, str]]
VERSION = "1"


class AnswerError(ValueError):
    """An LLM answer that cannot be used: not JSON, a missing key, or the wrong number of values."""


def _token_text(vocab: Sequence[str], token: int) -> str:
    return vocab[token] if 0 <= token < len(vocab) else f"<{token}>"


def marked_text(fragment: Fragment, vocab: Sequence[str], max_activation: float) -> str:
    """The fragment's text with each activating token written `[[token|a]]` (a on the 0-10 scale)."""
    levels = rescale(fragment.activations, max_activation)
    return "".join(f"[[{_token_text(vocab, t)}|{a}]]" if a > 0 else _token_text(vocab, t)
                   for t, a in zip(fragment.tokens.tolist(), levels.tolist()))


def highlighted_text(fragment: Fragment, vocab: Sequence[str], positions: np.ndarray) -> str:
    """The fragment's text with the tokens at `positions` written `[[token]]`."""
    marked = set(np.asarray(positions).tolist())
    return "".join(f"[[{_token_text(vocab, t)}]]" if i in marked else _token_text(vocab, t)
                   for i, t in enumerate(fragment.tokens.tolist()))


def plain_text(fragment: Fragment, vocab: Sequence[str]) -> str:
    return "".join(_token_text(vocab, t) for t in fragment.tokens.tolist())


EXPLAIN_SYSTEM = (
    "You are studying one feature of a language model: a direction in its activations that fires on "
    "some tokens and not on others. You will read text fragments in which every token where the feature "
    "fires is written [[token|a]], a being its activation from 1 (weak) to 10 (strongest). Work out what "
    "the feature responds to. Be concrete: name the tokens or the kind of text, and the context it needs. "
    'Answer with a JSON object {"explanation": "..."} holding one short sentence.'
)

SIMULATE_SYSTEM = (
    "You predict where a feature of a language model fires. You are given an explanation of the feature "
    "and a fragment of text as a JSON list of tokens. For every token, in order, predict the feature's "
    "activation from 0 (silent) to 10 (strongest). Most tokens are 0. "
    'Answer with a JSON object {"activations": [...]} holding exactly one integer per token.'
)

DETECT_SYSTEM = (
    "You judge an explanation of a feature of a language model. You are given the explanation and a "
    "JSON list of text fragments. For each fragment, in order, answer 1 if the feature fires somewhere "
    "in it according to the explanation, else 0. "
    'Answer with a JSON object {"answers": [...]} holding exactly one 0 or 1 per fragment.'
)

FUZZ_SYSTEM = (
    "You judge an explanation of a feature of a language model. You are given the explanation and a "
    "JSON list of text fragments in which some tokens are written [[token]]. For each fragment, in "
    "order, answer 1 if the marked tokens are the ones the explanation says the feature fires on, else 0 "
    '(the marks were put on other tokens). Answer with a JSON object {"answers": [...]} holding exactly '
    "one 0 or 1 per fragment."
)


def explain_messages(fragments: Sequence[Fragment], vocab: Sequence[str], max_activation: float) -> Messages:
    body = "\n\n".join(f"Fragment {i + 1}:\n{marked_text(f, vocab, max_activation)}"
                       for i, f in enumerate(fragments))
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": body}]


def simulate_messages(explanation: str, fragment: Fragment, vocab: Sequence[str]) -> Messages:
    tokens = [_token_text(vocab, t) for t in fragment.tokens.tolist()]
    user = (f"Explanation: {explanation}\n"
            f"Tokens ({len(tokens)}): {json.dumps(tokens)}\n"
            f"Answer with {len(tokens)} integers.")
    return [{"role": "system", "content": SIMULATE_SYSTEM}, {"role": "user", "content": user}]


def judge_messages(system: str, explanation: str, texts: Sequence[str]) -> Messages:
    user = (f"Explanation: {explanation}\n"
            f"Fragments ({len(texts)}): {json.dumps(list(texts))}\n"
            f"Answer with {len(texts)} values.")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


EXPLANATION_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"explanation": {"type": "string", "maxLength": 300}}, "required": ["explanation"]}


def values_schema(key: str, n: int, values: Sequence[int]) -> dict[str, Any]:
    """JSON schema of an answer `{key: [n values from `values`]}` (constrains local models' decoding)."""
    return {"type": "object", "required": [key], "properties": {
        key: {"type": "array", "minItems": n, "maxItems": n, "items": {"type": "integer", "enum": list(values)}}}}


def _json_object(text: str) -> dict[str, Any]:
    """The JSON object of an answer (also when wrapped in prose or a code fence)."""
    text = text.strip()
    candidates = [text]
    m = re.search(r"\{.*\}", text, flags=re.S)
    if m:
        candidates.append(m.group(0))
    for c in candidates:
        try:
            value = json.loads(c)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise AnswerError(f"the answer is not a JSON object: {text[:80]!r}")


def parse_explanation(text: str) -> str:
    value = _json_object(text).get("explanation")
    if not isinstance(value, str) or not value.strip():
        raise AnswerError("the answer has no 'explanation' string")
    return " ".join(value.split())[:1000]


def _numbers(text: str, key: str, n: int, low: float, high: float) -> list[float]:
    values = _json_object(text).get(key)
    if not isinstance(values, list):
        raise AnswerError(f"the answer has no {key!r} list")
    if len(values) != n:
        raise AnswerError(f"the answer has {len(values)} values for {n} items")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise AnswerError(f"the answer's {key!r} holds a non-number: {v!r}")
        out.append(float(min(max(float(v), low), high)))
    return out


def parse_activations(text: str, n: int) -> np.ndarray:
    """`[n]` predicted activations (clipped to 0-10)."""
    return np.asarray(_numbers(text, "activations", n, 0.0, 10.0))


def parse_answers(text: str, n: int) -> list[int]:
    """`n` 0/1 answers (values above 0.5 are 1)."""
    return [int(v > 0.5) for v in _numbers(text, "answers", n, 0.0, 1.0)]


def expected_digits(logprobs: Any, n: int) -> np.ndarray | None:
    """`[n]` expected activations from an answer's token log-probabilities (OpenAI `logprobs.content`):
    each predicted number's top alternatives 0-10 weighted by their probabilities; None when the
    answer's number tokens cannot be lined up with the `n` tokens."""
    if not isinstance(logprobs, list):
        return None
    out: list[float] = []
    for entry in logprobs:
        if not isinstance(entry, dict):
            return None
        token = str(entry.get("token", "")).strip().strip(",[]: ")
        if not token.isdigit() or int(token) > 10:
            continue
        weights: dict[int, float] = {}
        for alt in entry.get("top_logprobs") or [{"token": token, "logprob": 0.0}]:
            t = str(alt.get("token", "")).strip().strip(",[]: ")
            lp = alt.get("logprob")
            if t.isdigit() and int(t) <= 10 and isinstance(lp, (int, float)):
                weights[int(t)] = weights.get(int(t), 0.0) + math.exp(float(lp))
        total = sum(weights.values())
        out.append(sum(k * w for k, w in weights.items()) / total if total > 0 else float(token))
    return np.asarray(out) if len(out) == n else None
