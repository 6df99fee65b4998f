"""The streaming precompute: one pass over the contexts for every feature of every dictionary.

Owns the loop that runs the model once per batch of contexts (capturing every hook point the
dictionaries need in that single forward), encodes with each dictionary and feeds a `FeatureStream`
per dictionary; periodic checkpoints of the streaming state to `work_dir` (safetensors plus JSON
through `dictionaries.state_files`, never pickle) so an interrupted run resumes from its batch cursor; and the final "gather" pass that recomputes per-token activations only
for the contexts chosen as examples (so the streaming state stays O(features x k)). Returns arrays,
never touches SQL; `saescope.pipeline.publish` turns the result into records.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saescope.activations.hooks import flatten_hook_activation, validate_hook_name
from saescope.activations.stream import multi_hook_activations
from saescope.analysis.config import PrecomputeConfig
from saescope.analysis.distributed import (
    clear_rank_states,
    merge_rank_streams,
    owned_batches,
    rank_fingerprint,
    rank_state_file,
)
from saescope.analysis.streaming import EMPTY, FeatureStream, FeatureStreamResult
from saescope.devices import compute_precision, resolve_device
from saescope.dictionaries.base import Dictionary
from saescope.dictionaries.state_files import StateFileError, load_state_file, save_state_file
from saescope.errors import ConfigError, InputError
from saescope.ranks import current_ranks

STATE_FILE = "precompute_state.safetensors"
LEGACY_STATE_FILE = "precompute_state.pt"
STATE_KIND = "precompute-state"
STATE_VERSION = 2


@contextmanager
def _threads(n: int, device: torch.device):
    """Run the block with `n` torch CPU threads (no-op for n == 0 or a non-CPU device)."""
    if n <= 0 or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ExampleTable:
    """Examples of one dictionary, column-wise (m rows).

    `group_code`: 0 = top, 1..n_intervals = quantile_{code-1} (quantile_0 is the HIGHEST interval),
    n_intervals+1 = random. `activations [m, n_ctx]` float32 with position 0 = 0 when BOS is skipped.
    """

    feature: np.ndarray  # [m] int64
    group_code: np.ndarray  # [m] int64
    rank: np.ndarray  # [m] int64
    context: np.ndarray  # [m] int64, index into the PackedContexts
    max_activation: np.ndarray  # [m] float32 (recomputed from `activations`)
    activations: np.ndarray  # [m, n_ctx] float32
    group_names: list[str]  # code -> group name
    group_labels: np.ndarray  # [d_sae, n_codes] object array of label strings ("" = generic)


@dataclass
class DictionaryAnalysis:
    """What the streaming precompute found for one dictionary."""

    id: str
    dictionary: Dictionary
    stats: FeatureStreamResult
    examples: ExampleTable


@dataclass
class PrecomputeTimings:
    """Seconds spent per phase (sums over batches)."""

    forward: float = 0.0
    encode: float = 0.0
    bookkeeping: float = 0.0
    checkpoint: float = 0.0
    gather_forward: float = 0.0
    gather_encode: float = 0.0
    gather_bookkeeping: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        out.update(self.extra)
        return out


@dataclass
class PrecomputeResult:
    analyses: list[DictionaryAnalysis]
    n_contexts: int
    n_tokens: int  # counted tokens (BOS excluded)
    token_counts: np.ndarray  # [d_vocab] corpus frequency of each token (BOS position excluded)
    timings: PrecomputeTimings
    resumed_from_batch: int = 0


# ---------------------------------------------------------------------------------------------
# forward


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _encode_all(
    dictionaries: Sequence[tuple[str, Dictionary]], raw: dict[str, Tensor], device: torch.device, zero_first: bool
) -> list[Tensor]:
    out = []
    with torch.no_grad():
        for _, d in dictionaries:
            x = flatten_hook_activation(raw[d.metadata.hook_name], d.metadata.hook_head_index)
            f = d.encode(x.to(device, torch.float32)).float()  # [b, pos, d_sae]; fp32 under autocast too
            if zero_first:
                f[:, 0, :] = 0.0
            out.append(f)
    return out


def encode_features(dictionary: Dictionary, x: Tensor, features: Tensor) -> Tensor:
    """Activations `[..., len(features)]` of only `features` for inputs `x [..., d_in]`.

    Standard (ReLU) SAEs have an elementwise encoder, so only the needed encoder columns are
    multiplied (`relu((x - b_dec) @ W_enc[:, F] + b_enc[F])`); any other dictionary is encoded in
    full and indexed (TopK-style encoders need every feature to decide which fire).
    """
    from saescope.dictionaries.architectures.standard import StandardSAE

    with torch.no_grad():
        cls = type(dictionary)
        if cls.encode is StandardSAE.encode and cls.pre_activations is StandardSAE.pre_activations:
            x_in = x - dictionary.b_dec if getattr(dictionary, "apply_b_dec_to_input", True) else x
            pre = x_in @ dictionary.W_enc[:, features] + dictionary.b_enc[features]
            return torch.relu(pre)
        return dictionary.encode(x)[..., features]


# ---------------------------------------------------------------------------------------------
# helpers


def context_groups(tokens: np.ndarray, doc_ids: Sequence[str], one_window_per_document: bool) -> np.ndarray:
    """Dedupe group per context `[n]`: the document index (one window per document) or the index of
    the first identical token window (duplicates removed)."""
    if one_window_per_document:
        _, inverse = np.unique(np.asarray(list(doc_ids), dtype=object), return_inverse=True)
        return inverse.astype(np.int64)
    _, inverse = np.unique(np.ascontiguousarray(tokens), axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def context_keys(n: int, seed: int) -> np.ndarray:
    """Uniform sampling key per context `[n]` (fixed by the seed)."""
    return np.random.default_rng(seed).random(n)


def _fingerprint(
    config: PrecomputeConfig, dictionaries: Sequence[tuple[str, Dictionary]], tokens: np.ndarray
) -> str:
    h = hashlib.sha256()
    cfg = config.model_dump(exclude={"progress", "checkpoint_every", "device", "bookkeeping_threads", "umap", "umap_n_neighbors",
                                     "umap_min_dist", "label_tokens", "top_tokens", "neighbours_k",
                                     "logit_k", "logit_histogram_bins", "activation_decimals"})
    h.update(json.dumps(cfg, sort_keys=True).encode())
    for did, d in dictionaries:
        h.update(f"{did}|{d.metadata.hook_name}|{d.metadata.hook_head_index}|{d.d_in}|{d.d_sae}".encode())
        h.update(d.W_dec.detach().cpu().float().numpy().tobytes()[:1 << 20])
    h.update(str(tokens.shape).encode())
    h.update(np.ascontiguousarray(tokens).tobytes())
    return h.hexdigest()


def clear_state(work_dir: Path | str) -> None:
    """Remove the precompute checkpoint in `work_dir` (if any)."""
    path = Path(work_dir) / STATE_FILE
    if path.is_file():
        path.unlink()
    clear_rank_states(Path(work_dir))


def _save_state(path: Path, state: dict[str, Any]) -> None:
    save_state_file(path, state, STATE_KIND, STATE_VERSION)


def _start_over(path: Path) -> str:
    return f"delete {path} to start precompute over"


def _load_state(path: Path, fingerprint: str, n_streams: int) -> dict[str, Any] | None:
    """The saved streaming state at `path` when it was written for `fingerprint`, else None.

    ConfigError, nothing deleted, for a legacy pickle next to it (never loaded: it could run code)
    and for a file that cannot be read or does not hold one state per dictionary."""
    legacy = path.parent / LEGACY_STATE_FILE
    if legacy.exists():
        raise ConfigError(
            f"{legacy} is a precompute resume state in an older format (a pickle), which is never loaded "
            f"because it could run code; {_start_over(legacy)}"
        )
    if not path.is_file():
        return None
    try:
        saved = load_state_file(path, STATE_KIND, STATE_VERSION)
    except StateFileError as exc:
        raise ConfigError(f"the precompute resume state {path} cannot be read ({exc}); {_start_over(path)}") from None
    if saved.get("fingerprint") != fingerprint:
        return None
    streams = saved.get("streams")
    if not isinstance(streams, list) or len(streams) != n_streams or not isinstance(saved.get("cursor"), int):
        raise ConfigError(f"{path} is not a precompute resume state for these dictionaries; {_start_over(path)}")
    return saved


# ---------------------------------------------------------------------------------------------
# main entry


def run_precompute(
    model: Any,
    dictionaries: Sequence[tuple[str, Dictionary]],
    tokens: np.ndarray | Tensor,
    doc_ids: Sequence[str],
    config: PrecomputeConfig | None = None,
    work_dir: Path | str | None = None,
    on_batch: Callable[[int], None] | None = None,
    keep_state: bool = False,
    activation_source: Callable[[Sequence[str], np.ndarray], dict[str, Tensor]] | None = None,
) -> PrecomputeResult | None:
    """Stream `tokens [n, n_ctx]` once through `model` and every dictionary; gather example activations.

    `dictionaries` are `(id, Dictionary)` pairs (hook point from `dictionary.metadata.hook_name`).
    With `work_dir`, the streaming state is saved every `config.checkpoint_every` batches and a later
    call with the same inputs resumes from the saved batch cursor; the state file is removed on success.
    `on_batch(i)` is called after batch i is folded in (tests use it to interrupt a run).
    With `keep_state`, the finished state stays in `work_dir` (the caller removes it with
    `clear_state(work_dir)` once the results are safely stored), so a failure after the stream does
    not cost another pass. `activation_source(hooks, indices)`, when given, returns the hook
    tensors of the contexts at `indices` instead of a forward pass (the build's activation cache).

    Over several ranks (torchrun, `--nproc`; `analysis.distributed`) each rank streams batches
    i = rank mod world size and checkpoints them in its own file; rank 0 merges the streams into
    exactly the one-process statistics, gathers the examples and returns the result; the other
    ranks return None.
    """
    config = config or PrecomputeConfig()
    if not dictionaries:
        raise ConfigError("precompute needs at least one dictionary")
    ids = [i for i, _ in dictionaries]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"dictionary ids must be unique; got {ids}")
    tok = tokens.cpu().numpy() if isinstance(tokens, Tensor) else np.asarray(tokens)
    if tok.ndim != 2 or tok.shape[0] == 0:
        raise InputError(f"contexts must be a non-empty [n, n_ctx] array; got {tok.shape}", field="tokens")
    tok = tok.astype(np.int64, copy=False)
    n, n_ctx = tok.shape
    if len(doc_ids) != n:
        raise InputError(f"{len(doc_ids)} doc_ids for {n} contexts", field="doc_ids")
    for did, d in dictionaries:
        validate_hook_name(model, d.metadata.hook_name, d.metadata.hook_head_index)
    device = resolve_device(config.device)
    compute_precision(device, config.precision)  # an unsupported precision is refused before any work
    run_device = _model_device(model)
    for _, d in dictionaries:
        d.to(device)
    zero_first = config.zero_first_position
    groups = torch.from_numpy(context_groups(tok, doc_ids, config.one_window_per_document))
    keys_u = torch.from_numpy(context_keys(n, config.seed))
    streams = [
        FeatureStream(
            d.d_sae,
            top_k=config.top_k,
            n_intervals=config.n_intervals,
            examples_per_interval=config.examples_per_interval,
            n_random=config.n_random,
            histogram_bins=config.histogram_bins,
            seed=config.seed,
            device=device,
        )
        for _, d in dictionaries
    ]
    bs = config.contexts_per_batch
    n_batches = (n + bs - 1) // bs
    timings = PrecomputeTimings()
    start_batch = 0
    state_path = Path(work_dir) / STATE_FILE if work_dir is not None else None
    fp = _fingerprint(config, dictionaries, tok) if state_path is not None else ""
    saved = _load_state(state_path, fp, len(streams)) if state_path is not None else None
    # over several ranks each streams its share of the batches (resuming its own checkpoint) and rank
    # 0 merges them, unless a finished merged state is already there
    ranks = current_ranks()
    merge = ranks.distributed and (saved is None or int(saved["cursor"]) < n_batches)
    if merge:
        saved = None
        if state_path is not None:
            state_path, fp = rank_state_file(state_path.parent, ranks), rank_fingerprint(fp, ranks)
            saved = _load_state(state_path, fp, len(streams))
    if saved is not None:
        start_batch = int(saved["cursor"])
        for s, st in zip(streams, saved["streams"]):
            s.load_state_dict(st)
    hook_names = list(dict.fromkeys(d.metadata.hook_name for _, d in dictionaries))
    n_counted = n_ctx - 1 if zero_first else n_ctx
    mine = owned_batches(start_batch, n_batches, ranks) if merge else list(range(start_batch, n_batches))
    bar = tqdm(mine, desc="precompute", unit="batch", disable=not (config.progress and ranks.is_main),
               initial=0 if merge else start_batch, total=len(mine) if merge else n_batches)
    for done, bi in enumerate(bar, start=1):
        lo, hi = bi * bs, min(n, (bi + 1) * bs)
        t0 = time.perf_counter()
        batch = torch.from_numpy(tok[lo:hi]).to(run_device)
        if activation_source is not None:
            raw = activation_source(hook_names, np.arange(lo, hi))
        else:
            with compute_precision(run_device, config.precision):
                raw = multi_hook_activations(model, batch, hook_names)
        t1 = time.perf_counter()
        with compute_precision(device, config.precision):
            feats = _encode_all(dictionaries, raw, device, zero_first)
        t2 = time.perf_counter()
        ctx_ids = torch.arange(lo, hi)
        with _threads(config.bookkeeping_threads, device):
            for s, f in zip(streams, feats):
                s.update(f, ctx_ids, groups[lo:hi], keys_u[lo:hi], n_tokens=(hi - lo) * n_counted)
        t3 = time.perf_counter()
        timings.forward += t1 - t0
        timings.encode += t2 - t1
        timings.bookkeeping += t3 - t2
        del raw, feats
        if on_batch is not None:
            on_batch(bi)
        if state_path is not None and config.checkpoint_every and done % config.checkpoint_every == 0 and bi + 1 < n_batches:
            t4 = time.perf_counter()
            _save_state(state_path, {"fingerprint": fp, "cursor": bi + 1, "streams": [s.state_dict() for s in streams]})
            timings.checkpoint += time.perf_counter() - t4
    bar.close()
    if state_path is not None and keep_state and start_batch < n_batches:
        _save_state(state_path, {"fingerprint": fp, "cursor": n_batches, "streams": [s.state_dict() for s in streams]})
    if merge:
        merged = merge_rank_streams(streams, ranks)
        if merged is None:
            return None
        if state_path is not None and keep_state:
            state_path, fp = state_path.parent / STATE_FILE, _fingerprint(config, dictionaries, tok)
            _save_state(state_path, {"fingerprint": fp, "cursor": n_batches, "streams": [s.state_dict() for s in merged]})
            clear_rank_states(state_path.parent)
        streams = merged
    elif not ranks.is_main:
        return None
    with _threads(config.bookkeeping_threads, device):
        results = [s.result() for s in streams]
    examples = _gather_examples(model, dictionaries, tok, results, config, device, timings, activation_source)
    if zero_first:
        counted = tok[:, 1:]
    else:
        counted = tok
    d_vocab = int(model.cfg.d_vocab)
    token_counts = np.bincount(counted.reshape(-1), minlength=d_vocab)[:d_vocab].astype(np.int64)
    if state_path is not None and not keep_state:
        clear_state(state_path.parent)
    analyses = [
        DictionaryAnalysis(id=did, dictionary=d, stats=r, examples=e)
        for (did, d), r, e in zip(dictionaries, results, examples)
    ]
    return PrecomputeResult(
        analyses=analyses,
        n_contexts=n,
        n_tokens=n * n_counted,
        token_counts=token_counts,
        timings=timings,
        resumed_from_batch=start_batch,
    )


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _selected_pairs(r: FeatureStreamResult, n_intervals: int) -> tuple[np.ndarray, ...]:
    """(feature, group_code, rank, context) of every chosen example of one dictionary."""
    feats, codes, ranks, ctxs = [], [], [], []

    def add(ctx: Tensor, code: Tensor | int) -> None:  # ctx [d, n]
        d, m = ctx.shape
        f = torch.arange(d)[:, None].expand(d, m)
        rk = torch.arange(m)[None, :].expand(d, m)
        keep = ctx >= 0
        feats.append(f[keep])
        ranks.append(rk[keep])
        ctxs.append(ctx[keep])
        c = code if isinstance(code, Tensor) else torch.full((d, m), code)
        codes.append(c.expand(d, m)[keep])

    add(r.top.ctx, 0)
    ictx = r.intervals.ctx  # [d, n_int, r], interval 0 lowest
    if ictx.shape[2] > 0:
        for i in range(n_intervals):
            add(ictx[:, i, :], 1 + (n_intervals - 1 - i))  # quantile_0 = highest interval
    if r.random.ctx.shape[1] > 0:
        add(r.random.ctx, n_intervals + 1)
    return tuple(torch.cat(x).numpy().astype(np.int64) for x in (feats, codes, ranks, ctxs))


def _group_labels(r: FeatureStreamResult, n_intervals: int) -> tuple[list[str], np.ndarray]:
    names = ["top"] + [f"quantile_{q}" for q in range(n_intervals)] + ["random"]
    d = r.max_activation.shape[0]
    labels = np.empty((d, len(names)), dtype=object)
    labels[:, 0] = "Top activations"
    labels[:, -1] = "Random activating contexts"
    edges = r.interval_edges.numpy()
    share = r.interval_share.numpy()
    for i in range(n_intervals):
        code = 1 + (n_intervals - 1 - i)
        lo, hi, sh = edges[:, i], edges[:, i + 1], share[:, i] * 100
        labels[:, code] = [f"Interval {_fmt(a)}\u2013{_fmt(b)} (contains {c:.3g}%)" for a, b, c in zip(lo, hi, sh)]
    return names, labels


def _gather_examples(
    model: Any,
    dictionaries: Sequence[tuple[str, Dictionary]],
    tok: np.ndarray,
    results: Sequence[FeatureStreamResult],
    config: PrecomputeConfig,
    device: torch.device,
    timings: PrecomputeTimings,
    activation_source: Callable[[Sequence[str], np.ndarray], dict[str, Tensor]] | None = None,
) -> list[ExampleTable]:
    """Recompute per-token activations for the chosen (feature, context) pairs, one forward per batch
    of the union of chosen contexts, all dictionaries together."""
    n_int = config.n_intervals
    pairs = [_selected_pairs(r, n_int) for r in results]
    union = np.unique(np.concatenate([p[3] for p in pairs])) if pairs else np.zeros(0, np.int64)
    n_ctx = tok.shape[1]
    acts_out = [np.zeros((len(p[0]), n_ctx), dtype=np.float32) for p in pairs]
    # per dictionary: pairs sorted by position of their context in `union`
    orders, positions = [], []
    for p in pairs:
        pos = np.searchsorted(union, p[3])
        order = np.argsort(pos, kind="stable")
        orders.append(order)
        positions.append(pos[order])
    hook_names = list(dict.fromkeys(d.metadata.hook_name for _, d in dictionaries))
    run_device = _model_device(model)
    bs = config.contexts_per_batch
    for lo in tqdm(range(0, len(union), bs), desc="examples", unit="batch", disable=not config.progress):
        hi = min(len(union), lo + bs)
        t0 = time.perf_counter()
        if activation_source is not None:
            raw = activation_source(hook_names, union[lo:hi])
        else:
            batch = torch.from_numpy(tok[union[lo:hi]]).to(run_device)
            with compute_precision(run_device, config.precision):
                raw = multi_hook_activations(model, batch, hook_names)
        t1 = time.perf_counter()
        t_book = 0.0
        for k, (_, d) in enumerate(dictionaries):
            a, b = np.searchsorted(positions[k], [lo, hi])
            if a == b:
                continue
            sel = orders[k][a:b]
            local = torch.from_numpy(positions[k][a:b] - lo).to(device)
            fi = pairs[k][0][sel]
            x = flatten_hook_activation(raw[d.metadata.hook_name], d.metadata.hook_head_index).to(device, torch.float32)
            need, col = np.unique(fi, return_inverse=True)
            with compute_precision(device, config.precision):
                f = encode_features(d, x, torch.from_numpy(need).to(device)).float()  # [b, pos, n_need]
            if config.zero_first_position:
                f[:, 0, :] = 0.0
            tb = time.perf_counter()
            acts_out[k][sel] = f[local, :, torch.from_numpy(col.reshape(-1)).to(device)].float().cpu().numpy()
            t_book += time.perf_counter() - tb
        t2 = time.perf_counter()
        timings.gather_forward += t1 - t0
        timings.gather_encode += t2 - t1 - t_book
        timings.gather_bookkeeping += t_book
    tables = []
    for (feat, code, rank, ctx), acts, r in zip(pairs, acts_out, results):
        names, labels = _group_labels(r, n_int)
        tables.append(
            ExampleTable(
                feature=feat,
                group_code=code,
                rank=rank,
                context=ctx,
                max_activation=acts.max(axis=1) if len(acts) else np.zeros(0, np.float32),
                activations=acts,
                group_names=names,
                group_labels=labels,
            )
        )
    return tables
