"""Feature endpoints: filtered/sorted feature lists, one feature's record, its examples."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import Response

from saescope.api import schemas
from saescope.api.deps import State, json_response
from saescope.api.routers.dictionaries import DictionaryPath
from saescope.errors import InputError

router = APIRouter(tags=["features"], responses=schemas.error_responses(404, 422))

MAX_INDEX = 2**31 - 1  # feature indices are stored as 32-bit integers
IndexPath = Annotated[int, Path(ge=0, le=MAX_INDEX, description="Feature index (0-based).")]


def _check_range(name: str, low: float | None, high: float | None) -> None:
    """InputError naming `query.min_<name>` when both bounds are given and min exceeds max."""
    if low is not None and high is not None and low > high:
        raise InputError(
            f"min_{name} ({low}) is greater than max_{name} ({high}): lower min_{name} or raise max_{name}",
            field=f"query.min_{name}",
        )


@router.get(
    "/dictionaries/{dictionary_id}/features",
    response_model=schemas.FeaturePage,
    summary="A page of features, sorted and filtered",
    description="Text search `q` matches labels, top tokens and explanation texts (case-insensitive "
    "substring). Range bounds are inclusive; a min above its max is a 422 naming the min field. "
    "A score bound excludes features without a score. Null scores sort last. Ties break by index.",
)
def list_features(
    state: State,
    dictionary_id: DictionaryPath,
    sort: Annotated[
        Literal["index", "density", "max_activation", "score"], Query(description="Sort key.")
    ] = "index",
    order: Annotated[Literal["asc", "desc"], Query(description="Sort order.")] = "asc",
    min_density: Annotated[float | None, Query(ge=0.0, le=1.0, description="Lowest firing density.")] = None,
    max_density: Annotated[float | None, Query(ge=0.0, le=1.0, description="Highest firing density.")] = None,
    dead: Annotated[bool | None, Query(description="Only dead (true) or only live (false) features.")] = None,
    pruned: Annotated[bool | None, Query(description="Only pruned (true) or unpruned (false) features.")] = None,
    min_max_activation: Annotated[
        float | None,
        Query(ge=0.0, allow_inf_nan=False, description="Lowest max activation (inclusive)."),
    ] = None,
    max_max_activation: Annotated[
        float | None,
        Query(ge=0.0, allow_inf_nan=False, description="Highest max activation (inclusive)."),
    ] = None,
    min_score: Annotated[
        float | None,
        Query(
            allow_inf_nan=False,
            description="Lowest explanation score (inclusive); features without a score are left out.",
        ),
    ] = None,
    max_score: Annotated[
        float | None,
        Query(
            allow_inf_nan=False,
            description="Highest explanation score (inclusive); features without a score are left out.",
        ),
    ] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text to search for.")] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="Items to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=schemas.MAX_PAGE_LIMIT, description="Page size.")] = 50,
) -> Response:
    _check_range("density", min_density, max_density)
    _check_range("max_activation", min_max_activation, max_max_activation)
    _check_range("score", min_score, max_score)
    page = state.reader.list_features(
        dictionary_id, sort=sort, order=order, min_density=min_density, max_density=max_density,
        dead=dead, pruned=pruned, q=q, offset=offset, limit=limit,
        min_max_activation=min_max_activation, max_max_activation=max_max_activation,
        min_score=min_score, max_score=max_score,
    )
    return json_response(page)


@router.get(
    "/dictionaries/{dictionary_id}/features/{index}",
    response_model=schemas.FeatureDetail,
    summary="One feature's full record (without example tokens)",
)
async def get_feature(state: State, dictionary_id: DictionaryPath, index: IndexPath) -> Response:
    # Runs on the event loop: three indexed point queries cost less than a thread hop and
    # GIL hand-offs under concurrency. Unbounded work (search, maps) stays in the threadpool.
    return json_response(state.reader.get_feature(dictionary_id, index))


@router.get(
    "/dictionaries/{dictionary_id}/features/{index}/page",
    response_model=schemas.FeaturePageView,
    summary="One feature's page: full record and every example, in one response",
    description="The same data as `/features/{index}` plus `/features/{index}/examples`, in one "
    "round trip. Served from the page pre-rendered at publish time (one indexed read), as stored "
    "gzip when the request accepts gzip; rendered live when the store has none.",
)
async def get_feature_page(
    state: State,
    dictionary_id: DictionaryPath,
    index: IndexPath,
    accept_encoding: Annotated[str, Header(include_in_schema=False)] = "",
) -> Response:
    body, is_gzip = state.reader.get_feature_page(dictionary_id, index, accepts_gzip(accept_encoding))
    headers = {"Vary": "Accept-Encoding"}
    if is_gzip:
        headers["Content-Encoding"] = "gzip"
    return Response(content=body, media_type="application/json", headers=headers)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header value admits gzip (absent, `gzip;q=0`: no)."""
    for item in accept_encoding.lower().split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and _quality(q[2:]) == 0.0)
    return False


def _quality(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 1.0


@router.get(
    "/dictionaries/{dictionary_id}/features/{index}/examples",
    response_model=list[schemas.Example],
    summary="Examples of one feature, by group",
    description="Omit `group` for all groups (top first, then quantiles, then random); an unknown "
    "group gives an empty list.",
)
async def get_examples(
    state: State,
    dictionary_id: DictionaryPath,
    index: IndexPath,
    group: Annotated[
        str | None, Query(min_length=1, max_length=32, description="top, quantile_<k> or random.")
    ] = None,
) -> Response:
    # On the event loop like get_feature: one indexed query, at most a few hundred rows.
    return json_response(state.reader.get_examples_json(dictionary_id, index, group))
