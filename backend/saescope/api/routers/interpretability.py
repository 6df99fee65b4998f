"""Interpretability endpoints: per-dictionary score summaries at a hook point, search across
dictionaries over labels and explanations, and the fragments a feature was scored on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from saescope.api import schemas
from saescope.api.deps import State
from saescope.api.routers.dictionaries import DictionaryPath
from saescope.api.routers.features import IndexPath
from saescope.errors import NotFoundError

router = APIRouter(tags=["interpretability"], responses=schemas.error_responses(422))


@router.get(
    "/interpretability",
    response_model=schemas.InterpretabilityResponse,
    responses=schemas.error_responses(404),
    summary="Explanation scores of every dictionary at a hook point (n, mean, 95% CI, NaN count per scorer)",
)
def get_interpretability(
    state: State,
    hook_name: Annotated[str, Query(min_length=1, max_length=256, description="transformer_lens hook point.")],
) -> dict:
    dictionaries = state.reader.interpretability(hook_name)
    if not dictionaries:
        raise NotFoundError(f"no ready dictionary at hook point {hook_name!r}")
    return {"hook_name": hook_name, "dictionaries": dictionaries}


@router.get(
    "/search",
    response_model=schemas.SearchResponse,
    summary="Features of every dictionary whose label, top tokens or explanation contain the text",
)
def search(
    state: State,
    q: Annotated[str, Query(min_length=1, max_length=200, description="Text to look for (case-insensitive).")],
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Rows to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=200, description="Rows to return.")] = 50,
) -> dict:
    return state.reader.search_features(q, offset=offset, limit=limit)


@router.get(
    "/dictionaries/{dictionary_id}/features/{index}/fragments",
    response_model=schemas.FeatureFragmentsView,
    responses=schemas.error_responses(404),
    summary="The fragments a feature was explained and scored on",
)
def get_fragments(
    state: State,
    dictionary_id: DictionaryPath,
    index: IndexPath,
) -> dict:
    return state.reader.feature_fragments(dictionary_id, index)
