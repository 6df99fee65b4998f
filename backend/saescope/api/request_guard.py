"""The first check every request meets: its Host header, NUL characters in its URL, the API key.

Owns `RequestGuard`, the outermost ASGI middleware, and the Host rules it applies. In order:
- Host allow-list (`ApiSecurity.allowed_hosts`): a name not listed gets 400, so a page on another
  site cannot reach the server through DNS rebinding. IP addresses and localhost names are always
  served: a rebinding attack always carries the attacker's own domain name.
- A NUL character in the path answers 404 and one in the query string 422: no file, id or stored
  text can contain one, and file systems and PostgreSQL raise on it.
- API key (`ApiSecurity.api_key`): the live endpoints (inference, steer, ablate), or every /api/v1
  endpoint with `protect_reads`, answer 401 without `Authorization: Bearer KEY` or `X-API-Key: KEY`.
It reads headers only: never the body, the store or the model.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from saescope.api.errors import json_error
from saescope.api.settings import ApiSecurity

LOCAL_HOST_NAMES = ("localhost", "*.localhost", "localhost.localdomain")
LIVE_PATHS = ("/inference/", "/steer", "/ablate")
WILDCARD_BIND = ("", "0.0.0.0", "::")


def default_allowed_hosts(bind_host: str, extra: list[str] | None = None) -> list[str]:
    """The Host names `saescope serve` accepts: localhost names, the bound name when it is one
    (IP addresses are always accepted), and `extra`."""
    names = list(LOCAL_HOST_NAMES)
    if bind_host not in WILDCARD_BIND and not _is_ip(bind_host):
        names.append(bind_host.lower())
    return names + [n.lower() for n in extra or []]


def host_name(host_header: str) -> str:
    """The name of a Host header value, without port, brackets or trailing dot, lower-cased."""
    value = host_header.strip().lower()
    if value.startswith("["):  # [v6]:port
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def host_allowed(name: str, allowed: list[str]) -> bool:
    """Whether a Host name (as `host_name` gives it) is served under the allow-list `allowed`."""
    if _is_ip(name):
        return True
    for entry in (*LOCAL_HOST_NAMES, *allowed):
        entry = entry.lower()
        if entry == "*" or entry == name or (entry.startswith("*.") and name.endswith(entry[1:])):
            return True
    return False


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class RequestGuard:
    """ASGI middleware applying the checks of the module docstring to every HTTP request."""

    def __init__(self, app: Any, security: ApiSecurity, prefix: str) -> None:
        self.app = app
        self.allowed = security.allowed_hosts
        self.key = security.api_key.encode() if security.api_key else None
        self.protected = (prefix + "/",) if security.protect_reads else tuple(prefix + p for p in LIVE_PATHS)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: dict[str, Any]) -> Any:
        headers = scope["headers"]
        if self.allowed is not None:
            name = _header(headers, b"host")
            if name is not None and not host_allowed(host_name(name.decode("latin-1")), self.allowed):
                return json_error(
                    400, "this server does not answer to that Host name; add it with --allowed-host", "header.host"
                )
        path = scope["path"]
        if "\x00" in path:
            return json_error(404, "no such path: it contains a NUL character", "path")
        query = scope.get("query_string", b"")
        if b"%00" in query or b"\x00" in query:
            return json_error(422, "query parameters must not contain a NUL character", "query")
        if self.key is not None and path.startswith(self.protected) and not self._key_given(headers):
            return json_error(
                401, "this endpoint needs the API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                "header.authorization", {"WWW-Authenticate": "Bearer"},
            )
        return None

    def _key_given(self, headers: list[tuple[bytes, bytes]]) -> bool:
        assert self.key is not None
        given = _header(headers, b"x-api-key")
        if given is None:
            auth = _header(headers, b"authorization") or b""
            scheme, _, token = auth.strip().partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else None
        return given is not None and hmac.compare_digest(given, self.key)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None
