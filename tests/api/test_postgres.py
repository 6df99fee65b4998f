"""The API on a PostgreSQL store (fresh database on 127.0.0.1:5432): same answers, still read-only."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from api_atlas import EXPLAINED_FEATURE, make_settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
API = "/api/v1"


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


def test_a_schema_given_in_the_url_is_used_by_the_server(tmp_path, tiny_lm_dir, tiny_lm, pg_database):
    from fastapi.testclient import TestClient
    from sqlalchemy import create_engine

    from api_atlas import build_tiny_atlas
    from saescope.api.app import create_app

    database = pg_database()
    admin = create_engine(database, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text("CREATE SCHEMA atlas_schema"))
    url = f"{database}?options=-csearch_path%3Datlas_schema"
    atlas = build_tiny_atlas(tmp_path / "atlas", tiny_lm_dir, tiny_lm, store_url=url)
    with admin.connect() as c:  # the atlas went into the schema, nothing into public
        assert c.execute(text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")).scalar() == 0
    admin.dispose()
    app = create_app(make_settings(atlas))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get(f"{API}/health").json()["dictionaries"] == 2
        assert {d["id"] for d in client.get(f"{API}/dictionaries").json()} == {"mlp-sae", "resid-sae"}
    with pytest.raises(DBAPIError, match="read-only"):  # still read-only with the URL's own options
        with app.state.saescope.reader.db.begin() as conn:
            conn.execute(text("UPDATE dictionaries SET status = 'ready'"))


def test_a_server_whose_store_cannot_be_read_warns_at_start(pg_atlas, pg_database, caplog):
    from fastapi.testclient import TestClient

    from saescope.api.app import create_app

    empty = pg_database()  # no tables: every read fails
    settings = make_settings(pg_atlas).model_copy(update={"store_url": empty})
    with caplog.at_level("WARNING", logger="saescope.api"):
        with TestClient(create_app(settings), raise_server_exceptions=False):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("cannot be read" in w for w in warnings), warnings
