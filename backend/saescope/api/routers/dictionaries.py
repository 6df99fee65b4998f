"""Dictionary endpoints: list, one dictionary, its density histogram, UMAP maps."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from saescope.api import schemas
from saescope.api.deps import State
from saescope.errors import NotFoundError
from saescope.store.reader import density_histogram

router = APIRouter(tags=["dictionaries"], responses=schemas.error_responses(422))

DictionaryPath = Annotated[
    str, Path(min_length=1, max_length=schemas.MAX_ID_CHARS, description="Dictionary id.")
]


@router.get("/dictionaries", response_model=list[schemas.DictionaryInfo], summary="Ready dictionaries")
def list_dictionaries(
    state: State,
    hook_name: Annotated[str | None, Query(max_length=256, description="Only this hook point.")] = None,
) -> list[dict]:
    return state.reader.list_dictionaries(hook_name=hook_name)


@router.get(
    "/dictionaries/{dictionary_id}",
    response_model=schemas.DictionaryInfo,
    responses=schemas.error_responses(404),
    summary="One dictionary with metrics and provenance",
)
def get_dictionary(state: State, dictionary_id: DictionaryPath) -> dict:
    return state.reader.get_dictionary(dictionary_id)


@router.get(
    "/dictionaries/{dictionary_id}/density_histogram",
    response_model=schemas.DensityHistogram,
    responses=schemas.error_responses(404),
    summary="Histogram of log10 firing density over the dictionary's features",
)
def get_density_histogram(
    state: State,
    dictionary_id: DictionaryPath,
    bins: Annotated[int, Query(ge=1, le=200, description="Number of bins.")] = 40,
) -> dict:
    return density_histogram(state.reader.densities(dictionary_id), n_bins=bins)


@router.get(
    "/dictionaries/{dictionary_id}/map",
    response_model=schemas.MapResponse,
    responses=schemas.error_responses(404),
    summary="UMAP points of one dictionary's features",
)
def get_dictionary_map(state: State, dictionary_id: DictionaryPath) -> dict:
    info = state.reader.get_dictionary(dictionary_id)
    return {"hook_name": info["hook_name"], "points": state.reader.map_points([dictionary_id])}


@router.get(
    "/map",
    response_model=schemas.MapResponse,
    responses=schemas.error_responses(404),
    summary="UMAP points of every ready dictionary at a hook point (a joint map)",
)
def get_hook_map(
    state: State,
    hook_name: Annotated[str, Query(min_length=1, max_length=256, description="transformer_lens hook point.")],
) -> dict:
    dictionaries = state.reader.list_dictionaries(hook_name=hook_name)
    if not dictionaries:
        raise NotFoundError(f"no ready dictionary at hook point {hook_name!r}")
    return {"hook_name": hook_name, "points": state.reader.map_points([d["id"] for d in dictionaries])}
