"""precompute_and_publish writes complete, correct, atomically visible feature records to SQLite."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from saescope.analysis.config import PrecomputeConfig
from saescope.store.database import create_database
from saescope.pipeline.publish import DictionaryEntry, ModelRecord, precompute_and_publish
from saescope.store.schema import ContextRow, DictionaryRow, ExampleRow, FeatureRow, ModelRow

from store_helpers import make_sae

HOOK_MLP = "blocks.0.mlp.hook_post"
HOOK_RES = "blocks.0.hook_resid_post"

FAST = dict(progress=False, umap=False, top_k=4, n_intervals=3, examples_per_interval=2, n_random=2,
            contexts_per_batch=8)


def _entries():
    return [
        DictionaryEntry("mlp-a", make_sae(64, 24, HOOK_MLP, 1), weights_path="dictionaries/mlp-a",
                        metrics={"l0": 3.0}, provenance={"corpus": "random", "seed": 1}),
        DictionaryEntry("mlp-b", make_sae(64, 16, HOOK_MLP, 2), weights_path="dictionaries/mlp-b"),
        DictionaryEntry("res-a", make_sae(32, 20, HOOK_RES, 3)),
    ]


def test_publish_writes_ready_dictionaries_with_features_and_examples(tmp_path, model, contexts):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    report = precompute_and_publish(url, model, ModelRecord(id="tiny"), _entries(), contexts,
                                    PrecomputeConfig(**FAST), work_dir=tmp_path / "work")
    assert report.n_features == 24 + 16 + 20
    eng = create_database(url)
    with Session(eng) as c:
        assert c.execute(select(func.count()).select_from(ModelRow)).scalar_one() == 1
        dicts = {r.id: r for r in c.scalars(select(DictionaryRow)).all()}
        assert set(dicts) == {"mlp-a", "mlp-b", "res-a"}
        assert all(r.status == "ready" for r in dicts.values())
        assert dicts["mlp-a"].display_prefix == "L0M" and dicts["res-a"].display_prefix == "L0R"
        prov = dicts["mlp-a"].provenance
        assert prov["n_tokens"] == 48 * 15 and prov["corpus"] == "random" and prov["seed"] == 1
        feats = c.scalars(select(FeatureRow).where(FeatureRow.dictionary_id == "mlp-a").order_by(FeatureRow.index)).all()
        assert len(feats) == 24
        alive = [f for f in feats if not f.dead]
        assert alive, "random SAE should have firing features"
        f = alive[0]
        assert len(f.histogram["edges"]) == 51 and sum(f.histogram["counts"]) == round(f.density * 48 * 15)
        assert len(f.logits_top) == 10 and f.logits_top[0]["value"] >= f.logits_top[-1]["value"]
        assert len(f.neighbours) == 10 and f.matches[0]["dictionary_id"] == "mlp-b"
        assert f.label and f.top_tokens
        ex = c.execute(select(ExampleRow, ContextRow.tokens).join(ContextRow, ContextRow.id == ExampleRow.context_id)
                       .where(ExampleRow.dictionary_id == "mlp-a", ExampleRow.feature_index == f.index)).all()
        groups = {e.ExampleRow.group for e in ex}
        assert "top" in groups and "random" in groups
        # stored per-token activations equal a direct forward + encode of the stored context
        sae = _entries()[0].dictionary
        for row in ex:
            toks = torch.tensor([row.tokens])
            _, cache = model.run_with_cache(toks, names_filter=HOOK_MLP)
            acts = sae.encode(cache[HOOK_MLP])[0, :, f.index].detach().numpy()
            acts[0] = 0.0
            np.testing.assert_allclose(row.ExampleRow.activations, acts, atol=2e-4)
            assert row.ExampleRow.max_activation == pytest.approx(acts.max(), abs=2e-4)
        import re

        q = {}
        for e in ex:
            r = e.ExampleRow
            if r.group.startswith("quantile_"):
                lo_hi = re.fullmatch(r"Interval (\S+)\u2013(\S+) \(contains (\S+)%\)", r.group_label)
                assert lo_hi, r.group_label
                assert float(lo_hi[1]) * 0.999 - 1e-4 <= r.max_activation <= float(lo_hi[2]) * 1.001 + 1e-4
                q.setdefault(int(r.group.split("_")[1]), []).append(r.max_activation)
        assert f.quantile_edges and len(f.quantile_edges) == 4
        assert q and all(min(q[a]) >= max(q[b]) - 1e-4 for a in q for b in q if a < b)  # quantile_0 highest
        tops = sorted((e.ExampleRow for e in ex if e.ExampleRow.group == "top"), key=lambda e: e.rank)
        assert [t.max_activation for t in tops] == sorted([t.max_activation for t in tops], reverse=True)
        assert tops[0].max_activation == pytest.approx(f.max_activation, abs=2e-4)
    assert not (tmp_path / "work" / "precompute_state.safetensors").exists()


def test_map_coordinates_are_stored_for_every_feature_of_a_hook_point(tmp_path, model, contexts):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    # 3 features in all: the layout falls back to PCA (UMAP needs a few more points) but is stored
    entries = [DictionaryEntry("x", make_sae(32, 2, HOOK_RES, 5)), DictionaryEntry("y", make_sae(32, 1, HOOK_RES, 6))]
    precompute_and_publish(url, model, ModelRecord(id="tiny"), entries, contexts,
                           PrecomputeConfig(**{**FAST, "umap": True}))
    eng = create_database(url)
    with Session(eng) as c:
        pts = c.execute(select(FeatureRow.dictionary_id, FeatureRow.umap_x, FeatureRow.umap_y)).all()
        assert len(pts) == 3 and all(x is not None and y is not None for _, x, y in pts)
        assert len({(x, y) for _, x, y in pts}) == 3
        m = c.scalars(select(FeatureRow).where(FeatureRow.dictionary_id == "y")).one().matches
        assert m[0]["dictionary_id"] == "x" and m[0]["index"] in (0, 1)


def test_a_later_dictionary_at_the_same_hook_is_matched_and_mapped_with_the_published_ones(tmp_path, model, contexts):
    from saescope.dictionaries.saelens_format import save_dictionary

    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    cfg = PrecomputeConfig(**{**FAST, "umap": True})
    first = make_sae(32, 2, HOOK_RES, 5)
    save_dictionary(first, tmp_path / "dictionaries" / "first")
    precompute_and_publish(url, model, ModelRecord(id="tiny"), [DictionaryEntry("first", first, "dictionaries/first")],
                           contexts, cfg, atlas_root=tmp_path)
    precompute_and_publish(url, model, ModelRecord(id="tiny"), [DictionaryEntry("second", make_sae(32, 1, HOOK_RES, 6))],
                           contexts, cfg, atlas_root=tmp_path)
    eng = create_database(url)
    with Session(eng) as c:
        rows = {(r.dictionary_id, r.index): r for r in c.scalars(select(FeatureRow))}
        assert [m["dictionary_id"] for m in rows[("second", 0)].matches] == ["first"]
        assert all([m["dictionary_id"] for m in rows[("first", i)].matches] == ["second"] for i in (0, 1))
        assert len({(r.umap_x, r.umap_y) for r in rows.values()}) == 3
