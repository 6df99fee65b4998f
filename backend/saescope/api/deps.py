"""FastAPI dependencies: the per-app state (settings, store reader, engine holder, model worker).

Owns `AppState`, the `get_state` dependency routers use, and `json_response`; holds no global state
(everything hangs off `app.state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response
from pydantic_core import to_json

from saescope.api.runtime import EngineHolder, ModelWorker
from saescope.api.settings import ApiSettings
from saescope.store.reader import StoreReader


@dataclass
class AppState:
    """Resources shared by all requests of one app."""

    settings: ApiSettings
    reader: StoreReader
    holder: EngineHolder
    worker: ModelWorker


async def get_state(request: Request) -> AppState:
    # async: FastAPI runs a plain-def dependency in its thread pool, a thread hop on every request
    return request.app.state.saescope


State = Annotated[AppState, Depends(get_state)]


def json_response(content: object) -> Response:
    """A JSON response from plain data (or ready UTF-8 JSON bytes), serialised by pydantic-core.

    The stored-record reads (feature detail, examples, page) hand the store's data on this way,
    without re-validating it; the shapes stay declared as `response_model` for the OpenAPI page, and
    the schemathesis fuzz tests check that responses conform. Non-finite floats become null rather
    than invalid JSON.
    """
    body = content if isinstance(content, bytes) else to_json(content, inf_nan_mode="null")
    return Response(content=body, media_type="application/json")
