"""Precompute every feature record of several dictionaries and publish them atomically.

Owns `precompute_and_publish`, the one call the pipeline makes after training: it runs the streaming
precompute (`saescope.analysis.precompute`), the per-dictionary analyses (logit effects, neighbours,
cross-dictionary matches, UMAP, labels), builds the model/context/dictionary/feature/example rows and
hands them to `writer`, writing under status `building` and flipping every dictionary to `ready` in
one final transaction, then pre-renders the feature pages (`store.pages`) of the new dictionaries
and of the ready ones whose matches or map coordinates it changed. Also stores provenance (model,
hook point, corpus, token count, seeds, saescope version, sha256 of `sae_weights.safetensors`) and
detects stale dashboards (`stale_dictionaries`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import Engine, select
from tqdm.auto import tqdm

from saescope.activations.hooks import hook_layer, hook_suffix
from saescope.analysis.config import PrecomputeConfig
from saescope.analysis.geometry import best_matches, nearest_neighbours, umap_layout
from saescope.analysis.labels import top_token_labels, vocab_strings
from saescope.analysis.logit_effects import logit_effects
from saescope.analysis.precompute import DictionaryAnalysis, PrecomputeResult, clear_state, run_precompute
from saescope.dictionaries.base import Dictionary
from saescope.errors import ConfigError, InputError
from saescope.store.database import create_database, init_schema
from saescope.store.pages import fill_feature_pages
from saescope.store.schema import DictionaryRow, FeatureRow
from saescope.store.writer import (
    BUILDING_SUFFIX,
    building_id,
    delete_feature_pages,
    delete_orphan_contexts,
    dictionary_status,
    finalize_dictionaries,
    insert_contexts,
    json_float_arrays,
    upsert_model,
    write_dictionary,
)

WEIGHTS_FILE = "sae_weights.safetensors"


class ContextsLike(Protocol):
    """What `saescope.corpus.packing.PackedContexts` provides."""

    tokens: np.ndarray  # [n, n_ctx] int64
    doc_ids: list[str]  # [n]
    offsets: np.ndarray  # [n]


class ModelInfo(BaseModel):
    """The `models` row's identity (the config and vocabulary come from the model itself)."""

    id: str = Field(..., description="Model id, e.g. 'builtin-1l' or a transformer_lens name.")
    source: str = Field("builtin", description="builtin | local | pretrained.")
    location: str = Field("", description="Checkpoint folder relative to the atlas root, or hub name.")
    tokenizer: str = Field("", description="Tokenizer folder relative to the atlas root, or hub name.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="e.g. held-out loss.")


@dataclass
class DictionaryEntry:
    """One dictionary to publish."""

    id: str  # dictionary id in the store (unique in the atlas)
    dictionary: Dictionary
    weights_path: str = ""  # SAELens folder relative to the atlas root
    metrics: dict[str, Any] = field(default_factory=dict)  # DictionaryMetrics.model_dump() etc.
    provenance: dict[str, Any] = field(default_factory=dict)  # corpus, training seed, tokens, ...
    display_prefix: str | None = None  # default from the hook point, e.g. L0M
    pruned: Sequence[int] = ()  # feature indices flagged as pruned


@dataclass
class PublishReport:
    """What was published and how long each phase took (seconds)."""

    dictionary_ids: list[str]
    n_contexts: int
    n_tokens: int
    n_features: int
    n_examples: int
    timings: dict[str, float]
    resumed_from_batch: int = 0


def display_prefix(hook_name: str) -> str:
    """`L{layer}{R|A|M}` (OpenMOSS style) for a hook point, '' when it has no layer."""
    layer = hook_layer(hook_name)
    if layer is None:
        return ""
    s = hook_suffix(hook_name)
    kind = "M" if "mlp" in s else "A" if ("attn" in s) else "R"
    return f"L{layer}{kind}"


def file_sha256(path: Path) -> str | None:
    """sha256 hex digest of a file, None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def saescope_version() -> str:
    try:
        return importlib_metadata.version("saescope")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _weights_file(atlas_root: Path | None, weights_path: str) -> Path | None:
    if not weights_path:
        return None
    p = Path(weights_path)
    if not p.is_absolute() and atlas_root is not None:
        p = Path(atlas_root) / p
    return p / WEIGHTS_FILE if p.suffix != ".safetensors" else p


def _tl_config(model: Any) -> dict[str, Any]:
    cfg = model.cfg.to_dict() if hasattr(model.cfg, "to_dict") else dict(vars(model.cfg))
    out = {}
    for k, v in cfg.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v):
            out[k] = list(v)
        else:
            out[k] = str(v)
    return out


def _r(x: float, nd: int = 6) -> float:
    """`x` to `nd` significant digits (keeps tiny activation scales meaningful)."""
    return float(f"{float(x):.{nd}g}")


def precompute_and_publish(
    store_url: str,
    model: Any,
    model_info: ModelInfo,
    entries: Sequence[DictionaryEntry],
    contexts: ContextsLike,
    config: PrecomputeConfig | None = None,
    work_dir: Path | str | None = None,
    atlas_root: Path | str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> PublishReport:
    """Precompute every feature record of `entries` (dictionaries of `model`) over `contexts` and
    publish them to `store_url` (SQLite or PostgreSQL), all flipping to `ready` in one transaction.

    - `model`: a HookedTransformer (with `tokenizer` for readable labels); it runs on its own device,
      dictionaries are moved to `config.device`.
    - `contexts`: `PackedContexts` (tokens [n, n_ctx], doc_ids, offsets) with BOS at position 0.
    - `work_dir`: where the streaming state is checkpointed; re-running after an interruption resumes.
    - `atlas_root`: resolves `weights_path` to hash `sae_weights.safetensors` into the provenance.
    - `on_batch(i)`: called after each streamed batch (tests interrupt runs with it).
    Re-publishing an id that is already ready replaces it atomically (explanations are kept when the
    weights file hash is unchanged).
    """
    config = config or PrecomputeConfig()
    if not entries:
        raise ConfigError("nothing to publish: give at least one dictionary entry")
    tokens = np.asarray(contexts.tokens, dtype=np.int64)
    if tokens.ndim != 2:
        raise InputError(f"contexts.tokens must be [n, n_ctx]; got {tokens.shape}", field="contexts")
    doc_ids = [str(d) for d in contexts.doc_ids]
    offsets = np.asarray(contexts.offsets, dtype=np.int64)
    for e in entries:
        if BUILDING_SUFFIX in e.id or not e.id or len(e.id) > 128 - len(BUILDING_SUFFIX):
            raise InputError(f"dictionary id {e.id!r} must be 1-{128 - len(BUILDING_SUFFIX)} characters without "
                             f"{BUILDING_SUFFIX!r}", field="id")
    db = create_database(store_url)
    try:
        return _precompute_and_publish(db, model, model_info, entries, tokens, doc_ids, offsets, config,
                                       work_dir, atlas_root, on_batch)
    finally:
        db.dispose()


def _precompute_and_publish(
    db: Engine,
    model: Any,
    model_info: ModelInfo,
    entries: Sequence[DictionaryEntry],
    tokens: np.ndarray,
    doc_ids: list[str],
    offsets: np.ndarray,
    config: PrecomputeConfig,
    work_dir: Path | str | None,
    atlas_root: Path | str | None,
    on_batch: Callable[[int], None] | None,
) -> PublishReport:
    init_schema(db)
    t_start = time.perf_counter()
    pre = run_precompute(
        model,
        [(e.id, e.dictionary) for e in entries],
        tokens,
        doc_ids,
        config=config,
        work_dir=work_dir,
        on_batch=on_batch,
        keep_state=True,
    )
    timings = pre.timings.as_dict()
    t0 = time.perf_counter()
    vocab = vocab_strings(model)
    others = _existing_same_hook(db, model_info.id, entries, Path(atlas_root) if atlas_root else None)
    records = _analyse(model, entries, pre, tokens, vocab, config, others)
    timings["analysis"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_features, n_examples = _write(db, model, model_info, entries, pre, records, tokens, doc_ids, offsets,
                                    vocab, config, atlas_root, others)
    timings["store"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if config.feature_pages:  # the new dictionaries' pages and those of the refreshed others
        fill_feature_pages(db, progress=config.progress)
    timings["pages"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    if work_dir is not None:
        clear_state(work_dir)
    return PublishReport(
        dictionary_ids=[e.id for e in entries],
        n_contexts=pre.n_contexts,
        n_tokens=pre.n_tokens,
        n_features=n_features,
        n_examples=n_examples,
        timings=timings,
        resumed_from_batch=pre.resumed_from_batch,
    )


@dataclass
class _Other:
    """A ready dictionary already in the store at a hook point being published (not re-published
    now): it joins the UMAP plane and the cross-dictionary matches, and its rows get updated."""

    id: str
    hook_name: str
    w_dec: Any  # Tensor [d_sae, d_in]
    labels: list[str]
    matches: list[list[Any]]  # stored matches per feature
    umap: np.ndarray | None = None
    new_matches: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def _existing_same_hook(db: Engine, model_id: str, entries: Sequence[DictionaryEntry],
                        atlas_root: Path | None) -> list[_Other]:
    """Ready dictionaries of `model_id` at the entries' hook points whose weights can be loaded."""
    if atlas_root is None:
        return []
    from saescope.dictionaries.saelens_format import load_dictionary
    from saescope.errors import FormatError

    hooks = {e.dictionary.metadata.hook_name for e in entries}
    ids = {e.id for e in entries}
    with db.connect() as conn:
        rows = conn.execute(
            select(DictionaryRow.id, DictionaryRow.hook_name, DictionaryRow.weights_path).where(
                DictionaryRow.status == "ready", DictionaryRow.model_id == model_id,
                DictionaryRow.hook_name.in_(sorted(hooks)))
        ).all()
        out = []
        for did, hook, wpath in rows:
            if did in ids or not wpath:
                continue
            try:
                d = load_dictionary(Path(atlas_root) / wpath)
            except (FormatError, OSError):
                continue
            feats = conn.execute(
                select(FeatureRow.index, FeatureRow.label, FeatureRow.matches)
                .where(FeatureRow.dictionary_id == did).order_by(FeatureRow.index)
            ).all()
            if len(feats) != d.d_sae:
                continue
            out.append(_Other(did, hook, d.W_dec.detach(), [f.label for f in feats], [list(f.matches or []) for f in feats]))
    return out


@dataclass
class _Extra:
    """Per-dictionary analyses beyond the streaming statistics."""

    logits: Any
    neighbours: Any
    matches: list[tuple[str, np.ndarray, np.ndarray]]  # (other id, index [n], cosine [n])
    umap: np.ndarray | None  # [n, 2]
    labels: Any
    timings: dict[str, float] = field(default_factory=dict)


def _analyse(
    model: Any,
    entries: Sequence[DictionaryEntry],
    pre: PrecomputeResult,
    tokens: np.ndarray,
    vocab: list[str],
    config: PrecomputeConfig,
    others: Sequence[_Other] = (),
) -> list[_Extra]:
    out: list[_Extra] = []
    by_hook: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_hook.setdefault(e.dictionary.metadata.hook_name, []).append(i)
    umaps: dict[int, np.ndarray] = {}
    if config.umap:
        for hook, idxs in tqdm(by_hook.items(), desc="umap", disable=not config.progress):
            olds = [o for o in others if o.hook_name == hook]
            coords = umap_layout([entries[i].dictionary.W_dec for i in idxs] + [o.w_dec for o in olds],
                                 seed=config.seed, n_neighbors=config.umap_n_neighbors, min_dist=config.umap_min_dist)
            for i, c in zip(idxs, coords):
                umaps[i] = c
            for o, c in zip(olds, coords[len(idxs):]):
                o.umap = c
    for i, (e, a) in enumerate(zip(entries, pre.analyses)):
        d = e.dictionary
        md = d.metadata
        logits = logit_effects(model, md.hook_name, d.W_dec, k=config.logit_k, bins=config.logit_histogram_bins,
                               hook_head_index=md.hook_head_index)
        neigh = nearest_neighbours(d.W_dec, k=config.neighbours_k) if config.neighbours_k > 0 else None
        matches = []
        for j in by_hook[md.hook_name]:
            if j != i:
                idx, cos = best_matches(d.W_dec, entries[j].dictionary.W_dec)
                matches.append((entries[j].id, idx, cos))
        for o in others:
            if o.hook_name == md.hook_name:
                idx, cos = best_matches(d.W_dec, o.w_dec)
                matches.append((o.id, idx, cos))
                o.new_matches[e.id] = best_matches(o.w_dec, d.W_dec)
        ex = a.examples
        top = ex.group_code == 0
        labels = top_token_labels(
            d.d_sae,
            ex.feature[top],
            ex.activations[top],
            tokens[ex.context[top]],
            pre.token_counts,
            vocab,
            n_label=config.label_tokens,
            n_top=config.top_tokens,
        )
        out.append(_Extra(logits, neigh, matches, umaps.get(i), labels))
    return out


def _effects(ids: np.ndarray, vals: np.ndarray, vocab: list[str]) -> list[dict[str, Any]]:
    return [{"token": vocab[t] if t < len(vocab) else str(t), "token_id": int(t), "value": _r(v, 5)}
            for t, v in zip(ids.tolist(), vals.tolist())]


def _feature_rows(
    write_id: str, entry: DictionaryEntry, a: DictionaryAnalysis, x: _Extra, vocab: list[str],
    labels_by_dict: dict[str, list[str]],
) -> list[dict[str, Any]]:
    s = a.stats
    d = entry.dictionary
    n = d.d_sae
    dec_norm = d.W_dec.detach().float().norm(dim=1).cpu().numpy()
    pruned = set(int(p) for p in entry.pruned)
    fire = s.fire_count.numpy()
    density = s.density.numpy()
    amax = s.max_activation.numpy()
    mean = s.mean_activation.numpy()
    hedges, hcounts = s.hist_edges.numpy(), s.hist_counts.numpy()
    qedges = s.interval_edges.numpy()
    own_labels = x.labels.label
    rows = []
    for f in range(n):
        alive = fire[f] > 0
        row: dict[str, Any] = {
            "dictionary_id": write_id,
            "index": f,
            "density": float(density[f]),
            "max_activation": _r(amax[f]),
            "mean_activation": _r(mean[f]),
            "decoder_norm": _r(dec_norm[f]),
            "dead": not alive,
            "pruned": f in pruned,
            "label": own_labels[f],
            "top_tokens": x.labels.top_tokens[f],
            "score": None,
            "histogram": {"edges": [_r(v, 7) for v in hedges[f].tolist()], "counts": hcounts[f].tolist()}
            if alive else {"edges": [], "counts": []},
            "quantile_edges": [_r(v, 7) for v in qedges[f].tolist()] if alive else [],
            "umap_x": float(x.umap[f, 0]) if x.umap is not None else None,
            "umap_y": float(x.umap[f, 1]) if x.umap is not None else None,
        }
        if x.logits is not None:
            L = x.logits
            row["logits_top"] = _effects(L.top_ids[f], L.top_values[f], vocab)
            row["logits_bottom"] = _effects(L.bottom_ids[f], L.bottom_values[f], vocab)
            row["logits_histogram"] = {"edges": [_r(v, 5) for v in L.hist_edges[f].tolist()],
                                       "counts": L.hist_counts[f].tolist()}
        else:
            row["logits_top"], row["logits_bottom"], row["logits_histogram"] = [], [], {"edges": [], "counts": []}
        if x.neighbours is not None:
            row["neighbours"] = [
                {"index": int(j), "cosine": _r(c, 5), "label": own_labels[j]}
                for j, c in zip(x.neighbours.index[f].tolist(), x.neighbours.cosine[f].tolist())
            ]
        else:
            row["neighbours"] = []
        row["matches"] = [
            {"dictionary_id": oid, "index": int(idx[f]), "cosine": _r(cos[f], 5),
             "label": labels_by_dict.get(oid, [""] * (int(idx[f]) + 1))[int(idx[f])]}
            for oid, idx, cos in x.matches
        ]
        rows.append(row)
    return rows


def _example_rows(write_id: str, a: DictionaryAnalysis, context_ids: np.ndarray, decimals: int):
    """Example rows as `writer.EXAMPLE_COLUMNS` tuples (activations pre-serialised JSON)."""
    ex = a.examples
    texts = json_float_arrays(ex.activations, decimals)
    maxes = np.round(ex.max_activation.astype(np.float64), decimals).tolist()
    names = ex.group_names
    feats, codes, ranks = ex.feature.tolist(), ex.group_code.tolist(), ex.rank.tolist()
    cids = context_ids[ex.context].tolist()
    labels = ex.group_labels
    for i in range(len(feats)):
        f, code = feats[i], codes[i]
        yield (write_id, f, names[code], labels[f, code], ranks[i], cids[i], maxes[i], texts[i])


def _write(
    db: Engine,
    model: Any,
    model_info: ModelInfo,
    entries: Sequence[DictionaryEntry],
    pre: PrecomputeResult,
    records: list[_Extra],
    tokens: np.ndarray,
    doc_ids: list[str],
    offsets: np.ndarray,
    vocab: list[str],
    config: PrecomputeConfig,
    atlas_root: Path | str | None,
    others: Sequence[_Other] = (),
) -> tuple[int, int]:
    root = Path(atlas_root) if atlas_root is not None else None
    used = np.unique(np.concatenate([a.examples.context for a in pre.analyses]))
    model_row = {
        "id": model_info.id,
        "source": model_info.source,
        "location": model_info.location,
        "tl_config": _tl_config(model),
        "tokenizer": model_info.tokenizer,
        "vocab": vocab,
        "n_ctx": int(model.cfg.n_ctx),
        "metrics": model_info.metrics,
    }
    labels_by_dict = {e.id: r.labels.label for e, r in zip(entries, records)}
    labels_by_dict.update({o.id: o.labels for o in others})
    targets: list[tuple[str, str, bool]] = []
    n_features = n_examples = 0
    with db.begin() as conn:
        upsert_model(conn, model_row)
        ids_used = insert_contexts(conn, model_info.id, tokens[used], [doc_ids[i] for i in used], offsets[used])
    context_ids = np.full(tokens.shape[0], -1, dtype=np.int64)
    context_ids[used] = ids_used
    for e, a, x in tqdm(list(zip(entries, pre.analyses, records)), desc="store", disable=not config.progress):
        d = e.dictionary
        md = d.metadata
        weights = _weights_file(root, e.weights_path)
        sha = file_sha256(weights) if weights is not None else None
        provenance = {
            "model_id": model_info.id,
            "hook_name": md.hook_name,
            "corpus": e.provenance.get("corpus", md.dataset_path),
            "n_contexts": pre.n_contexts,
            "n_ctx": int(tokens.shape[1]),
            "n_tokens": pre.n_tokens,
            "precompute_seed": config.seed,
            "precompute_config": config.model_dump(),
            "saescope_version": saescope_version(),
            "sae_weights_sha256": sha,
            "published_at": datetime.now(timezone.utc).isoformat(),
            **{k: v for k, v in e.provenance.items()},
        }
        with db.begin() as conn:
            status = dictionary_status(conn, e.id)
            if status == "ready":
                write_id = building_id(e.id)
                old = conn.execute(select(DictionaryRow.provenance).where(DictionaryRow.id == e.id)).scalar_one()
                keep = bool(sha) and (old or {}).get("sae_weights_sha256") == sha
            else:
                write_id, keep = e.id, False
            row = {
                "id": write_id,
                "model_id": model_info.id,
                "hook_name": md.hook_name,
                "kind": d.kind,
                "architecture": d.architecture,
                "d_in": d.d_in,
                "d_sae": d.d_sae,
                "display_prefix": e.display_prefix if e.display_prefix is not None else display_prefix(md.hook_name),
                "hyperparameters": d.hyperparameters(),
                "metrics": e.metrics,
                "provenance": provenance,
                "weights_path": e.weights_path,
                "created_at": datetime.now(timezone.utc),
            }
            nf, ne = write_dictionary(
                conn,
                row,
                _feature_rows(write_id, e, a, x, vocab, labels_by_dict),
                _example_rows(write_id, a, context_ids, config.activation_decimals),
            )
        n_features += nf
        n_examples += ne
        targets.append((e.id, write_id, keep))
    with db.begin() as conn:  # the one transaction that makes everything visible
        finalize_dictionaries(conn, targets)
        _update_others(conn, others, labels_by_dict)
        delete_orphan_contexts(conn, model_info.id)
    return n_features, n_examples


def _update_others(conn: Any, others: Sequence[_Other], labels_by_dict: dict[str, list[str]]) -> None:
    """Refresh matches (against the newly published dictionaries) and map coordinates of ready
    dictionaries that share a hook point with them."""
    from sqlalchemy import bindparam, update

    t = FeatureRow.__table__
    where = (t.c.dictionary_id == bindparam("b_dict"), t.c["index"] == bindparam("b_index"))
    with_map = update(t).where(*where).values(matches=bindparam("b_matches"), umap_x=bindparam("b_x"),
                                               umap_y=bindparam("b_y"))
    matches_only = update(t).where(*where).values(matches=bindparam("b_matches"))
    for o in others:
        if not o.new_matches and o.umap is None:
            continue
        delete_feature_pages(conn, [o.id])  # they show these matches and coordinates: re-rendered after
        rows = []
        for f in range(len(o.labels)):
            kept = [m for m in o.matches[f] if m.get("dictionary_id") not in o.new_matches]
            for nid, (idx, cos) in o.new_matches.items():
                j = int(idx[f])
                kept.append({"dictionary_id": nid, "index": j, "cosine": _r(cos[f], 5), "label": labels_by_dict[nid][j]})
            row = {"b_dict": o.id, "b_index": f, "b_matches": kept}
            if o.umap is not None:
                row.update(b_x=float(o.umap[f, 0]), b_y=float(o.umap[f, 1]))
            rows.append(row)
        conn.execute(with_map if o.umap is not None else matches_only, rows)


@dataclass
class StaleDictionary:
    id: str
    weights_file: str
    stored_sha256: str | None
    current_sha256: str | None  # None when the file is missing


def stale_dictionaries(store_url_or_db: str | Engine, atlas_root: Path | str) -> list[StaleDictionary]:
    """Ready dictionaries whose `sae_weights.safetensors` no longer matches the hash stored at publish
    time (or is missing): their dashboards describe other weights and should be re-published."""
    db = create_database(store_url_or_db) if isinstance(store_url_or_db, str) else store_url_or_db
    out = []
    with db.connect() as conn:
        rows = conn.execute(
            select(DictionaryRow.id, DictionaryRow.weights_path, DictionaryRow.provenance).where(
                DictionaryRow.status == "ready"
            )
        ).all()
    for did, wpath, prov in rows:
        wf = _weights_file(Path(atlas_root), wpath)
        if wf is None:
            continue
        stored = (prov or {}).get("sae_weights_sha256")
        current = file_sha256(wf)
        if current != stored:
            out.append(StaleDictionary(did, str(wf), stored, current))
    if isinstance(store_url_or_db, str):
        db.dispose()
    return out
