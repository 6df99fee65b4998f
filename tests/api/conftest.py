"""Fixtures for the API tests: `random_sae_atlas` (built by api_atlas.py), an app on it and test clients.

`random_sae_atlas` differs from the suite-wide `demo_atlas` (tests/conftest.py): its SAEs are random
(fixed seeds) rather than trained, and it holds an explanation and a half-built dictionary for the
API to search and to hide.
"""

from __future__ import annotations

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
