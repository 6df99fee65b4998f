"""Readers never see a half-written dictionary; re-publishing replaces a ready one in one step."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from saescope.analysis.config import PrecomputeConfig
from saescope.store.database import create_database, init_schema
from saescope.pipeline.publish import DictionaryEntry, ModelRecord, precompute_and_publish
from saescope.store.schema import DictionaryRow, ExampleRow, ExplanationRow, FeatureRow

from store_helpers import make_sae

HOOK = "blocks.0.mlp.hook_post"
FAST = dict(progress=False, umap=False, top_k=3, n_intervals=2, examples_per_interval=2, n_random=2,
            contexts_per_batch=8, neighbours_k=3)


def _visible(url):
    """What a reader (the API) sees: ready dictionaries with their feature and example counts."""
    eng = create_database(url)
    with eng.connect() as c:
        ready = c.execute(select(DictionaryRow.id).where(DictionaryRow.status == "ready")).scalars().all()
        out = {}
        for did in ready:
            nf = c.execute(select(func.count()).select_from(FeatureRow).where(FeatureRow.dictionary_id == did)).scalar_one()
            ne = c.execute(select(func.count()).select_from(ExampleRow).where(ExampleRow.dictionary_id == did)).scalar_one()
            out[did] = (nf, ne)
    eng.dispose()
    return out


def test_interrupted_stream_and_failed_write_leave_only_the_old_ready_atlas(tmp_path, model, contexts):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    info = ModelRecord(id="tiny")
    precompute_and_publish(url, model, info, [DictionaryEntry("d1", make_sae(64, 12, HOOK, 1))], contexts,
                           PrecomputeConfig(**FAST))
    before = _visible(url)
    assert set(before) == {"d1"}

    seen_during = []

    def interrupt(i):
        seen_during.append(_visible(url))  # a reader mid-precompute
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        precompute_and_publish(url, model, info, [DictionaryEntry("d1", make_sae(64, 20, HOOK, 2)),
                                                  DictionaryEntry("d2", make_sae(64, 8, HOOK, 3))],
                               contexts, PrecomputeConfig(**FAST), on_batch=interrupt)
    assert len(seen_during) == 3 and all(v == before for v in seen_during)
    assert _visible(url) == before

    # the second dictionary fails while being written (unserialisable provenance): d1's replacement and
    # the new d2 were already partly written under `building`, yet nothing of it is visible
    bad = DictionaryEntry("d3", make_sae(64, 8, HOOK, 4), provenance={"oops": object()})
    with pytest.raises(Exception):
        precompute_and_publish(url, model, info, [DictionaryEntry("d1", make_sae(64, 20, HOOK, 2)),
                                                  DictionaryEntry("d2", make_sae(64, 8, HOOK, 3)), bad],
                               contexts, PrecomputeConfig(**FAST))
    assert _visible(url) == before

    # a clean re-run replaces d1 (now 20 features) and adds d2, clearing the leftovers
    precompute_and_publish(url, model, info, [DictionaryEntry("d1", make_sae(64, 20, HOOK, 2)),
                                              DictionaryEntry("d2", make_sae(64, 8, HOOK, 3))],
                           contexts, PrecomputeConfig(**FAST))
    after = _visible(url)
    assert set(after) == {"d1", "d2"} and after["d1"][0] == 20 and after["d2"][0] == 8
    eng = create_database(url)
    with eng.connect() as c:
        ids = set(c.execute(select(DictionaryRow.id)).scalars())
        assert ids == {"d1", "d2"}  # no building leftovers
        assert c.execute(select(func.count()).select_from(FeatureRow)).scalar_one() == 28


def test_republish_with_same_weights_keeps_explanations(tmp_path, model, contexts):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    info = ModelRecord(id="tiny")
    from saescope.dictionaries.saelens_format import save_dictionary

    sae = make_sae(64, 12, HOOK, 1)
    save_dictionary(sae, tmp_path / "dictionaries" / "d1")
    entry = DictionaryEntry("d1", sae, weights_path="dictionaries/d1")
    precompute_and_publish(url, model, info, [entry], contexts, PrecomputeConfig(**FAST), atlas_root=tmp_path)
    eng = create_database(url)
    with eng.begin() as c:
        c.execute(ExplanationRow.__table__.insert().values(dictionary_id="d1", feature_index=3, text="dollar signs",
                                                           method="llm"))
    precompute_and_publish(url, model, info, [entry], contexts, PrecomputeConfig(**{**FAST, "top_k": 2}),
                           atlas_root=tmp_path)
    with eng.connect() as c:
        assert c.execute(select(ExplanationRow.text)).scalars().all() == ["dollar signs"]
        ranks = c.execute(select(ExampleRow.rank).where(ExampleRow.group == "top")).scalars().all()
        assert max(ranks) == 1  # the new top_k=2 records replaced the old ones
        prov = c.execute(select(DictionaryRow.provenance)).scalar_one()
        assert len(prov["sae_weights_sha256"]) == 64


def test_stale_dashboards_are_detected_when_weights_change(tmp_path, model, contexts):
    from saescope.dictionaries.saelens_format import save_dictionary
    from saescope.pipeline.publish import stale_dictionaries

    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    sae = make_sae(64, 12, HOOK, 1)
    save_dictionary(sae, tmp_path / "dictionaries" / "d1")
    precompute_and_publish(url, model, ModelRecord(id="tiny"), [DictionaryEntry("d1", sae, weights_path="dictionaries/d1")],
                           contexts, PrecomputeConfig(**FAST), atlas_root=tmp_path)
    assert stale_dictionaries(url, tmp_path) == []
    save_dictionary(make_sae(64, 12, HOOK, 9), tmp_path / "dictionaries" / "d1")
    stale = stale_dictionaries(url, tmp_path)
    assert [s.id for s in stale] == ["d1"] and stale[0].current_sha256 != stale[0].stored_sha256


def test_sqlite_engine_uses_wal_and_foreign_keys(tmp_path):
    eng = create_database(f"sqlite:///{tmp_path / 'sub' / 'a.db'}")
    init_schema(eng)
    with eng.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_failed_write_resumes_from_the_finished_stream(tmp_path, model, contexts):
    url = f"sqlite:///{tmp_path / 'atlas.db'}"
    sae = make_sae(64, 12, HOOK, 1)
    with pytest.raises(Exception):
        precompute_and_publish(url, model, ModelRecord(id="tiny"), [DictionaryEntry("d", sae, provenance={"x": object()})],
                               contexts, PrecomputeConfig(**FAST), work_dir=tmp_path / "work")
    assert (tmp_path / "work" / "precompute_state.safetensors").is_file()
    report = precompute_and_publish(url, model, ModelRecord(id="tiny"), [DictionaryEntry("d", sae)], contexts,
                                    PrecomputeConfig(**FAST), work_dir=tmp_path / "work")
    assert report.resumed_from_batch == 6  # 48 contexts / 8 per batch: nothing left to stream
    assert not (tmp_path / "work" / "precompute_state.safetensors").exists()
    assert _visible(url) == {"d": (12, report.n_examples)}
