"""Live inference endpoints: top features per token of pasted text, one feature's activations.

Dictionary ids are resolved against the store first (404 for unknown or not-ready ones; indexed
point lookups, run on the event loop: cheaper than a thread hop) and text length is checked before a
request takes a model queue slot; model work, and building the response models, runs on the model
thread (ModelWorker). FastAPI serialises the response models.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from saescope.api import schemas
from saescope.api.deps import AppState, State
from saescope.engine.engine import TopFeatures
from saescope.errors import InputError, NotFoundError

router = APIRouter(tags=["inference"])

_ERRORS = schemas.error_responses(400, 404, 413, 422, 503, 504)


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
async def inference_activations(state: State, request: schemas.ActivationsRequest) -> schemas.ActivationsResponse:
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

    return await state.worker.run_batched(dictionary_ids, (request.text, request.top_k), work)


@router.post(
    "/inference/feature",
    response_model=schemas.FeatureActivationsResponse,
    responses=_ERRORS,
    summary="One feature's activation per token of pasted text",
    description="Same numbers as the feature's precomputed examples for the same tokens (BOS at "
    "position 0, activation 0 there).",
)
async def inference_feature(
    state: State, request: schemas.FeatureActivationsRequest
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

    return await state.worker.run(work)
