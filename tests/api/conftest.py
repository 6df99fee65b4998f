"""Fixtures for API tests: the tiny atlas (see api_atlas.py), an app on it and a test client."""

from __future__ import annotations

from pathlib import Path

import pytest

from api_atlas import TinyAtlas, build_tiny_atlas, make_settings


@pytest.fixture(scope="session")
def tiny_atlas(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path, tiny_lm) -> TinyAtlas:
    root = tmp_path_factory.mktemp("api_atlas") / "atlas"
    return build_tiny_atlas(root, tiny_lm_dir, tiny_lm)


@pytest.fixture(scope="session")
def app(tiny_atlas: TinyAtlas):
    from saescope.api.app import create_app

    return create_app(make_settings(tiny_atlas))


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def client_without_fast_path(tiny_atlas: TinyAtlas):
    """A client of the same atlas with the lean ASGI paths off: every request goes through FastAPI."""
    from fastapi.testclient import TestClient

    from saescope.api.app import create_app

    settings = make_settings(tiny_atlas).model_copy(update={"fast_paths": False, "preload_engine": False})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c
