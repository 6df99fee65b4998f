"""The map of a hook point shows the chosen kinds of dictionary (SAEs by default) and leaves out
features that never fired."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from saescope.analysis.config import PrecomputeConfig
from saescope.analysis.geometry import masked_umap_layout
from saescope.dictionaries.architectures.standard import StandardSAE
from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.baselines import fit_baseline
from saescope.pipeline.publish import (
    DictionaryEntry,
    ModelRecord,
    precompute_and_publish,
)
from saescope.store.database import create_database
from saescope.store.schema import FeatureRow
from sqlalchemy import select
from sqlalchemy.orm import Session
from transformer_lens import HookedTransformer, HookedTransformerConfig

HOOK = "blocks.0.mlp.hook_post"
DEAD = (0, 5)  # SAE features whose encoder bias keeps them from ever firing
FAST = dict(progress=False, umap=True, top_k=3, n_intervals=2, examples_per_interval=2, n_random=2,
            contexts_per_batch=8, neighbours_k=3, feature_pages=False, umap_n_neighbors=5)


def _model() -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=1, d_model=16, d_mlp=32, n_heads=2, d_head=8, n_ctx=12, d_vocab=40,
                                  act_fn="gelu", normalization_type="LN", seed=3, device="cpu")
    return HookedTransformer(cfg).eval()


def _contexts(n: int = 24, n_ctx: int = 12) -> SimpleNamespace:
    tokens = np.random.default_rng(0).integers(1, 40, size=(n, n_ctx)).astype(np.int64)
    tokens[:, 0] = 0
    return SimpleNamespace(tokens=tokens, doc_ids=[f"d{i}" for i in range(n)], offsets=np.zeros(n, np.int64))


def _sae_with_dead_features(d_in: int, d_sae: int) -> StandardSAE:
    sae = StandardSAE(d_in, d_sae, DictionaryMetadata(model_name="tiny", hook_name=HOOK, context_size=12))
    sae.reset_parameters(torch.Generator().manual_seed(1))
    with torch.no_grad():
        sae.b_enc.fill_(0.0)
        sae.b_enc[list(DEAD)] = -1e6
    return sae


def _publish(tmp_path, config: PrecomputeConfig) -> dict[tuple[str, int], FeatureRow]:
    model = _model()
    rows = torch.randn(256, 32)
    entries = [
        DictionaryEntry("sae", _sae_with_dead_features(32, 24)),
        DictionaryEntry("neurons", fit_baseline("neurons", rows, metadata=DictionaryMetadata(hook_name=HOOK))),
    ]
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    precompute_and_publish(url, model, ModelRecord(id="tiny"), entries, _contexts(), config)
    eng = create_database(url)
    with Session(eng) as s:
        out = {(f.dictionary_id, f.index): f for f in s.scalars(select(FeatureRow))}
    eng.dispose()
    return out


def test_the_default_map_shows_the_live_sae_features_only(tmp_path):
    features = _publish(tmp_path, PrecomputeConfig(**FAST))
    sae = {i: f for (d, i), f in features.items() if d == "sae"}
    assert all(sae[i].dead and sae[i].umap_x is None and sae[i].umap_y is None for i in DEAD)
    live = [f for i, f in sae.items() if i not in DEAD]
    assert live and all(not f.dead and f.umap_x is not None and np.isfinite(f.umap_y) for f in live)
    assert all(f.umap_x is None for (d, _), f in features.items() if d == "neurons")


def test_the_map_can_co_embed_baselines_and_dead_features_when_asked(tmp_path):
    config = PrecomputeConfig(**FAST, umap_kinds=["sae", "neurons"], umap_include_dead=True)
    features = _publish(tmp_path, config)
    assert all(f.umap_x is not None and f.umap_y is not None for f in features.values())


def test_a_hook_point_without_the_chosen_kinds_maps_all_of_its_dictionaries(tmp_path):
    config = PrecomputeConfig(**FAST, umap_kinds=["pca"])
    features = _publish(tmp_path, config)
    assert all(f.umap_x is not None for (d, _), f in features.items() if d == "neurons")


def test_masked_rows_get_no_coordinates_and_the_layout_is_deterministic():
    w = [torch.randn(30, 8, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    keep = [np.arange(30) % 3 != 0, None]
    masked = masked_umap_layout(w, keep, n_neighbors=5)
    assert np.isnan(masked[0][~keep[0]]).all() and np.isfinite(masked[0][keep[0]]).all()
    assert np.isfinite(masked[1]).all()
    again = masked_umap_layout(w, keep, n_neighbors=5)
    np.testing.assert_array_equal(masked[0][keep[0]], again[0][keep[0]])
