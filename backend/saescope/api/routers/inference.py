"""Live inference endpoints: top features per token of pasted text, one feature's activations; and
`LiveRoute`, the route class of every live endpoint (here and in interventions).

A live request is admitted before its body is read: `LiveRoute` takes a slot of the endpoint's class
of work (`inference` here) from the ModelWorker, for the request's client address, and answers a
refusal with a small pre-rendered 503 (class queue full) or 429 (client limit), each with
`Retry-After`, sent after a short pause (`REFUSAL_DELAY_S`, an idle timer): no exception, no
logging, no parsing, and a client that retries at once retries at most about ten times a second,
so a crowd of retrying clients costs the model thread next to nothing. Dictionary ids are resolved against the store next (404 for unknown or
not-ready ones; indexed point lookups, run on the event loop: cheaper than a thread hop) and text
length is checked; model work, and building the response models, runs on the model thread.
FastAPI serialises the response models.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute

from saescope.api import schemas
from saescope.api.deps import AppState, State
from saescope.api.runtime import JobClass, Refusal, Ticket
from saescope.engine.engine import TopFeatures
from saescope.errors import InputError, NotFoundError

F = TypeVar("F", bound=Callable[..., Any])
TICKET_KEY = "saescope.ticket"  # where LiveRoute leaves the admitted request's slot in the ASGI scope
RETRY_AFTER_S = 1
REFUSAL_DELAY_S = 0.1  # a refusal is sent this late: a client retrying at once cannot loop faster


def job_class(name: JobClass) -> Callable[[F], F]:
    """Mark a live endpoint with the class of model work it queues in (default `inference`)."""

    def mark(endpoint: F) -> F:
        endpoint.job_class = name  # type: ignore[attr-defined]
        return endpoint

    return mark


def _refusal_message(state: AppState, job_class: JobClass, refusal: Refusal) -> str:
    limits = state.worker.limits
    if refusal is Refusal.QUEUE_FULL:
        bound = limits.max_queue if job_class == "inference" else limits.max_steer_queue
        return f"the model is busy: {bound} {job_class} requests are queued already; retry in a moment"
    return (
        f"too many live requests from your address at once (at most {limits.max_client_requests}, "
        f"{limits.max_client_steers} of them steering): retry when one has finished"
    )


class LiveRoute(APIRoute):
    """The route of a live endpoint: admission before anything reads the request (see the module
    docstring). Admitted, the request keeps its slot until its response is sent; the endpoint hands
    it to the ModelWorker (`Admission`)."""

    _refusals: dict[tuple[int, Refusal], tuple[int, list[tuple[bytes, bytes]], bytes]]

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (self.methods and scope["method"] not in self.methods):
            await super().handle(scope, receive, send)
            return
        state: AppState = scope["app"].state.saescope
        client = scope.get("client")
        got = state.worker.admit(getattr(self.endpoint, "job_class", "inference"), client[0] if client else None)
        if isinstance(got, Refusal):
            status, headers, body = self._refusal(state, got)
            await asyncio.sleep(REFUSAL_DELAY_S)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        scope[TICKET_KEY] = got
        try:
            await super().handle(scope, receive, send)
        finally:
            got.release()

    def _refusal(self, state: AppState, refusal: Refusal) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The pre-rendered answer to `refusal` (rendered on first use, per worker)."""
        cache = self.__dict__.setdefault("_refusals", {})
        key = (id(state.worker), refusal)
        if key not in cache:
            from pydantic_core import to_json

            from saescope.api.errors import error_body

            message = _refusal_message(state, getattr(self.endpoint, "job_class", "inference"), refusal)
            body = to_json(error_body(message))
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_S).encode()),
            ]
            cache[key] = (503 if refusal is Refusal.QUEUE_FULL else 429, headers, body)
        return cache[key]


async def admitted_ticket(request: Request) -> Ticket | None:
    """The slot `LiveRoute` admitted this request with (None outside a LiveRoute)."""
    return request.scope.get(TICKET_KEY)


Admission = Annotated[Ticket | None, Depends(admitted_ticket)]

router = APIRouter(tags=["inference"], route_class=LiveRoute)

_ERRORS = {
    **schemas.error_responses(400, 404, 413, 422, 503, 504),
    429: {
        "model": schemas.ErrorResponse,
        "description": "This client address has too many live requests at once; retry after `Retry-After` seconds.",
    },
}


def check_text(state: AppState, text: str, field: str) -> None:
    limit = state.settings.limits.max_text_chars
    if len(text) > limit:
        raise InputError(f"text has {len(text)} characters; this server accepts at most {limit}", field=field)
    if not text.strip():
        raise InputError("text is empty: paste some text", field=field)
    if "\x00" in text:
        raise InputError("text contains a NUL character: remove it", field=field)


def resolve_dictionaries(state: AppState, ids: list[str], field: str) -> list[dict[str, Any]]:
    out = []
    for i, dictionary_id in enumerate(ids):
        try:
            out.append(state.reader.get_dictionary_brief(dictionary_id))
        except NotFoundError as exc:
            exc.field = f"{field}.{i}" if field.endswith("dictionaries") else field  # type: ignore[attr-defined]
            raise
    return out


def resolve_feature(state: AppState, dictionary_id: str, index: int, field: str, index_field: str) -> dict[str, Any]:
    """The brief of the ready dictionary `dictionary_id`, after checking it has feature `index`
    (404s name `field` or `index_field`)."""
    [info] = resolve_dictionaries(state, [dictionary_id], field)
    check_index(info, index, index_field)
    return info


def check_index(info: dict[str, Any], index: int, field: str) -> None:
    if index >= int(info["d_sae"]):
        err = NotFoundError(
            f"feature {index} does not exist: dictionary {info['id']!r} has features 0..{int(info['d_sae']) - 1}"
        )
        err.field = field  # type: ignore[attr-defined]
        raise err


@router.post(
    "/inference/activations",
    response_model=schemas.ActivationsResponse,
    responses=_ERRORS,
    summary="Top features per token of pasted text (one forward for all dictionaries)",
    description="Omit `dictionaries` for every ready dictionary of the served model. `per_token[0]` "
    "(BOS) is always empty; `token_totals` sums all feature activations of a token, `token_l0` counts "
    "its firing features. Requests that queue up behind each other are micro-batched into one forward "
    "(same answers).",
)
async def inference_activations(
    state: State, ticket: Admission, request: schemas.ActivationsRequest
) -> schemas.ActivationsResponse:
    limits = state.settings.limits
    check_text(state, request.text, "body.text")
    if request.top_k > limits.max_top_k:
        raise InputError(f"top_k is {request.top_k}; at most {limits.max_top_k} here", field="body.top_k")
    if request.dictionaries is None:
        infos = state.reader.ready_dictionary_briefs(state.holder.served_model_id())
    else:
        ids = list(dict.fromkeys(request.dictionaries))
        if len(ids) > limits.max_dictionaries:
            raise InputError(f"{len(ids)} dictionaries asked; at most {limits.max_dictionaries}", field="body.dictionaries")
        infos = resolve_dictionaries(state, ids, "body.dictionaries")
    if not infos:
        raise NotFoundError("no ready dictionary to run: publish one first")
    infos = infos[: limits.max_dictionaries]

    dictionary_ids = tuple(d["id"] for d in infos)

    def work(items: list[tuple[str, int]]) -> list[Any]:
        """One forward for every queued request on the same dictionaries (micro-batch)."""
        engine = state.holder.engine_for(infos)
        tokenized: list[list[int] | Exception] = []
        for text, _ in items:
            try:
                tokenized.append(engine.tokenize(text, max_tokens=limits.max_tokens, field="body.text"))
            except InputError as exc:  # fails this request only
                tokenized.append(exc)
        good = [i for i, t in enumerate(tokenized) if not isinstance(t, Exception)]
        tops = engine.top_features_batch(
            [tokenized[i] for i in good], dictionary_ids, max(items[i][1] for i in good)
        ) if good else []
        out: list[Any] = list(tokenized)
        for i, top_by_dict in zip(good, tops):
            out[i] = activations_response(engine.token_strings(tokenized[i]), tokenized[i], top_by_dict, items[i][1])
        return out

    def activations_response(
        tokens: list[str], ids: list[int], top_by_dict: dict[str, TopFeatures], top_k: int
    ) -> schemas.ActivationsResponse:
        """The response for one request of a micro-batch (which ran at its largest top_k)."""
        results = []
        for info in infos:
            top = top_by_dict[info["id"]]
            labels = state.reader.all_labels(info["id"], info["created_at"])  # cached per dictionary version
            n_labels = len(labels)
            per_token = [
                [
                    {"index": i, "activation": v, "label": labels[i] if i < n_labels else ""}
                    for i, v in zip(row_indices[:top_k], row_values[:top_k])
                ]
                for row_indices, row_values in zip(top.indices, top.values)
            ]
            results.append(
                {
                    "dictionary_id": info["id"],
                    "hook_name": info["hook_name"],
                    "per_token": per_token,
                    "token_totals": top.totals,
                    "token_l0": top.l0,
                }
            )
        return schemas.ActivationsResponse.model_validate({"tokens": tokens, "token_ids": ids, "results": results})

    return await state.worker.run_batched(dictionary_ids, (request.text, request.top_k), work, ticket=ticket)


@router.post(
    "/inference/feature",
    response_model=schemas.FeatureActivationsResponse,
    responses=_ERRORS,
    summary="One feature's activation per token of pasted text",
    description="Same numbers as the feature's precomputed examples for the same tokens (BOS at "
    "position 0, activation 0 there).",
)
async def inference_feature(
    state: State, ticket: Admission, request: schemas.FeatureActivationsRequest
) -> schemas.FeatureActivationsResponse:
    check_text(state, request.text, "body.text")
    info = resolve_feature(state, request.dictionary, request.index, "body.dictionary", "body.index")

    def work() -> schemas.FeatureActivationsResponse:
        engine = state.holder.engine_for([info])
        ids = engine.tokenize(request.text, max_tokens=state.settings.limits.max_tokens, field="body.text")
        acts = engine.feature_activation(ids, info["id"], request.index)
        return schemas.FeatureActivationsResponse(
            tokens=engine.token_strings(ids), token_ids=ids, activations=acts, max_activation=max(acts)
        )

    return await state.worker.run(work, ticket=ticket)
