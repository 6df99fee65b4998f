"""The LLM-free explainer and simulator: characteristic tokens in, per-token predictions out.

Owns the token-lookup explanation (the tokens of a feature's explanation fragments ranked by their
activation mass weighted by `log((N + 1) / (count + 1))` against their corpus frequency, each with its
mean activation on the 0-10 scale), written as plain text — `Fires on the tokens "def" (strength 9),
"class" (strength 6).` — and the simulator that reads any explanation back: quoted tokens (with their
strengths, 10 when none is given) or, in free text, its words, matched against the tokens of a
fragment (case and surrounding spaces ignored). No model, no network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np

from saescope.interpret.fragments import FeatureFragments, Fragment

VERSION = "1"
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"(?:\s*\(strength\s+(\d+(?:\.\d+)?)\))?')
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]+|[^\sA-Za-z0-9]{1,3}")
_STOP = frozenset("""a an and are as at be by fires for from in is it of on or the this to token tokens with
when which that words word strength text code""".split())


def _normal(s: str) -> str:
    t = s.strip().lower()
    return t if t else s


def lookup_explanation(feature: FeatureFragments, vocab: Sequence[str], token_counts: np.ndarray,
                       n_tokens: int = 5) -> str:
    """The explanation of `feature` from its explanation fragments ("" when it has none)."""
    frags = feature.explanation
    top = feature.max_activation
    if not frags or top <= 0:
        return ""
    tokens = np.concatenate([f.tokens for f in frags])
    acts = np.clip(np.concatenate([f.activations for f in frags]).astype(np.float64), 0, None) / top * 10.0
    ids, inverse = np.unique(tokens, return_inverse=True)
    mass = np.bincount(inverse, weights=acts)
    occurrences = np.bincount(inverse)
    counts = np.asarray(token_counts, dtype=np.float64)
    idf = np.log((counts.sum() + 1.0) / (counts[np.minimum(ids, len(counts) - 1)] + 1.0))
    mean = mass / occurrences
    score = mass * idf
    parts: list[str] = []
    for k in np.argsort(-score, kind="stable").tolist():
        strength = int(np.clip(np.rint(mean[k]), 0, 10))
        if score[k] <= 0 or strength < 1:
            continue
        i = int(ids[k])
        text = vocab[i] if i < len(vocab) else str(i)
        parts.append(f"{json.dumps(text)} (strength {strength})")
        if len(parts) == n_tokens:
            break
    return f"Fires on the tokens {', '.join(parts)}." if parts else ""


def explanation_terms(explanation: str) -> list[tuple[str, float]]:
    """(normalised token text, strength 0-10) pairs an explanation names: its quoted strings, or its
    words when nothing is quoted."""
    quoted = []
    for m in _QUOTED.finditer(explanation):
        try:
            text = json.loads(f'"{m.group(1)}"')
        except json.JSONDecodeError:
            text = m.group(1)
        quoted.append((_normal(text), float(m.group(2)) if m.group(2) else 10.0))
    if quoted:
        return quoted
    words = [w for w in _WORD.findall(explanation) if w.lower() not in _STOP]
    return [(_normal(w), 10.0) for w in dict.fromkeys(words)]


class LookupSimulator:
    """Predicts 0-10 activations of tokens from an explanation by looking its terms up in the vocabulary."""

    name = "lookup"
    version = VERSION

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(vocab)
        self._ids: dict[str, list[int]] = {}
        for i, s in enumerate(self.vocab):
            self._ids.setdefault(_normal(s), []).append(i)

    def token_predictions(self, explanation: str) -> np.ndarray:
        """`[d_vocab]` prediction of every token id."""
        pred = np.zeros(len(self.vocab), dtype=np.float64)
        for term, strength in explanation_terms(explanation):
            for i in self._ids.get(term, ()):
                pred[i] = max(pred[i], strength)
        return pred

    def simulate(self, explanation: str, fragments: Sequence[Fragment]) -> list[np.ndarray]:
        """`[W]` predictions per fragment."""
        pred = self.token_predictions(explanation)
        top = len(pred) - 1
        return [pred[np.clip(f.tokens, 0, top)] for f in fragments]

    def detect(self, explanation: str, fragments: Sequence[Fragment]) -> list[int]:
        """1 for each fragment in which some token is predicted to fire."""
        return [int(p.max(initial=0.0) > 0) for p in self.simulate(explanation, fragments)]

    def judge_highlights(self, explanation: str, fragments: Sequence[Fragment],
                         highlights: Sequence[np.ndarray]) -> list[int]:
        """1 for each fragment whose highlighted positions are mostly tokens the explanation names."""
        out = []
        for p, marked in zip(self.simulate(explanation, fragments), highlights):
            out.append(int(len(marked) > 0 and float((p[marked] > 0).mean()) >= 0.5))
        return out
