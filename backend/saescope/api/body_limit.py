"""The request-body size limit, enforced before anything reads or parses a body.

Owns `RequestBodyLimit`, the ASGI middleware in front of everything that reads a request body
(only the lean path for stored pages, which answers bodiless GETs, runs before it). A request with
a body (POST, PUT, PATCH) whose declared Content-Length exceeds `limits.max_body_bytes` gets a 413
JSON error without its body being kept; a body sent without a length (chunked) is read up to the
limit and refused as soon as it passes it, else handed on unchanged. Without it a client could make
the server buffer gigabytes before the text-length check (422) ever ran.

Before a refusal the rest of the body is read and discarded, up to `DRAIN_BYTES` more and for at
most `DRAIN_SECONDS`: a client that sends its whole body before reading the answer (Python's
urllib does) would otherwise get a connection reset instead of the 413, because closing a socket
with unread data in it resets the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from saescope.api.asgi_body import BodyTooLarge, read_body, replay_body
from saescope.api.errors import json_error

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DRAIN_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 5.0


async def drain_body(receive: Any, max_bytes: int = DRAIN_BYTES, max_seconds: float = DRAIN_SECONDS) -> None:
    """Read and discard the rest of a request body: until its end, a disconnect, `max_bytes` or
    `max_seconds`, whichever comes first."""

    async def discard() -> None:
        drained = 0
        while drained <= max_bytes:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    try:
        await asyncio.wait_for(discard(), max_seconds)
    except asyncio.TimeoutError:
        pass


class RequestBodyLimit:
    """ASGI middleware refusing request bodies over `max_bytes` with 413 (see the module docstring)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope["headers"])
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(scope, receive, send, f"{declared} bytes")
                return
            await self.app(scope, receive, send)  # the HTTP server stops the body at its declared length
            return
        try:
            body = await read_body(receive, self.max_bytes)
        except BodyTooLarge:
            await self._refuse(scope, receive, send, f"more than {self.max_bytes} bytes")
            return
        if body is None:
            return  # the client left
        await self.app(scope, replay_body(body, receive), send)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any, size: str) -> None:
        message = f"request body is {size}; this server accepts at most {self.max_bytes} bytes (limits.max_body_bytes)"
        await drain_body(receive)
        await json_error(413, message, "body", {"Connection": "close"})(scope, receive, send)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server rejects such a request before it gets here
    return None
