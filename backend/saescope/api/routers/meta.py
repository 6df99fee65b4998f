"""Health and models endpoints."""

from __future__ import annotations

from fastapi import APIRouter

from saescope.api import schemas
from saescope.api.deps import State

router = APIRouter(tags=["meta"])


@router.get("/health", response_model=schemas.Health, summary="Liveness and what is loaded")
def health(state: State) -> schemas.Health:
    engine = state.holder.engine
    return schemas.Health(
        status="ok",
        model_id=engine.model_id if engine is not None else state.holder.served_model_id(),
        device=str(engine.device) if engine is not None else None,
        dictionaries=state.reader.count_dictionaries(),
        engine_loaded=engine is not None,
    )


@router.get("/models", response_model=list[schemas.ModelInfo], summary="Models in the store")
def list_models(state: State) -> list[dict]:
    return state.reader.list_models()
