"""The same publish path against the real PostgreSQL server on 127.0.0.1:5432 (a fresh database)."""

from __future__ import annotations


import pytest
from sqlalchemy import func, select

from saescope.analysis.config import PrecomputeConfig
from saescope.store.database import create_database
from saescope.pipeline.publish import DictionaryEntry, ModelRecord, precompute_and_publish
from saescope.store.schema import DictionaryRow, ExampleRow, FeatureRow

from store_helpers import make_sae

pytestmark = pytest.mark.postgres
FAST = dict(progress=False, umap=False, top_k=3, n_intervals=2, examples_per_interval=2, n_random=2,
            contexts_per_batch=8, neighbours_k=3)


def test_publish_and_atomic_republish_on_postgresql(pg_url, model, contexts):
    info = ModelRecord(id="tiny")
    hook = "blocks.0.mlp.hook_post"
    precompute_and_publish(pg_url, model, info, [DictionaryEntry("a", make_sae(64, 12, hook, 1)),
                                                 DictionaryEntry("b", make_sae(64, 10, hook, 2))],
                           contexts, PrecomputeConfig(**FAST))
    eng = create_database(pg_url)
    with eng.connect() as c:
        assert set(c.execute(select(DictionaryRow.id).where(DictionaryRow.status == "ready")).scalars()) == {"a", "b"}
        assert c.execute(select(func.count()).select_from(FeatureRow)).scalar_one() == 22
        n_ex_a = c.execute(select(func.count()).select_from(ExampleRow).where(ExampleRow.dictionary_id == "a")).scalar_one()
        assert n_ex_a > 0
    # an interrupted replacement leaves the ready atlas as it was
    def boom(i):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        precompute_and_publish(pg_url, model, info, [DictionaryEntry("a", make_sae(64, 16, hook, 3))], contexts,
                               PrecomputeConfig(**FAST), on_batch=boom)
    # a completed replacement swaps in the new rows
    precompute_and_publish(pg_url, model, info, [DictionaryEntry("a", make_sae(64, 16, hook, 3))], contexts,
                           PrecomputeConfig(**FAST))
    with eng.connect() as c:
        rows = dict(c.execute(select(DictionaryRow.id, DictionaryRow.d_sae)).all())
        assert rows == {"a": 16, "b": 10}
        assert c.execute(select(func.count()).select_from(FeatureRow).where(FeatureRow.dictionary_id == "a")).scalar_one() == 16
        labels = c.execute(select(FeatureRow.label).where(FeatureRow.dictionary_id == "a", FeatureRow.dead.is_(False))).scalars().all()
        assert labels and all(labels)
    eng.dispose()
