"""Settings of the per-feature precompute (`PrecomputeConfig`).

Owns the one pydantic config that every analysis step reads: how many top / interval / random
examples to keep, histogram resolution, batching, checkpointing, neighbours, UMAP and labels. It
holds no logic and imports no other stage.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PrecomputeConfig(BaseModel):
    """How the streaming precompute builds feature records."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(20, ge=1, le=1000, description="Top-activating contexts kept per feature.")
    n_intervals: int = Field(
        10, ge=1, le=50, description="Activation intervals sampled per feature (quantile groups)."
    )
    examples_per_interval: int = Field(5, ge=0, le=100, description="Contexts sampled per interval.")
    n_random: int = Field(5, ge=0, le=100, description="Random activating contexts kept per feature.")
    histogram_bins: int = Field(50, ge=2, le=500, description="Bins of the activation histogram.")
    one_window_per_document: bool = Field(
        False, description="Top examples hold at most one context window per document."
    )
    contexts_per_batch: int = Field(32, ge=1, le=4096, description="Contexts per forward pass.")
    device: str = Field("auto", description="Torch device for the model and dictionaries: auto|cpu|cuda.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Precision of the model forward and the SAE encodes (bf16/fp16 through autocast, "
        "where the device supports it: fp16 only on CUDA); every statistic is accumulated in fp32 or fp64.",
    )
    zero_first_position: bool = Field(
        True, description="Position 0 is BOS: its activations are stored as 0 and never counted."
    )
    bookkeeping_threads: int = Field(
        1, ge=0, description="torch CPU threads while folding batches into the streaming statistics (0 = leave "
        "as is). Those are many small ops, for which thread start-up costs more than it saves on a busy CPU.",
    )
    checkpoint_every: int = Field(
        50, ge=0, description="Persist the streaming state to work_dir every N batches (0 = never)."
    )
    logit_k: int = Field(10, ge=1, le=100, description="Promoted and suppressed tokens kept per feature.")
    logit_histogram_bins: int = Field(50, ge=2, le=500, description="Bins of the logit-effect histogram.")
    neighbours_k: int = Field(10, ge=0, le=100, description="Nearest features (decoder cosine) per feature.")
    umap: bool = Field(True, description="Compute a 2-D UMAP of decoder directions per hook point.")
    umap_kinds: list[Literal["sae", "neurons", "random", "pca", "ica"]] = Field(
        ["sae"], description="Kinds of dictionary co-embedded on a hook point's map (SAEs by default: the "
        "baselines' orthogonal or random directions carry no shared structure and crowd the plane). A hook "
        "point with none of these kinds maps all of its dictionaries.",
    )
    umap_include_dead: bool = Field(
        False, description="Also map features that never fired in the scanned contexts (their decoder rows are "
        "untrained noise); off: they get no map coordinates.",
    )
    umap_n_neighbors: int = Field(
        5, ge=2, description="UMAP n_neighbors (capped for tiny dictionaries): small values keep local structure, "
        "so features with related decoder directions sit together (docs/benchmarks.md, 'Built-in atlas quality').",
    )
    umap_min_dist: float = Field(0.0, ge=0.0, description="UMAP min_dist (0: tight clusters).")
    umap_metric: Literal["cosine", "euclidean", "correlation"] = Field(
        "cosine", description="UMAP metric between unit-norm decoder directions."
    )
    label_tokens: int = Field(3, ge=1, le=20, description="Tokens/n-grams joined into the short label.")
    top_tokens: int = Field(10, ge=1, le=50, description="Tokens written to the searchable top_tokens.")
    activation_decimals: int = Field(4, ge=1, le=8, description="Decimals kept for stored activations.")
    seed: int = Field(0, description="Seed of the reservoir sampling keys and UMAP.")
    feature_pages: bool = Field(
        True,
        description="Pre-render each feature's page (record and examples, gzip) into the store at publish, so the server answers it with one indexed read; "
        "off: smaller store, pages rendered live.",
    )
    progress: bool = Field(True, description="Show tqdm progress bars.")
