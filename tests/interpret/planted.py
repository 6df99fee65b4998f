"""Planted features for the interpret tests: fragments built by hand over a small word vocabulary.

Each feature fires with a known activation on known tokens, so what any rule-based explainer and
simulator must produce is known in advance.
"""

from __future__ import annotations

import numpy as np

from saescope.interpret.fragments import DictionaryFragments, FeatureFragments, Fragment

VOCAB = ["<bos>", " alpha", " beta", " gamma", " delta", " epsilon", " zeta", " MALFORMED", " SHORT"]
W = 8


def activations_for(tokens: np.ndarray, rule: str) -> np.ndarray:
    """The planted feature's activations on `tokens [W]`."""
    if rule == "beta-after-gamma":
        prev = np.concatenate([[0], tokens[:-1]])
        return np.where((tokens == 2) & (prev == 3), 3.0, 0.0).astype(np.float32)
    token = VOCAB.index(rule)
    return np.where(tokens == token, 2.0, 0.0).astype(np.float32)


def _window(rng: np.random.Generator, must: int | None) -> np.ndarray:
    tokens = rng.integers(1, 7, size=W)  # alpha..zeta; the trigger words only where planted
    if must is not None:
        tokens[rng.integers(0, W)] = must
    return tokens


def planted_feature(index: int, rule: str, shared_random: list[np.ndarray], seed: int = 0) -> FeatureFragments:
    rng = np.random.default_rng([seed, index])
    must = 3 if rule == "beta-after-gamma" else VOCAB.index(rule)
    ff = FeatureFragments(index=index)
    for rank in range(20):
        tokens = _window(rng, must)
        if rule == "beta-after-gamma":
            at = int(rng.integers(0, W - 1))
            tokens[at], tokens[at + 1] = 3, 2
        frag = Fragment(f"doc{index}-{rank}", tokens, activations_for(tokens, rule))
        (ff.explanation if rank % 2 == 0 else ff.scoring).append(frag)
    for k in range(6):
        tokens = _window(rng, must)
        if rule == "beta-after-gamma":
            tokens[0], tokens[1] = 3, 2
        ff.random_activating.append(Fragment(f"act{index}-{k}", tokens, activations_for(tokens, rule)))
    ff.random = [Fragment(f"rand-{k}", t, activations_for(t, rule)) for k, t in enumerate(shared_random)]
    return ff


def planted_dictionary(rules: list[str], n_random: int = 12, seed: int = 0) -> DictionaryFragments:
    rng = np.random.default_rng([seed, 999])
    shared = [_window(rng, None) for _ in range(n_random)]
    features = [planted_feature(i, rule, shared, seed) for i, rule in enumerate(rules)]
    counts = np.ones(len(VOCAB), dtype=np.int64) * 100
    return DictionaryFragments("planted", W, features, counts)
