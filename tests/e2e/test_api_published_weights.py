"""The live API serves only the weights that were published, and its error bodies name no server path.

A tiny atlas with one SAE is published; then its weights file is replaced, removed or poisoned with
NaN before the server first loads it. Live endpoints answer 409 with the reason and a location
relative to the atlas, never the server's absolute path.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from saescope.analysis.config import PrecomputeConfig
from saescope.atlas_layout import AtlasLayout
from saescope.corpus.packing import pack_documents
from saescope.corpus.stdlib import stdlib_documents
from saescope.dictionaries.architectures.standard import StandardSAE
from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.saelens_format import WEIGHTS_FILE, save_dictionary
from saescope.pipeline.publish import DictionaryEntry, ModelRecord, precompute_and_publish

HOOK = "blocks.0.mlp.hook_post"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path, tiny_lm) -> Path:
    root = tmp_path_factory.mktemp("published") / "atlas"
    layout = AtlasLayout(root=root)
    shutil.copytree(tiny_lm_dir, layout.model_dir)
    sae = StandardSAE(int(tiny_lm.cfg.d_mlp), 16, DictionaryMetadata(hook_name=HOOK))
    sae.reset_parameters(torch.Generator().manual_seed(0))
    save_dictionary(sae, layout.dictionary_dir("sae"))
    n_ctx = int(tiny_lm.cfg.n_ctx)
    contexts = pack_documents(stdlib_documents("heldout", max_files=4), tiny_lm.tokenizer, n_ctx, max_contexts=16)
    precompute_and_publish(
        layout.sqlite_url, tiny_lm,
        ModelRecord(id="tiny", source="builtin", location="model", tokenizer="model/tokenizer"),
        [DictionaryEntry(id="sae", dictionary=sae, weights_path="dictionaries/sae")], contexts,
        config=PrecomputeConfig(top_k=3, n_intervals=2, examples_per_interval=1, n_random=1, progress=False,
                                device="cpu", umap=False),
        work_dir=layout.work_dir, atlas_root=root,
    )
    return root


@pytest.fixture()
def atlas(published: Path, tmp_path: Path) -> Path:
    root = tmp_path / "atlas"
    shutil.copytree(published, root)
    return root


def _client(root: Path) -> Iterator:
    from fastapi.testclient import TestClient

    from saescope.api.app import create_app
    from saescope.api.settings import ApiSettings

    settings = ApiSettings(store_url=AtlasLayout(root=root).sqlite_url, atlas_root=root, device="cpu",
                           preload_engine=False, torch_threads=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _activations(root: Path):
    for client in _client(root):
        return client.post("/api/v1/inference/activations", json={"text": "def f(x): return x", "dictionaries": ["sae"]})


def _weights(root: Path) -> Path:
    return root / "dictionaries" / "sae" / WEIGHTS_FILE


def test_unchanged_published_weights_are_served(atlas: Path) -> None:
    assert _activations(atlas).status_code == 200


def test_weights_changed_since_publish_are_refused_with_409(atlas: Path) -> None:
    state = load_file(str(_weights(atlas)))
    state["W_dec"] = state["W_dec"] * 2
    save_file(state, str(_weights(atlas)))
    response = _activations(atlas)
    assert response.status_code == 409
    body = response.json()
    assert "changed since it was published" in body["error"] and "dictionaries/sae/sae_weights.safetensors" in body["error"]
    assert str(atlas) not in response.text and str(atlas.resolve()) not in response.text


def test_missing_weights_are_refused_without_the_server_path(atlas: Path) -> None:
    _weights(atlas).unlink()
    response = _activations(atlas)
    assert response.status_code == 409
    assert "missing (dictionaries/sae/sae_weights.safetensors)" in response.json()["error"]
    assert str(atlas) not in response.text and str(atlas.resolve()) not in response.text


def test_without_server_paths_keeps_relative_paths_and_routes() -> None:
    from saescope.api.errors import without_server_paths

    assert without_server_paths("bad file /srv/atlas/dictionaries/x/cfg.json: d_sae") == "bad file cfg.json: d_sae"
    assert without_server_paths("at dictionaries/x/cfg.json") == "at dictionaries/x/cfg.json"
    assert without_server_paths("see GET /api/v1/dictionaries") == "see GET /api/v1/dictionaries"
