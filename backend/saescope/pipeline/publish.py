"""Analyse then persist: every feature record of several dictionaries, published atomically.

Owns `precompute_and_publish`, the step the pipeline runs after training: the streaming precompute
(`analysis.precompute`), the per-dictionary analyses (logit effects, neighbours, cross-dictionary
matches, UMAP, labels — `analysis`), loading the weights of the ready dictionaries already stored at
the same hook points (they join the map and the matches), choosing what each hook point's map shows
(the kinds in `PrecomputeConfig.umap_kinds`, SAEs by default; features that never fired left out), the provenance of each dictionary (model,
hook point, corpus, token count, seeds, saescope version, sha256 of its weights file), then hands the
finished records to `store.publish` (one final transaction makes them visible) and fills the
pre-rendered feature pages (`store.pages`). Also detects stale dashboards (`stale_dictionaries`,
`store_is_current`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from torch import Tensor
from tqdm.auto import tqdm

from saescope.analysis.config import PrecomputeConfig
from saescope.analysis.geometry import best_matches, masked_umap_layout, nearest_neighbours
from saescope.analysis.labels import top_token_labels, vocab_strings
from saescope.analysis.logit_effects import logit_effects
from saescope.analysis.precompute import DictionaryAnalysis, PrecomputeResult, clear_state, run_precompute
from saescope.analysis.records import (
    FeatureAnalyses,
    Match,
    display_prefix,
    feature_records,
    merged_matches,
    model_config_json,
)
from saescope.atlas_layout import AtlasLayout
from saescope.dictionaries.base import Dictionary
from saescope.dictionaries.saelens_format import WEIGHTS_FILE, load_dictionary
from saescope.errors import ConfigError, FormatError, InputError
from saescope.store.database import create_database, init_schema
from saescope.store.pages import fill_feature_pages
from saescope.store.publish import (
    ContextRecords,
    DictionaryRecord,
    ExampleColumns,
    FeatureRefresh,
    ModelRecord,
    StoredDictionary,
    publish_dictionaries,
    published_at,
    ready_dictionaries,
    validate_dictionary_id,
)
from saescope.pipeline.validation import check_all_fit_model
from saescope.ranks import current_ranks
from saescope.store.reader import StoreReader

__all__ = ["ContextsLike", "DictionaryEntry", "ModelRecord", "PublishReport", "StaleDictionary", "display_prefix",
           "precompute_and_publish", "stale_dictionaries", "store_is_current"]


ActivationSource = Callable[[Sequence[str], np.ndarray], dict[str, Tensor]]
"""Hook tensors `[b, pos, d]` of the contexts at the given indices for the given hook names."""


class ContextsLike(Protocol):
    """What `saescope.corpus.packing.PackedContexts` provides."""

    tokens: np.ndarray  # [n, n_ctx] int64
    doc_ids: list[str]  # [n]
    offsets: np.ndarray  # [n]


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


@dataclass
class _Other:
    """A ready dictionary already stored at a hook point being published (not re-published now): it
    joins the UMAP plane and the cross-dictionary matches, and its features get refreshed."""

    stored: StoredDictionary
    w_dec: Any  # Tensor [d_sae, d_in]
    kind: str = "sae"
    umap: np.ndarray | None = None  # [d_sae, 2]
    new_matches: list[Match] = field(default_factory=list)


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


def weights_file(atlas_root: Path | None, weights_path: str) -> Path | None:
    """The weights file of a stored `weights_path` (a folder or the file itself), None when there is none."""
    if not weights_path:
        return None
    p = Path(weights_path)
    if not p.is_absolute() and atlas_root is not None:
        p = Path(atlas_root) / p
    return p / WEIGHTS_FILE if p.suffix != ".safetensors" else p


def precompute_and_publish(
    store_url: str,
    model: Any,
    model_record: ModelRecord,
    entries: Sequence[DictionaryEntry],
    contexts: ContextsLike,
    config: PrecomputeConfig | None = None,
    work_dir: Path | str | None = None,
    atlas_root: Path | str | None = None,
    on_batch: Callable[[int], None] | None = None,
    activation_source: ActivationSource | None = None,
) -> PublishReport | None:
    """Precompute every feature record of `entries` (dictionaries of `model`) over `contexts` and
    publish them to `store_url` (SQLite or PostgreSQL), all flipping to `ready` in one transaction.

    - `model`: a HookedTransformer (with `tokenizer` for readable labels); it runs on its own device,
      dictionaries are moved to `config.device`.
    - `model_record`: the model's identity (id, source, location, tokenizer, metrics); its config,
      vocabulary and context length are filled in from `model`.
    - `contexts`: `PackedContexts` (tokens [n, n_ctx], doc_ids, offsets) with BOS at position 0.
    - `work_dir`: where the streaming state is checkpointed; re-running after an interruption resumes.
    - `atlas_root`: resolves `weights_path` to hash `sae_weights.safetensors` into the provenance.
    - `on_batch(i)`: called after each streamed batch (tests interrupt runs with it).
    - `activation_source(hooks, indices)`: hook tensors of the contexts at `indices` read instead of
      running the model (the build's activation cache over the same contexts).
    Re-publishing an id that is already ready replaces it atomically (explanations are kept when the
    weights file hash is unchanged). Over several ranks (torchrun, `--nproc`) every rank streams its
    share of the contexts and rank 0 alone publishes and returns the report; the others return None.
    """
    config = config or PrecomputeConfig()
    if not entries:
        raise ConfigError("nothing to publish: give at least one dictionary entry")
    tokens = np.asarray(contexts.tokens, dtype=np.int64)
    if tokens.ndim != 2:
        raise InputError(f"contexts.tokens must be [n, n_ctx]; got {tokens.shape}", field="contexts")
    records = ContextRecords(tokens, [str(d) for d in contexts.doc_ids], np.asarray(contexts.offsets, dtype=np.int64))
    for e in entries:
        validate_dictionary_id(e.id)
    check_all_fit_model(model, [(e.id, e.dictionary) for e in entries])  # before the store is created
    if not current_ranks().is_main:  # over several ranks: stream this rank's share; rank 0 merges and publishes
        run_precompute(model, [(e.id, e.dictionary) for e in entries], records.tokens, records.doc_ids,
                       config=config, work_dir=work_dir, on_batch=on_batch, keep_state=True,
                       activation_source=activation_source)
        return None
    db = create_database(store_url)
    try:
        init_schema(db)
        return _precompute_and_publish(db, model, model_record, entries, records, config, work_dir,
                                       Path(atlas_root) if atlas_root is not None else None, on_batch,
                                       activation_source)
    finally:
        db.dispose()


def _precompute_and_publish(
    db: Engine,
    model: Any,
    model_record: ModelRecord,
    entries: Sequence[DictionaryEntry],
    contexts: ContextRecords,
    config: PrecomputeConfig,
    work_dir: Path | str | None,
    atlas_root: Path | None,
    on_batch: Callable[[int], None] | None,
    activation_source: ActivationSource | None = None,
) -> PublishReport:
    t_start = time.perf_counter()
    pre = run_precompute(model, [(e.id, e.dictionary) for e in entries], contexts.tokens, contexts.doc_ids,
                         config=config, work_dir=work_dir, on_batch=on_batch, keep_state=True,
                         activation_source=activation_source)
    timings = pre.timings.as_dict()
    t0 = time.perf_counter()
    vocab = vocab_strings(model)
    others = _load_others(db, model_record.id, entries, atlas_root)
    analyses = analyse_dictionaries(model, entries, pre, contexts.tokens, vocab, config, others)
    timings["analysis"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels_by_dict = {e.id: x.labels.label for e, x in zip(entries, analyses)}
    labels_by_dict.update({o.stored.id: o.stored.labels for o in others})
    dictionary_records = [
        _dictionary_record(e, a, x, model_record.id, pre, contexts, vocab, labels_by_dict, config, atlas_root)
        for e, a, x in zip(entries, pre.analyses, analyses)
    ]
    full_model = model_record.model_copy(update={
        "tl_config": model_config_json(model), "vocab": vocab, "n_ctx": int(model.cfg.n_ctx)})
    n_features, n_examples = publish_dictionaries(
        db, full_model, contexts, dictionary_records, _refreshes(others, labels_by_dict),
        activation_decimals=config.activation_decimals, progress=config.progress,
    )
    timings["store"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if config.feature_pages:  # the new dictionaries' pages and those of the refreshed others
        fill_feature_pages(db, progress=config.progress)
    timings["pages"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    if work_dir is not None:
        clear_state(work_dir)
    return PublishReport(
        dictionary_ids=[e.id for e in entries], n_contexts=pre.n_contexts, n_tokens=pre.n_tokens,
        n_features=n_features, n_examples=n_examples, timings=timings, resumed_from_batch=pre.resumed_from_batch,
    )


def _load_others(db: Engine, model_id: str, entries: Sequence[DictionaryEntry], atlas_root: Path | None) -> list[_Other]:
    """Ready dictionaries of `model_id` at the entries' hook points whose weights can be loaded."""
    if atlas_root is None:
        return []
    ids = {e.id for e in entries}
    hooks = [e.dictionary.metadata.hook_name for e in entries]
    out = []
    for stored in ready_dictionaries(db, model_id, hooks, with_features=True):
        if stored.id in ids or not stored.weights_path:
            continue
        try:
            d = load_dictionary(atlas_root / stored.weights_path)
        except (FormatError, OSError):
            continue
        if len(stored.labels) == d.d_sae:
            out.append(_Other(stored, d.W_dec.detach(), d.kind))
    return out


def _mapped_kinds(kinds: Sequence[str], config: PrecomputeConfig) -> set[str]:
    """The kinds of dictionary drawn on one hook point's map: those configured, or every kind present
    when the hook point has none of them."""
    chosen = set(config.umap_kinds) & set(kinds)
    return chosen or set(kinds)


def _is_variant(dictionary: Dictionary) -> bool:
    return bool(getattr(dictionary.metadata, "saescope_variant", None))


def _umap_by_hook(entries: Sequence[DictionaryEntry], pre: PrecomputeResult, others: Sequence[_Other],
                  config: PrecomputeConfig) -> dict[int, np.ndarray]:
    """UMAP coordinates of the mapped entries (by position), one shared plane per hook point with the
    mapped others; features left out (dead ones unless `umap_include_dead`) get NaN coordinates."""
    by_hook: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_hook.setdefault(e.dictionary.metadata.hook_name, []).append(i)
    umaps: dict[int, np.ndarray] = {}
    for hook, idxs in tqdm(by_hook.items(), desc="umap", disable=not config.progress):
        olds = [o for o in others if o.stored.hook_name == hook]
        kinds = _mapped_kinds([entries[i].dictionary.kind for i in idxs] + [o.kind for o in olds], config)
        # variants (an SAE without its encoder bias) share their SAE's decoder: drawn once, by the SAE
        idxs = [i for i in idxs if entries[i].dictionary.kind in kinds and not _is_variant(entries[i].dictionary)]
        olds = [o for o in olds if o.kind in kinds]
        keep = [None if config.umap_include_dead else pre.analyses[i].stats.fire_count.numpy() > 0 for i in idxs]
        coords = masked_umap_layout(
            [entries[i].dictionary.W_dec for i in idxs] + [o.w_dec for o in olds], keep + [None] * len(olds),
            seed=config.seed, n_neighbors=config.umap_n_neighbors, min_dist=config.umap_min_dist,
            metric=config.umap_metric,
        )
        umaps.update(zip(idxs, coords))
        for o, c in zip(olds, coords[len(idxs):]):
            o.umap = c
    return umaps


def _matches(i: int, entries: Sequence[DictionaryEntry], others: Sequence[_Other]) -> list[Match]:
    """Best matches of entry `i` in the other entries and stored dictionaries at its hook point (and
    theirs in it, recorded on the stored ones)."""
    e = entries[i]
    hook = e.dictionary.metadata.hook_name
    out = []
    for j, other in enumerate(entries):
        if j != i and other.dictionary.metadata.hook_name == hook:
            out.append(Match(other.id, *best_matches(e.dictionary.W_dec, other.dictionary.W_dec)))
    for o in others:
        if o.stored.hook_name == hook:
            out.append(Match(o.stored.id, *best_matches(e.dictionary.W_dec, o.w_dec)))
            o.new_matches.append(Match(e.id, *best_matches(o.w_dec, e.dictionary.W_dec)))
    return out


def analyse_dictionaries(
    model: Any,
    entries: Sequence[DictionaryEntry],
    pre: PrecomputeResult,
    tokens: np.ndarray,
    vocab: list[str],
    config: PrecomputeConfig,
    others: Sequence[_Other] = (),
) -> list[FeatureAnalyses]:
    """Logit effects, neighbours, matches, UMAP and labels of every entry (in order)."""
    umaps = _umap_by_hook(entries, pre, others, config) if config.umap else {}
    out = []
    for i, (e, a) in enumerate(zip(entries, pre.analyses)):
        d, md = e.dictionary, e.dictionary.metadata
        logits = logit_effects(model, md.hook_name, d.W_dec, k=config.logit_k, bins=config.logit_histogram_bins,
                               hook_head_index=md.hook_head_index)
        neighbours = nearest_neighbours(d.W_dec, k=config.neighbours_k) if config.neighbours_k > 0 else None
        ex = a.examples
        top = ex.group_code == 0
        labels = top_token_labels(d.d_sae, ex.feature[top], ex.activations[top], tokens[ex.context[top]],
                                  pre.token_counts, vocab, n_label=config.label_tokens, n_top=config.top_tokens)
        out.append(FeatureAnalyses(logits, neighbours, _matches(i, entries, others), umaps.get(i), labels))
    return out


def _provenance(e: DictionaryEntry, model_id: str, pre: PrecomputeResult, n_ctx: int, config: PrecomputeConfig,
                atlas_root: Path | None) -> dict[str, Any]:
    weights = weights_file(atlas_root, e.weights_path)
    md = e.dictionary.metadata
    return {
        "model_id": model_id,
        "hook_name": md.hook_name,
        "corpus": e.provenance.get("corpus", md.dataset_path),
        "n_contexts": pre.n_contexts,
        "n_ctx": n_ctx,
        "n_tokens": pre.n_tokens,
        "precompute_seed": config.seed,
        "precompute_config": config.model_dump(),
        "saescope_version": saescope_version(),
        "sae_weights_sha256": file_sha256(weights) if weights is not None else None,
        "published_at": published_at().isoformat(),
        **e.provenance,
    }


def _dictionary_record(
    e: DictionaryEntry, a: DictionaryAnalysis, x: FeatureAnalyses, model_id: str, pre: PrecomputeResult,
    contexts: ContextRecords, vocab: list[str], labels_by_dict: dict[str, list[str]], config: PrecomputeConfig,
    atlas_root: Path | None,
) -> DictionaryRecord:
    d = e.dictionary
    md = d.metadata
    row = {
        "model_id": model_id,
        "hook_name": md.hook_name,
        "kind": d.kind,
        "architecture": d.architecture,
        "d_in": d.d_in,
        "d_sae": d.d_sae,
        "display_prefix": e.display_prefix if e.display_prefix is not None else display_prefix(md.hook_name),
        "hyperparameters": d.hyperparameters(),
        "metrics": e.metrics,
        "provenance": _provenance(e, model_id, pre, int(contexts.tokens.shape[1]), config, atlas_root),
        "weights_path": e.weights_path,
        "created_at": published_at(),
    }
    decoder_norm = d.W_dec.detach().float().norm(dim=1).cpu().numpy()
    features = feature_records(a.stats, x, decoder_norm, vocab, labels_by_dict, e.pruned)
    ex = a.examples
    examples = ExampleColumns(ex.feature, ex.group_code, ex.group_names, ex.group_labels, ex.rank, ex.context,
                              ex.max_activation, ex.activations)
    return DictionaryRecord(e.id, row, features, examples)


def _refreshes(others: Sequence[_Other], labels_by_dict: dict[str, list[str]]) -> list[FeatureRefresh]:
    """New matches and map coordinates of the stored dictionaries that share a hook point."""
    return [
        FeatureRefresh(o.stored.id, merged_matches(o.stored.matches, o.new_matches, labels_by_dict), o.umap)
        for o in others
        if o.new_matches or o.umap is not None
    ]


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
    try:
        stored = ready_dictionaries(db)
    finally:
        if isinstance(store_url_or_db, str):
            db.dispose()
    out = []
    for s in stored:
        wf = weights_file(Path(atlas_root), s.weights_path)
        if wf is None:
            continue
        current = file_sha256(wf)
        if current != s.weights_sha256:
            out.append(StaleDictionary(s.id, str(wf), s.weights_sha256, current))
    return out


def store_is_current(store_url: str, atlas_root: Path, dictionary_ids: list[str]) -> bool:
    """True when every dictionary id is ready in the store and its weights file is unchanged."""
    if store_url.startswith("sqlite") and not AtlasLayout(root=atlas_root).sqlite_path.is_file():
        return False
    try:
        reader = StoreReader.from_url(store_url)
        try:
            ready = {d["id"] for d in reader.list_dictionaries()}
        finally:
            reader.close()
    except SQLAlchemyError:  # an unreadable or schema-less store is simply not current: rebuild it
        return False
    if not set(dictionary_ids) <= ready:
        return False
    return not any(s.id in dictionary_ids for s in stale_dictionaries(store_url, atlas_root))
