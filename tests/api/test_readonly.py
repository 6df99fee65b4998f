"""The server is read-only: its store engine refuses writes and serving leaves the store unchanged."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from saescope.store.reader import create_reader_database, readonly_database_url


def test_readonly_url_opens_sqlite_files_with_mode_ro(random_sae_atlas):
    url, _ = readonly_database_url(random_sae_atlas.store_url)
    assert url.startswith("sqlite:///file:") and "mode=ro" in url


def test_writes_through_the_reader_engine_fail(app):
    engine = app.state.saescope.reader.db
    for statement in (
        "INSERT INTO meta (key, value) VALUES ('x', 'y')",
        "UPDATE dictionaries SET status = 'ready'",
        "DELETE FROM features",
    ):
        with pytest.raises(DBAPIError):
            with engine.begin() as conn:
                conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM dictionaries WHERE status = 'building'")).scalar() == 1


def test_serving_requests_leaves_the_store_file_unchanged(client, random_sae_atlas):
    path = random_sae_atlas.root / "atlas.db"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    client.get("/api/v1/dictionaries/mlp-sae/features/3")
    client.get("/api/v1/dictionaries/mlp-sae/features", params={"q": "a", "sort": "score"})
    client.post("/api/v1/inference/feature", json={"text": "a = 1", "dictionary": "mlp-sae", "index": 3})
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_missing_store_file_is_a_clear_error(tmp_path):
    from saescope.errors import NotFoundError

    with pytest.raises(NotFoundError, match="does not exist"):
        create_reader_database(f"sqlite:///{tmp_path / 'none.db'}")
