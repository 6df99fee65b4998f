"""Bulk writes into the store: models, contexts, dictionaries, features, examples; atomic swaps.

Owns every INSERT/UPDATE/DELETE the precompute issues (the API never writes). Rows go in as
executemany batches through SQLAlchemy Core, which works unchanged on SQLite and PostgreSQL
(psycopg 3 "insertmanyvalues"). Visibility: new dictionaries are written with status `building`;
`finalize_dictionaries` flips them to `ready` — or, for a dictionary id that is already ready,
copies the rows written under a temporary id over the old ones — all in ONE transaction, so readers
see either the old atlas or the new one, never a half-written dictionary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import Connection, and_, delete, func, insert, inspect, literal, select, text, update

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

BATCH_ROWS = 2000
BUILDING_SUFFIX = "~building"


def building_id(dictionary_id: str) -> str:
    """Temporary id under which a ready dictionary's replacement is written."""
    return dictionary_id + BUILDING_SUFFIX


def _chunks(rows: Iterable[dict[str, Any]], n: int = BATCH_ROWS) -> Iterable[list[dict[str, Any]]]:
    buf: list[dict[str, Any]] = []
    for r in rows:
        buf.append(r)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


def insert_many(conn: Connection, table: Any, rows: Iterable[dict[str, Any]], n: int = BATCH_ROWS) -> int:
    """executemany-insert `rows` in batches of `n`; returns how many rows."""
    total = 0
    for chunk in _chunks(rows, n):
        conn.execute(insert(table), chunk)
        total += len(chunk)
    return total


def json_float_arrays(values: np.ndarray, decimals: int = 4) -> list[str]:
    """JSON text of each row of `values [m, n]`, rounded to `decimals` (zeros written as 0.0).

    Much faster than json.dumps per row for sparse activations: only non-zeros are formatted.
    """
    q = np.round(np.asarray(values, dtype=np.float64), decimals)
    m, n = q.shape
    rows, cols = np.nonzero(q)
    texts = list(map(repr, q[rows, cols].tolist()))
    cols_l = cols.tolist()
    starts = np.searchsorted(rows, np.arange(m + 1)).tolist()
    zeros = ["0.0"] * n
    all_zero = "[" + ",".join(zeros) + "]"
    out = []
    for i in range(m):
        a, b = starts[i], starts[i + 1]
        if a == b:
            out.append(all_zero)
            continue
        parts = zeros.copy()
        for c, t in zip(cols_l[a:b], texts[a:b]):
            parts[c] = t
        out.append("[" + ",".join(parts) + "]")
    return out


EXAMPLE_COLUMNS = ("dictionary_id", "feature_index", "group", "group_label", "rank", "context_id",
                   "max_activation", "activations")


def insert_example_tuples(conn: Connection, rows: Iterable[tuple[Any, ...]], n: int = 5000) -> int:
    """Fast executemany of example rows given as tuples in `EXAMPLE_COLUMNS` order, with
    `activations` already JSON text (see `json_float_arrays`). Bypasses per-row SQLAlchemy
    compilation; works on SQLite (qmark) and psycopg (format) parameter styles."""
    q = conn.dialect.identifier_preparer.quote
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {q(ExampleRow.__tablename__)} ({', '.join(q(c) for c in EXAMPLE_COLUMNS)}) "
           f"VALUES ({', '.join([mark] * len(EXAMPLE_COLUMNS))})")
    total = 0
    buf: list[tuple[Any, ...]] = []
    for r in rows:
        buf.append(r)
        if len(buf) >= n:
            conn.exec_driver_sql(sql, buf)
            total += len(buf)
            buf = []
    if buf:
        conn.exec_driver_sql(sql, buf)
        total += len(buf)
    return total


def upsert_model(conn: Connection, row: dict[str, Any]) -> None:
    """Insert the model row or update it in place (keeps its contexts)."""
    t = ModelRow.__table__
    exists = conn.execute(select(t.c.id).where(t.c.id == row["id"])).first()
    if exists:
        conn.execute(update(t).where(t.c.id == row["id"]).values(**{k: v for k, v in row.items() if k != "id"}))
    else:
        conn.execute(insert(t).values(**row))


def insert_contexts(
    conn: Connection, model_id: str, tokens: np.ndarray, doc_ids: Sequence[str], offsets: np.ndarray
) -> np.ndarray:
    """Store contexts `tokens [m, n_ctx]` (reusing identical stored ones of the model); returns their ids [m]."""
    t = ContextRow.__table__
    m = tokens.shape[0]
    ids = np.full(m, -1, dtype=np.int64)
    if m == 0:
        return ids
    wanted = {(str(d), int(o)): i for i, (d, o) in enumerate(zip(doc_ids, offsets))}
    tok_lists = tokens.tolist()
    existing = conn.execute(select(t.c.id, t.c.doc_id, t.c.offset, t.c.tokens).where(t.c.model_id == model_id))
    for cid, doc, off, toks in existing:
        i = wanted.get((doc, int(off)))
        if i is not None and ids[i] < 0 and list(toks) == tok_lists[i]:
            ids[i] = cid
    new = np.nonzero(ids < 0)[0]
    if len(new):
        start = int(conn.execute(select(func.coalesce(func.max(t.c.id), 0))).scalar_one()) + 1
        ids[new] = np.arange(start, start + len(new))
        insert_many(
            conn,
            t,
            (
                {"id": int(ids[i]), "model_id": model_id, "doc_id": str(doc_ids[i]), "offset": int(offsets[i]),
                 "tokens": tok_lists[i]}
                for i in new
            ),
        )
    return ids


def delete_dictionary(conn: Connection, dictionary_id: str, keep_explanations: bool = False) -> None:
    """Remove a dictionary with its features, examples, pages (and explanations unless kept)."""
    delete_feature_pages(conn, [dictionary_id])
    conn.execute(delete(ExampleRow.__table__).where(ExampleRow.__table__.c.dictionary_id == dictionary_id))
    if not keep_explanations:
        conn.execute(delete(ExplanationRow.__table__).where(ExplanationRow.__table__.c.dictionary_id == dictionary_id))
    conn.execute(delete(FeatureRow.__table__).where(FeatureRow.__table__.c.dictionary_id == dictionary_id))
    conn.execute(delete(DictionaryRow.__table__).where(DictionaryRow.__table__.c.id == dictionary_id))


def delete_feature_pages(conn: Connection, dictionary_ids: Sequence[str]) -> None:
    """Drop the pre-rendered pages of `dictionary_ids` (they re-render live until refilled)."""
    if dictionary_ids:
        t = FeaturePageRow.__table__
        conn.execute(delete(t).where(t.c.dictionary_id.in_(list(dictionary_ids))))


def dictionary_status(conn: Connection, dictionary_id: str) -> str | None:
    t = DictionaryRow.__table__
    return conn.execute(select(t.c.status).where(t.c.id == dictionary_id)).scalar_one_or_none()


def add_missing_feature_columns(conn: Connection) -> list[str]:
    """Add the nullable `features` columns (`ADDED_FEATURE_COLUMNS`) that a store made by an earlier
    saescope lacks, inside the caller's transaction; returns the names added."""
    present = {c["name"] for c in inspect(conn).get_columns(FeatureRow.__tablename__)}
    quote = conn.dialect.identifier_preparer.quote
    added = []
    for name in ADDED_FEATURE_COLUMNS:
        if name in present:
            continue
        column_type = FeatureRow.__table__.c[name].type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {quote(FeatureRow.__tablename__)} ADD COLUMN {quote(name)} {column_type}"))
        added.append(name)
    return added


def write_dictionary(
    conn: Connection,
    row: dict[str, Any],
    features: Iterable[dict[str, Any]],
    examples: Iterable[tuple[Any, ...]],
) -> tuple[int, int]:
    """Insert one dictionary (status forced to `building`) with its feature and example rows
    (examples as `EXAMPLE_COLUMNS` tuples, activations as JSON text).

    `row["id"]` is the id written under; any earlier rows under that id are removed first.
    Returns (n_features, n_examples).
    """
    did = row["id"]
    add_missing_feature_columns(conn)
    delete_dictionary(conn, did)
    conn.execute(insert(DictionaryRow.__table__).values(**{**row, "status": "building"}))
    n_f = insert_many(conn, FeatureRow.__table__, features)
    n_e = insert_example_tuples(conn, examples)
    return n_f, n_e


def _copy_rows(conn: Connection, table: Any, src_id: str, dst_id: str, key: str = "dictionary_id",
               skip: Sequence[str] = ()) -> None:
    cols = [c for c in table.c if c.name not in skip]
    sel = select(*[literal(dst_id).label(c.name) if c.name == key else c for c in cols]).where(table.c[key] == src_id)
    conn.execute(insert(table).from_select([c.name for c in cols], sel))


def finalize_dictionaries(conn: Connection, targets: Sequence[tuple[str, str, bool]]) -> None:
    """Make dictionaries visible, inside the caller's (single) transaction.

    `targets`: (final_id, written_id, keep_explanations). When written_id == final_id the status flips
    to ready; otherwise the rows written under the temporary id replace the final id's rows.
    """
    d = DictionaryRow.__table__
    for final_id, written_id, keep_expl in targets:
        if written_id == final_id:
            conn.execute(update(d).where(d.c.id == final_id).values(status="ready"))
            continue
        expl = ExplanationRow.__table__
        saved = []
        if keep_expl:
            saved = [dict(r._mapping) for r in conn.execute(select(expl).where(expl.c.dictionary_id == final_id))]
        delete_dictionary(conn, final_id)
        _copy_rows(conn, d, written_id, final_id, key="id")
        conn.execute(
            update(d).where(d.c.id == final_id).values(status="ready", created_at=datetime.now(timezone.utc))
        )
        _copy_rows(conn, FeatureRow.__table__, written_id, final_id)
        _copy_rows(conn, ExampleRow.__table__, written_id, final_id, skip=("id",))
        delete_dictionary(conn, written_id)
        if saved:
            n_feat = conn.execute(
                select(func.count()).select_from(FeatureRow.__table__).where(FeatureRow.__table__.c.dictionary_id == final_id)
            ).scalar_one()
            saved = [{k: v for k, v in r.items() if k != "id"} for r in saved if r["feature_index"] < n_feat]
            insert_many(conn, expl, saved)


def delete_orphan_contexts(conn: Connection, model_id: str) -> None:
    """Drop contexts of `model_id` no example references (left by failed or replaced runs)."""
    c, e = ContextRow.__table__, ExampleRow.__table__
    used = select(e.c.context_id).where(e.c.context_id == c.c.id).exists()
    conn.execute(delete(c).where(and_(c.c.model_id == model_id, ~used)))
