"""Pre-rendered feature pages: the body of `GET .../features/{index}/page` per feature, stored gzip.

Owns filling the `feature_pages` table. A page is exactly what `StoreReader.feature_page_json`
renders live (the feature record and every example), compressed once at publish time so the server
answers the page people open most with one indexed read and no JSON work, sending the stored gzip
bytes as they are to clients that accept gzip. The table is a cache: a missing row renders live, so
a writer that changes what a page shows deletes those rows in the same transaction and calls
`fill_feature_pages` afterwards. Filling is idempotent and resumable (only missing rows are
rendered) and skips a dictionary that was replaced while its pages were being rendered.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence

from sqlalchemy import Engine, exists, insert, select
from tqdm import tqdm

from saescope.store.database import create_database, init_schema
from saescope.store.reader import StoreReader
from saescope.store.schema import DictionaryRow, FeaturePageRow, FeatureRow

PAGE_GZIP_LEVEL = 4  # the size/time trade-off is in docs/benchmarks.md
PAGES_PER_TRANSACTION = 256


def compress_page(body: bytes) -> bytes:
    """The stored form of a rendered page (gzip without a timestamp: same input, same bytes)."""
    return gzip.compress(body, PAGE_GZIP_LEVEL, mtime=0)


def ensure_feature_pages(store_url: str, progress: bool = False) -> int:
    """Give the store at `store_url` every page it lacks (adding the pages table to a store written
    before it existed); a no-op costing one query per dictionary when complete. Returns pages written."""
    db = create_database(store_url)
    try:
        init_schema(db)
        return fill_feature_pages(db, progress=progress)
    finally:
        db.dispose()


def missing_pages(db: Engine, dictionary_ids: Sequence[str] | None = None) -> dict[str, list[int]]:
    """Feature indices without a stored page, per ready dictionary (all, or those in `dictionary_ids`)."""
    d, f, p = DictionaryRow.__table__, FeatureRow.__table__, FeaturePageRow.__table__
    query = select(d.c.id).where(d.c.status == "ready").order_by(d.c.id)
    if dictionary_ids is not None:
        query = query.where(d.c.id.in_(list(dictionary_ids)))
    has_page = exists(select(p.c.index).where(p.c.dictionary_id == f.c.dictionary_id, p.c.index == f.c.index))
    out: dict[str, list[int]] = {}
    with db.connect() as conn:
        for did in conn.execute(query).scalars():
            indices = conn.execute(
                select(f.c.index).where(f.c.dictionary_id == did, ~has_page).order_by(f.c.index)
            ).scalars().all()
            if indices:
                out[did] = [int(i) for i in indices]
    return out


def fill_feature_pages(
    db: Engine, dictionary_ids: Sequence[str] | None = None, progress: bool = False
) -> int:
    """Render, compress and store every missing page of the ready dictionaries (or of
    `dictionary_ids`); returns how many pages were written. Safe to interrupt and re-run."""
    todo = missing_pages(db, dictionary_ids)
    if not todo:
        return 0
    reader = StoreReader(db)
    d, p = DictionaryRow.__table__, FeaturePageRow.__table__
    written = 0
    bar = tqdm(total=sum(len(v) for v in todo.values()), desc="feature pages", disable=not progress)
    try:
        for did, indices in todo.items():
            with db.connect() as conn:
                rendered_for = conn.execute(select(d.c.created_at).where(d.c.id == did)).scalar_one()
            for start in range(0, len(indices), PAGES_PER_TRANSACTION):
                chunk = indices[start : start + PAGES_PER_TRANSACTION]
                rows = [
                    {"dictionary_id": did, "index": i, "body": compress_page(reader.feature_page_json(did, i))}
                    for i in chunk
                ]
                with db.begin() as conn:
                    now = conn.execute(
                        select(d.c.created_at).where(d.c.id == did, d.c.status == "ready")
                    ).scalar_one_or_none()
                    if now != rendered_for:  # replaced (or removed) meanwhile: its pages are for the old rows
                        break
                    conn.execute(insert(p), rows)
                written += len(rows)
                bar.update(len(rows))
    finally:
        bar.close()
    return written
