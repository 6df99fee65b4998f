"""The live engine: one loaded model plus its dictionaries on one device, for pasted text.

Owns model work done at request time: tokenising text (one BOS prepended by the corpus contexts' rule),
feature activations for several dictionaries in ONE forward (hooks on every needed hook point, the
forward ended right after the last hook needed), steering (add / clamp a feature at its hook point while
generating, default and steered continuations side by side, seeded sampling) and ablation (remove a
feature and measure next-token log-probability changes). It never touches the store or the file
system beyond loading the model and dictionary weights it is given, and knows nothing about HTTP.

Conventions shared with the precompute: position 0 is BOS; feature activations at BOS are reported
as 0 and interventions never modify position 0. Every public method takes `self.lock`, so one Engine
may be shared by threads; model work runs under `torch.inference_mode()` (no autograd bookkeeping per op).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from saescope.activations.hooks import (
    flatten_hook_activation,
    hook_layer,
    unflatten_into_hook,
)
from saescope.corpus.encoding import bos_token_id, encode_text
from saescope.devices import resolve_device
from saescope.dictionaries.base import Dictionary
from saescope.engine.top_features import RowSummaries, summarise_rows
from saescope.errors import ConfigError, InputError, NotFoundError

InterventionMode = Literal["add", "clamp", "ablate"]
R = TypeVar("R")


@dataclass
class LoadedDictionary:
    """A dictionary on the engine's device and the hook point it reads."""

    id: str
    dictionary: Dictionary
    hook_name: str
    hook_head_index: int | None = None

    @property
    def d_sae(self) -> int:
        return int(self.dictionary.d_sae)


@dataclass
class FeatureIntervention:
    """Change feature `index` of dictionary `dictionary_id` at every position after BOS.

    add: x + strength * d; clamp: x + (strength - f(x)) * d; ablate: x - f(x) * d
    (d = the feature's decoder row W_dec[index], f(x) its activation).
    """

    dictionary_id: str
    index: int
    mode: InterventionMode = "add"
    strength: float = 0.0


@dataclass
class TopFeatures:
    """Per token, the top firing features of one dictionary (BOS row empty)."""

    indices: list[list[int]]
    values: list[list[float]]
    totals: list[float]  # sum of feature activations per token
    l0: list[int]  # number of firing features per token

    @classmethod
    def from_summaries(cls, summaries: RowSummaries) -> TopFeatures:
        """The firing entries (activation > 0) among the top values of [pos, k] summaries, as lists."""
        firing = summaries.values > 0  # [pos, k]
        shown = firing.sum(axis=-1)
        all_indices, all_values = summaries.indices.tolist(), summaries.values.tolist()
        if np.array_equal(firing, np.arange(firing.shape[-1]) < shown[:, None]):
            # the usual case: largest first, so each row's firing entries lead it
            counts = shown.tolist()
            indices = [ix[:m] for ix, m in zip(all_indices, counts)]
            values = [vs[:m] for vs, m in zip(all_values, counts)]
        else:  # a NaN, which topk ranks first, sits among the top values
            keep = firing.tolist()
            indices = [[i for i, f in zip(ix, fs) if f] for ix, fs in zip(all_indices, keep)]
            values = [[v for v, f in zip(vs, fs) if f] for vs, fs in zip(all_values, keep)]
        return cls(indices, values, summaries.totals.tolist(), summaries.l0.tolist())


@dataclass
class GeneratedSequence:
    """Generated token ids and their log-probabilities (natural log, temperature 1)."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


@dataclass
class AblationResult:
    """Effect of removing one feature on next-token predictions.

    `delta_logprob[i]` = ablated - clean log p(token_i | tokens before i), 0 at i = 0 (BOS).
    `mean_delta` [d_vocab]: ablated - clean next-token log-probabilities averaged over the positions
    where the feature fires (zeros when it never fires).
    """

    activations: list[float]
    delta_logprob: list[float]
    mean_delta: Tensor
    firing_positions: list[int]


class Engine:
    """A transformer_lens model and dictionaries loaded on one device.

    `vocab` (token id -> display string, from the store's models row) is used for token display so
    live tokens read exactly like stored examples; without it `model.to_str_tokens` is used.
    """

    def __init__(self, model: Any, vocab: Sequence[str] | None = None, model_id: str = "") -> None:
        self.model = model.eval()
        self.model_id = model_id
        self.device = next(model.parameters()).device
        self.vocab = list(vocab) if vocab is not None else None
        self.lock = threading.RLock()
        self._dictionaries: dict[str, LoadedDictionary] = {}
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ConfigError("the model has no tokenizer: load it with saescope.lm.loading.load_lm")
        self.tokenizer = tokenizer
        self.bos_id = int(bos_token_id(tokenizer))

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(
        cls,
        location: str | Path,
        device: str | None = "auto",
        vocab: Sequence[str] | None = None,
        model_id: str = "",
    ) -> Engine:
        """Load the model at `location` (checkpoint folder or hub name) on `device`."""
        from saescope.lm.loading import load_lm

        dev = resolve_device(device)
        model = load_lm(location, device=str(dev))
        return cls(model, vocab=vocab, model_id=model_id)

    @property
    def n_ctx(self) -> int:
        return int(self.model.cfg.n_ctx)

    @property
    def d_vocab(self) -> int:
        return int(self.model.cfg.d_vocab)

    def add_dictionary(self, dictionary_id: str, dictionary: Dictionary, hook_name: str | None = None) -> None:
        """Register a dictionary (moved to the engine's device, eval mode)."""
        hook = hook_name or dictionary.hook_name
        if hook not in self.model.hook_dict:
            raise ConfigError(f"dictionary {dictionary_id!r} reads hook {hook!r}, which the model lacks")
        dictionary = dictionary.to(self.device).eval()
        with self.lock:
            self._dictionaries[dictionary_id] = LoadedDictionary(
                dictionary_id, dictionary, hook, dictionary.metadata.hook_head_index
            )

    def load_dictionary(self, dictionary_id: str, folder: str | Path, hook_name: str | None = None) -> None:
        """Load a SAELens folder and register it under `dictionary_id`."""
        from saescope.dictionaries.saelens_format import load_dictionary

        self.add_dictionary(dictionary_id, load_dictionary(Path(folder)), hook_name)

    def has_dictionary(self, dictionary_id: str) -> bool:
        return dictionary_id in self._dictionaries

    def dictionary(self, dictionary_id: str) -> LoadedDictionary:
        try:
            return self._dictionaries[dictionary_id]
        except KeyError:
            raise NotFoundError(f"dictionary {dictionary_id!r} is not loaded in the engine") from None

    @property
    def dictionary_ids(self) -> list[str]:
        return list(self._dictionaries)

    # ------------------------------------------------------------------ tokens

    def tokenize(self, text: str, max_tokens: int | None = None, field: str = "text") -> list[int]:
        """Token ids of `text` with exactly one BOS first, by the rule corpus contexts are packed
        with (`saescope.corpus.encoding.encode_text`).

        Raises InputError (naming `field`) when the text is empty after tokenisation or when the
        result exceeds `max_tokens` or the model's context length.
        """
        if not text or not text.strip():
            raise InputError("text is empty: paste some text", field=field)
        ids = encode_text(self.tokenizer, text, prepend_bos=True)
        if len(ids) < 2:
            raise InputError("text produced no tokens: paste some text", field=field)
        limit = self.n_ctx if max_tokens is None else min(max_tokens, self.n_ctx)
        if len(ids) > limit:
            raise InputError(
                f"text is {len(ids)} tokens with BOS; at most {limit} are allowed here "
                f"(model context {self.n_ctx}): shorten the text",
                field=field,
            )
        return ids

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """Display strings of token ids (the store's vocabulary when given)."""
        if self.vocab is not None:
            n = len(self.vocab)
            return [self.vocab[t] if 0 <= t < n else f"<{t}>" for t in token_ids]
        return list(self.model.to_str_tokens(torch.tensor(token_ids), prepend_bos=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids))

    def _as_batch(self, token_ids: Sequence[int] | Sequence[Sequence[int]] | Tensor) -> Tensor:
        """`[batch, pos]` token ids as a long tensor on the engine's device; InputError when they are
        empty, longer than the context or outside the vocabulary. Lists of Python ints (what the API
        hands over) are checked in Python before one tensor is made; anything else as a tensor."""
        rows = _int_rows(token_ids)
        tokens = None
        if rows is None:
            tokens = torch.as_tensor(token_ids, dtype=torch.long)
            if tokens.ndim == 1:
                tokens = tokens.unsqueeze(0)
        width = len(rows[0]) if rows is not None else (tokens.shape[1] if tokens.ndim == 2 else 0)
        if width == 0:
            raise InputError("token ids must be a non-empty [pos] or [batch, pos] list", field="tokens")
        if width > self.n_ctx:
            raise InputError(f"{width} tokens exceed the model context {self.n_ctx}", field="tokens")
        if rows is not None:
            low, high = min(map(min, rows)), max(map(max, rows))
        else:
            low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.d_vocab:
            raise InputError(f"token ids must lie in [0, {self.d_vocab})", field="tokens")
        return torch.tensor(rows, dtype=torch.long, device=self.device) if rows is not None else tokens.to(self.device)

    # ------------------------------------------------------------------ activations

    def feature_activations(
        self, token_ids: Sequence[int] | Tensor, dictionary_ids: Sequence[str]
    ) -> dict[str, Tensor]:
        """Feature activations `[batch, pos, d_sae]` per dictionary, from ONE model forward.

        `token_ids` is `[pos]` or `[batch, pos]` including BOS at position 0; position 0 is zeroed.
        """
        return self._forward_features(token_ids, dictionary_ids, lambda f: f)

    def _forward_features(
        self, token_ids: Sequence[int] | Tensor, dictionary_ids: Sequence[str], reduce: Callable[[Tensor], R]
    ) -> dict[str, R]:
        """`reduce(f)` per dictionary, f its activations `[batch, pos, d_sae]` (position 0 zeroed),
        called inside the hook, while f is fresh in the CPU cache; ONE model forward for all, which
        ends as soon as the last hook needed has run (nothing after it is computed)."""
        with self.lock, torch.inference_mode():
            loaded = [self.dictionary(d) for d in dictionary_ids]
            tokens = self._as_batch(token_ids)
            out: dict[str, R] = {}
            by_hook: dict[str, list[LoadedDictionary]] = {}
            for entry in loaded:
                by_hook.setdefault(entry.hook_name, []).append(entry)
            remaining = set(by_hook)

            def make_hook(hook_name: str, entries: list[LoadedDictionary]) -> Any:
                def hook_fn(act: Tensor, hook: Any) -> None:
                    for entry in entries:
                        x = flatten_hook_activation(act, entry.hook_head_index)
                        weight = entry.dictionary.W_dec
                        f = entry.dictionary.encode(x.to(weight.dtype))  # [batch, pos, d_sae]
                        f[:, 0] = 0.0
                        out[entry.id] = reduce(f.float())
                    remaining.discard(hook_name)
                    if not remaining:
                        raise _ForwardDone

                return hook_fn

            hooks = [(name, make_hook(name, entries)) for name, entries in by_hook.items()]
            with temporary_hooks(self.model, hooks):
                try:
                    self.model(tokens, return_type=None)
                except _ForwardDone:
                    pass
            if remaining:  # pragma: no cover - every hook point of a loaded dictionary runs in a forward
                raise ConfigError(f"hook points {sorted(remaining)} did not run in the model's forward")
            return out

    def feature_activation(self, token_ids: Sequence[int], dictionary_id: str, index: int) -> list[float]:
        """One feature's activation per token (0 at BOS)."""
        entry = self.dictionary(dictionary_id)
        self._check_index(entry, index)
        acts = self.feature_activations(token_ids, [dictionary_id])[dictionary_id][0, :, index]
        return [float(a) for a in acts.cpu()]

    def top_features(
        self, token_ids: Sequence[int], dictionary_ids: Sequence[str], top_k: int
    ) -> dict[str, TopFeatures]:
        """Per dictionary and token, the `top_k` firing features (activation > 0), largest first."""
        return self.top_features_batch([token_ids], dictionary_ids, top_k)[0]

    def top_features_batch(
        self, sequences: Sequence[Sequence[int]], dictionary_ids: Sequence[str], top_k: int
    ) -> list[dict[str, TopFeatures]]:
        """`top_features` for several token sequences in ONE forward for all (micro-batching).

        Shorter sequences are padded on the right; attention is causal, so padding never changes
        the activations of real positions (up to float rounding of batched matmuls).
        """
        if not sequences:
            return []
        lengths = [len(s) for s in sequences]
        width = max(lengths)
        padded = [list(s) + [self.bos_id] * (width - len(s)) for s in sequences]
        summaries = self._forward_features(padded, dictionary_ids, lambda f: summarise_rows(f, top_k))
        return [
            {d: TopFeatures.from_summaries(summaries[d].sequence(b, n)) for d in dictionary_ids}
            for b, n in enumerate(lengths)
        ]

    # ------------------------------------------------------------------ interventions

    @staticmethod
    def _check_index(entry: LoadedDictionary, index: int) -> None:
        if not 0 <= int(index) < entry.d_sae:
            raise NotFoundError(
                f"feature {index} does not exist: dictionary {entry.id!r} has features 0..{entry.d_sae - 1}"
            )

    def _intervention_hooks(
        self, interventions: Sequence[FeatureIntervention], window: _Window | None = None
    ) -> list[tuple[str, Any]]:
        """Forward hooks applying `interventions` to every batch row at absolute positions 1.. (never BOS).

        `window.start` is the absolute position of the forward's first position: 0 for a whole
        sequence, the cache length for a KV-cached step (whose positions are all after BOS).
        """
        window = window or _Window()
        by_hook: dict[str, list[tuple[LoadedDictionary, FeatureIntervention]]] = {}
        for iv in interventions:
            entry = self.dictionary(iv.dictionary_id)
            self._check_index(entry, iv.index)
            by_hook.setdefault(entry.hook_name, []).append((entry, iv))

        def make_hook(items: list[tuple[LoadedDictionary, FeatureIntervention]]) -> Any:
            def hook_fn(act: Tensor, hook: Any) -> Tensor:
                first = 1 if window.start == 0 else 0  # index of the first position after BOS
                for entry, iv in items:
                    x = flatten_hook_activation(act, entry.hook_head_index)  # [batch, pos, d_in]
                    sub = x[:, first:]
                    direction = entry.dictionary.W_dec[iv.index].to(x.dtype)  # [d_in]
                    if iv.mode == "add":
                        coeff = torch.full(sub.shape[:-1], float(iv.strength), dtype=x.dtype, device=x.device)
                    else:
                        f = entry.dictionary.encode(sub.to(entry.dictionary.W_dec.dtype))[..., iv.index]
                        f = f.to(x.dtype)
                        coeff = (float(iv.strength) - f) if iv.mode == "clamp" else -f
                    new = x.clone()
                    new[:, first:] = sub + coeff.unsqueeze(-1) * direction
                    act = unflatten_into_hook(act, new, entry.hook_head_index)
                return act

            return hook_fn

        return [(name, make_hook(items)) for name, items in by_hook.items()]

    def generate(
        self,
        prompt_ids: Sequence[int],
        n_tokens: int,
        temperature: float,
        seed: int,
        interventions: Sequence[FeatureIntervention] = (),
        between_tokens: Callable[[], None] | None = None,
    ) -> tuple[GeneratedSequence, GeneratedSequence]:
        """Default and steered continuations of `prompt_ids`.

        Each continuation runs as its own batch-of-one forward pass, so a no-op intervention (add 0)
        gives bit-identical output (rows of one batched matmul may round differently). Each samples
        with its own `torch.Generator` seeded with `seed` (CPU), so a seed gives the same continuations
        every time; temperature 0 is greedy. Keys and values of past positions are cached while the
        sequence fits the model context; beyond it the model reads BOS plus the most recent n_ctx - 1
        tokens, recomputed each step. Log-probabilities are those of the unscaled (temperature 1)
        distribution. `between_tokens()` runs before every token but the first, with no
        intervention on the model: other work (or a time-out check) can use it there.
        """
        if n_tokens < 1:
            raise InputError("n_tokens must be at least 1", field="n_tokens")
        with self.lock, torch.inference_mode():
            window = _Window()
            steering = self._intervention_hooks(interventions, window)
            prompt = self._as_batch(prompt_ids)[:1]
            default = self._sample(prompt, n_tokens, temperature, seed, [], window, between_tokens)
            steered = self._sample(prompt, n_tokens, temperature, seed, steering, window, between_tokens)
            return default, steered

    def _sample(
        self,
        prompt: Tensor,
        n_tokens: int,
        temperature: float,
        seed: int,
        hooks: list[tuple[str, Any]],
        window: _Window,
        between_tokens: Callable[[], None] | None = None,
    ) -> GeneratedSequence:
        """Sample `n_tokens` after `prompt` [1, pos] with `hooks` active during each token's forward
        (KV-cached while it fits); `between_tokens()` runs between two tokens, hooks off."""
        from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCache

        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        output = GeneratedSequence()
        sequence = prompt
        cache = HookedTransformerKeyValueCache.init_cache(self.model.cfg, self.device, 1)
        cached = 0  # positions whose keys and values are in `cache`
        for step in range(n_tokens):
            if step and between_tokens is not None:
                between_tokens()
            with temporary_hooks(self.model, hooks):
                if sequence.shape[1] <= self.n_ctx:
                    window.start = cached
                    new = sequence[:, cached:]
                    logits = self.model(new, past_kv_cache=cache, attention_mask=torch.ones_like(new))
                    cached = sequence.shape[1]
                else:  # past the context: BOS + the most recent tokens, no cache
                    window.start = 0
                    recent = torch.cat([sequence[:, :1], sequence[:, -(self.n_ctx - 1) :]], dim=1)
                    logits = self.model(recent)
            last = logits[0, -1, :].float().cpu()  # [d_vocab]
            if temperature <= 0:
                token = int(torch.argmax(last))
            else:
                probs = torch.softmax(last / float(temperature), dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            output.token_ids.append(token)
            output.logprobs.append(float(torch.log_softmax(last, dim=-1)[token]))
            nxt = torch.tensor([[token]], dtype=torch.long, device=sequence.device)
            sequence = torch.cat([sequence, nxt], dim=1)
        return output

    def ablate(self, token_ids: Sequence[int], dictionary_id: str, index: int) -> AblationResult:
        """Remove feature `index` (x - f(x) * d at every position after BOS) and compare predictions.

        Clean and ablated runs are separate batch-of-one forwards, so positions before the feature
        first fires change by exactly 0.
        """
        entry = self.dictionary(dictionary_id)
        self._check_index(entry, index)
        with self.lock, torch.inference_mode():
            tokens = self._as_batch(token_ids)[:1]
            captured: dict[str, Tensor] = {}

            def grab(act: Tensor, hook: Any) -> None:
                x = flatten_hook_activation(act, entry.hook_head_index)[0]
                f = entry.dictionary.encode(x.to(entry.dictionary.W_dec.dtype))[:, index].float()
                f[0] = 0.0
                captured["f"] = f.cpu()

            with temporary_hooks(self.model, [(entry.hook_name, grab)]):
                clean = self.model(tokens)[0].float().cpu()  # [pos, d_vocab]
            removal = self._intervention_hooks([FeatureIntervention(dictionary_id, index, "ablate", 0.0)])
            with temporary_hooks(self.model, removal):
                ablated = self.model(tokens)[0].float().cpu()
            diff = torch.log_softmax(ablated, dim=-1) - torch.log_softmax(clean, dim=-1)  # next-token predictions
            ids = tokens[0].cpu()
            n = ids.shape[0]
            delta = [0.0] + [float(diff[i - 1, ids[i]]) for i in range(1, n)]
            f = captured["f"]
            firing = [int(i) for i in torch.nonzero(f > 0).flatten().tolist()]
            mean_delta = diff[firing].mean(dim=0) if firing else torch.zeros(diff.shape[-1])
            return AblationResult(
                activations=[float(a) for a in f], delta_logprob=delta, mean_delta=mean_delta,
                firing_positions=firing,
            )


def _int_rows(token_ids: Any) -> list[Sequence[int]] | None:
    """`token_ids` as equal-length rows of Python ints (a flat list becomes one row), or None when
    it is anything else (a tensor, NumPy ints, ragged rows): those take the tensor path."""
    if not isinstance(token_ids, list):
        return None
    rows = token_ids if token_ids and isinstance(token_ids[0], (list, tuple)) else [token_ids]
    width = len(rows[0])
    for row in rows:
        if len(row) != width or not all(type(t) is int for t in row):
            return None
    return rows


@contextmanager
def temporary_hooks(model: Any, hooks: Sequence[tuple[str, Any]]) -> Iterator[None]:
    """Forward hooks `(hook point name, fn(act, hook))` on `model` while the block runs; on exit it
    removes exactly these, touching no other hook point (`model.hooks()` walks every hook point of
    the model on exit, hundreds of them at GPT-2 size)."""
    added: list[tuple[Any, Any]] = []
    try:
        for name, fn in hooks:
            point = model.hook_dict[name]
            point.add_hook(fn, dir="fwd")
            added.append((point, point.fwd_hooks[-1]))
        yield
    finally:
        for point, handle in reversed(added):
            handle.hook.remove()
            point.fwd_hooks.remove(handle)


class _ForwardDone(Exception):
    """Raised by the last activation hook to end a forward whose remaining layers nobody reads."""


@dataclass
class _Window:
    """Absolute position of the first position of the forward pass being run (0 = starts at BOS)."""

    start: int = 0


def hook_layers(hook_names: Sequence[str]) -> list[int | None]:
    """Block index of each hook (None outside blocks); exposed for diagnostics and tests."""
    return [hook_layer(h) for h in hook_names]
