"""Every table of an atlas store as portable JSON lines, and back: `write_dump`, `load_dump`.

Owns reading all rows of the atlas tables from a consistent snapshot (SQLite or PostgreSQL) into one
`<table>.jsonl` file per table, and inserting such files into an empty store of either back end in
one transaction. Only published data travels: dictionaries whose status is `ready` and the rows that
belong to them (features, examples, explanations, feature pages); every model and context. Values
are written as JSON: JSON columns as they are, times in ISO 8601, binary columns in base64. The
`meta` table does not travel (the schema version goes into the caller's manifest). Persistence
only: it knows nothing about atlas folders, models or dictionaries' files.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    Table,
    func,
    insert,
    inspect,
    select,
    text,
)

from saescope.errors import ConfigError
from saescope.store.database import init_schema
from saescope.store.schema import Base, DictionaryRow, MetaRow, ModelRow

DUMP_SUFFIX = ".jsonl"
INSERT_BATCH = 2000
READ_BATCH = 2000

RowTransform = Callable[[str, dict[str, Any]], dict[str, Any]]


def dumped_tables() -> list[Table]:
    """The tables a dump holds, parents before children (so inserting in this order meets every
    foreign key)."""
    return [t for t in Base.metadata.sorted_tables if t.name != MetaRow.__tablename__]


def dump_file(folder: Path, table: str) -> Path:
    return Path(folder) / f"{table}{DUMP_SUFFIX}"


@contextmanager
def snapshot(db: Engine) -> Iterator[Connection]:
    """A connection whose reads all see one committed state of the store (a read transaction on
    SQLite, REPEATABLE READ on PostgreSQL), even while a writer publishes."""
    if db.dialect.name == "postgresql":
        with db.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            yield conn
        return
    with db.connect() as conn:
        conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()


def stored_columns(conn: Connection, table: Table) -> list[Column[Any]]:
    """The columns of `table` that the database holds (a store written before a column was added
    lacks it; an import then gives that column its default)."""
    if not inspect(conn).has_table(table.name):
        return []
    present = {c["name"] for c in inspect(conn).get_columns(table.name)}
    return [c for c in table.columns if c.name in present]


def _selection(conn: Connection, table: Table) -> Any:
    """SELECT of the published rows of `table`, in primary-key order."""
    query = select(*stored_columns(conn, table)).order_by(*table.primary_key.columns)
    ready = select(DictionaryRow.id).where(DictionaryRow.status == "ready")
    if table.name == DictionaryRow.__tablename__:
        return query.where(table.c.status == "ready")
    if "dictionary_id" in table.c:
        return query.where(table.c.dictionary_id.in_(ready))
    return query


def read_rows(conn: Connection, table: Table) -> Iterator[dict[str, Any]]:
    """The published rows of `table` as Python values (column name -> value); none when the store
    predates the table."""
    if not stored_columns(conn, table):
        return
    result = conn.execution_options(yield_per=READ_BATCH).execute(_selection(conn, table))
    for row in result.mappings():
        yield dict(row)


def encode_value(column_type: Any, value: Any) -> Any:
    """A column value as a JSON value (datetimes as ISO text, bytes as base64)."""
    if value is None:
        return None
    if isinstance(column_type, DateTime):
        return value.isoformat()
    if isinstance(column_type, LargeBinary):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def decode_value(column_type: Any, value: Any) -> Any:
    """The inverse of `encode_value` (a time without a zone is read as UTC)."""
    if value is None:
        return None
    if isinstance(column_type, DateTime):
        moment = datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if isinstance(column_type, LargeBinary):
        return base64.b64decode(value, validate=True)
    return value


def write_dump(conn: Connection, folder: Path, transform: RowTransform | None = None) -> dict[str, int]:
    """Write every published row of the store to `folder/<table>.jsonl` through `conn` (a
    `snapshot`, so all tables agree); `transform(table, row)` may rewrite a row (Python values)
    before it is written. Returns the number of rows per table."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for table in dumped_tables():
        n = 0
        with dump_file(folder, table.name).open("w", encoding="utf-8") as fh:
            for row in read_rows(conn, table):
                if transform is not None:
                    row = transform(table.name, row)
                encoded = {c.name: encode_value(c.type, row[c.name]) for c in table.columns if c.name in row}
                fh.write(json.dumps(encoded, ensure_ascii=False, separators=(",", ":")) + "\n")
                n += 1
        counts[table.name] = n
    return counts


def store_holds_atlas(conn: Connection) -> bool:
    """Whether the store already holds a model or a dictionary."""
    for table in (ModelRow.__table__, DictionaryRow.__table__):
        if conn.execute(select(func.count()).select_from(table)).scalar_one():
            return True
    return False


def _decoded_rows(path: Path, table: Table) -> Iterator[dict[str, Any]]:
    names = {c.name: c for c in table.columns}
    keys: set[str] | None = None
    with path.open("r", encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path.name} line {number} is not JSON ({exc.msg})") from None
            if not isinstance(raw, dict) or not set(raw) <= set(names) or keys not in (None, set(raw)):
                raise ConfigError(f"{path.name} line {number} does not hold the columns of table {table.name}")
            keys = set(raw)
            try:
                yield {name: decode_value(names[name].type, value) for name, value in raw.items()}
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{path.name} line {number} holds a bad value ({exc})") from None


def _advance_sequences(conn: Connection) -> None:
    """On PostgreSQL, move each integer key's sequence past the imported ids (rows inserted with
    explicit ids leave it at 1)."""
    if conn.dialect.name != "postgresql":
        return
    for table in dumped_tables():
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, Integer) or keys[0].foreign_keys:
            continue
        key = keys[0]
        conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key.name}'), "
                f"COALESCE((SELECT MAX({key.name}) FROM {table.name}), 0) + 1, false)"
            )
        )


def load_dump(db: Engine, folder: Path, expected: dict[str, int]) -> dict[str, int]:
    """Insert the rows of `folder/<table>.jsonl` into the store at `db`, in one transaction.

    The store is created when needed and must hold no model or dictionary yet (ConfigError
    otherwise); a file whose row count differs from `expected[table]` fails the whole load, so a
    reader sees either nothing or every row. Returns the rows inserted per table."""
    init_schema(db)
    counts: dict[str, int] = {}
    with db.begin() as conn:
        if store_holds_atlas(conn):
            raise ConfigError("the target store already holds an atlas: import into an empty database")
        for table in dumped_tables():
            path = dump_file(folder, table.name)
            if not path.is_file():
                raise ConfigError(f"the store dump has no {path.name}")
            n = 0
            batch: list[dict[str, Any]] = []
            for row in _decoded_rows(path, table):
                batch.append(row)
                if len(batch) >= INSERT_BATCH:
                    conn.execute(insert(table), batch)
                    n += len(batch)
                    batch = []
            if batch:
                conn.execute(insert(table), batch)
                n += len(batch)
            if n != expected.get(table.name, 0):
                raise ConfigError(
                    f"{path.name} holds {n} rows where the manifest lists {expected.get(table.name, 0)}"
                )
            counts[table.name] = n
        _advance_sequences(conn)
    return counts
