"""Fixtures for store tests (tiny random model and contexts from store_helpers)."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text
from transformer_lens import HookedTransformer

from store_helpers import Packed, make_contexts, make_model


@pytest.fixture(scope="session")
def model() -> HookedTransformer:
    return make_model()


@pytest.fixture()
def contexts() -> Packed:
    return make_contexts()


SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


@pytest.fixture()
def pg_url():
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text("select 1"))
    except Exception as exc:  # pragma: no cover - depends on the machine
        admin.dispose()
        pytest.skip(f"no PostgreSQL server reachable at 127.0.0.1:5432 ({type(exc).__name__}: {exc})")
    name = f"saescope_test_{os.getpid()}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"{SERVER}/{name}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
