"""A lean ASGI path for the hottest read: `GET /api/v1/dictionaries/{id}/features/{index}/page`.

Owns `FeaturePageFastPath`, a middleware that answers that request from the page pre-rendered at
publish time (one indexed read) without FastAPI's routing, parameter validation and dependency
layers, which cost more than the read itself under concurrent load. It answers only what it can answer exactly as the documented route
would: a canonical index in range, an id of allowed length, a page in the store. Anything else
(bad parameters, a feature without a stored page, a store error) goes on to the FastAPI route
unchanged, which validates, renders live or returns the JSON error. The route stays the documented
one in the OpenAPI page; the API tests compare both paths byte for byte.
"""

from __future__ import annotations

import gzip
import re
from typing import Any

from saescope.api.routers.features import MAX_INDEX, accepts_gzip
from saescope.api.schemas import MAX_ID_CHARS
from saescope.store.reader import StoreReader


class FeaturePageFastPath:
    """ASGI middleware serving stored feature pages under `prefix` (see the module docstring)."""

    def __init__(self, app: Any, reader: StoreReader, prefix: str) -> None:
        self.app = app
        self.reader = reader
        self.pattern = re.compile(re.escape(prefix) + r"/dictionaries/([^/]+)/features/([0-9]{1,10})/page")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            answer = self._answer(scope)
            if answer is not None:
                body, headers = answer
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: dict[str, Any]) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
        match = self.pattern.fullmatch(scope["path"])
        if match is None:
            return None
        dictionary_id, index_text = match.group(1), match.group(2)
        if len(dictionary_id) > MAX_ID_CHARS or (index_text != "0" and index_text.startswith("0")):
            return None  # the route's validation decides (and names the field)
        index = int(index_text)
        if index > MAX_INDEX:
            return None
        try:
            stored = self.reader.stored_feature_page(dictionary_id, index)
        except Exception:  # noqa: BLE001 - the route reports store errors in the API's JSON shape
            return None
        if stored is None:
            return None
        accept_encoding = ""
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                accept_encoding = value.decode("latin-1")
                break
        headers = [(b"content-type", b"application/json"), (b"vary", b"Accept-Encoding")]
        if accepts_gzip(accept_encoding):
            body = stored
            headers.append((b"content-encoding", b"gzip"))
        else:
            body = gzip.decompress(stored)
        headers.insert(0, (b"content-length", str(len(body)).encode()))
        return body, headers
