"""Pydantic request and response shapes of the REST API under `/api/v1`: the API's contract.

Owns every JSON shape the server accepts or returns, with a description per field and hard limits on
request values (the configurable, usually tighter, limits live in `ApiSettings` and are checked by the
routers). The frontend and the OpenAPI page (`/docs`, `/openapi.json`) are built from these models.
It must not import the engine, the store or FastAPI routing code.

Token conventions: every token list starts with the BOS token at position 0; activations at BOS are
always 0 and BOS is never counted as an activating token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Hard ceilings enforced by the schema itself (ApiSettings may set tighter limits).
MAX_TEXT_CHARS = 20_000
MAX_TOP_K = 100
MAX_N_TOKENS = 512
MAX_STRENGTH = 10_000.0
MAX_INTERVENTIONS = 16
MAX_DICTIONARIES_PER_REQUEST = 64
MAX_PAGE_LIMIT = 500
MAX_ID_CHARS = 128
MAX_SEED = 2**63 - 1


DictionaryId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]


class _Strict(BaseModel):
    """Request bodies: unknown fields are rejected so typos surface as 422 errors."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------------
# errors and health


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx answer."""

    error: str = Field(..., description="What went wrong and what to change.")
    field: str | None = Field(
        None, description="Dotted path of the offending request field (e.g. body.text), or null."
    )


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses` entries documenting the JSON error body for `codes`."""
    meaning = {
        400: "Malformed JSON or a body that is not UTF-8.",
        404: "Unknown (or not ready) dictionary, feature or hook point.",
        413: "The request body is larger than the server's limit (limits.max_body_bytes).",
        422: "A request field is invalid or out of bounds; `field` names it.",
        503: "The model queue is full; retry in a moment.",
        504: "The model request timed out.",
    }
    return {code: {"model": ErrorResponse, "description": meaning[code]} for code in codes}


class Health(BaseModel):
    """Liveness and what the server has loaded."""

    status: Literal["ok"] = Field("ok", description="Always 'ok' when the server answers.")
    model_id: str | None = Field(
        None, description="Id of the model served live (loaded or not), or null when the store has none."
    )
    device: str | None = Field(None, description="Torch device of the engine (cpu, cuda:0), or null.")
    dictionaries: int = Field(0, description="Number of ready dictionaries visible in the store.")
    engine_loaded: bool = Field(False, description="Whether the model is loaded (it loads lazily).")


# --------------------------------------------------------------------------------------------------
# models and dictionaries


class ModelInfo(BaseModel):
    """A model under study."""

    id: str = Field(..., description="Model id (the store key).")
    source: str = Field(..., description="builtin | local | pretrained.")
    location: str = Field(..., description="Checkpoint folder relative to the atlas root, or hub name.")
    n_ctx: int = Field(..., description="Context length (tokens) of the stored corpus contexts.")
    model_n_ctx: int = Field(0, description="The model's own maximum context length (its n_ctx).")
    d_vocab: int = Field(..., description="Vocabulary size.")
    n_layers: int = Field(..., description="Number of transformer blocks.")
    d_model: int = Field(..., description="Residual stream width.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="e.g. held-out loss.")


class DictionaryInfo(BaseModel):
    """One ready dictionary (SAE or baseline) at one hook point."""

    id: str = Field(..., description="Dictionary id.")
    model_id: str = Field(..., description="Id of the model it reads activations from.")
    hook_name: str = Field(..., description="transformer_lens hook point, e.g. blocks.0.mlp.hook_post.")
    kind: str = Field(..., description="sae | neurons | random | pca | ica.")
    architecture: str = Field(..., description="Architecture name, e.g. standard, topk, jumprelu.")
    d_in: int = Field(..., description="Width of the hook point's activations.")
    d_sae: int = Field(..., description="Number of features.")
    display_prefix: str = Field("", description="Prefix of feature display names, e.g. L0M.")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="e.g. k, l1 coefficient.")
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Evaluation metrics: l0, explained variance, CE recovered, ..."
    )
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="Corpus, seed, code version, training tokens, ..."
    )
    created_at: datetime | None = Field(None, description="When the dictionary was published.")


# --------------------------------------------------------------------------------------------------
# features


class HistogramData(BaseModel):
    """A histogram: len(edges) == len(counts) + 1 (empty lists when unknown)."""

    edges: list[float] = Field(default_factory=list, description="Bin edges, ascending.")
    counts: list[float] = Field(default_factory=list, description="Count per bin.")


class DensityHistogram(HistogramData):
    """Histogram of log10 firing density over a dictionary's features that fire."""

    dead: int = Field(0, description="Features that never fire (density 0), not in the bins.")


class FeatureSummary(BaseModel):
    """One row of a feature list."""

    dictionary_id: str = Field(..., description="Dictionary id.")
    index: int = Field(..., description="Feature index within the dictionary (0-based).")
    name: str = Field("", description="Display name, display_prefix + index (e.g. L0M12).")
    label: str = Field("", description="Short label (from top tokens or the best explanation).")
    density: float = Field(0.0, description="Share of non-BOS corpus tokens where the feature fires.")
    max_activation: float = Field(0.0, description="Largest activation over the corpus.")
    mean_activation: float = Field(0.0, description="Mean activation over the tokens where it fires.")
    score: float | None = Field(None, description="Best explanation score, or null.")
    dead: bool = Field(False, description="Never fires on the corpus.")
    pruned: bool = Field(False, description="Removed by pruning.")
    top_tokens: str = Field("", description="Space-separated tokens it fires on most.")


class FeaturePage(BaseModel):
    """A page of a filtered, sorted feature list."""

    total: int = Field(..., description="Number of features matching the filters (all pages).")
    offset: int = Field(..., description="Offset of the first item.")
    limit: int = Field(..., description="Page size asked for.")
    items: list[FeatureSummary] = Field(default_factory=list, description="Features on this page.")


class LogitEffect(BaseModel):
    """A token whose logit the feature's decoder direction moves (direct logit attribution)."""

    token: str = Field(..., description="Token as display text.")
    token_id: int = Field(..., description="Token id.")
    value: float = Field(..., description="Logit effect of a unit activation.")


class Neighbour(BaseModel):
    """A nearby feature of the same dictionary by decoder cosine."""

    index: int = Field(..., description="Feature index.")
    cosine: float = Field(..., description="Cosine similarity of decoder directions.")
    label: str = Field("", description="That feature's label.")


class Match(BaseModel):
    """The most similar feature in another dictionary at the same hook point."""

    dictionary_id: str = Field(..., description="The other dictionary.")
    index: int = Field(..., description="Feature index in it.")
    cosine: float = Field(..., description="Cosine similarity of decoder directions.")
    label: str = Field("", description="That feature's label.")


class ExplanationScore(BaseModel):
    """One scorer's score of an explanation, with the scorer's name and version."""

    scorer: str = Field(..., description="simulation | detection | fuzzing.")
    method: str = Field(..., description="lookup (LLM-free) | llm.")
    version: str = Field(..., description="Scorer name and version, e.g. simulation-lookup/1.")
    variant: str = Field(..., description="top_and_random | top | random (simulation); balanced_accuracy.")
    value: float | None = Field(None, description="The score; null when NaN or failed.")
    n: int = Field(0, description="Tokens (simulation) or items (detection, fuzzing) scored.")
    nan: bool = Field(False, description="The score is undefined (e.g. a constant prediction).")
    failed: bool = Field(False, description="The scorer's LLM answer could not be used.")
    note: str = Field("", description="Why the score is NaN or failed.")


class Explanation(BaseModel):
    """A natural-language explanation and its simulation scores."""

    text: str = Field(..., description="The explanation.")
    method: str = Field(..., description="How it was made, e.g. top-tokens, llm.")
    explainer: str = Field("", description="Which explainer (model) wrote it.")
    score_top_random: float | None = Field(None, description="Score on top and random examples.")
    score_top: float | None = Field(None, description="Score on top examples.")
    score_random: float | None = Field(None, description="Score on random examples.")
    scores: list[ExplanationScore] = Field(default_factory=list, description="Every scorer's score.")


class ExampleGroupInfo(BaseModel):
    """An example group present for a feature."""

    group: str = Field(..., description="top | quantile_<k> | random.")
    label: str = Field("", description="Human-readable group label, e.g. an activation interval.")
    count: int = Field(..., description="Number of examples in the group.")


class FeatureDetail(FeatureSummary):
    """Everything a feature page shows except the example token lists."""

    decoder_norm: float = Field(0.0, description="L2 norm of the decoder direction.")
    histogram: HistogramData = Field(
        default_factory=HistogramData, description="Histogram of firing activations."
    )
    quantile_edges: list[float] | None = Field(None, description="Activation bounds of quantile groups.")
    logits_top: list[LogitEffect] = Field(default_factory=list, description="Most promoted tokens.")
    logits_bottom: list[LogitEffect] = Field(default_factory=list, description="Most suppressed tokens.")
    logits_histogram: HistogramData = Field(
        default_factory=HistogramData, description="Histogram of logit effects over the vocabulary."
    )
    neighbours: list[Neighbour] = Field(default_factory=list, description="Nearest features (decoder cosine).")
    matches: list[Match] = Field(default_factory=list, description="Best matches in other dictionaries.")
    umap_x: float | None = Field(None, description="UMAP x coordinate of the decoder direction.")
    umap_y: float | None = Field(None, description="UMAP y coordinate of the decoder direction.")
    head_norm_share: list[float] | None = Field(
        None,
        description="attn.hook_z dictionaries over all heads: each head's share of the squared decoder norm "
        "(one value per head, in head order, summing to 1); null for other hook points.",
    )
    explanations: list[Explanation] = Field(default_factory=list, description="Explanations, best first.")
    example_groups: list[ExampleGroupInfo] = Field(
        default_factory=list, description="Example groups present, top first."
    )


class Example(BaseModel):
    """A stored corpus context with one feature's activations on it."""

    group: str = Field(..., description="top | quantile_<k> | random.")
    group_label: str = Field("", description="Human-readable group label.")
    rank: int = Field(..., description="Rank within the group (0 = first).")
    context_id: int = Field(..., description="Id of the stored context.")
    doc_id: str = Field("", description="Document the context comes from.")
    tokens: list[str] = Field(..., description="Tokens as display strings; position 0 is BOS.")
    token_ids: list[int] = Field(..., description="Token ids, same length as tokens.")
    activations: list[float] = Field(..., description="Activation per token (0 at BOS).")
    max_activation: float = Field(..., description="Largest activation in this context.")


class FeaturePageView(BaseModel):
    """Everything a feature page shows, in one response: the record and every example."""

    feature: FeatureDetail = Field(..., description="The feature's full record.")
    examples: list[Example] = Field(
        ..., description="Every example, by group (top first, then quantiles, then random)."
    )


class MapPoint(BaseModel):
    """One feature on the UMAP map of a hook point."""

    dictionary_id: str = Field(..., description="Dictionary id.")
    index: int = Field(..., description="Feature index.")
    x: float = Field(..., description="UMAP x.")
    y: float = Field(..., description="UMAP y.")
    density: float = Field(0.0, description="Firing density.")
    label: str = Field("", description="Feature label.")


class MapResponse(BaseModel):
    """UMAP points of one dictionary or of all dictionaries at a hook point."""

    hook_name: str = Field(..., description="The hook point.")
    points: list[MapPoint] = Field(default_factory=list, description="Features with UMAP coordinates.")


# --------------------------------------------------------------------------------------------------
# live inference

TextField = Field(
    ...,
    min_length=1,
    max_length=MAX_TEXT_CHARS,
    description="Text to run through the model; BOS is prepended. The server may set a lower "
    "limit on characters and tokens.",
)
DictionaryIdField = Field(..., min_length=1, max_length=MAX_ID_CHARS, description="Dictionary id.")
FeatureIndexField = Field(..., ge=0, le=2**31 - 1, description="Feature index (0 <= index < d_sae).")


class ActivationsRequest(_Strict):
    """Top features per token for pasted text, for one or several dictionaries (one forward)."""

    text: str = TextField
    dictionaries: list[DictionaryId] | None = Field(
        None,
        max_length=MAX_DICTIONARIES_PER_REQUEST,
        description="Dictionary ids to read; omit or null for all ready dictionaries.",
    )
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="Features to return per token.")


class TokenFeature(BaseModel):
    """A feature active on one token."""

    index: int = Field(..., description="Feature index.")
    activation: float = Field(..., description="Its activation on the token.")
    label: str = Field("", description="Its label from the store.")


class DictionaryActivations(BaseModel):
    """One dictionary's top features per token."""

    dictionary_id: str = Field(..., description="Dictionary id.")
    hook_name: str = Field("", description="Its hook point.")
    per_token: list[list[TokenFeature]] = Field(
        ..., description="Per token, the top_k firing features (activation > 0), largest first; [] at BOS."
    )
    token_totals: list[float] = Field(
        ..., description="Per token, the sum of all feature activations (0 at BOS)."
    )
    token_l0: list[int] = Field(
        default_factory=list, description="Per token, the number of firing features (0 at BOS)."
    )


class ActivationsResponse(BaseModel):
    """Tokens of the text and top features per token per dictionary."""

    tokens: list[str] = Field(..., description="Tokens as display strings; position 0 is BOS.")
    token_ids: list[int] = Field(..., description="Token ids.")
    results: list[DictionaryActivations] = Field(..., description="One entry per dictionary asked for.")


class FeatureActivationsRequest(_Strict):
    """One feature's activation on every token of pasted text."""

    text: str = TextField
    dictionary: str = DictionaryIdField
    index: int = FeatureIndexField


class FeatureActivationsResponse(BaseModel):
    """One feature's activations per token: the same numbers as its precomputed examples."""

    tokens: list[str] = Field(..., description="Tokens as display strings; position 0 is BOS.")
    token_ids: list[int] = Field(..., description="Token ids.")
    activations: list[float] = Field(..., description="Activation per token (0 at BOS).")
    max_activation: float = Field(..., description="Largest activation over the tokens.")


# --------------------------------------------------------------------------------------------------
# steering and ablation


class Intervention(_Strict):
    """Change one feature at its dictionary's hook point, at every position."""

    dictionary: str = DictionaryIdField
    index: int = FeatureIndexField
    mode: Literal["add", "clamp"] = Field(
        "add",
        description="add: x + strength * decoder_dir; clamp: set the feature's activation to strength, "
        "x + (strength - f(x)) * decoder_dir.",
    )
    strength: float = Field(
        ...,
        ge=-MAX_STRENGTH,
        le=MAX_STRENGTH,
        allow_inf_nan=False,
        description="Amount added (add) or activation value imposed (clamp).",
    )


class SteerRequest(_Strict):
    """Generate a continuation with and without interventions, same seed."""

    prompt: str = Field(
        ..., min_length=1, max_length=MAX_TEXT_CHARS, description="Prompt text; BOS is prepended."
    )
    interventions: list[Intervention] = Field(
        ..., min_length=1, max_length=MAX_INTERVENTIONS, description="Feature interventions to apply."
    )
    n_tokens: int = Field(32, ge=1, le=MAX_N_TOKENS, description="Tokens to generate.")
    temperature: float = Field(
        0.7, ge=0.0, le=10.0, allow_inf_nan=False, description="Sampling temperature; 0 = greedy."
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Sampling seed: same seed, same continuation.")


class GeneratedToken(BaseModel):
    """One generated token and its log-probability under the (steered or default) model."""

    token: str = Field(..., description="Token as display text.")
    token_id: int = Field(..., description="Token id.")
    logprob: float = Field(..., description="Natural-log probability of the token when sampled.")


class Continuation(BaseModel):
    """A generated continuation."""

    text: str = Field(..., description="Decoded continuation (without the prompt).")
    tokens: list[GeneratedToken] = Field(..., description="Generated tokens in order.")


class SteerResponse(BaseModel):
    """Default and steered continuations side by side."""

    prompt_tokens: list[str] = Field(..., description="Prompt tokens; position 0 is BOS.")
    default: Continuation = Field(..., description="Continuation without interventions.")
    steered: Continuation = Field(..., description="Continuation with the interventions.")


class AblateRequest(_Strict):
    """Remove one feature from its hook point and measure the effect on next-token predictions."""

    text: str = TextField
    dictionary: str = DictionaryIdField
    index: int = FeatureIndexField


class MovedToken(BaseModel):
    """A vocabulary token whose next-token log-probability moved under the ablation."""

    token: str = Field(..., description="Token as display text.")
    token_id: int = Field(..., description="Token id.")
    delta: float = Field(
        ...,
        description="Ablated minus clean log-probability, averaged over the positions where the "
        "feature fires (negative: the feature promotes this token).",
    )


class AblateResponse(BaseModel):
    """Per-token effect of removing a feature (x - f(x) * decoder_dir at every position)."""

    tokens: list[str] = Field(..., description="Tokens; position 0 is BOS.")
    token_ids: list[int] = Field(..., description="Token ids.")
    activations: list[float] = Field(
        default_factory=list, description="The feature's activation per token (0 at BOS)."
    )
    delta_logprob: list[float] = Field(
        ...,
        description="Per token i, ablated minus clean log p(token_i | tokens before i); 0 at BOS "
        "(position 0). Aligned with tokens.",
    )
    top_moved: list[MovedToken] = Field(
        default_factory=list,
        description="Tokens whose next-token log-probability changed most in absolute value, averaged "
        "over the positions where the feature fires; empty when it never fires.",
    )


class ScoreSummary(BaseModel):
    """One scorer variant over a dictionary's features: n, mean and 95% confidence interval."""

    scorer: str = Field(..., description="simulation | detection | fuzzing.")
    method: str = Field(..., description="lookup | llm.")
    version: str = Field(..., description="Scorer name and version.")
    variant: str = Field(..., description="top_and_random | top | random | balanced_accuracy.")
    n: int = Field(..., description="Features with a finite score.")
    mean: float | None = Field(None, description="Mean score.")
    ci_low: float | None = Field(None, description="Lower bound of the 95% confidence interval (t).")
    ci_high: float | None = Field(None, description="Upper bound of the 95% confidence interval (t).")
    n_nan: int = Field(0, description="Features whose score is undefined (constant prediction etc.).")
    n_failed: int = Field(0, description="Features whose LLM answer could not be used.")
    n_dead: int = Field(0, description="Features without an activating fragment (not scored).")


class InterpretRun(BaseModel):
    """The last explain run of a dictionary with one explainer."""

    explainer: str = Field(..., description="e.g. lookup/1, openai:MODEL, gguf:FILE.")
    scorers: list[str] = Field(default_factory=list, description="Scorers that ran.")
    summary: list[ScoreSummary] = Field(default_factory=list, description="One entry per scorer variant.")
    created_at: datetime | None = Field(None, description="When it was written.")


class ScorePoints(BaseModel):
    """Per scored feature: its best simulation score and its highest cross-dictionary cosine."""

    index: list[int] = Field(default_factory=list, description="Feature indices.")
    score: list[float] = Field(default_factory=list, description="features.score of each.")
    max_cosine: list[float | None] = Field(default_factory=list,
                                           description="Highest decoder cosine with a feature of another "
                                           "dictionary at the hook point (null without matches).")


class DictionaryInterpretability(BaseModel):
    dictionary_id: str = Field(..., description="Dictionary id.")
    kind: str = Field(..., description="sae | neurons | random | pca | ica.")
    architecture: str = Field(..., description="Architecture or baseline variant.")
    d_sae: int = Field(..., description="Number of features.")
    runs: list[InterpretRun] = Field(default_factory=list, description="Explain runs, by explainer.")
    points: ScorePoints = Field(default_factory=ScorePoints, description="Score vs max cosine similarity.")


class InterpretabilityResponse(BaseModel):
    """Interpretability scores of every ready dictionary at a hook point (the comparison page)."""

    hook_name: str
    dictionaries: list[DictionaryInterpretability]


class SearchHit(BaseModel):
    dictionary_id: str = Field(..., description="Dictionary id.")
    index: int = Field(..., description="Feature index.")
    hook_name: str = Field(..., description="The dictionary's hook point.")
    name: str = Field("", description="Display name, e.g. L0M/12.")
    label: str = Field("", description="LLM-free label.")
    explanation: str = Field("", description="Best explanation, or empty.")
    score: float | None = Field(None, description="Best explanation score.")
    density: float = Field(0.0, description="Firing density.")
    max_activation: float = Field(0.0, description="Largest activation seen.")


class SearchResponse(BaseModel):
    """Features of every ready dictionary whose label, top tokens or explanation match, best score first."""

    total: int
    offset: int
    limit: int
    items: list[SearchHit]


class FragmentView(BaseModel):
    doc_id: str = Field(..., description="Corpus document the window comes from.")
    tokens: list[str] = Field(..., description="Token display strings.")
    activations: list[float] = Field(..., description="The feature's activation on each token.")


class FeatureFragmentsView(BaseModel):
    """The fragments a feature was explained and scored on (the interpretability protocol)."""

    max_activation: float = Field(..., description="The 10 of the 0-10 scale prompts show.")
    sets: dict[str, list[FragmentView]] = Field(
        ..., description="explanation, scoring (top fragments, alternately), random_activating, random.")
