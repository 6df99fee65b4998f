"""The API on a PostgreSQL store (fresh database on 127.0.0.1:5432): same answers, still read-only."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from api_atlas import EXPLAINED_FEATURE, build_tiny_atlas, make_settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
API = "/api/v1"


@pytest.fixture(scope="module")
def pg_atlas(tmp_path_factory, tiny_lm_dir, tiny_lm):
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no PostgreSQL server reachable at 127.0.0.1:5432 ({type(exc).__name__})")
    name = f"saescope_api_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        root = tmp_path_factory.mktemp("pg_atlas") / "atlas"
        yield build_tiny_atlas(root, tiny_lm_dir, tiny_lm, store_url=f"{SERVER}/{name}")
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def pg_client(pg_atlas):
    from fastapi.testclient import TestClient

    from saescope.api.app import create_app

    app = create_app(make_settings(pg_atlas))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, app


def test_read_endpoints_work_on_postgresql(pg_client):
    client, _ = pg_client
    assert {d["id"] for d in client.get(f"{API}/dictionaries").json()} == {"mlp-sae", "resid-sae"}
    page = client.get(f"{API}/dictionaries/mlp-sae/features", params={"q": "ZEBRA"}).json()
    assert [f["index"] for f in page["items"]] == [EXPLAINED_FEATURE]
    by_score = client.get(f"{API}/dictionaries/mlp-sae/features", params={"sort": "score", "order": "desc"}).json()
    assert by_score["total"] == 64
    detail = client.get(f"{API}/dictionaries/mlp-sae/features/{EXPLAINED_FEATURE}").json()
    assert detail["explanations"][0]["text"].startswith("Mentions")
    examples = client.get(f"{API}/dictionaries/mlp-sae/features/{EXPLAINED_FEATURE}/examples").json()
    assert examples and examples[0]["activations"][0] == 0.0
    assert client.get(f"{API}/dictionaries/half-built").status_code == 404


def test_live_inference_matches_stored_examples_on_postgresql(pg_client):
    client, app = pg_client
    state = app.state.saescope
    engine = state.holder.engine_for([state.reader.get_dictionary("mlp-sae")])
    for ex in client.get(f"{API}/dictionaries/mlp-sae/features/{EXPLAINED_FEATURE}/examples").json():
        live = engine.feature_activations(ex["token_ids"], ["mlp-sae"])["mlp-sae"][0, :, EXPLAINED_FEATURE]
        assert live.tolist() == pytest.approx(ex["activations"], abs=2e-4)


def test_postgresql_sessions_of_the_server_are_read_only(pg_client):
    _, app = pg_client
    with pytest.raises(DBAPIError, match="read-only"):
        with app.state.saescope.reader.db.begin() as conn:
            conn.execute(text("UPDATE dictionaries SET status = 'ready'"))
