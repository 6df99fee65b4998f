"""LLM-free feature labels from top examples (`top_token_labels`) and token display strings.

Owns the tf-idf-like scoring of the tokens a feature fires on: for each feature, the activation mass
on each token id in its top examples, weighted by `log((N + 1) / (count + 1))` against the token's
corpus frequency, so ubiquitous tokens (spaces, newlines) do not crowd out the characteristic ones.
When one bigram (previous token + token) sits at the maximum of at least half of a feature's top
examples, it leads the label. Works on arrays for all features at once; no model, no SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from saescope.lm.tokenizer import readable_vocab


@dataclass
class FeatureLabels:
    label: list[str]  # short label per feature, e.g. "' def', ' class'"
    top_tokens: list[str]  # searchable space-separated text per feature
    top_token_ids: list[list[int]]  # best-first token ids per feature


def vocab_strings(model: Any) -> list[str]:
    """Display string of every token id (decoded text, e.g. ' def'); `str(id)` without a tokenizer."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [str(i) for i in range(int(model.cfg.d_vocab))]
    return readable_vocab(tok, int(model.cfg.d_vocab))


def _searchable(s: str) -> str:
    t = s.strip()
    return t if t else repr(s)[1:-1]


def top_token_labels(
    d_sae: int,
    feature: np.ndarray,
    activations: np.ndarray,
    token_ids: np.ndarray,
    token_counts: np.ndarray,
    vocab: list[str],
    n_label: int = 3,
    n_top: int = 10,
) -> FeatureLabels:
    """Labels for `d_sae` features from examples `feature [m]`, `activations [m, n_ctx]`,
    `token_ids [m, n_ctx]` (usually the top group), against corpus `token_counts [d_vocab]`."""
    d_vocab = len(token_counts)
    labels = [""] * d_sae
    searchable = [""] * d_sae
    ids_out: list[list[int]] = [[] for _ in range(d_sae)]
    if len(feature) == 0:
        return FeatureLabels(labels, searchable, ids_out)
    idf = np.log((token_counts.sum() + 1.0) / (token_counts.astype(np.float64) + 1.0))
    rows, cols = np.nonzero(activations > 0)
    f = feature[rows].astype(np.int64)
    t = token_ids[rows, cols].astype(np.int64)
    key = f * d_vocab + t
    uniq, inv = np.unique(key, return_inverse=True)
    mass = np.bincount(inv, weights=activations[rows, cols].astype(np.float64))
    uf, ut = uniq // d_vocab, uniq % d_vocab
    score = mass * idf[ut]
    order = np.lexsort((-score, uf))  # by feature, best score first
    uf, ut = uf[order], ut[order]
    starts = np.searchsorted(uf, np.arange(d_sae))
    ends = np.searchsorted(uf, np.arange(d_sae), side="right")
    # bigram at each example's maximum
    arg = activations.argmax(axis=1)
    prev_ok = arg >= 2  # position 0 is BOS
    big_prev = np.where(prev_ok, token_ids[np.arange(len(arg)), np.maximum(arg - 1, 0)], -1)
    big_tok = token_ids[np.arange(len(arg)), arg]
    has_act = activations.max(axis=1) > 0
    n_ex = np.bincount(feature[has_act], minlength=d_sae)
    bkey = (feature.astype(np.int64) * d_vocab + big_prev) * d_vocab + big_tok
    sel = has_act & prev_ok
    bu, bc = np.unique(bkey[sel], return_counts=True)
    best_bigram: dict[int, tuple[int, int, int]] = {}
    for k, c in zip(bu.tolist(), bc.tolist()):
        ft, tk = divmod(k, d_vocab)
        fe, pv = divmod(ft, d_vocab)
        if c >= max(2, (n_ex[fe] + 1) // 2) and c > best_bigram.get(fe, (0, 0, 0))[0]:
            best_bigram[fe] = (c, pv, tk)
    for fe in range(d_sae):
        ids = ut[starts[fe] : ends[fe]][:n_top].tolist()
        ids_out[fe] = ids
        parts = [repr(vocab[i]) if i < len(vocab) else repr(str(i)) for i in ids[:n_label]]
        words = [_searchable(vocab[i]) if i < len(vocab) else str(i) for i in ids]
        if fe in best_bigram:
            _, pv, tk = best_bigram[fe]
            bigram = vocab[pv] + vocab[tk]
            parts = [repr(bigram)] + [p for p in parts if p != repr(vocab[tk])][: n_label - 1]
            words = [_searchable(bigram)] + words
        labels[fe] = ", ".join(parts)
        searchable[fe] = " ".join(dict.fromkeys(words))
    return FeatureLabels(labels, searchable, ids_out)
