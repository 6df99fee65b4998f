"""A lean ASGI path for live inference: `POST /api/v1/inference/activations`.

Owns `InferenceFastPath`, a middleware that answers a well-formed request without FastAPI's routing,
dependency and request layers (about 0.7 ms of a ~9 ms answer on the 2-core machine, where the
model forward itself takes ~5 ms). It parses the body exactly as FastAPI does (`json.loads`, then
the `ActivationsRequest` model) and calls the same `activations_answer` as the documented route.
A body it cannot parse or validate, or any content type but JSON, goes on to the FastAPI route
unchanged (the body is replayed), which reports the error naming the field; the errors raised while
answering (unknown dictionary, text too long, model busy, time-out) get the same JSON answers as the
route's exception handlers (`known_error_response`). The API tests compare both paths byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

from saescope.api.asgi_body import read_body, replay_body
from saescope.api.deps import AppState
from saescope.api.errors import known_error_response
from saescope.api.routers.inference import activations_answer
from saescope.api.schemas import ActivationsRequest

_JSON_HEADERS = [(b"content-type", b"application/json")]


class InferenceFastPath:
    """ASGI middleware answering `POST {prefix}/inference/activations` (see the module docstring)."""

    def __init__(self, app: Any, state: AppState, prefix: str) -> None:
        self.app = app
        self.state = state
        self.path = prefix + "/inference/activations"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not (
            scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self.path
            and _is_json(scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return  # the client left: nothing to answer
        try:
            request = ActivationsRequest.model_validate(json.loads(body))
        except Exception:  # noqa: BLE001 - the route parses again and reports the problem
            await self.app(scope, replay_body(body, receive), send)
            return
        try:
            answer = await activations_answer(self.state, request)
        except Exception as exc:  # noqa: BLE001 - mapped like the route's exception handlers
            await known_error_response(exc, scope["path"])(scope, receive, send)
            return
        headers = [(b"content-length", b"%d" % len(answer)), *_JSON_HEADERS]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """Content-Type is application/json (parameters such as charset allowed), as FastAPI parses."""
    for name, value in headers:
        if name == b"content-type":
            media_type = value.split(b";", 1)[0].strip().lower()
            return media_type == b"application/json"
    return False  # FastAPI does not parse a body without a content type as JSON
