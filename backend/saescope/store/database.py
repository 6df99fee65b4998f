"""Opening the atlas database and creating its schema: `create_database(url)`, `init_schema(db)`.

Owns the connection settings of both back ends: SQLite files in WAL mode (readers never block the
writer and see only committed transactions) with foreign keys on, a busy timeout and a larger page
cache; PostgreSQL through psycopg 3 (`postgresql://` URLs are upgraded to `postgresql+psycopg://`).
It creates tables and indexes but writes no data rows other than the schema version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import URL, make_url

from saescope.errors import ConfigError
from saescope.store.schema import SCHEMA_VERSION, Base, MetaRow


def normalise_url(url: str) -> str:
    """`postgresql://` / `postgres://` -> `postgresql+psycopg://`; other URLs unchanged."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def parse_store_url(url: str) -> tuple[str, URL]:
    """(normalised URL, parsed URL) of a store URL; ConfigError when it is not a database URL."""
    url = normalise_url(str(url))
    try:
        return url, make_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError
        raise ConfigError(f"not a database URL: {url!r}; use sqlite:///PATH or postgresql+psycopg://...") from exc


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.execute("PRAGMA cache_size=-65536")  # 64 MiB
    cur.close()


def create_database(url: str, **kwargs: Any) -> Engine:
    """A SQLAlchemy Engine (named `db` in saescope) for a store URL (`sqlite:///path/atlas.db` or `postgresql+psycopg://...`).

    SQLite: creates the parent folder, turns on WAL, foreign keys and a 30 s busy timeout.
    Raises ConfigError for URLs of other databases.
    """
    url, parsed = parse_store_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30})
        db = create_engine(url, **kwargs)
        event.listen(db, "connect", _sqlite_pragmas)
        return db
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)
    raise ConfigError(f"unsupported store database {backend!r}: use SQLite or PostgreSQL")


def init_schema(db: Engine) -> None:
    """Create every table and index that does not exist yet and record the schema version."""
    Base.metadata.create_all(db)
    with db.begin() as conn:
        row = conn.execute(select(MetaRow.value).where(MetaRow.key == "schema_version")).first()
        if row is None:
            conn.execute(MetaRow.__table__.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
