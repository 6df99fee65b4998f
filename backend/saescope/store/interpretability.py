"""Persisting and reading automated-interpretability results: explanations, scores, fragments, runs.

Owns the one transaction that replaces a dictionary's explanations by one explainer (explanation
rows, their `explanation_scores`, the features' `feature_fragments`, `features.score` and the
`interpret_runs` row with its summaries; `features.score` becomes the best simulation score of the
feature's explanations), dropping the dictionary's pre-rendered pages in that same
transaction and refilling them afterwards (`pages.fill_feature_pages`), as a publish does; and the
read queries of the comparison page and of the search across dictionaries. Values arrive computed:
this module does no statistics and imports no other stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, inspect, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from saescope.errors import NotFoundError
from saescope.store.schema import (
    DictionaryRow,
    ExplanationRow,
    ExplanationScoreRow,
    FeatureFragmentsRow,
    FeatureRow,
    InterpretRunRow,
)
from saescope.store.writer import delete_feature_pages, insert_many

_READY = "ready"
INTERPRET_TABLES = (ExplanationScoreRow.__tablename__, FeatureFragmentsRow.__tablename__,
                    InterpretRunRow.__tablename__)


@dataclass
class ExplanationRecord:
    """One feature's explanation with its scores (dicts with the `explanation_scores` columns but ids)."""

    index: int
    text: str
    method: str
    explainer: str
    scores: list[dict[str, Any]] = field(default_factory=list)
    score_top_random: float | None = None
    score_top: float | None = None
    score_random: float | None = None


@dataclass
class InterpretRecord:
    """Everything one explain run of one dictionary writes."""

    dictionary_id: str
    explainer: str
    scorers: list[str]
    config: dict[str, Any]
    summary: list[dict[str, Any]]
    random_fragments: list[dict[str, Any]]
    explanations: list[ExplanationRecord]
    fragments: list[dict[str, Any]]  # {"index", "max_activation", "fragments"}
    created_at: datetime | None = None


def write_interpretations(db: Engine, record: InterpretRecord, fill_pages: bool = True) -> int:
    """Replace `record.explainer`'s explanations of one ready dictionary in one transaction (pages
    dropped in it, refilled after); returns the explanations written. NotFoundError when the
    dictionary is not ready."""
    d, e, s = DictionaryRow.__table__, ExplanationRow.__table__, ExplanationScoreRow.__table__
    f, fr, run = FeatureRow.__table__, FeatureFragmentsRow.__table__, InterpretRunRow.__table__
    did = record.dictionary_id
    with db.begin() as conn:
        status = conn.execute(select(d.c.status).where(d.c.id == did)).scalar_one_or_none()
        if status != _READY:
            raise NotFoundError(f"dictionary {did!r} is not a ready dictionary of this store")
        delete_feature_pages(conn, [did])
        old = select(e.c.id).where(e.c.dictionary_id == did, e.c.explainer == record.explainer)
        conn.execute(delete(s).where(s.c.explanation_id.in_(old)))
        conn.execute(delete(e).where(e.c.dictionary_id == did, e.c.explainer == record.explainer))
        rows = [{"dictionary_id": did, "feature_index": x.index, "text": x.text, "method": x.method,
                 "explainer": x.explainer, "score_top_random": x.score_top_random, "score_top": x.score_top,
                 "score_random": x.score_random} for x in record.explanations]
        insert_many(conn, e, rows)
        ids = dict(conn.execute(select(e.c.feature_index, e.c.id)
                                .where(e.c.dictionary_id == did, e.c.explainer == record.explainer)).all())
        insert_many(conn, s, ({**sc, "explanation_id": ids[x.index], "dictionary_id": did, "feature_index": x.index}
                              for x in record.explanations for sc in x.scores))
        conn.execute(delete(fr).where(fr.c.dictionary_id == did))
        insert_many(conn, fr, ({"dictionary_id": did, **row} for row in record.fragments), n=500)
        best = (select(func.max(e.c.score_top_random))
                .where(e.c.dictionary_id == f.c.dictionary_id, e.c.feature_index == f.c["index"]).scalar_subquery())
        conn.execute(update(f).where(f.c.dictionary_id == did).values(score=best))  # the best explanation's score
        conn.execute(delete(run).where(run.c.dictionary_id == did, run.c.explainer == record.explainer))
        run_row: dict[str, Any] = {"dictionary_id": did, "explainer": record.explainer, "scorers": record.scorers,
                                   "config": record.config, "summary": record.summary,
                                   "random_fragments": record.random_fragments}
        if record.created_at is not None:
            run_row["created_at"] = record.created_at
        conn.execute(insert(run).values(**run_row))
    if fill_pages:
        from saescope.store.pages import fill_feature_pages  # pages imports the reader, which imports this module

        fill_feature_pages(db, [did])
    return len(rows)


def has_interpret_tables(db: Engine) -> bool:
    """Whether the store has the interpretability tables (stores written before them do not)."""
    try:
        names = set(inspect(db).get_table_names())
    except SQLAlchemyError:
        return False
    return set(INTERPRET_TABLES) <= names


def explained_dictionaries(db: Engine) -> set[str]:
    """Ids of the dictionaries an explain run has written (empty for a store without the tables)."""
    if not has_interpret_tables(db):
        return set()
    with db.connect() as conn:
        return {r[0] for r in conn.execute(select(InterpretRunRow.__table__.c.dictionary_id))}


def explanation_scores(conn: Any, explanation_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Scores of the given explanations, by explanation id, in scorer/variant order."""
    if not explanation_ids:
        return {}
    s = ExplanationScoreRow.__table__
    rows = conn.execute(
        select(s.c.explanation_id, s.c.scorer, s.c.method, s.c.version, s.c.variant, s.c.value, s.c.n, s.c.nan,
               s.c.failed, s.c.note)
        .where(s.c.explanation_id.in_(list(explanation_ids))).order_by(s.c.explanation_id, s.c.id)
    ).mappings().all()
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        item = {k: r[k] for k in ("scorer", "method", "version", "variant", "value", "n", "nan", "failed", "note")}
        out.setdefault(int(r["explanation_id"]), []).append(item)
    return out


def interpret_runs(db: Engine, hook_name: str) -> list[dict[str, Any]]:
    """The ready dictionaries at `hook_name` with their explain runs (explainer, scorers, summaries)."""
    d, run = DictionaryRow.__table__, InterpretRunRow.__table__
    with db.connect() as conn:
        dicts = conn.execute(
            select(d.c.id, d.c.kind, d.c.architecture, d.c.d_sae, d.c.hook_name)
            .where(d.c.status == _READY, d.c.hook_name == hook_name).order_by(d.c.id)
        ).mappings().all()
        if not dicts:
            return []
        runs = conn.execute(
            select(run.c.dictionary_id, run.c.explainer, run.c.scorers, run.c.summary, run.c.created_at)
            .where(run.c.dictionary_id.in_([x["id"] for x in dicts])).order_by(run.c.dictionary_id, run.c.explainer)
        ).mappings().all()
    by_dict: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_dict.setdefault(r["dictionary_id"], []).append(
            {"explainer": r["explainer"], "scorers": list(r["scorers"] or []), "summary": list(r["summary"] or []),
             "created_at": r["created_at"]})
    return [{**dict(x), "runs": by_dict.get(x["id"], [])} for x in dicts]


def score_points(db: Engine, dictionary_id: str) -> list[tuple[int, float, float | None]]:
    """(index, features.score, highest cosine of its cross-dictionary matches) of every scored feature."""
    f = FeatureRow.__table__
    with db.connect() as conn:
        rows = conn.execute(select(f.c["index"], f.c.score, f.c.matches)
                            .where(f.c.dictionary_id == dictionary_id, f.c.score.is_not(None))
                            .order_by(f.c["index"])).all()
    out = []
    for index, score, matches in rows:
        cosines = [float(m["cosine"]) for m in (matches or []) if isinstance(m, dict) and m.get("cosine") is not None]
        out.append((int(index), float(score), max(cosines) if cosines else None))
    return out


def feature_fragments(db: Engine, dictionary_id: str, index: int) -> dict[str, Any] | None:
    """The stored fragments of one feature ({"max_activation", "fragments", "random_fragments"}: the
    latter the shared random fragments' doc ids and tokens), None when none."""
    fr, run = FeatureFragmentsRow.__table__, InterpretRunRow.__table__
    with db.connect() as conn:
        row = conn.execute(select(fr.c.max_activation, fr.c.fragments)
                           .where(fr.c.dictionary_id == dictionary_id, fr.c["index"] == index)).first()
        shared = conn.execute(select(run.c.random_fragments).where(run.c.dictionary_id == dictionary_id)
                              .order_by(run.c.created_at.desc()).limit(1)).scalar()
    if row is None:
        return None
    return {"max_activation": float(row[0] or 0.0), "fragments": row[1] or {}, "random_fragments": shared or []}


def search_features(db: Engine, pattern: str, limit: int, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """Features of every ready dictionary whose label, top tokens or an explanation contains the
    lower-case LIKE `pattern` (escaped with a backslash): (total, page of rows), best score first."""
    d, f, e = DictionaryRow.__table__, FeatureRow.__table__, ExplanationRow.__table__
    explained = (select(e.c.id).where(e.c.dictionary_id == f.c.dictionary_id, e.c.feature_index == f.c["index"],
                                      func.lower(e.c.text).like(pattern, escape="\\")).exists())
    where = [d.c.status == _READY,
             or_(func.lower(f.c.label).like(pattern, escape="\\"), func.lower(f.c.top_tokens).like(pattern, escape="\\"),
                 explained)]
    base = select(f.c.dictionary_id, f.c["index"], f.c.label, f.c.score, f.c.density, f.c.max_activation,
                  d.c.hook_name, d.c.display_prefix).join(d, d.c.id == f.c.dictionary_id).where(*where)
    with db.connect() as conn:
        total = conn.execute(select(func.count()).select_from(f.join(d, d.c.id == f.c.dictionary_id))
                             .where(*where)).scalar() or 0
        rows = conn.execute(base.order_by(f.c.score.desc().nulls_last(), f.c.dictionary_id, f.c["index"])
                            .offset(offset).limit(limit)).mappings().all()
        ids = [(r["dictionary_id"], r["index"]) for r in rows]
        texts: dict[tuple[str, int], str] = {}
        for did, idx in ids:
            t = conn.execute(select(e.c.text).where(e.c.dictionary_id == did, e.c.feature_index == idx)
                             .order_by(e.c.score_top_random.desc().nulls_last(), e.c.id).limit(1)).scalar()
            if t is not None:
                texts[(did, idx)] = t
    return int(total), [{**dict(r), "explanation": texts.get((r["dictionary_id"], r["index"]), "")} for r in rows]
