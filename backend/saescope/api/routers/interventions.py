"""Steering and ablation endpoints: change features at their hook points and show the effect.

Both are live endpoints (`LiveRoute`): ablation queues as short `inference` work, steering in the
`steer` class of its own, so long generations never crowd short requests out of the model thread.
Between two generated tokens (`Engine.generate`'s `between_tokens`, where the model carries no
intervention) a generation stops if its request has timed out, and lets waiting short requests
run first, for about as long as it runs itself between two such turns (ModelWorker.should_lend): a
short request waits a few token steps, not for a whole generation, and the generation keeps about
half of the model's time. The continuations do not change (each sampler has its own generator and
cache).
"""

from __future__ import annotations

import torch
from fastapi import APIRouter

from saescope.api import schemas
from saescope.api.deps import AppState, State
from saescope.api.routers.inference import (
    _ERRORS,
    Admission,
    LiveRoute,
    check_text,
    job_class,
    resolve_feature,
)
from saescope.engine.engine import FeatureIntervention
from saescope.errors import InputError

router = APIRouter(tags=["interventions"], route_class=LiveRoute)


TOP_MOVED = 10


def _continuation(engine, seq) -> schemas.Continuation:  # type: ignore[no-untyped-def]
    strings = engine.token_strings(seq.token_ids)
    return schemas.Continuation(
        text=engine.decode(seq.token_ids),
        tokens=[
            schemas.GeneratedToken(token=s, token_id=t, logprob=lp)
            for s, t, lp in zip(strings, seq.token_ids, seq.logprobs)
        ],
    )


def _check_steer_limits(state: AppState, request: schemas.SteerRequest) -> None:
    limits = state.settings.limits
    check_text(state, request.prompt, "body.prompt")
    if request.n_tokens > limits.max_n_tokens:
        raise InputError(f"n_tokens is {request.n_tokens}; at most {limits.max_n_tokens} here", field="body.n_tokens")
    if len(request.interventions) > limits.max_interventions:
        raise InputError(
            f"{len(request.interventions)} interventions; at most {limits.max_interventions} here",
            field="body.interventions",
        )
    for i, iv in enumerate(request.interventions):
        if abs(iv.strength) > limits.max_strength:
            raise InputError(
                f"strength {iv.strength:g} is beyond ±{limits.max_strength:g}", field=f"body.interventions.{i}.strength"
            )


@router.post(
    "/steer",
    response_model=schemas.SteerResponse,
    responses=_ERRORS,
    summary="Default and steered continuations side by side",
    description="Interventions act at every position after BOS of the dictionary's hook point: add "
    "`x + strength * W_dec[index]`, clamp `x + (strength - f(x)) * W_dec[index]`. Both continuations "
    "sample with a torch.Generator seeded with `seed` (temperature 0 = greedy); log-probabilities are "
    "those of the model's temperature-1 distribution. Beyond the model context the model reads BOS plus "
    "the most recent tokens.",
)
@job_class("steer")
async def steer(state: State, ticket: Admission, request: schemas.SteerRequest) -> schemas.SteerResponse:
    _check_steer_limits(state, request)
    infos = [
        resolve_feature(state, iv.dictionary, iv.index, f"body.interventions.{i}.dictionary",
                        f"body.interventions.{i}.index")
        for i, iv in enumerate(request.interventions)
    ]
    unique = list({d["id"]: d for d in infos}.values())

    def work() -> schemas.SteerResponse:
        engine = state.holder.engine_for(unique)
        prompt_ids = engine.tokenize(request.prompt, max_tokens=state.settings.limits.max_tokens, field="body.prompt")

        def between_tokens() -> None:
            worker = state.worker
            worker.raise_if_abandoned()
            if worker.should_lend("inference"):
                worker.run_waiting("inference")

        default, steered = engine.generate(
            prompt_ids,
            request.n_tokens,
            request.temperature,
            request.seed,
            [FeatureIntervention(iv.dictionary, iv.index, iv.mode, iv.strength) for iv in request.interventions],
            between_tokens=between_tokens,
        )
        return schemas.SteerResponse(
            prompt_tokens=engine.token_strings(prompt_ids),
            default=_continuation(engine, default),
            steered=_continuation(engine, steered),
        )

    return await state.worker.run(work, job_class="steer", ticket=ticket)


@router.post(
    "/ablate",
    response_model=schemas.AblateResponse,
    responses=_ERRORS,
    summary="Remove a feature and show the per-token change in next-token log-probability",
    description="The feature is removed at every position after BOS (`x - f(x) * W_dec[index]`). "
    "`delta_logprob[i]` is the change in log p(token_i | tokens before i). `top_moved` lists the "
    f"{TOP_MOVED} vocabulary tokens whose next-token log-probability changed most in absolute value, "
    "averaged over the positions where the feature fires (empty when it never fires).",
)
async def ablate(state: State, ticket: Admission, request: schemas.AblateRequest) -> schemas.AblateResponse:
    check_text(state, request.text, "body.text")
    info = resolve_feature(state, request.dictionary, request.index, "body.dictionary", "body.index")

    def work() -> schemas.AblateResponse:
        engine = state.holder.engine_for([info])
        ids = engine.tokenize(request.text, max_tokens=state.settings.limits.max_tokens, field="body.text")
        result = engine.ablate(ids, info["id"], request.index)
        moved: list[schemas.MovedToken] = []
        if result.firing_positions:
            k = min(TOP_MOVED, result.mean_delta.shape[0])
            order = torch.topk(result.mean_delta.abs(), k).indices.tolist()
            strings = engine.token_strings(order)
            moved = [
                schemas.MovedToken(token=s, token_id=t, delta=float(result.mean_delta[t]))
                for s, t in zip(strings, order)
            ]
        return schemas.AblateResponse(
            tokens=engine.token_strings(ids),
            token_ids=ids,
            activations=result.activations,
            delta_logprob=result.delta_logprob,
            top_moved=moved,
        )

    return await state.worker.run(work, ticket=ticket)
