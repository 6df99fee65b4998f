"""Mapping every failure to a JSON body `{"error": message, "field": path}` with the right status.

Owns the exception handlers installed by `create_app`: request validation (422, naming the first
offending field as a dotted path such as `body.text` or `query.limit`), malformed JSON and invalid
UTF-8 bodies (400), saescope errors (InputError 422, NotFoundError 404, DictionaryUnavailable 409,
others 500 with the message, absolute server paths reduced to their file name),
the model queue being full (503) or a request timing out (504), HTTP errors (their status), and a
last-resort 500 that never leaks a traceback. It must not run queries or model work.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from saescope.errors import DictionaryUnavailable, InputError, NotFoundError, SaescopeError

log = logging.getLogger("saescope.api")


class QueueFullError(Exception):
    """Too many model requests are waiting; the client should retry later (503)."""


class RequestTimeoutError(Exception):
    """A model request did not finish within the configured time-out (504)."""


def error_body(message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": message, "field": field}


def json_error(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """The API's JSON error answer `{"error": message, "field": field}` with `status`."""
    return JSONResponse(status_code=status, content=error_body(message, field), headers=headers)


def _field_path(loc: Any) -> str | None:
    if not loc:
        return None
    return ".".join(str(part) for part in loc)


def validation_message(err: dict[str, Any]) -> tuple[int, str, str | None]:
    """Status, message and field of one pydantic/FastAPI validation error."""
    kind = err.get("type", "")
    field = _field_path(err.get("loc"))
    msg = str(err.get("msg", "invalid value"))
    if kind == "json_invalid":
        ctx = err.get("ctx") or {}
        detail = ctx.get("error", msg)
        return 400, f"request body is not valid JSON: {detail}", "body"
    if field == "body" and kind in ("model_attributes_type", "dict_type"):
        return 422, "request body must be a JSON object sent with Content-Type: application/json", field
    if kind == "missing":
        return 422, f"{field or 'a field'} is required", field
    if kind == "extra_forbidden":
        return 422, f"unknown field {field}: remove it (see /docs for the accepted fields)", field
    return 422, f"{field or 'request'}: {msg}", field


# An absolute POSIX path of two or more parts (not an /api/ route), or a Windows drive path, not
# inside a word or a URL.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:[A-Za-z]:\\|/(?!api/))(?:[^\s'\"`/\\:,;()]+[/\\])+([^\s'\"`/\\:,;()]*)")


def without_server_paths(message: str) -> str:
    """`message` with every absolute file-system path replaced by its last part (the file name)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "", message)


def known_error_response(exc: Exception, path: str) -> JSONResponse:
    """The JSON answer to a saescope error or a model queue / time-out error raised while serving
    `path`; any other exception gets the last-resort 500. Saescope messages leave out absolute
    server paths (the log keeps them)."""
    if isinstance(exc, InputError):
        return json_error(422, without_server_paths(str(exc)), exc.field)
    if isinstance(exc, NotFoundError):
        return json_error(404, without_server_paths(str(exc)), getattr(exc, "field", None))
    if isinstance(exc, DictionaryUnavailable):
        log.error("dictionary refused on %s: %s", path, exc)
        return json_error(409, without_server_paths(str(exc)), None)
    if isinstance(exc, SaescopeError):
        log.error("server-side saescope error on %s: %s", path, exc)
        return json_error(500, without_server_paths(str(exc)), None)
    if isinstance(exc, QueueFullError):
        return json_error(503, str(exc) or "the model is busy: retry in a moment", None, {"Retry-After": "1"})
    if isinstance(exc, RequestTimeoutError):
        return json_error(504, str(exc) or "the model request timed out", None)
    return unexpected_error_response(exc, path)


def unexpected_error_response(exc: Exception, path: str) -> JSONResponse:
    log.error("unexpected error on %s", path, exc_info=exc)
    return json_error(500, f"internal error ({type(exc).__name__}); see the server log", None)


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on `app`."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if not errors:
            return json_error(422, "invalid request", None)
        status, message, field = validation_message(errors[0])
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return json_error(status, message, field)

    @app.exception_handler(InputError)
    @app.exception_handler(NotFoundError)
    @app.exception_handler(SaescopeError)
    @app.exception_handler(QueueFullError)
    @app.exception_handler(RequestTimeoutError)
    async def _known(request: Request, exc: Exception) -> JSONResponse:
        return known_error_response(exc, request.url.path)

    @app.exception_handler(json.JSONDecodeError)
    async def _bad_json(request: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return json_error(400, f"request body is not valid JSON: {exc.msg} at position {exc.pos}", "body")

    @app.exception_handler(UnicodeDecodeError)
    async def _bad_utf8(request: Request, exc: UnicodeDecodeError) -> JSONResponse:
        return json_error(400, f"request body is not valid UTF-8 (byte {exc.start}): send UTF-8 JSON", "body")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        field = None
        if exc.status_code == 400 and message == "There was an error parsing the body":
            # FastAPI's answer to bodies it cannot decode (invalid UTF-8, broken form data)
            message, field = "request body could not be parsed: send a UTF-8 JSON object", "body"
        return json_error(exc.status_code, message, field, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(exc, f"{request.method} {request.url.path}")
