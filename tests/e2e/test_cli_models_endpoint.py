"""`GET /api/v1/models` of a served atlas reports the length of the stored contexts as `n_ctx`
(what examples and the map are built from), and the model's own context length as `model_n_ctx`:
a model with an 8192-token context whose atlas holds 16-token contexts says 16, not 8192."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from saescope.api.app import create_app
from saescope.api.settings import ApiSettings
from saescope.store.database import create_database, init_schema
from saescope.store.schema import ContextRow, ModelRow


def _store(tmp_path: Path, context_tokens: int | None) -> str:
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    db = create_database(url)
    init_schema(db)
    with db.begin() as conn:
        conn.execute(ModelRow.__table__.insert().values(
            id="m", source="local", location="model", tl_config={"d_vocab": 100, "n_layers": 2, "d_model": 8},
            tokenizer="model", vocab=[str(i) for i in range(100)], n_ctx=8192, metrics={},
        ))
        if context_tokens is not None:
            conn.execute(ContextRow.__table__.insert().values(
                model_id="m", doc_id="d", offset=0, tokens=list(range(context_tokens))))
    db.dispose()
    return url


def _models(tmp_path: Path, url: str) -> list[dict]:
    settings = ApiSettings(store_url=url, atlas_root=tmp_path, device="cpu")
    with TestClient(create_app(settings)) as client:
        response = client.get("/api/v1/models")
    assert response.status_code == 200
    return response.json()


def test_models_report_the_stored_context_length_and_the_models_own(tmp_path: Path) -> None:
    [model] = _models(tmp_path, _store(tmp_path, context_tokens=16))
    assert (model["n_ctx"], model["model_n_ctx"]) == (16, 8192)


def test_a_model_without_stored_contexts_reports_its_own_length(tmp_path: Path) -> None:
    [model] = _models(tmp_path, _store(tmp_path, context_tokens=None))
    assert (model["n_ctx"], model["model_n_ctx"]) == (8192, 8192)
