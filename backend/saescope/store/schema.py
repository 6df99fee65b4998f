"""The atlas store's SQLAlchemy 2 schema: models, contexts, dictionaries, features, examples,
explanations with their scores and fragments, and pre-rendered feature pages.

Owns table and index definitions only; reading and writing live in `reader.py` and `writer.py`.
Works on SQLite and PostgreSQL (JSON columns, no dialect-specific types). Shaped for the pages people
open most: one feature row holds its small arrays inline; examples sit in their own table.

Visibility rule: the server only ever reads dictionaries whose `status` is `ready`; a precompute writes
under `building` and flips to `ready` in its final transaction.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    LargeBinary,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1

# Nullable `features` columns added after stores were first published: a store made by an earlier
# saescope lacks them; the writer adds them before writing and the reader leaves them out until then.
ADDED_FEATURE_COLUMNS = ("head_norm_share",)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class MetaRow(Base):
    """Key/value facts about the store itself (schema version)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ModelRow(Base):
    """The model under study: its transformer_lens config and vocabulary as token strings."""

    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(32))  # builtin | local | pretrained
    location: Mapped[str] = mapped_column(Text)  # checkpoint folder (relative to atlas) or hub name
    tl_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    tokenizer: Mapped[str] = mapped_column(Text)  # tokenizer folder or hub name
    vocab: Mapped[list[Any]] = mapped_column(JSON)  # token id -> display string
    n_ctx: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # e.g. held-out loss
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ContextRow(Base):
    """A fixed-length window of token ids from the corpus, referenced by examples."""

    __tablename__ = "contexts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    doc_id: Mapped[str] = mapped_column(Text)
    offset: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[list[Any]] = mapped_column(JSON)  # list[int]
    __table_args__ = (Index("ix_contexts_model_doc", "model_id", "doc_id", "offset"),)


class DictionaryRow(Base):
    """One dictionary (SAE or baseline) at one hook point, with metrics and provenance."""

    __tablename__ = "dictionaries"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    hook_name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))  # sae | neurons | random | pca | ica
    architecture: Mapped[str] = mapped_column(String(64))
    d_in: Mapped[int] = mapped_column(Integer)
    d_sae: Mapped[int] = mapped_column(Integer)
    display_prefix: Mapped[str] = mapped_column(String(32), default="")  # e.g. L0M
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    weights_path: Mapped[str] = mapped_column(Text)  # SAELens folder, relative to the atlas root
    status: Mapped[str] = mapped_column(String(16), default="building")  # building | ready
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (Index("ix_dictionaries_status_hook", "status", "hook_name"),)


class FeatureRow(Base):
    """Everything a feature page shows except its examples."""

    __tablename__ = "features"
    dictionary_id: Mapped[str] = mapped_column(
        ForeignKey("dictionaries.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    density: Mapped[float] = mapped_column(Float, default=0.0)  # share of tokens with act > 0
    max_activation: Mapped[float] = mapped_column(Float, default=0.0)
    mean_activation: Mapped[float] = mapped_column(Float, default=0.0)  # mean over firing tokens
    decoder_norm: Mapped[float] = mapped_column(Float, default=0.0)
    dead: Mapped[bool] = mapped_column(Boolean, default=False)
    pruned: Mapped[bool] = mapped_column(Boolean, default=False)
    label: Mapped[str] = mapped_column(Text, default="")  # LLM-free label from top tokens
    top_tokens: Mapped[str] = mapped_column(Text, default="")  # searchable, space-separated
    score: Mapped[float | None] = mapped_column(Float, nullable=True)  # best explanation score
    # {"edges": [...51 floats], "counts": [...50 ints]} over firing activations
    histogram: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # [{"token": str, "token_id": int, "value": float}, ...]
    logits_top: Mapped[list[Any]] = mapped_column(JSON, default=list)
    logits_bottom: Mapped[list[Any]] = mapped_column(JSON, default=list)
    logits_histogram: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # [{"index": int, "cosine": float}, ...]
    neighbours: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # [{"dictionary_id": str, "index": int, "cosine": float}, ...]
    matches: Mapped[list[Any]] = mapped_column(JSON, default=list)
    umap_x: Mapped[float | None] = mapped_column(Float, nullable=True)
    umap_y: Mapped[float | None] = mapped_column(Float, nullable=True)
    # added by precompute: ascending activation bounds of the quantile groups ([] when dead);
    # group quantile_0 is the HIGHEST interval [edges[-2], edges[-1])
    quantile_edges: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # attn.hook_z dictionaries over all heads: each head's share of the squared decoder norm
    # ([n_heads] floats summing to 1); NULL for every other hook point
    head_norm_share: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    __table_args__ = (
        Index("ix_features_density", "dictionary_id", "density"),
        Index("ix_features_max_activation", "dictionary_id", "max_activation"),
        Index("ix_features_score", "dictionary_id", "score"),
    )


class ExampleRow(Base):
    """One feature's activations on one context, in a group (top | quantile_k | random)."""

    __tablename__ = "examples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dictionary_id: Mapped[str] = mapped_column(String(128))
    feature_index: Mapped[int] = mapped_column(Integer)
    group: Mapped[str] = mapped_column(String(32))
    group_label: Mapped[str] = mapped_column(Text, default="")  # "Interval 1.2-2.4 (contains 12.5%)"
    rank: Mapped[int] = mapped_column(Integer)
    context_id: Mapped[int] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"))
    max_activation: Mapped[float] = mapped_column(Float)
    activations: Mapped[list[Any]] = mapped_column(JSON)  # one float per context token
    __table_args__ = (
        ForeignKeyConstraint(
            ["dictionary_id", "feature_index"],
            ["features.dictionary_id", "features.index"],
            ondelete="CASCADE",
        ),
        Index("ix_examples_feature_group", "dictionary_id", "feature_index", "group", "rank"),
    )


class ExplanationRow(Base):
    """A natural-language explanation of a feature and its simulation scores."""

    __tablename__ = "explanations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dictionary_id: Mapped[str] = mapped_column(String(128))
    feature_index: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(64))  # e.g. top-tokens, llm
    explainer: Mapped[str] = mapped_column(String(128), default="")
    score_top_random: Mapped[float | None] = mapped_column(Float, nullable=True)
    score_top: Mapped[float | None] = mapped_column(Float, nullable=True)
    score_random: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (
        ForeignKeyConstraint(
            ["dictionary_id", "feature_index"],
            ["features.dictionary_id", "features.index"],
            ondelete="CASCADE",
        ),
        Index("ix_explanations_feature", "dictionary_id", "feature_index"),
    )


class ExplanationScoreRow(Base):
    """One scorer's score of one explanation (scorer name and version beside the value).

    `value` is NULL when the score is undefined (`nan`, e.g. a constant simulation) or when the
    scorer's LLM answer could not be used (`failed`); `note` says why."""

    __tablename__ = "explanation_scores"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    explanation_id: Mapped[int] = mapped_column(ForeignKey("explanations.id", ondelete="CASCADE"))
    dictionary_id: Mapped[str] = mapped_column(String(128))
    feature_index: Mapped[int] = mapped_column(Integer)
    scorer: Mapped[str] = mapped_column(String(32))  # simulation | detection | fuzzing
    method: Mapped[str] = mapped_column(String(32))  # lookup | llm
    version: Mapped[str] = mapped_column(String(64))  # e.g. simulation-lookup/1
    variant: Mapped[str] = mapped_column(String(32))  # top_and_random | top | random | balanced_accuracy
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    n: Mapped[int] = mapped_column(Integer, default=0)  # tokens or items scored
    nan: Mapped[bool] = mapped_column(Boolean, default=False)
    failed: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (
        ForeignKeyConstraint(
            ["dictionary_id", "feature_index"],
            ["features.dictionary_id", "features.index"],
            ondelete="CASCADE",
        ),
        Index("ix_explanation_scores_explanation", "explanation_id"),
        Index("ix_explanation_scores_dictionary", "dictionary_id", "scorer", "variant"),
    )


class FeatureFragmentsRow(Base):
    """The fragments one feature was explained and scored on (the interpretability protocol).

    `fragments`: {"explanation" | "scoring" | "random_activating": [{"doc_id", "tokens": [ids],
    "activations": [[position, value], ...]}], "random": [[[position, value], ...], ...]} — the
    unconditional random fragments' tokens are shared by the dictionary (`interpret_runs`), so only
    this feature's non-zero activations on them are kept."""

    __tablename__ = "feature_fragments"
    dictionary_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    max_activation: Mapped[float] = mapped_column(Float, default=0.0)  # the 10 of the 0-10 scale
    fragments: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (
        ForeignKeyConstraint(
            ["dictionary_id", "index"], ["features.dictionary_id", "features.index"], ondelete="CASCADE"
        ),
    )


class InterpretRunRow(Base):
    """The last explain run of one dictionary per explainer: what ran, its summaries per scorer
    (n, mean, 95% CI, NaN and failure counts), and the random fragments its features share."""

    __tablename__ = "interpret_runs"
    dictionary_id: Mapped[str] = mapped_column(ForeignKey("dictionaries.id", ondelete="CASCADE"), primary_key=True)
    explainer: Mapped[str] = mapped_column(String(128), primary_key=True)  # e.g. lookup/1, openai:MODEL
    scorers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # [{"scorer", "method", "version", "variant", "n", "mean", "ci_low", "ci_high", "n_nan", "n_failed"}]
    summary: Mapped[list[Any]] = mapped_column(JSON, default=list)
    random_fragments: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{"doc_id", "tokens"}]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FeaturePageRow(Base):
    """One feature's page (`GET .../features/{index}/page`: record and every example) as gzip JSON.

    A cache derived from the other tables, filled after a publish: a missing row means "render live",
    so writers only ever delete rows that might have gone stale (in the same transaction as the
    change) and refill them afterwards."""

    __tablename__ = "feature_pages"
    dictionary_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)  # gzip of the UTF-8 JSON
    __table_args__ = (
        ForeignKeyConstraint(
            ["dictionary_id", "index"], ["features.dictionary_id", "features.index"], ondelete="CASCADE"
        ),
    )
