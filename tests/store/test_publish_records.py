"""The store's publish takes fully computed records: no model, no dictionary weights, no analysis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from saescope.errors import InputError
from saescope.store.database import create_database, init_schema
from saescope.store.publish import (
    ContextRecords,
    DictionaryRecord,
    ExampleColumns,
    FeatureRefresh,
    ModelRecord,
    publish_dictionaries,
    ready_dictionaries,
)
from saescope.store.schema import DictionaryRow, FeatureRow

N_CTX = 4


def _record(dictionary_id: str, sha: str = "abc") -> DictionaryRecord:
    row = {"model_id": "m", "hook_name": "blocks.0.mlp.hook_post", "kind": "sae", "architecture": "standard",
           "d_in": 2, "d_sae": 2, "display_prefix": "L0M", "hyperparameters": {}, "metrics": {},
           "provenance": {"sae_weights_sha256": sha}, "weights_path": f"dictionaries/{dictionary_id}"}
    features = [{"index": f, "density": 0.5, "label": f"f{f}", "matches": []} for f in range(2)]
    examples = ExampleColumns(
        feature=np.array([0, 1]), group_code=np.array([0, 0]), group_names=["top"],
        group_labels=np.array([[""], [""]], dtype=object), rank=np.array([0, 0]), context=np.array([1, 1]),
        max_activation=np.array([1.0, 2.0], dtype=np.float32),
        activations=np.array([[0, 1, 0, 0], [0, 0, 2, 0]], dtype=np.float32),
    )
    return DictionaryRecord(dictionary_id, row, features, examples)


def _contexts() -> ContextRecords:
    return ContextRecords(np.arange(2 * N_CTX).reshape(2, N_CTX), ["a", "b"], np.zeros(2, dtype=np.int64))


@pytest.fixture()
def db(tmp_path: Path):
    database = create_database(f"sqlite:///{tmp_path / 'atlas.db'}")
    init_schema(database)
    yield database
    database.dispose()


def test_published_records_are_ready_with_their_features(db) -> None:
    model = ModelRecord(id="m", vocab=["x"] * 8, n_ctx=N_CTX)
    assert publish_dictionaries(db, model, _contexts(), [_record("d")]) == (2, 2)
    with db.connect() as conn:
        assert conn.execute(select(DictionaryRow.status).where(DictionaryRow.id == "d")).scalar_one() == "ready"
        labels = conn.execute(select(FeatureRow.label).where(FeatureRow.dictionary_id == "d")
                              .order_by(FeatureRow.index)).scalars().all()
    assert labels == ["f0", "f1"]
    assert [(s.id, s.weights_sha256) for s in ready_dictionaries(db)] == [("d", "abc")]


def test_a_refresh_rewrites_the_matches_of_a_ready_dictionary(db) -> None:
    model = ModelRecord(id="m", vocab=["x"] * 8, n_ctx=N_CTX)
    publish_dictionaries(db, model, _contexts(), [_record("old")])
    new_matches = [[{"dictionary_id": "new", "index": 1, "cosine": 0.9, "label": "f1"}], []]
    publish_dictionaries(db, model, _contexts(), [_record("new")],
                         [FeatureRefresh("old", new_matches, np.array([[1.0, 2.0], [3.0, 4.0]]))])
    stored = ready_dictionaries(db, hooks=["blocks.0.mlp.hook_post"], with_features=True)
    old = next(s for s in stored if s.id == "old")
    assert old.matches == new_matches


def test_an_id_with_the_building_suffix_is_refused(db) -> None:
    with pytest.raises(InputError):
        publish_dictionaries(db, ModelRecord(id="m"), _contexts(), [_record("d~building")])
