"""Read-only queries over an atlas store: the only SQL the API server runs.

Owns a read-only database handle (a SQLAlchemy Engine; SQLite opened with `mode=ro` and `PRAGMA query_only`;
PostgreSQL sessions with `default_transaction_read_only`) and the query functions behind every read
endpoint. Only dictionaries whose `status` is `ready` are ever visible: every query that touches
dictionaries, features or examples joins on that condition. Results are plain dicts shaped like the
API's response models (this module must not import the API). It never writes. A query parameter
holding a NUL character is answered NotFoundError on every back end (the store holds none, and
PostgreSQL's driver raises on one); connection options in a PostgreSQL URL (such as
`options=-csearch_path=...`) are kept beside the read-only one.

Query counts: a feature record is three small indexed selects on one connection (the feature row
joined with its dictionary, its explanations, its example groups); a page of examples is one query
(examples joined with contexts and dictionary) plus the model's vocabulary, cached per model id.
A feature page (record and examples together) is one indexed read of its pre-rendered gzip body
(`store.pages`), rendered live from the queries above where none is stored.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from datetime import datetime, timezone
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic_core import to_json
from sqlalchemy import Engine, Text, bindparam, cast, create_engine, event, func, inspect, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from saescope.errors import ConfigError, NotFoundError
from saescope.store.database import parse_store_url
from saescope.store import interpretability
from saescope.store.interpretability import explanation_scores, has_interpret_tables
from saescope.store.schema import (
    ADDED_FEATURE_COLUMNS,
    ContextRow,
    DictionaryRow,
    ExampleRow,
    ExplanationRow,
    FeaturePageRow,
    FeatureRow,
    ModelRow,
)

SortKey = Literal["index", "density", "max_activation", "score"]
SortOrder = Literal["asc", "desc"]

_READY = "ready"
PAGES_TABLE_RECHECK_S = 30.0
BRIEF_TTL_S = 1.0  # how stale a live request's view of a dictionary's identity and weights may be
_FRAGMENT_CACHE_SIZE = 20_000  # token-string fragments of contexts (~1-3 kB each)


def readonly_database_url(url: str) -> tuple[str, dict[str, Any]]:
    """The URL and connect_args that open `url` read-only.

    SQLite files become `sqlite:///file:PATH?mode=ro&uri=true`; PostgreSQL gets
    `default_transaction_read_only=on` as a connection option.
    """
    url, parsed = parse_store_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            if database.startswith("file:") and "mode=ro" not in str(parsed):
                raise ConfigError(f"store URL {url!r} uses a SQLite URI; add mode=ro or give a plain path")
            return url, {"check_same_thread": False}
        path = Path(database).resolve()
        if not path.is_file():
            raise NotFoundError(
                f"store {path} does not exist: run `saescope precompute` or `saescope demo` first, "
                "or pass the right --store URL"
            )
        return f"sqlite:///file:{path}?mode=ro&uri=true", {"check_same_thread": False}
    if backend == "postgresql":
        # connect_args replace the URL's own `options` (e.g. `-csearch_path=...`): merge them instead
        given = parsed.query.get("options") or ()
        options = [given] if isinstance(given, str) else list(given)
        options.append("-c default_transaction_read_only=on")
        url = parsed.difference_update_query(["options"]).render_as_string(hide_password=False)
        return url, {"options": " ".join(options)}
    raise ConfigError(f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql+psycopg://...")


NUL_MESSAGE = "nothing in the store is named by a value containing a NUL character"


def contains_nul(value: Any) -> bool:
    """Whether a query parameter (a string, bytes, or a list/tuple/dict of them) holds a NUL
    character. PostgreSQL text cannot hold NUL (the driver raises), and the store never writes one,
    so such a value can match nothing."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, (list, tuple)):
        return any(contains_nul(v) for v in value)
    if isinstance(value, Mapping):
        return any(contains_nul(v) for v in value.values())
    return False


def _refuse_nul_parameters(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                           executemany: bool) -> None:
    """`before_cursor_execute` hook of the reader: a NUL in any parameter is a NotFoundError on
    every back end (SQLite would find nothing, PostgreSQL's driver would raise)."""
    if contains_nul(parameters):
        raise NotFoundError(NUL_MESSAGE)


def create_reader_database(url: str, pool_size: int = 8) -> Engine:
    """A read-only database handle (SQLAlchemy Engine) for `url` (SQLite or PostgreSQL); writes through it fail."""
    ro_url, connect_args = readonly_database_url(url)
    backend = make_url(ro_url).get_backend_name()
    if backend == "sqlite":
        database = make_url(ro_url).database or ""
        kwargs: dict[str, Any] = {"connect_args": connect_args}
        if database in ("", ":memory:"):
            kwargs["poolclass"] = StaticPool
        else:
            kwargs.update(pool_size=pool_size, max_overflow=2 * pool_size)
        db = create_engine(ro_url, **kwargs)

        @event.listens_for(db, "connect")
        def _query_only(dbapi_connection: Any, _record: Any) -> None:  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA query_only = ON")
            cursor.execute("PRAGMA busy_timeout = 10000")
            cursor.close()

        event.listen(db, "before_cursor_execute", _refuse_nul_parameters)
        return db
    db = create_engine(ro_url, connect_args=connect_args, pool_size=pool_size, max_overflow=2 * pool_size,
                       pool_pre_ping=True)
    event.listen(db, "before_cursor_execute", _refuse_nul_parameters)
    return db


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _finite(value: Any, default: float | None = 0.0) -> float | None:
    if value is None:
        return default
    value = float(value)
    return value if math.isfinite(value) else default


def _aware(value: Any) -> Any:
    """SQLite returns naive datetimes; the store writes UTC, so attach UTC (RFC 3339 needs an offset)."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _display_name(prefix: str, index: int) -> str:
    return f"{prefix}{index}" if prefix else str(index)


_MODEL_COLUMNS = tuple(c for c in ModelRow.__table__.columns if c.name != "vocab")

_SUMMARY_COLUMNS = (
    FeatureRow.dictionary_id,
    FeatureRow.index,
    FeatureRow.label,
    FeatureRow.density,
    FeatureRow.max_activation,
    FeatureRow.mean_activation,
    FeatureRow.score,
    FeatureRow.dead,
    FeatureRow.pruned,
    FeatureRow.top_tokens,
)


def _head_shares(value: Any) -> list[float] | None:
    """A stored per-head norm share list as floats, None when the feature has none."""
    return [_finite(v) for v in value] if isinstance(value, list) else None


def _summary(row: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {
        "dictionary_id": row["dictionary_id"],
        "index": int(row["index"]),
        "name": _display_name(prefix, int(row["index"])),
        "label": row["label"] or "",
        "density": _finite(row["density"]),
        "max_activation": _finite(row["max_activation"]),
        "mean_activation": _finite(row["mean_activation"]),
        "score": _finite(row["score"], None),
        "dead": bool(row["dead"]),
        "pruned": bool(row["pruned"]),
        "top_tokens": row["top_tokens"] or "",
    }


def _dictionary_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "model_id": row["model_id"],
        "hook_name": row["hook_name"],
        "kind": row["kind"],
        "architecture": row["architecture"],
        "d_in": row["d_in"],
        "d_sae": row["d_sae"],
        "display_prefix": row["display_prefix"] or "",
        "hyperparameters": row["hyperparameters"] or {},
        "metrics": row["metrics"] or {},
        "provenance": row["provenance"] or {},
        "created_at": _aware(row["created_at"]),
        "weights_path": row["weights_path"],
    }


def _model_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    cfg = row["tl_config"] or {}
    return {
        "id": row["id"],
        "source": row["source"],
        "location": row["location"],
        "tokenizer": row["tokenizer"],
        "n_ctx": int(row["n_ctx"]),
        "model_n_ctx": int(row["n_ctx"]),
        "d_vocab": int(cfg.get("d_vocab") or 0),
        "n_layers": int(cfg.get("n_layers") or 0),
        "d_model": int(cfg.get("d_model") or 0),
        "metrics": row["metrics"] or {},
    }


def _missing_feature_columns(db: Engine) -> frozenset[str]:
    """The `ADDED_FEATURE_COLUMNS` a store made by an earlier saescope lacks (none when the store
    has no features table yet or cannot be inspected: then the current schema is assumed)."""
    try:
        present = {c["name"] for c in inspect(db).get_columns(FeatureRow.__tablename__)}
    except SQLAlchemyError:
        return frozenset()
    return frozenset(n for n in ADDED_FEATURE_COLUMNS if n not in present)


def _feature_statement(missing_feature_columns: frozenset[str] = frozenset()) -> Any:
    """The query of one feature row of a ready dictionary, leaving out `missing_feature_columns`."""
    columns = [c for c in FeatureRow.__table__.c if c.name not in missing_feature_columns]
    return (
        select(*columns, DictionaryRow.display_prefix)
        .join(DictionaryRow, DictionaryRow.id == FeatureRow.dictionary_id)
        .where(FeatureRow.dictionary_id == bindparam("dictionary_id"), FeatureRow.index == bindparam("index"),
               DictionaryRow.status == _READY)
    )


def _build_statements() -> dict[str, Any]:
    """The hot-path queries, built once with bound parameters (statement construction costs more
    than the indexed lookups themselves)."""
    d, i, g = bindparam("dictionary_id"), bindparam("index"), bindparam("group")
    feature = _feature_statement()
    explanations = (
        select(
            ExplanationRow.id,
            ExplanationRow.text,
            ExplanationRow.method,
            ExplanationRow.explainer,
            ExplanationRow.score_top_random,
            ExplanationRow.score_top,
            ExplanationRow.score_random,
        )
        .where(ExplanationRow.dictionary_id == d, ExplanationRow.feature_index == i)
        .order_by(ExplanationRow.score_top_random.desc().nulls_last(), ExplanationRow.id)
    )
    groups = (
        select(ExampleRow.group, func.min(ExampleRow.group_label), func.count())
        .where(ExampleRow.dictionary_id == d, ExampleRow.feature_index == i)
        .group_by(ExampleRow.group)
    )
    examples = (
        select(
            ExampleRow.group,
            ExampleRow.group_label,
            ExampleRow.rank,
            ExampleRow.context_id,
            ExampleRow.max_activation,
            cast(ExampleRow.activations, Text).label("activations"),
            ContextRow.doc_id,
            cast(ContextRow.tokens, Text).label("tokens"),
            DictionaryRow.model_id,
        )
        .join(DictionaryRow, DictionaryRow.id == ExampleRow.dictionary_id)
        .join(ContextRow, ContextRow.id == ExampleRow.context_id)
        .where(ExampleRow.dictionary_id == d, ExampleRow.feature_index == i, DictionaryRow.status == _READY)
    )
    page = (
        select(FeaturePageRow.body)
        .join(DictionaryRow, DictionaryRow.id == FeaturePageRow.dictionary_id)
        .where(FeaturePageRow.dictionary_id == d, FeaturePageRow.index == i, DictionaryRow.status == _READY)
    )
    briefs = select(
        DictionaryRow.id, DictionaryRow.model_id, DictionaryRow.hook_name, DictionaryRow.d_sae,
        DictionaryRow.weights_path, DictionaryRow.created_at,
    ).where(DictionaryRow.status == _READY)
    return {
        "brief": briefs.where(DictionaryRow.id == d),
        "briefs": briefs,
        "page": page,
        "feature": feature,
        "explanations": explanations,
        "groups": groups,
        "examples": examples,
        "examples_group": examples.where(ExampleRow.group == g),
    }


def _brief(row: Any) -> dict[str, Any]:
    return {**row, "created_at": _aware(row["created_at"])}


def _recent(cache: dict[Any, tuple[float, Any]], key: Any, load: Callable[[], Any], limit: int = 1024) -> Any:
    """`cache[key]`'s value when it is at most `BRIEF_TTL_S` old, else `load()`'s (stored; the whole
    cache is dropped once it holds `limit` keys). An exception from `load` stores nothing."""
    now = time.monotonic()
    cached = cache.get(key)
    if cached is not None and now - cached[0] < BRIEF_TTL_S:
        return cached[1]
    value = load()
    if len(cache) >= limit:
        cache.clear()
    cache[key] = (now, value)
    return value


class StoreReader:
    """Read-only access to one atlas store. Thread-safe: each call takes its own connection.

    Caches only what cannot change while the store is served: a model's vocabulary, feature labels
    keyed by the dictionary's publication time, and token-string JSON of contexts keyed by their
    token ids (bounded); and, for at most `BRIEF_TTL_S`, the briefs of the dictionaries that live
    requests look up (by id, or all of a model's).
    """

    def __init__(self, db: Engine) -> None:
        self.db = db
        self._vocab: dict[str, list[str]] = {}
        self._vocab_lock = threading.Lock()
        self._vocab_json_cache: dict[str, list[str]] = {}
        self._q = _build_statements()
        self._feature_q: Any | None = None  # the feature query for this store's columns, set on first use
        self._labels_cache: dict[tuple[str, str], list[str]] = {}
        self._fragments: dict[tuple[str, str], str] = {}
        self._briefs: dict[str, tuple[float, Any]] = {}  # id -> (monotonic time, brief)
        self._model_briefs: dict[str | None, tuple[float, Any]] = {}  # model id -> (time, its briefs)
        self._pages_table_seen_at: float | None = None  # monotonic time the pages table was last looked for
        self._has_pages_table = False
        self._has_scores_table: bool | None = None

    @classmethod
    def from_url(cls, url: str) -> StoreReader:
        return cls(create_reader_database(url))

    def close(self) -> None:
        self.db.dispose()

    # ------------------------------------------------------------------ models and dictionaries

    def list_models(self) -> list[dict[str, Any]]:
        """Every model that has at least one ready dictionary, or every model when none has."""
        with self.db.connect() as conn:
            rows = conn.execute(select(*_MODEL_COLUMNS).order_by(ModelRow.id)).mappings().all()
            return [self._with_stored_context_length(conn, _model_dict(r)) for r in rows]

    @staticmethod
    def _with_stored_context_length(conn: Any, model: dict[str, Any]) -> dict[str, Any]:
        """`model` with `n_ctx` set to the length of its stored contexts (the model's own context
        length stays in `model_n_ctx`; a model without contexts keeps it as `n_ctx`)."""
        tokens = conn.execute(
            select(ContextRow.tokens).where(ContextRow.model_id == model["id"]).limit(1)
        ).scalar()
        if tokens:
            model["n_ctx"] = len(tokens)
        return model

    def get_model(self, model_id: str) -> dict[str, Any]:
        with self.db.connect() as conn:
            row = conn.execute(select(*_MODEL_COLUMNS).where(ModelRow.id == model_id)).mappings().first()
            if row is None:
                raise NotFoundError(f"model {model_id!r} not found in the store")
            return self._with_stored_context_length(conn, _model_dict(row))

    def vocab(self, model_id: str) -> list[str]:
        """Token id -> display string of a model (cached)."""
        cached = self._vocab.get(model_id)
        if cached is not None:
            return cached
        with self._vocab_lock:
            if model_id not in self._vocab:
                with self.db.connect() as conn:
                    vocab = conn.execute(select(ModelRow.vocab).where(ModelRow.id == model_id)).scalar()
                if vocab is None:
                    raise NotFoundError(f"model {model_id!r} not found in the store")
                self._vocab[model_id] = [str(t) for t in vocab]
            return self._vocab[model_id]

    def list_dictionaries(self, model_id: str | None = None, hook_name: str | None = None) -> list[dict[str, Any]]:
        """Ready dictionaries, ordered by hook point then id."""
        query = select(DictionaryRow).where(DictionaryRow.status == _READY)
        if model_id is not None:
            query = query.where(DictionaryRow.model_id == model_id)
        if hook_name is not None:
            query = query.where(DictionaryRow.hook_name == hook_name)
        with self.db.connect() as conn:
            rows = conn.execute(query.order_by(DictionaryRow.hook_name, DictionaryRow.id)).mappings().all()
        return [_dictionary_dict(r) for r in rows]

    def count_dictionaries(self) -> int:
        with self.db.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(DictionaryRow).where(DictionaryRow.status == _READY)
                ).scalar()
                or 0
            )

    def get_dictionary(self, dictionary_id: str) -> dict[str, Any]:
        """A ready dictionary; NotFoundError otherwise (building ones are invisible)."""
        with self.db.connect() as conn:
            row = conn.execute(
                select(DictionaryRow).where(DictionaryRow.id == dictionary_id, DictionaryRow.status == _READY)
            ).mappings().first()
        if row is None:
            raise NotFoundError(f"dictionary {dictionary_id!r} not found (or not ready)")
        return _dictionary_dict(row)

    def get_dictionary_brief(self, dictionary_id: str) -> dict[str, Any]:
        """What live model work needs of a ready dictionary (id, model_id, hook_name, d_sae,
        weights_path, created_at), without decoding its JSON columns; NotFoundError otherwise.

        Answers from a cache at most `BRIEF_TTL_S` old (every live request looks its dictionaries
        up): a re-published or removed dictionary reaches live endpoints within that time."""

        def load() -> dict[str, Any]:
            with self.db.connect() as conn:
                row = conn.execute(self._q["brief"], {"dictionary_id": dictionary_id}).mappings().first()
            if row is None:
                raise NotFoundError(f"dictionary {dictionary_id!r} not found (or not ready)")
            return _brief(row)

        return dict(_recent(self._briefs, dictionary_id, load))

    def ready_dictionary_briefs(self, model_id: str | None) -> list[dict[str, Any]]:
        """Briefs (as `get_dictionary_brief` gives) of the ready dictionaries of `model_id` (of every
        model when None), ordered like `list_dictionaries`. Answers from a cache at most
        `BRIEF_TTL_S` old, for live requests that name no dictionary: `list_dictionaries` decodes
        every metrics column, too much work for every request."""

        def load() -> list[dict[str, Any]]:
            query = self._q["briefs"]
            if model_id is not None:
                query = query.where(DictionaryRow.model_id == model_id)
            with self.db.connect() as conn:
                rows = conn.execute(query.order_by(DictionaryRow.hook_name, DictionaryRow.id)).mappings().all()
            return [_brief(row) for row in rows]

        return [dict(b) for b in _recent(self._model_briefs, model_id, load)]

    # ------------------------------------------------------------------ features

    def list_features(
        self,
        dictionary_id: str,
        sort: SortKey = "index",
        order: SortOrder = "asc",
        min_density: float | None = None,
        max_density: float | None = None,
        dead: bool | None = None,
        pruned: bool | None = None,
        q: str | None = None,
        offset: int = 0,
        limit: int = 50,
        min_max_activation: float | None = None,
        max_max_activation: float | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
    ) -> dict[str, Any]:
        """A filtered, sorted page of feature summaries: {total, offset, limit, items}.

        Range bounds are inclusive and applied in SQL (the (dictionary_id, max_activation) and
        (dictionary_id, score) indexes serve them); a score bound excludes features with a null score.
        `q` searches labels, top tokens and explanation texts (case-insensitive substring).
        Null scores sort last in both orders; ties break by index.
        """
        dictionary = self.get_dictionary(dictionary_id)
        conditions = [FeatureRow.dictionary_id == dictionary_id]
        if min_density is not None:
            conditions.append(FeatureRow.density >= min_density)
        if max_density is not None:
            conditions.append(FeatureRow.density <= max_density)
        if min_max_activation is not None:
            conditions.append(FeatureRow.max_activation >= min_max_activation)
        if max_max_activation is not None:
            conditions.append(FeatureRow.max_activation <= max_max_activation)
        if min_score is not None:  # a comparison with NULL is never true: null scores drop out
            conditions.append(FeatureRow.score >= min_score)
        if max_score is not None:
            conditions.append(FeatureRow.score <= max_score)
        if dead is not None:
            conditions.append(FeatureRow.dead == dead)
        if pruned is not None:
            conditions.append(FeatureRow.pruned == pruned)
        if q:
            pattern = f"%{_escape_like(q.lower())}%"
            explained = (
                select(ExplanationRow.feature_index)
                .where(
                    ExplanationRow.dictionary_id == dictionary_id,
                    func.lower(ExplanationRow.text).like(pattern, escape="\\"),
                )
                .scalar_subquery()
            )
            conditions.append(
                or_(
                    func.lower(FeatureRow.label).like(pattern, escape="\\"),
                    func.lower(FeatureRow.top_tokens).like(pattern, escape="\\"),
                    FeatureRow.index.in_(explained),
                )
            )
        column = {
            "index": FeatureRow.index,
            "density": FeatureRow.density,
            "max_activation": FeatureRow.max_activation,
            "score": FeatureRow.score,
        }[sort]
        ordered = column.desc() if order == "desc" else column.asc()
        order_by = [ordered.nulls_last()] if sort == "score" else [ordered]
        if sort != "index":
            order_by.append(FeatureRow.index.asc())
        with self.db.connect() as conn:
            total = conn.execute(select(func.count()).select_from(FeatureRow).where(*conditions)).scalar() or 0
            rows = conn.execute(
                select(*_SUMMARY_COLUMNS).where(*conditions).order_by(*order_by).offset(offset).limit(limit)
            ).mappings().all()
        prefix = dictionary["display_prefix"]
        return {
            "total": int(total),
            "offset": offset,
            "limit": limit,
            "items": [_summary(r, prefix) for r in rows],
        }

    def get_feature(self, dictionary_id: str, index: int) -> dict[str, Any]:
        """The full record of one feature of a ready dictionary (FeatureDetail shape).

        Three small indexed queries on one connection: the feature row joined with its (ready)
        dictionary, its explanations, and its example groups with counts. Neighbour and match labels
        are stored inline by the precompute.
        """
        params = {"dictionary_id": dictionary_id, "index": index}
        with self.db.connect() as conn:
            row = conn.execute(self._feature_query(), params).mappings().first()
            if row is None:
                self.get_dictionary(dictionary_id)  # raises NotFoundError for the dictionary
                raise NotFoundError(f"feature {index} of dictionary {dictionary_id!r} not found")
            explanations = conn.execute(self._q["explanations"], params).mappings().all()
            groups = conn.execute(self._q["groups"], params).all()
            scores = (explanation_scores(conn, [int(e["id"]) for e in explanations])
                      if explanations and self._scores_table_exists() else {})

        record = _summary(row, row["display_prefix"] or "")
        quantile_edges = row.get("quantile_edges")
        record.update(
            decoder_norm=_finite(row["decoder_norm"]),
            histogram=_histogram(row["histogram"]),
            quantile_edges=[_finite(v) for v in quantile_edges] if isinstance(quantile_edges, list) else None,
            logits_top=_logit_list(row["logits_top"]),
            logits_bottom=_logit_list(row["logits_bottom"]),
            logits_histogram=_histogram(row["logits_histogram"]),
            neighbours=[
                {"index": int(n["index"]), "cosine": _finite(n.get("cosine")), "label": str(n.get("label") or "")}
                for n in (row["neighbours"] or [])
                if isinstance(n, dict) and "index" in n
            ],
            matches=[
                {
                    "dictionary_id": str(m["dictionary_id"]),
                    "index": int(m["index"]),
                    "cosine": _finite(m.get("cosine")),
                    "label": str(m.get("label") or ""),
                }
                for m in (row["matches"] or [])
                if isinstance(m, dict) and "index" in m and "dictionary_id" in m
            ],
            umap_x=_finite(row["umap_x"], None),
            umap_y=_finite(row["umap_y"], None),
            head_norm_share=_head_shares(row.get("head_norm_share")),
            explanations=[
                {
                    "text": e["text"],
                    "method": e["method"],
                    "explainer": e["explainer"] or "",
                    "score_top_random": _finite(e["score_top_random"], None),
                    "score_top": _finite(e["score_top"], None),
                    "score_random": _finite(e["score_random"], None),
                    "scores": [{**sc, "value": _finite(sc["value"], None)} for sc in scores.get(int(e["id"]), [])],
                }
                for e in explanations
            ],
            example_groups=sorted(
                ({"group": g, "label": lbl or "", "count": int(c)} for g, lbl, c in groups),
                key=lambda g: _group_order(g["group"]),
            ),
        )
        return record

    def _feature_query(self) -> Any:
        """The feature query without the columns a store made by an earlier saescope lacks (looked
        up once, on first use, so opening a reader touches no database)."""
        if self._feature_q is None:
            missing = _missing_feature_columns(self.db)
            self._feature_q = _feature_statement(missing) if missing else self._q["feature"]
        return self._feature_q

    def feature_page_json(self, dictionary_id: str, index: int) -> bytes:
        """The feature page rendered live: `{"feature": get_feature(...), "examples": get_examples(...)}`
        as UTF-8 JSON (the FeaturePageView shape)."""
        record = to_json(self.get_feature(dictionary_id, index), inf_nan_mode="null")
        return b'{"feature":' + record + b',"examples":' + self.get_examples_json(dictionary_id, index) + b"}"

    def get_feature_page(self, dictionary_id: str, index: int, accept_gzip: bool) -> tuple[bytes, bool]:
        """(body, is_gzip) of one feature's page: the stored gzip page when there is one (sent as it
        is when `accept_gzip`, else decompressed), else rendered live (not compressed)."""
        stored = self.stored_feature_page(dictionary_id, index)
        if stored is not None:
            return (stored, True) if accept_gzip else (gzip.decompress(stored), False)
        return self.feature_page_json(dictionary_id, index), False

    def stored_feature_page(self, dictionary_id: str, index: int) -> bytes | None:
        """The pre-rendered gzip page of a feature of a ready dictionary, or None when there is none."""
        if "\x00" in dictionary_id or not self._pages_table_exists():
            return None  # a NUL matches nothing; the live rendering path reports it
        # straight through the DBAPI (statement compiled once for the dialect): the hottest read of
        # the API, where SQLAlchemy's per-execute work costs more than the query itself on SQLite
        sql, make_params = self._page_dbapi
        conn = self.db.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, make_params(dictionary_id, index))
                row = cursor.fetchone()
            finally:
                cursor.close()
        finally:
            conn.close()  # back to the pool
        return None if row is None else bytes(row[0])

    @functools.cached_property
    def _page_dbapi(self) -> tuple[str, Any]:
        """(SQL, params(dictionary_id, index)) of the stored-page query for this database's DBAPI."""
        compiled = self._q["page"].compile(dialect=self.db.dialect)
        fixed = compiled.construct_params({"dictionary_id": "", "index": 0})

        def make_params(dictionary_id: str, index: int) -> Any:
            values = {**fixed, "dictionary_id": dictionary_id, "index": index}
            if compiled.positiontup:
                return tuple(values[k] for k in compiled.positiontup)
            return values

        return str(compiled), make_params

    # ------------------------------------------------------------------ interpretability

    def interpretability(self, hook_name: str) -> list[dict[str, Any]]:
        """Every ready dictionary at `hook_name` with its explain runs (summaries per scorer) and its
        score-vs-max-cosine points; [] when there is none (NotFoundError is the caller's choice)."""
        if not self._scores_table_exists():
            return [{"dictionary_id": d["id"], "kind": d["kind"], "architecture": d["architecture"],
                     "d_sae": d["d_sae"], "runs": [], "points": {"index": [], "score": [], "max_cosine": []}}
                    for d in self.list_dictionaries(hook_name=hook_name)]
        out = []
        for d in interpretability.interpret_runs(self.db, hook_name):
            points = interpretability.score_points(self.db, d["id"])
            out.append({
                "dictionary_id": d["id"], "kind": d["kind"], "architecture": d["architecture"], "d_sae": d["d_sae"],
                "runs": [{**r, "created_at": _aware(r["created_at"])} for r in d["runs"]],
                "points": {"index": [p[0] for p in points], "score": [_finite(p[1]) for p in points],
                           "max_cosine": [_finite(p[2], None) for p in points]},
            })
        return out

    def search_features(self, q: str, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """Features of every ready dictionary whose label, top tokens or an explanation contains `q`
        (case-insensitive): {total, offset, limit, items}, best score first."""
        pattern = f"%{_escape_like(q.lower())}%"
        total, rows = interpretability.search_features(self.db, pattern, limit, offset)
        items = [{"dictionary_id": r["dictionary_id"], "index": int(r["index"]), "hook_name": r["hook_name"],
                  "name": _display_name(r["display_prefix"] or "", int(r["index"])), "label": r["label"] or "",
                  "explanation": r["explanation"], "score": _finite(r["score"], None),
                  "density": _finite(r["density"]), "max_activation": _finite(r["max_activation"])} for r in rows]
        return {"total": total, "offset": offset, "limit": limit, "items": items}

    def feature_fragments(self, dictionary_id: str, index: int) -> dict[str, Any]:
        """The fragments one feature was explained and scored on, tokens as display strings:
        {max_activation, sets: {explanation|scoring|random_activating|random: [{doc_id, tokens,
        activations}]}}; NotFoundError when the feature has none stored."""
        brief = self.get_dictionary_brief(dictionary_id)
        self._require_feature(dictionary_id, index)
        stored = interpretability.feature_fragments(self.db, dictionary_id, index) if self._scores_table_exists() else None
        if stored is None:
            raise NotFoundError(f"feature {index} of {dictionary_id!r} has no stored fragments: run saescope explain")
        vocab = self.vocab(brief["model_id"])

        def dense(tokens: list[int], pairs: list[Any]) -> dict[str, Any]:
            acts = [0.0] * len(tokens)
            for pos, value in pairs:
                if 0 <= int(pos) < len(acts):
                    acts[int(pos)] = _finite(value)
            return {"tokens": [vocab[t] if 0 <= t < len(vocab) else str(t) for t in tokens], "activations": acts}

        frags = stored["fragments"]
        sets = {kind: [{"doc_id": f["doc_id"], **dense(f["tokens"], f["activations"])} for f in frags.get(kind, [])]
                for kind in ("explanation", "scoring", "random_activating")}
        shared = stored["random_fragments"]
        sets["random"] = [{"doc_id": s["doc_id"], **dense(s["tokens"], pairs)}
                          for s, pairs in zip(shared, frags.get("random", []))]
        return {"max_activation": _finite(stored["max_activation"]), "sets": sets}

    def _scores_table_exists(self) -> bool:
        """Whether the store has the explanation scores table (looked up once; stores written
        before it existed show explanations without per-scorer scores)."""
        if self._has_scores_table is None:
            self._has_scores_table = has_interpret_tables(self.db)
        return self._has_scores_table

    def _pages_table_exists(self) -> bool:
        """Whether the store has the pre-rendered pages table (stores written before it existed do
        not: their pages render live). Looked for again at most every `PAGES_TABLE_RECHECK_S` while
        absent, so a store upgraded by a publish while served starts using it."""
        if self._has_pages_table:
            return True
        now = time.monotonic()
        if self._pages_table_seen_at is None or now - self._pages_table_seen_at >= PAGES_TABLE_RECHECK_S:
            self._pages_table_seen_at = now
            self._has_pages_table = inspect(self.db).has_table(FeaturePageRow.__tablename__)
        return self._has_pages_table

    def _example_rows(self, dictionary_id: str, index: int, group: str | None) -> list[Any]:
        """Example rows sorted by group then rank; JSON columns come back as their raw text."""
        params: dict[str, Any] = {"dictionary_id": dictionary_id, "index": index}
        statement = self._q["examples"]
        if group is not None:
            params["group"] = group
            statement = self._q["examples_group"]
        with self.db.connect() as conn:
            rows = conn.execute(statement, params).all()
        if not rows:
            # Distinguish "no such feature" (404) from "no examples in this group" ([]).
            self._require_feature(dictionary_id, index)
            return []
        return sorted(rows, key=lambda r: (_group_order(r[0]), r[2]))

    def get_examples(self, dictionary_id: str, index: int, group: str | None = None) -> list[dict[str, Any]]:
        """Examples of one feature (one group or all), ordered by group then rank, with token strings."""
        return json.loads(self.get_examples_json(dictionary_id, index, group))

    def get_examples_json(self, dictionary_id: str, index: int, group: str | None = None) -> bytes:
        """`get_examples` as a UTF-8 JSON array, built without decoding and re-encoding the stored
        activation arrays (the feature page's hot path). Non-finite stored values become 0."""
        rows = self._example_rows(dictionary_id, index, group)
        if not rows:
            return b"[]"
        model_id = rows[0][8]
        parts = []
        for grp, label, rank, context_id, max_act, acts_text, doc_id, tokens_text, _ in rows:
            tokens = self._tokens_fragment(model_id, tokens_text)
            if "N" in acts_text or "I" in acts_text:  # NaN / Infinity are not JSON
                acts_text = json.dumps([_finite(a) for a in json.loads(acts_text)])
            parts.append(
                '{"group":%s,"group_label":%s,"rank":%d,"context_id":%d,"doc_id":%s,"tokens":[%s],'
                '"token_ids":%s,"activations":%s,"max_activation":%r}'
                % (
                    json.dumps(grp), json.dumps(label or ""), int(rank), int(context_id), json.dumps(doc_id or ""),
                    tokens, tokens_text, acts_text, _finite(max_act),
                )
            )
        return ("[" + ",".join(parts) + "]").encode("utf-8")

    def _tokens_fragment(self, model_id: str, tokens_text: str) -> str:
        """The JSON-array body of token strings for a stored context's raw token-id text.

        A pure function of (model, text), cached (bounded): contexts are shared by many features'
        examples, so the same ones come back page after page."""
        key = (model_id, tokens_text)
        cached = self._fragments.get(key)
        if cached is not None:
            return cached
        vocab_json = self._vocab_json(model_id)
        n_vocab = len(vocab_json)
        ids = json.loads(tokens_text)
        if ids and 0 <= min(ids) and max(ids) < n_vocab:
            fragment = ",".join([vocab_json[t] for t in ids])
        else:
            fragment = ",".join(vocab_json[t] if 0 <= t < n_vocab else json.dumps(f"<{t}>") for t in ids)
        if len(self._fragments) >= _FRAGMENT_CACHE_SIZE:
            try:  # oldest first (dicts keep insertion order); a racing thread may have evicted it
                self._fragments.pop(next(iter(self._fragments)))
            except (KeyError, RuntimeError, StopIteration):
                pass
        self._fragments[key] = fragment
        return fragment

    def _vocab_json(self, model_id: str) -> list[str]:
        cached = self._vocab_json_cache.get(model_id)
        if cached is None:
            cached = [json.dumps(t) for t in self.vocab(model_id)]
            self._vocab_json_cache[model_id] = cached
        return cached

    def _require_feature(self, dictionary_id: str, index: int) -> None:
        with self.db.connect() as conn:
            found = conn.execute(
                select(FeatureRow.index)
                .join(DictionaryRow, DictionaryRow.id == FeatureRow.dictionary_id)
                .where(
                    FeatureRow.dictionary_id == dictionary_id,
                    FeatureRow.index == index,
                    DictionaryRow.status == _READY,
                )
            ).first()
        if found is None:
            self.get_dictionary(dictionary_id)
            raise NotFoundError(f"feature {index} of dictionary {dictionary_id!r} not found")

    def feature_labels(self, dictionary_id: str, indices: Sequence[int]) -> dict[int, str]:
        """Labels of some features of one dictionary (missing indices are absent)."""
        unique = sorted({int(i) for i in indices})
        if not unique:
            return {}
        out: dict[int, str] = {}
        with self.db.connect() as conn:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                rows = conn.execute(
                    select(FeatureRow.index, FeatureRow.label).where(
                        FeatureRow.dictionary_id == dictionary_id, FeatureRow.index.in_(chunk)
                    )
                ).all()
                out.update({int(i): lbl or "" for i, lbl in rows})
        return out

    def all_labels(self, dictionary_id: str, version: Any = None) -> list[str]:
        """Every feature label of a dictionary by index, cached per (`dictionary_id`, `version`).

        Pass the dictionary's `created_at` as `version`: a re-published dictionary gets a new one,
        so a stale cache entry is never used. At most 16 dictionaries are kept.
        """
        key = (dictionary_id, str(version))
        cached = self._labels_cache.get(key)
        if cached is not None:
            return cached
        with self.db.connect() as conn:
            rows = conn.execute(
                select(FeatureRow.index, FeatureRow.label)
                .where(FeatureRow.dictionary_id == dictionary_id)
                .order_by(FeatureRow.index)
            ).all()
        labels = [""] * ((rows[-1][0] + 1) if rows else 0)
        for i, label in rows:
            labels[int(i)] = label or ""
        with self._vocab_lock:
            if len(self._labels_cache) >= 16:
                self._labels_cache.pop(next(iter(self._labels_cache)))
            self._labels_cache[key] = labels
        return labels

    # ------------------------------------------------------------------ maps and histograms

    def map_points(self, dictionary_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Features with UMAP coordinates of the given (ready) dictionaries."""
        if not dictionary_ids:
            return []
        with self.db.connect() as conn:
            rows = conn.execute(
                select(
                    FeatureRow.dictionary_id,
                    FeatureRow.index,
                    FeatureRow.umap_x,
                    FeatureRow.umap_y,
                    FeatureRow.density,
                    FeatureRow.label,
                )
                .join(DictionaryRow, DictionaryRow.id == FeatureRow.dictionary_id)
                .where(
                    FeatureRow.dictionary_id.in_(list(dictionary_ids)),
                    DictionaryRow.status == _READY,
                    FeatureRow.umap_x.is_not(None),
                    FeatureRow.umap_y.is_not(None),
                )
                .order_by(FeatureRow.dictionary_id, FeatureRow.index)
            ).all()
        points = []
        for d, i, x, y, density, label in rows:
            x, y = _finite(x, None), _finite(y, None)
            if x is None or y is None:
                continue
            points.append(
                {"dictionary_id": d, "index": int(i), "x": x, "y": y, "density": _finite(density),
                 "label": label or ""}
            )
        return points

    def densities(self, dictionary_id: str) -> list[float]:
        """Firing density of every feature of a ready dictionary, by index."""
        self.get_dictionary(dictionary_id)
        with self.db.connect() as conn:
            rows = conn.execute(
                select(FeatureRow.density).where(FeatureRow.dictionary_id == dictionary_id).order_by(FeatureRow.index)
            ).all()
        return [_finite(r[0]) or 0.0 for r in rows]


def density_histogram(densities: Sequence[float], n_bins: int = 40) -> dict[str, Any]:
    """Histogram of log10 firing density over features that fire; never-firing ones counted apart.

    Bins span [floor(min log10 density), 0] in `n_bins` equal steps: {edges, counts, dead}.
    """
    logs = [math.log10(d) for d in densities if d > 0]
    dead = sum(1 for d in densities if not d > 0)
    if not logs:
        return {"edges": [], "counts": [], "dead": dead}
    low = math.floor(min(logs))
    high = max(0.0, math.ceil(max(logs)))
    if high <= low:
        high = low + 1
    step = (high - low) / n_bins
    edges = [low + i * step for i in range(n_bins + 1)]
    counts = [0] * n_bins
    for v in logs:
        counts[min(int((v - low) / step), n_bins - 1)] += 1
    return {"edges": edges, "counts": counts, "dead": dead}


def _group_order(group: str) -> tuple[int, float, str]:
    if group == "top":
        return (0, 0.0, group)
    if group.startswith("quantile_"):
        try:
            return (1, float(group.split("_", 1)[1]), group)  # quantile_0 is the highest interval
        except ValueError:
            return (1, 0.0, group)
    if group == "random":
        return (3, 0.0, group)
    return (2, 0.0, group)


def _histogram(value: Any) -> dict[str, list[float]]:
    if not isinstance(value, dict):
        return {"edges": [], "counts": []}
    return {
        "edges": [_finite(v) for v in value.get("edges") or []],
        "counts": [_finite(v) for v in value.get("counts") or []],
    }


def _logit_list(value: Any) -> list[dict[str, Any]]:
    out = []
    for item in value or []:
        if isinstance(item, dict) and "token_id" in item:
            out.append(
                {"token": str(item.get("token", "")), "token_id": int(item["token_id"]),
                 "value": _finite(item.get("value"))}
            )
    return out


