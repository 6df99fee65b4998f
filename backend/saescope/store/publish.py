"""The atomic publish transaction: fully computed records in, a visible dictionary out.

Owns persisting what the pipeline computed (`saescope.pipeline.publish`): the model row, the contexts
the examples reference, and each dictionary with its feature and example rows, written under status
`building` and flipped to `ready` — together with the refreshed matches and map coordinates of the
ready dictionaries that share a hook point — in ONE final transaction, so a crashed or interrupted
job leaves nothing half-visible. Also owns the read queries the pipeline needs before publishing
(ready dictionaries at a hook point, their stored labels and matches, the weights hashes stored at
publish time). Records are plain dataclasses and pydantic models of arrays and JSON values: this
module computes no feature statistics and imports neither `analysis` nor `dictionaries`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, bindparam, select, update
from tqdm.auto import tqdm

from saescope.errors import InputError
from saescope.store.schema import DictionaryRow, FeatureRow
from saescope.store.writer import (
    BUILDING_SUFFIX,
    building_id,
    delete_feature_pages,
    delete_orphan_contexts,
    dictionary_status,
    finalize_dictionaries,
    insert_contexts,
    json_float_arrays,
    upsert_model,
    write_dictionary,
)

MAX_ID_LENGTH = 128 - len(BUILDING_SUFFIX)


class ModelRecord(BaseModel):
    """The `models` row: identity given by the caller, config and vocabulary filled from the model."""

    id: str = Field(..., description="Model id, e.g. 'builtin-1l' or a transformer_lens name.")
    source: str = Field("builtin", description="builtin | local | pretrained.")
    location: str = Field("", description="Checkpoint folder relative to the atlas root, or hub name.")
    tokenizer: str = Field("", description="Tokenizer folder relative to the atlas root, or hub name.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="e.g. held-out loss.")
    tl_config: dict[str, Any] = Field(default_factory=dict, description="transformer_lens config (JSON values).")
    vocab: list[str] = Field(default_factory=list, description="Display string of every token id.")
    n_ctx: int = Field(0, ge=0, description="The model's context length.")


@dataclass
class ContextRecords:
    """Corpus contexts that examples refer to by position (`ExampleColumns.context`)."""

    tokens: np.ndarray  # [n, n_ctx] int64
    doc_ids: list[str]  # [n]
    offsets: np.ndarray  # [n] int64


@dataclass
class ExampleColumns:
    """Example rows of one dictionary, column-wise (m rows)."""

    feature: np.ndarray  # [m] int64
    group_code: np.ndarray  # [m] int64, index into group_names
    group_names: list[str]  # code -> group name (top, quantile_0, ..., random)
    group_labels: np.ndarray  # [d_sae, n_codes] object array of display labels
    rank: np.ndarray  # [m] int64
    context: np.ndarray  # [m] int64, index into ContextRecords
    max_activation: np.ndarray  # [m] float32
    activations: np.ndarray  # [m, n_ctx] float32


@dataclass
class DictionaryRecord:
    """One dictionary to publish: its `dictionaries` columns (all but id and status), one JSON-ready
    dict per feature (the `features` columns but `dictionary_id`) and its examples."""

    id: str
    row: dict[str, Any]
    features: list[dict[str, Any]]
    examples: ExampleColumns


@dataclass
class FeatureRefresh:
    """New matches (and map coordinates) for every feature of a ready dictionary not re-published."""

    dictionary_id: str
    matches: list[list[dict[str, Any]]]  # per feature
    umap: np.ndarray | None = None  # [d_sae, 2]


@dataclass
class StoredDictionary:
    """A ready dictionary as stored: where its weights are and what its features show."""

    id: str
    hook_name: str
    weights_path: str
    weights_sha256: str | None
    labels: list[str] = field(default_factory=list)
    matches: list[list[dict[str, Any]]] = field(default_factory=list)


def validate_dictionary_id(dictionary_id: str) -> None:
    """InputError unless `dictionary_id` can be stored (and written under its building id)."""
    if BUILDING_SUFFIX in dictionary_id or not dictionary_id or len(dictionary_id) > MAX_ID_LENGTH:
        raise InputError(f"dictionary id {dictionary_id!r} must be 1-{MAX_ID_LENGTH} characters without "
                         f"{BUILDING_SUFFIX!r}", field="id")


def ready_dictionaries(db: Engine, model_id: str | None = None, hooks: Sequence[str] | None = None,
                       with_features: bool = False) -> list[StoredDictionary]:
    """Ready dictionaries (of `model_id`, at `hooks`), with their feature labels and matches if asked."""
    d = DictionaryRow.__table__
    query = select(d.c.id, d.c.hook_name, d.c.weights_path, d.c.provenance).where(d.c.status == "ready")
    if model_id is not None:
        query = query.where(d.c.model_id == model_id)
    if hooks is not None:
        query = query.where(d.c.hook_name.in_(sorted(set(hooks))))
    with db.connect() as conn:
        out = [StoredDictionary(did, hook, wpath or "", (prov or {}).get("sae_weights_sha256"))
               for did, hook, wpath, prov in conn.execute(query.order_by(d.c.id)).all()]
        if with_features:
            for s in out:
                feats = conn.execute(
                    select(FeatureRow.label, FeatureRow.matches)
                    .where(FeatureRow.dictionary_id == s.id).order_by(FeatureRow.index)
                ).all()
                s.labels = [f.label for f in feats]
                s.matches = [list(f.matches or []) for f in feats]
    return out


def _example_tuples(write_id: str, ex: ExampleColumns, context_ids: np.ndarray,
                    decimals: int) -> Iterator[tuple[Any, ...]]:
    """Example rows as `writer.EXAMPLE_COLUMNS` tuples (activations pre-serialised JSON)."""
    texts = json_float_arrays(ex.activations, decimals)
    maxes = np.round(ex.max_activation.astype(np.float64), decimals).tolist()
    feats, codes, ranks = ex.feature.tolist(), ex.group_code.tolist(), ex.rank.tolist()
    cids = context_ids[ex.context].tolist()
    for i in range(len(feats)):
        f, code = feats[i], codes[i]
        yield (write_id, f, ex.group_names[code], ex.group_labels[f, code], ranks[i], cids[i], maxes[i], texts[i])


def _store_contexts(db: Engine, model: ModelRecord, contexts: ContextRecords,
                    records: Sequence[DictionaryRecord]) -> np.ndarray:
    """Upsert the model and insert the contexts any example uses; returns store ids per context ([n], -1 unused)."""
    used = np.unique(np.concatenate([r.examples.context for r in records]))
    with db.begin() as conn:
        upsert_model(conn, model.model_dump())
        ids_used = insert_contexts(conn, model.id, contexts.tokens[used], [contexts.doc_ids[i] for i in used],
                                   contexts.offsets[used])
    context_ids = np.full(contexts.tokens.shape[0], -1, dtype=np.int64)
    context_ids[used] = ids_used
    return context_ids


def _write_building(conn: Connection, record: DictionaryRecord, context_ids: np.ndarray,
                    decimals: int) -> tuple[str, bool, int, int]:
    """Write one dictionary under status `building`: (written id, keep explanations, features, examples)."""
    sha = (record.row.get("provenance") or {}).get("sae_weights_sha256")
    if dictionary_status(conn, record.id) == "ready":
        write_id = building_id(record.id)
        old = conn.execute(select(DictionaryRow.provenance).where(DictionaryRow.id == record.id)).scalar_one()
        keep = bool(sha) and (old or {}).get("sae_weights_sha256") == sha
    else:
        write_id, keep = record.id, False
    features = ({**f, "dictionary_id": write_id} for f in record.features)
    nf, ne = write_dictionary(conn, {**record.row, "id": write_id}, features,
                              _example_tuples(write_id, record.examples, context_ids, decimals))
    return write_id, keep, nf, ne


def publish_dictionaries(
    db: Engine,
    model: ModelRecord,
    contexts: ContextRecords,
    records: Sequence[DictionaryRecord],
    refreshed: Sequence[FeatureRefresh] = (),
    activation_decimals: int = 4,
    progress: bool = False,
) -> tuple[int, int]:
    """Persist `records` (and `refreshed` ready dictionaries) so that all become visible in one final
    transaction. Re-publishing a ready id replaces it atomically, keeping its explanations when the
    weights hash in the provenance is unchanged. Returns (features written, examples written)."""
    for r in records:
        validate_dictionary_id(r.id)
    context_ids = _store_contexts(db, model, contexts, records)
    targets: list[tuple[str, str, bool]] = []
    n_features = n_examples = 0
    for record in tqdm(records, desc="store", disable=not progress):
        with db.begin() as conn:
            write_id, keep, nf, ne = _write_building(conn, record, context_ids, activation_decimals)
        n_features += nf
        n_examples += ne
        targets.append((record.id, write_id, keep))
    with db.begin() as conn:  # the one transaction that makes everything visible
        finalize_dictionaries(conn, targets)
        _refresh_features(conn, refreshed)
        delete_orphan_contexts(conn, model.id)
    return n_features, n_examples


def _refresh_features(conn: Connection, refreshed: Sequence[FeatureRefresh]) -> None:
    """Overwrite matches (and map coordinates) of ready dictionaries; their pages are re-rendered after."""
    t = FeatureRow.__table__
    where = (t.c.dictionary_id == bindparam("b_dict"), t.c["index"] == bindparam("b_index"))
    with_map = update(t).where(*where).values(matches=bindparam("b_matches"), umap_x=bindparam("b_x"),
                                               umap_y=bindparam("b_y"))
    matches_only = update(t).where(*where).values(matches=bindparam("b_matches"))
    for r in refreshed:
        delete_feature_pages(conn, [r.dictionary_id])
        rows = []
        for f, matches in enumerate(r.matches):
            row: dict[str, Any] = {"b_dict": r.dictionary_id, "b_index": f, "b_matches": matches}
            if r.umap is not None:
                row.update(b_x=float(r.umap[f, 0]), b_y=float(r.umap[f, 1]))
            rows.append(row)
        if rows:
            conn.execute(with_map if r.umap is not None else matches_only, rows)


def published_at() -> datetime:
    """The time stamp a dictionary row gets (UTC)."""
    return datetime.now(timezone.utc)
