"""End to end on attention: an SAE on `blocks.0.attn.hook_z` (every head concatenated, d_in =
n_heads * d_head) is trained, evaluated with its reconstruction spliced back per head, precomputed,
published and served; its feature records say which heads each decoder direction lives in, and
live inference and steering run on the same hook."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HOOK = "blocks.0.attn.hook_z"
SAE = "relu-64"


@pytest.fixture(scope="module")
def hook_z_atlas(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path):
    """A tiny atlas with one ReLU SAE on blocks.0.attn.hook_z (the tiny model has 2 heads)."""
    from saescope.analysis.config import PrecomputeConfig
    from saescope.atlas_layout import AtlasLayout
    from saescope.pipeline.build import build_atlas
    from saescope.pipeline.build_config import SAESpec, builtin_tiny_preset

    root = tmp_path_factory.mktemp("hook_z_atlas") / "atlas"
    layout = AtlasLayout(root=root)
    shutil.copytree(tiny_lm_dir, layout.model_dir)
    config = builtin_tiny_preset(
        device="cpu",
        hooks=[HOOK], saes=[SAESpec(architecture="relu", d_sae=64)], sae_tokens=20_000, baselines=[],
        precompute=PrecomputeConfig(top_k=8, n_intervals=4, examples_per_interval=2, n_random=3, umap=False),
    )
    report = build_atlas(root, config)
    return root, layout, report


@pytest.fixture(scope="module")
def client(hook_z_atlas) -> Iterator:
    from fastapi.testclient import TestClient

    from saescope.api.app import ApiSettings, create_app

    root, layout, _ = hook_z_atlas
    with TestClient(create_app(ApiSettings(store_url=layout.sqlite_url, atlas_root=root, device="cpu"))) as c:
        yield c


def _alive_feature(client) -> int:
    page = client.get(f"/api/v1/dictionaries/{SAE}/features",
                      params={"sort": "max_activation", "order": "desc", "limit": 1}).json()
    return int(page["items"][0]["index"])


def test_hook_z_sae_is_trained_on_every_head_and_evaluated_spliced_back(hook_z_atlas, tiny_lm) -> None:
    root, _, report = hook_z_atlas
    (d,) = report.dictionaries
    assert d.id == SAE
    cfg = json.loads((root / "dictionaries" / SAE / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == HOOK and cfg["metadata"]["hook_head_index"] is None
    assert cfg["d_in"] == tiny_lm.cfg.n_heads * tiny_lm.cfg.d_head
    assert cfg["reshape_activations"] == "hook_z"  # SAELens reads it as all heads concatenated
    m = d.metrics
    assert 0 < m["l0"] < 64 and 0.0 < m["explained_variance"] <= 1.0
    assert m["ce_spliced"] < m["ce_zero_ablation"]


def test_feature_records_carry_head_shares_summing_to_one(client, tiny_lm) -> None:
    dictionary = client.get(f"/api/v1/dictionaries/{SAE}").json()
    assert dictionary["hook_name"] == HOOK and dictionary["display_prefix"] == "L0A"
    for index in (0, _alive_feature(client), 63):
        record = client.get(f"/api/v1/dictionaries/{SAE}/features/{index}").json()
        shares = record["head_norm_share"]
        assert len(shares) == tiny_lm.cfg.n_heads
        assert sum(shares) == pytest.approx(1.0, abs=1e-4) and min(shares) >= 0.0
        assert len(record["logits_top"]) == 10  # logit effects through W_O


def test_pre_rendered_pages_carry_the_same_head_shares_as_the_route(client, hook_z_atlas) -> None:
    from sqlalchemy import select

    from saescope.store.database import create_database
    from saescope.store.schema import FeaturePageRow

    _, layout, _ = hook_z_atlas
    index = _alive_feature(client)
    db = create_database(layout.sqlite_url)
    try:
        with db.connect() as conn:
            body = conn.execute(select(FeaturePageRow.body).where(
                FeaturePageRow.dictionary_id == SAE, FeaturePageRow.index == index)).scalar_one()
    finally:
        db.dispose()
    stored = json.loads(gzip.decompress(body))
    served = client.get(f"/api/v1/dictionaries/{SAE}/features/{index}/page").json()
    record = client.get(f"/api/v1/dictionaries/{SAE}/features/{index}").json()
    assert stored["feature"]["head_norm_share"] == served["feature"]["head_norm_share"] == record["head_norm_share"]


def test_live_inference_on_hook_z_equals_the_stored_examples(client) -> None:
    page = client.get(f"/api/v1/dictionaries/{SAE}/features",
                      params={"sort": "max_activation", "order": "desc", "limit": 8}).json()
    checked = 0
    for item in page["items"]:
        examples = client.get(f"/api/v1/dictionaries/{SAE}/features/{item['index']}/examples",
                              params={"group": "top"}).json()
        example = examples[0]
        text = "".join(example["tokens"][1:])  # position 0 is BOS; the server prepends its own
        live = client.post("/api/v1/inference/feature",
                           json={"text": text, "dictionary": SAE, "index": item["index"]}).json()
        if live["token_ids"] != example["token_ids"]:
            continue  # a window cut mid-word may re-tokenise differently; compare only exact round trips
        assert live["activations"] == pytest.approx(example["activations"], abs=1e-3)
        checked += 1
    assert checked >= 2, "too few top examples round-tripped through the tokenizer to compare"


def test_steering_and_ablation_run_on_a_hook_z_feature(client) -> None:
    index = _alive_feature(client)
    steer = client.post("/api/v1/steer", json={
        "prompt": "def main():", "n_tokens": 8, "temperature": 0.0,
        "interventions": [{"dictionary": SAE, "index": index, "mode": "add", "strength": 50.0}],
    })
    assert steer.status_code == 200, steer.text
    body = steer.json()
    assert len(body["steered"]["tokens"]) == 8
    assert body["steered"]["tokens"] != body["default"]["tokens"]
    ablate = client.post("/api/v1/ablate", json={"text": "import os\nimport sys", "dictionary": SAE, "index": index})
    assert ablate.status_code == 200, ablate.text


def test_an_exact_hook_z_dictionary_spliced_back_per_head_leaves_the_model_unchanged(tiny_lm) -> None:
    """The neuron basis reconstructs exactly: flattening and splicing back per head must round-trip,
    and each neuron's decoder row lives wholly in the head transformer_lens puts it in."""
    import torch

    from saescope.activations.stream import hook_activations
    from saescope.analysis.logit_effects import head_norm_share
    from saescope.dictionaries.baselines import fit_neuron_basis
    from saescope.dictionaries.evaluation import evaluate_dictionary

    tokens = torch.randint(1, int(tiny_lm.cfg.d_vocab), (4, 16), generator=torch.Generator().manual_seed(0))
    rows = hook_activations(tiny_lm, tokens, HOOK).reshape(-1, tiny_lm.cfg.n_heads * tiny_lm.cfg.d_head)
    identity = fit_neuron_basis(rows)
    m = evaluate_dictionary(tiny_lm, identity, tokens, HOOK)
    assert m.ce_spliced == pytest.approx(m.ce_clean, abs=1e-5) and m.kl == pytest.approx(0.0, abs=1e-6)
    share = head_norm_share(tiny_lm, HOOK, identity.W_dec)
    heads = torch.arange(identity.d_sae) // int(tiny_lm.cfg.d_head)
    assert (share.argmax(1) == heads.numpy()).all() and share.max(1).min() == pytest.approx(1.0)


def test_a_store_made_before_head_shares_is_read_and_then_gets_the_column(hook_z_atlas, tmp_path: Path) -> None:
    import sqlite3

    from saescope.store.database import create_database
    from saescope.store.reader import StoreReader
    from saescope.store.writer import add_missing_feature_columns

    _, layout, _ = hook_z_atlas
    old = tmp_path / "old.db"
    src = sqlite3.connect(layout.sqlite_url.removeprefix("sqlite:///"))
    dst = sqlite3.connect(old)
    src.backup(dst)
    src.close()
    dst.execute("ALTER TABLE features DROP COLUMN head_norm_share")
    dst.commit()
    dst.close()
    reader = StoreReader.from_url(f"sqlite:///{old}")
    try:
        record = reader.get_feature(SAE, 0)
    finally:
        reader.close()
    assert record["head_norm_share"] is None and record["index"] == 0
    db = create_database(f"sqlite:///{old}")
    try:
        with db.begin() as conn:
            assert add_missing_feature_columns(conn) == ["head_norm_share"]
        with db.begin() as conn:
            assert add_missing_feature_columns(conn) == []
    finally:
        db.dispose()


def test_dictionaries_at_other_hook_points_have_no_head_shares(demo_atlas) -> None:
    from saescope.store.reader import StoreReader

    reader = StoreReader.from_url(demo_atlas.store_url)
    try:
        assert reader.get_feature("relu-64", 0)["head_norm_share"] is None  # blocks.0.mlp.hook_post
    finally:
        reader.close()
