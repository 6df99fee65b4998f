"""Request bodies at the ASGI level, for the middlewares that look at a body before FastAPI does.

Owns `read_body` (the whole body, optionally capped) and `replay_body` (a `receive` handing an
already-read body to the next app, so a middleware that read it can still pass the request on).
"""

from __future__ import annotations

from typing import Any


class BodyTooLarge(Exception):
    """The body passed the cap given to `read_body`."""


async def read_body(receive: Any, max_bytes: int | None = None) -> bytes | None:
    """The whole request body; None when the client disconnected first. Raises BodyTooLarge as soon
    as more than `max_bytes` arrived (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_body(body: bytes, receive: Any) -> Any:
    """A `receive` that hands `body` to the app once, then waits on the real one (disconnects)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
