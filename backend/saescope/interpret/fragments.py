"""Fragments of the interpretability protocol: fixed-length token windows and their activations.

Owns cutting corpus contexts into windows (`fragment_tokens` tokens after the BOS position, at most
one fragment per document in every set), choosing per feature its top fragments (split alternately
into an explanation set and a scoring set), its random activating fragments, and the unconditional
random fragments shared by every feature of a dictionary, and the 0-10 rescaling prompts show.
Two passes over the contexts: the first keeps each window's maximum per feature, the second reads
token activations only for the windows chosen. Runs the model and the dictionaries; writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from saescope.activations.hooks import flatten_hook_activation
from saescope.analysis.precompute import multi_hook_activations
from saescope.dictionaries.base import Dictionary
from saescope.errors import ConfigError, InputError
from saescope.interpret.config import ExplainConfig

ActivationSource = Callable[[Sequence[str], np.ndarray], dict[str, torch.Tensor]]

FRAGMENT_KINDS = ("explanation", "scoring", "random_activating", "random")


@dataclass
class Fragment:
    """One window of one document with one feature's activation on each of its tokens."""

    doc_id: str
    tokens: np.ndarray  # [W] int64 token ids
    activations: np.ndarray  # [W] float32 real activations


@dataclass
class FeatureFragments:
    """Every fragment of one feature, by role."""

    index: int
    explanation: list[Fragment] = field(default_factory=list)  # top ranks 0, 2, 4, ...
    scoring: list[Fragment] = field(default_factory=list)  # top ranks 1, 3, 5, ...
    random_activating: list[Fragment] = field(default_factory=list)  # uniformly among activating windows
    random: list[Fragment] = field(default_factory=list)  # unconditional, shared by the dictionary

    @property
    def max_activation(self) -> float:
        """The largest activation over the top fragments (the 10 of the 0-10 scale)."""
        values = [float(f.activations.max()) for f in self.explanation + self.scoring if f.activations.size]
        return max(values, default=0.0)

    @property
    def is_dead(self) -> bool:
        return not self.explanation


@dataclass
class DictionaryFragments:
    """The fragments of every feature of one dictionary, plus what the lookup explainer weighs."""

    dictionary_id: str
    fragment_tokens: int
    features: list[FeatureFragments]
    token_counts: np.ndarray  # [d_vocab] corpus frequency of each token (BOS excluded)


def rescale(activations: np.ndarray, max_activation: float) -> np.ndarray:
    """Activations `[...]` on the 0-10 integer scale of prompts (10 = `max_activation`; negatives 0)."""
    if max_activation <= 0:
        return np.zeros(np.shape(activations), dtype=np.int64)
    scaled = np.clip(np.asarray(activations, dtype=np.float64) / max_activation * 10.0, 0.0, 10.0)
    return np.rint(scaled).astype(np.int64)


def window_layout(n_ctx: int, fragment_tokens: int) -> tuple[int, int]:
    """(window length W, windows per context): W = min(fragment_tokens, n_ctx - 1) after the BOS."""
    if n_ctx < 2:
        raise InputError(f"contexts of {n_ctx} tokens hold no fragment", field="tokens")
    w = min(fragment_tokens, n_ctx - 1)
    return w, (n_ctx - 1) // w


def _encode(dictionaries: Sequence[tuple[str, Dictionary]], raw: dict[str, torch.Tensor],
            device: torch.device) -> list[torch.Tensor]:
    out = []
    with torch.no_grad():
        for _, d in dictionaries:
            x = flatten_hook_activation(raw[d.metadata.hook_name], d.metadata.hook_head_index)
            out.append(d.encode(x.to(device, torch.float32)))  # [b, n_ctx, d_sae]
    return out


def _batches(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _activations(model: Any, tokens: np.ndarray, batch: np.ndarray, hooks: list[str],
                 source: ActivationSource | None) -> dict[str, torch.Tensor]:
    """Hook tensors of the contexts `batch`: read from `source` when given, else one forward pass."""
    if source is not None:
        return source(hooks, batch)
    return multi_hook_activations(model, torch.as_tensor(tokens[batch]).to(_model_device(model)), hooks)


def _window_maxima(model: Any, dictionaries: Sequence[tuple[str, Dictionary]], tokens: np.ndarray, w: int,
                   n_win: int, config: ExplainConfig, device: torch.device,
                   source: ActivationSource | None = None) -> list[np.ndarray]:
    """Pass 1: the maximum of each feature on each window, `[n_contexts * n_win, d_sae]` per dictionary."""
    hooks = [d.metadata.hook_name for _, d in dictionaries]
    n = tokens.shape[0]
    maxima = [np.zeros((n * n_win, d.d_sae), dtype=np.float32) for _, d in dictionaries]
    rows = np.arange(n)
    for batch in tqdm(_batches(rows, config.contexts_per_batch), desc="fragments: scan", disable=not config.progress):
        raw = _activations(model, tokens, batch, hooks, source)
        for k, acts in enumerate(_encode(dictionaries, raw, device)):
            b = acts.shape[0]
            windows = acts[:, 1 : 1 + n_win * w, :].reshape(b, n_win, w, -1).amax(dim=2)
            maxima[k][batch[0] * n_win : (batch[-1] + 1) * n_win] = windows.reshape(b * n_win, -1).float().cpu().numpy()
    return maxima


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _distinct_documents(candidates: np.ndarray, window_doc: np.ndarray, limit: int,
                        taken: set[int] | None = None) -> list[int]:
    """The first `limit` windows of `candidates` whose documents differ (and are not in `taken`)."""
    seen = set(taken or ())
    out: list[int] = []
    for win in candidates.tolist():
        doc = int(window_doc[win])
        if doc in seen:
            continue
        seen.add(doc)
        out.append(win)
        if len(out) == limit:
            break
    return out


@dataclass
class _Choice:
    top: list[list[int]]  # per feature: window ids, best first
    activating: list[list[int]]  # per feature: random activating window ids


def _choose(maxima: np.ndarray, window_doc: np.ndarray, config: ExplainConfig) -> _Choice:
    n_windows, d_sae = maxima.shape
    order = np.argsort(-maxima, axis=0, kind="stable")
    top, activating = [], []
    for f in range(d_sae):
        column = maxima[:, f]
        n_pos = int((column > 0).sum())
        chosen = _distinct_documents(order[:n_pos, f], window_doc, config.n_top)
        top.append(chosen)
        if config.n_random_activating and n_pos:
            rng = np.random.default_rng([config.seed, f])
            pool = rng.permutation(np.nonzero(column > 0)[0])
            taken_docs = {int(window_doc[w]) for w in chosen}
            activating.append(_distinct_documents(pool, window_doc, config.n_random_activating, taken_docs))
        else:
            activating.append([])
    return _Choice(top, activating)


def random_windows(window_doc: np.ndarray, n: int, seed: int) -> list[int]:
    """`n` seeded random windows from distinct documents (the unconditional random fragments)."""
    rng = np.random.default_rng([seed, 7919])
    return _distinct_documents(rng.permutation(len(window_doc)), window_doc, n)


def _gather(model: Any, dictionaries: Sequence[tuple[str, Dictionary]], tokens: np.ndarray,
            pairs: list[tuple[np.ndarray, np.ndarray]], shared: list[int], w: int, n_win: int,
            config: ExplainConfig, device: torch.device,
            source: ActivationSource | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pass 2: token activations of the chosen (window, feature) pairs `[n_pairs, W]` and of the
    shared random windows for every feature `[n_shared, W, d_sae]`, per dictionary."""
    hooks = [d.metadata.hook_name for _, d in dictionaries]
    out_pairs = [np.zeros((len(win), w), dtype=np.float32) for win, _ in pairs]
    out_shared = [np.zeros((len(shared), w, d.d_sae), dtype=np.float32) for _, d in dictionaries]
    shared_arr = np.asarray(shared, dtype=np.int64)
    needed = set((np.asarray(shared_arr) // n_win).tolist())
    for win, _ in pairs:
        needed.update((win // n_win).tolist())
    rows = np.asarray(sorted(needed), dtype=np.int64)
    offsets = np.arange(w)
    for batch in tqdm(_batches(rows, config.contexts_per_batch), desc="fragments: read", disable=not config.progress):
        local = np.full(tokens.shape[0], -1, dtype=np.int64)
        local[batch] = np.arange(len(batch))
        raw = _activations(model, tokens, batch, hooks, source)
        for k, acts in enumerate(_encode(dictionaries, raw, device)):
            win, feat = pairs[k]
            sel = np.nonzero(local[win // n_win] >= 0)[0]
            if len(sel):
                ctx = torch.as_tensor(local[win[sel] // n_win], device=acts.device)
                pos = torch.as_tensor(1 + (win[sel] % n_win)[:, None] * w + offsets[None, :], device=acts.device)
                f = torch.as_tensor(feat[sel], device=acts.device)
                out_pairs[k][sel] = acts[ctx[:, None], pos, f[:, None]].float().cpu().numpy()
            ssel = np.nonzero(local[shared_arr // n_win] >= 0)[0] if len(shared_arr) else np.zeros(0, dtype=np.int64)
            for s in ssel.tolist():
                c, j = int(local[shared_arr[s] // n_win]), int(shared_arr[s] % n_win)
                out_shared[k][s] = acts[c, 1 + j * w : 1 + (j + 1) * w, :].float().cpu().numpy()
    return out_pairs, out_shared


def collect_fragments(
    model: Any,
    dictionaries: Sequence[tuple[str, Dictionary]],
    tokens: np.ndarray,
    doc_ids: Sequence[str],
    config: ExplainConfig | None = None,
    activation_source: ActivationSource | None = None,
) -> list[DictionaryFragments]:
    """The fragments of every feature of `dictionaries` (id, dictionary of `model`) over contexts
    `tokens [n, n_ctx]` (BOS at position 0) of documents `doc_ids [n]`, in the order given.
    `activation_source(hooks, indices)` gives the hook tensors of contexts instead of the model (the
    build's activation cache)."""
    config = config or ExplainConfig()
    if not dictionaries:
        raise ConfigError("no dictionary to explain")
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim != 2 or tokens.shape[0] != len(doc_ids):
        raise InputError(f"tokens must be [n, n_ctx] with one doc id per row; got {tokens.shape} and "
                         f"{len(doc_ids)} doc ids", field="tokens")
    device = torch.device(config.device)
    for _, d in dictionaries:
        d.to(device).eval()
    w, n_win = window_layout(tokens.shape[1], config.fragment_tokens)
    _, doc_index = np.unique(np.asarray(list(doc_ids), dtype=object), return_inverse=True)
    window_doc = np.repeat(doc_index.reshape(-1), n_win)
    maxima = _window_maxima(model, dictionaries, tokens, w, n_win, config, device, activation_source)
    choices = [_choose(m, window_doc, config) for m in maxima]
    shared = random_windows(window_doc, config.n_random, config.seed)
    pairs = []
    for choice in choices:
        win = [x for f in range(len(choice.top)) for x in choice.top[f] + choice.activating[f]]
        feat = [f for f in range(len(choice.top)) for _ in choice.top[f] + choice.activating[f]]
        pairs.append((np.asarray(win, dtype=np.int64), np.asarray(feat, dtype=np.int64)))
    acts, shared_acts = _gather(model, dictionaries, tokens, pairs, shared, w, n_win, config, device,
                                activation_source)
    d_vocab = int(model.cfg.d_vocab)
    token_counts = np.bincount(tokens[:, 1:].reshape(-1), minlength=d_vocab)[:d_vocab]
    docs = [str(d) for d in doc_ids]

    def window_tokens(win: int) -> np.ndarray:
        c, j = divmod(win, n_win)
        return tokens[c, 1 + j * w : 1 + (j + 1) * w]

    out = []
    for (did, d), choice, a, sa in zip(dictionaries, choices, acts, shared_acts):
        features, row = [], 0
        for f in range(d.d_sae):
            ff = FeatureFragments(index=f)
            for rank, win in enumerate(choice.top[f]):
                frag = Fragment(docs[win // n_win], window_tokens(win), a[row])
                (ff.explanation if rank % 2 == 0 else ff.scoring).append(frag)
                row += 1
            for win in choice.activating[f]:
                ff.random_activating.append(Fragment(docs[win // n_win], window_tokens(win), a[row]))
                row += 1
            ff.random = [Fragment(docs[win // n_win], window_tokens(win), sa[s, :, f]) for s, win in enumerate(shared)]
            features.append(ff)
        out.append(DictionaryFragments(did, w, features, token_counts))
    return out
