"""Fixtures for the API tests: `random_sae_atlas` (built by api_atlas.py), an app on it and test clients,
and `pg_atlas`, the same atlas in a fresh PostgreSQL database on 127.0.0.1:5432 (skipped when no
server answers).

`random_sae_atlas` differs from the suite-wide `demo_atlas` (tests/conftest.py): its SAEs are random
(fixed seeds) rather than trained, and it holds an explanation and a half-built dictionary for the
API to search and to hide.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from api_atlas import RandomSAEAtlas, build_tiny_atlas, make_settings


@pytest.fixture(scope="session")
def random_sae_atlas(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path, tiny_lm) -> RandomSAEAtlas:
    root = tmp_path_factory.mktemp("random_sae_atlas") / "atlas"
    return build_tiny_atlas(root, tiny_lm_dir, tiny_lm)


@pytest.fixture(scope="session")
def app(random_sae_atlas: RandomSAEAtlas):
    from saescope.api.app import create_app

    return create_app(make_settings(random_sae_atlas))


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def client_without_fast_path(random_sae_atlas: RandomSAEAtlas):
    """A client of the same atlas with the lean ASGI paths off: every request goes through FastAPI."""
    from fastapi.testclient import TestClient

    from saescope.api.app import create_app

    settings = make_settings(random_sae_atlas).model_copy(update={"fast_paths": False, "preload_engine": False})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The PostgreSQL server URL (no database); skips the test when no server answers."""
    from sqlalchemy import create_engine, text

    admin = create_engine(f"{PG_SERVER}/postgres")
    try:
        with admin.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no PostgreSQL server reachable at 127.0.0.1:5432 ({type(exc).__name__})")
    finally:
        admin.dispose()
    return PG_SERVER


@pytest.fixture(scope="session")
def pg_database(pg_server: str):
    """A function making fresh PostgreSQL databases (URL of each), all dropped at the end."""
    from sqlalchemy import create_engine, text

    admin = create_engine(f"{pg_server}/postgres", isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make() -> str:
        name = f"saescope_api_{uuid.uuid4().hex[:10]}"
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return f"{pg_server}/{name}"

    yield make
    with admin.connect() as c:
        for name in made:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_atlas(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path, tiny_lm, pg_database) -> RandomSAEAtlas:
    """`random_sae_atlas`'s content in a fresh PostgreSQL database."""
    root = tmp_path_factory.mktemp("pg_atlas") / "atlas"
    return build_tiny_atlas(root, tiny_lm_dir, tiny_lm, store_url=pg_database())
