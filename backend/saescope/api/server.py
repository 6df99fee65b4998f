"""Running the app under uvicorn with the connection time-outs of `ApiSecurity`.

Owns `uvicorn_config` and `run_server`. uvicorn closes idle keep-alive connections
(`timeout_keep_alive`) but waits forever for the headers of a request, so a client trickling header
bytes (or sending none) holds a connection open indefinitely; `header_timeout_protocol` adds that
time-out: each request's headers must arrive within `header_timeout_s` of the connection opening or
of the previous response. h11's incomplete-event limit bounds how large headers may grow meanwhile.
Nothing here knows the routes, the store or the model.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

MAX_HEADER_BYTES = 64 * 1024


def header_timeout_protocol(base: type[asyncio.Protocol], timeout_s: float) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol `base` (h11 or httptools) closing a connection whose
    next request's headers are not complete `timeout_s` after it opened or its last response ended."""

    class HeaderTimeoutProtocol(base):  # type: ignore[valid-type, misc]
        _header_timer: asyncio.TimerHandle | None = None
        _seen_cycle: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and self.cycle is not self._seen_cycle:  # a request's headers arrived
                self._seen_cycle = self.cycle
                self._cancel_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            if not self.transport.is_closing():
                self._header_timer = self.loop.call_later(timeout_s, self._headers_timed_out)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_timed_out(self) -> None:
            self._header_timer = None
            in_flight = self.cycle is not None and not self.cycle.response_complete
            if not in_flight and not self.transport.is_closing():
                self.transport.close()

    HeaderTimeoutProtocol.__name__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeoutProtocol


def uvicorn_config(app: Any, host: str, port: int, header_timeout_s: float, keep_alive_s: float,
                   log_level: str = "warning", **kwargs: Any) -> uvicorn.Config:
    """A uvicorn Config serving `app` with the header and keep-alive time-outs."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=header_timeout_protocol(AutoHTTPProtocol, header_timeout_s),
        timeout_keep_alive=keep_alive_s,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        **kwargs,
    )


def run_server(app: Any, host: str, port: int, header_timeout_s: float, keep_alive_s: float, **kwargs: Any) -> None:
    """Serve `app` on `host:port` until interrupted (see `uvicorn_config`)."""
    uvicorn.Server(uvicorn_config(app, host, port, header_timeout_s, keep_alive_s, **kwargs)).run()
