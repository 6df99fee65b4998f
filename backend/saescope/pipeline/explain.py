"""The explain step: every feature of an atlas's dictionaries explained, scored and stored.

Owns `explain_atlas` (`saescope explain`, and a step of the build pipeline): it reads the atlas's
ready dictionaries and their model from the store, draws corpus contexts, collects fragments
(`interpret.fragments`), explains and scores each dictionary's features (`interpret.run`) with the
chosen explainer and scorers, and writes explanations, scores, fragments and per-scorer summaries
through `store.interpretability` (pages dropped and refilled as a publish does). Finished features
are logged under `ATLAS/work/interpret/` so an interrupted run resumes; LLM answers are cached there.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saescope.analysis.labels import vocab_strings
from saescope.atlas_layout import AtlasLayout
from saescope.corpus.packing import PackedContexts, pack_documents
from saescope.corpus.stdlib import stdlib_documents
from saescope.dictionaries.saelens_format import load_dictionary
from saescope.errors import ConfigError, NotFoundError
from saescope.interpret.config import ExplainConfig
from saescope.interpret.fragments import DictionaryFragments, FeatureFragments, collect_fragments
from saescope.interpret.llm import chat_backend
from saescope.interpret.run import FeatureResult, Interpreter, ResultLog, interpret_dictionary, validate_choice
from saescope.interpret.scoring import summarise_scores
from saescope.pipeline.contexts import model_context_length
from saescope.pipeline.dictionaries import load_model
from saescope.store.database import create_database, init_schema
from saescope.store.interpretability import ExplanationRecord, InterpretRecord, write_interpretations
from saescope.store.publish import StoredDictionary, ready_dictionaries
from saescope.store.reader import StoreReader

ACTIVATION_DECIMALS = 4


@dataclass
class DictionaryExplainReport:
    id: str
    n_features: int
    n_explained: int
    n_dead: int
    summary: list[dict[str, Any]]


@dataclass
class ExplainReport:
    """What `explain_atlas` wrote and how long it took."""

    explainer: str
    scorers: list[str]
    dictionaries: list[DictionaryExplainReport]
    timings: dict[str, float] = field(default_factory=dict)
    llm_calls: int = 0
    llm_cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def features_per_minute(self) -> float:
        n = sum(d.n_explained for d in self.dictionaries)
        return 60.0 * n / max(self.timings.get("explain", 0.0), 1e-9)

    def describe(self) -> str:
        lines = [f"explained {sum(d.n_explained for d in self.dictionaries)} features of "
                 f"{len(self.dictionaries)} dictionaries with {self.explainer} in {self.timings.get('total', 0):.1f} s"]
        for d in self.dictionaries:
            sims = [s for s in d.summary if s["scorer"] == "simulation" and s["variant"] == "top_and_random"] or d.summary
            parts = [f"{s['scorer']}/{s['variant']} {_fmt(s['mean'])} [{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}] "
                     f"n={s['n']} nan={s['n_nan']} failed={s['n_failed']}" for s in sims[:1]]
            lines.append(f"  {d.id}: {d.n_explained}/{d.n_features} explained ({d.n_dead} dead); {'; '.join(parts)}")
        if self.llm_calls or self.llm_cache_hits:
            lines.append(f"  LLM: {self.llm_calls} calls, {self.llm_cache_hits} cached, {self.prompt_tokens} prompt + "
                         f"{self.completion_tokens} completion tokens, {self.features_per_minute:.1f} features/min")
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "nan" if x is None else f"{x:.3f}"


def _sparse(values: np.ndarray) -> list[list[float]]:
    idx = np.nonzero(np.round(values, ACTIVATION_DECIMALS))[0]
    return [[int(i), round(float(values[i]), ACTIVATION_DECIMALS)] for i in idx]


def fragment_row(feature: FeatureFragments) -> dict[str, Any]:
    """The `feature_fragments` row of one feature (sparse activations, token ids)."""
    def full(frags: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"doc_id": f.doc_id, "tokens": f.tokens.tolist(), "activations": _sparse(f.activations)} for f in frags]

    return {"index": feature.index, "max_activation": round(feature.max_activation, ACTIVATION_DECIMALS),
            "fragments": {"explanation": full(feature.explanation), "scoring": full(feature.scoring),
                          "random_activating": full(feature.random_activating),
                          "random": [_sparse(f.activations) for f in feature.random]}}


def interpret_record(dictionary_id: str, fragments: DictionaryFragments, results: Sequence[FeatureResult],
                     interpreter: Interpreter, config: ExplainConfig) -> InterpretRecord:
    """What the store keeps of one dictionary's run (dead features count in `n_dead`, not in the scores)."""
    explanations, live_scores = [], []
    for r in results:
        if r.error == "no activating fragment":
            continue
        live_scores += r.scores
        if r.explanation:
            explanations.append(ExplanationRecord(
                r.index, r.explanation, r.method, r.explainer, [s.as_dict() for s in r.scores],
                r.score("simulation", "top_and_random"), r.score("simulation", "top"), r.score("simulation", "random")))
    n_dead = sum(f.is_dead for f in fragments.features)
    summary = [{**vars(s), "n_dead": n_dead} for s in summarise_scores(live_scores)]
    first = fragments.features[0].random if fragments.features else []
    return InterpretRecord(
        dictionary_id=dictionary_id, explainer=interpreter.explainer_name, scorers=interpreter.scorers,
        config=config.model_dump(mode="json", exclude={"progress", "device"}), summary=summary,
        random_fragments=[{"doc_id": f.doc_id, "tokens": f.tokens.tolist()} for f in first],
        explanations=explanations, fragments=[fragment_row(f) for f in fragments.features])


def explain_contexts(model: Any, n_contexts: int, seed: int) -> PackedContexts:
    """`n_contexts` contexts of the offline corpus's training split at the model's context length,
    cut from a seeded sample of `n_contexts` documents (tokenising only those, not the whole corpus)."""
    docs = stdlib_documents("train")
    if len(docs) > n_contexts:
        keep = np.sort(np.random.default_rng([seed, 17]).choice(len(docs), size=n_contexts, replace=False))
        docs = [docs[i] for i in keep]
    if getattr(model, "tokenizer", None) is None:
        raise ConfigError("the model has no tokenizer attached; saescope needs one to read the corpus")
    return pack_documents(docs, model.tokenizer, model_context_length(model), max_contexts=n_contexts, seed=seed)


def _run_key(stored: StoredDictionary, explainer: str, scorers: Sequence[str], config: ExplainConfig) -> str:
    blob = json.dumps({"weights": stored.weights_sha256, "explainer": explainer, "scorers": list(scorers),
                       "config": config.model_dump(mode="json", exclude={"progress", "device"})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _model_location(reader: StoreReader, model_id: str, root: Path) -> str:
    model = reader.get_model(model_id)
    location = str(model["location"])
    path = Path(location)
    if not path.is_absolute() and (root / path).exists():
        return str(root / path)
    return location


def explain_atlas(
    atlas: Path,
    store_url: str | None,
    dictionaries: list[str] | None,
    explainer: str,
    scorers: list[str],
    config: ExplainConfig | None = None,
    progress: bool = True,
    model: Any | None = None,
    contexts: Any | None = None,
    activation_source: Any | None = None,
) -> ExplainReport:
    """Explain and score every feature of the atlas's ready dictionaries (all, or those named) and
    store the results; resumes an interrupted run. Returns what was written.

    The build passes the `model` it holds and the `contexts` (`PackedContexts` of its own corpus) to
    draw fragments from, with their cached activations (`activation_source`); otherwise the model is loaded from the store's record and contexts are drawn
    from the offline corpus."""
    config = (config or ExplainConfig()).model_copy(update={"progress": progress})
    validate_choice(explainer, scorers)
    layout = AtlasLayout(root=Path(atlas))
    url = layout.store_url(store_url)
    if url.startswith("sqlite") and not layout.sqlite_path.is_file() and store_url is None:
        raise NotFoundError(f"{layout.sqlite_path} does not exist: build or publish the atlas first")
    t_start = time.perf_counter()
    db = create_database(url)
    try:
        stored = ready_dictionaries(db)
        if dictionaries:
            unknown = sorted(set(dictionaries) - {s.id for s in stored})
            if unknown:
                raise NotFoundError(f"no ready dictionary {', '.join(map(repr, unknown))} in the store; it holds "
                                    f"{', '.join(s.id for s in stored) or 'none'}")
            stored = [s for s in stored if s.id in dictionaries]
        if not stored:
            raise NotFoundError("the store holds no ready dictionary to explain")
        init_schema(db)  # adds the interpretability tables to a store written before them
        reader = StoreReader(db)
        briefs = {s.id: reader.get_dictionary(s.id) for s in stored}
        report = ExplainReport(explainer, list(scorers), [])
        backend = None
        if explainer != "lookup":
            llm = config.llm if config.llm.cache_dir else config.llm.model_copy(
                update={"cache_dir": str(layout.work_dir / "interpret" / "llm-cache")})
            config = config.model_copy(update={"llm": llm})
            backend = chat_backend(explainer, llm)
        try:
            for model_id in dict.fromkeys(briefs[s.id]["model_id"] for s in stored):
                group = [s for s in stored if briefs[s.id]["model_id"] == model_id]
                _explain_model(layout, reader, model_id, group, explainer, scorers, config, backend, report, db,
                               model, contexts, activation_source)
        finally:
            if backend is not None:
                report.llm_calls, report.llm_cache_hits = backend.stats.calls, backend.stats.cache_hits
                report.prompt_tokens, report.completion_tokens = backend.stats.prompt_tokens, backend.stats.completion_tokens
                close = getattr(backend, "close", None)
                if close is not None:
                    close()
    finally:
        db.dispose()
    report.timings["total"] = time.perf_counter() - t_start
    return report


def _explain_model(layout: AtlasLayout, reader: StoreReader, model_id: str, group: list[StoredDictionary],
                   explainer: str, scorers: list[str], config: ExplainConfig, backend: Any,
                   report: ExplainReport, db: Any, model: Any | None = None, contexts: Any | None = None,
                   activation_source: Any | None = None) -> None:
    t0 = time.perf_counter()
    if model is None:
        model = load_model(_model_location(reader, model_id, layout.root), config.device)
    loaded = []
    for s in group:
        if not s.weights_path:
            raise ConfigError(f"dictionary {s.id!r} has no weights folder to explain it from")
        loaded.append((s.id, load_dictionary(layout.root / s.weights_path)))
    if contexts is None:
        contexts = explain_contexts(model, config.n_contexts, config.context_seed)
    frag_sets = collect_fragments(model, loaded, contexts.tokens, contexts.doc_ids, config, activation_source)
    report.timings["fragments"] = report.timings.get("fragments", 0.0) + time.perf_counter() - t0
    vocab = vocab_strings(model)
    for s, frags in zip(group, frag_sets):
        t1 = time.perf_counter()
        interpreter = Interpreter(explainer, scorers, vocab, frags.token_counts, config, backend)
        log = ResultLog(layout.work_dir / "interpret" / s.id / f"{_run_key(s, explainer, scorers, config)}.jsonl")
        results = interpret_dictionary(frags, interpreter, log, progress=config.progress)
        report.timings["explain"] = report.timings.get("explain", 0.0) + time.perf_counter() - t1
        t2 = time.perf_counter()
        record = interpret_record(s.id, frags, results, interpreter, config)
        write_interpretations(db, record)
        report.timings["store"] = report.timings.get("store", 0.0) + time.perf_counter() - t2
        n_dead = sum(f.is_dead for f in frags.features)
        report.dictionaries.append(DictionaryExplainReport(s.id, len(frags.features), len(record.explanations),
                                                           n_dead, record.summary))
