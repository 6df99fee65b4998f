"""The OpenAPI page works offline: Swagger UI's files come from the server, not a CDN."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_docs_page_loads_swagger_ui_from_the_server_itself(random_sae_atlas) -> None:
    from saescope.api.app import ApiSettings, create_app

    app = create_app(ApiSettings(store_url=random_sae_atlas.store_url, atlas_root=random_sae_atlas.root, device="cpu"))
    with TestClient(app) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert "/vendor/swagger/swagger-ui-bundle.js" in page.text
        assert "cdn" not in page.text.lower()
        bundle = client.get("/vendor/swagger/swagger-ui-bundle.js")
        assert bundle.status_code == 200 and len(bundle.content) > 100_000
        assert client.get("/openapi.json").json()["info"]["title"] == "saescope"
