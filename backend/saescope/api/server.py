"""Running the app under uvicorn with the connection time-outs of `ApiSecurity`.

Owns `uvicorn_config` and `run_server`. uvicorn closes idle keep-alive connections
(`timeout_keep_alive`) but waits forever for the headers of a request, so a client trickling header
bytes (or sending none) holds a connection open indefinitely; `header_timeout_protocol` adds that
time-out: each request's headers must arrive within `header_timeout_s` of the connection opening or
of the previous response. h11's incomplete-event limit bounds how large headers may grow meanwhile.

Several worker processes (`run_server(..., workers=N)`) go through uvicorn's own supervisor, which
pickles the config into freshly spawned processes: the app is then an import string naming a factory
(the caller passes the settings through the environment), and the protocol is the module-level
`HeaderTimeoutHTTPProtocol`, which reads its time-out from `HeaderTimeoutConfig.header_timeout_s`.
Nothing here knows the routes, the store or the model.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.supervisors import Multiprocess

MAX_HEADER_BYTES = 64 * 1024


def header_timeout_protocol(base: type[asyncio.Protocol], timeout_s: float | None) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol `base` (h11 or httptools) closing a connection whose
    next request's headers are not complete `timeout_s` after it opened or its last response ended
    (None: the `header_timeout_s` of the protocol's `HeaderTimeoutConfig`)."""

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
                limit = timeout_s if timeout_s is not None else self.config.header_timeout_s
                self._header_timer = self.loop.call_later(limit, self._headers_timed_out)

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


class HeaderTimeoutConfig(uvicorn.Config):
    """uvicorn's Config plus `header_timeout_s`, read by `HeaderTimeoutHTTPProtocol`; picklable, so
    uvicorn's supervisor hands it whole to each worker process."""

    def __init__(self, app: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout_s = header_timeout_s


# A module-level name, so that pickle finds the class when the config travels to worker processes.
HeaderTimeoutHTTPProtocol = header_timeout_protocol(AutoHTTPProtocol, None)
HeaderTimeoutHTTPProtocol.__name__ = HeaderTimeoutHTTPProtocol.__qualname__ = "HeaderTimeoutHTTPProtocol"


def uvicorn_config(app: Any, host: str, port: int, header_timeout_s: float, keep_alive_s: float,
                   log_level: str = "warning", **kwargs: Any) -> HeaderTimeoutConfig:
    """A uvicorn Config serving `app` (an ASGI app, or an import string with `factory=True` and
    `workers=N` in `kwargs`) with the header and keep-alive time-outs."""
    return HeaderTimeoutConfig(
        app,
        header_timeout_s,
        host=host,
        port=port,
        log_level=log_level,
        http=HeaderTimeoutHTTPProtocol,
        timeout_keep_alive=keep_alive_s,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        **kwargs,
    )


def run_server(app: Any, host: str, port: int, header_timeout_s: float, keep_alive_s: float, **kwargs: Any) -> None:
    """Serve `app` on `host:port` until interrupted (see `uvicorn_config`). With `workers=N` > 1 in
    `kwargs`, `app` must be an import string (a factory with `factory=True`): uvicorn's supervisor
    binds the socket once and runs N worker processes that each import and build the app."""
    config = uvicorn_config(app, host, port, header_timeout_s, keep_alive_s, **kwargs)
    if config.workers == 1:
        uvicorn.Server(config).run()
        return
    if not isinstance(app, str):
        raise TypeError("several workers need the app as an import string ('module:attribute')")
    sockets = [config.bind_socket()]
    if "target" in inspect.signature(Multiprocess).parameters:  # older uvicorn: the server's run method
        Multiprocess(config, target=uvicorn.Server(config).run, sockets=sockets).run()
    else:  # each worker process builds its own Server from the config
        Multiprocess(config, sockets=sockets).run()
