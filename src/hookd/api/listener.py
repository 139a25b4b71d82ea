"""Serving an application on a TCP port, with the API's answer even to broken HTTP.

aiohttp answers a request its parser refuses (a bare LF, control bytes in a
header, both Content-Length and Transfer-Encoding, an oversized line) before
any application code runs: a text/plain 400 that quotes the offending bytes,
logged at error level with a traceback that quotes them again, body included.
No middleware or signal sees that path in aiohttp 3 (4.0 sends such requests
through the middleware chain).  What decides it is the public ``handle_error``
method of aiohttp's protocol class, ``web.RequestHandler``; so the listener
makes its connections with a subclass of it, which answers in the API's JSON
envelope, quotes nothing and logs one line without the request's bytes.

The application itself still runs under ``web.AppRunner`` (startup, shutdown
and cleanup signals, graceful close of open connections): the listener only
creates the listening socket, the way ``web.TCPSite`` does, with these
protocol objects instead of the runner's.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import structlog
from aiohttp import web
from aiohttp.http import HttpProcessingError

from hookd.api.errors import error_response, failure_answer

log = structlog.get_logger("hookd.api")

MALFORMED_MESSAGE = (
    "request: not valid HTTP/1.1 (request line, headers or body framing); nothing of it was used"
)
_BACKLOG = 128


class _JsonErrors(web.RequestHandler):
    """aiohttp's protocol, with hookd's error answers and log lines."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # ``message`` (and ``exc``'s text) quote the client's bytes: never used.
        if request.writer.output_size > 0:
            # Part of an answer went out already: nothing sensible can follow it.
            raise ConnectionError("an answer was already started")
        if status < 500:
            log.info(
                "api.malformed_request",
                status=status,
                error=type(exc).__name__ if exc is not None else None,
                peer=request.remote,
            )
            answer = error_response(status, MALFORMED_MESSAGE)
        elif isinstance(exc, Exception) and isinstance(request, web.Request):
            # Raised before the middlewares could answer (the Expect hook runs first).
            answer = failure_answer(request, exc)
        else:
            log.error("api.unhandled_error", path=request.path, method=request.method)
            answer = error_response(status, "internal error; see the server log")
        answer.force_close()
        return answer

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # aiohttp's other error lines: mostly a body the client cut short or
        # framed wrongly, found again while draining it after the answer.
        exc = kw.get("exc_info")
        error = exc if isinstance(exc, BaseException) else None
        if isinstance(error, ConnectionError | HttpProcessingError | web.RequestPayloadError):
            log.debug("api.connection_error", error=type(error).__name__)
        else:
            log.error("api.unhandled_error", message=str(args[0]) if args else "", exc_info=error)


class Listener:
    """``app`` on ``host:port``; ``protocol`` are aiohttp's protocol options."""

    def __init__(self, app: web.Application, *, shutdown_timeout: float, **protocol: Any) -> None:
        # The application decodes request bodies itself (api.inputs).
        self.protocol = {"access_log": None, **protocol, "auto_decompress": False}
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout)
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self, host: str | None, port: int) -> None:
        await self.runner.setup()
        manager = self.runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()
        protocol = self.protocol

        def connection() -> _JsonErrors:
            return _JsonErrors(manager, loop=loop, **protocol)

        server = await loop.create_server(
            connection, host or None, port, reuse_address=True, backlog=_BACKLOG
        )
        self._servers.append(server)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        # asyncio's and uvloop's servers both have ``sockets``; the abstract type does not.
        return [
            (str(name[0]), int(name[1]))
            for server in self._servers
            for name in (sock.getsockname() for sock in cast(asyncio.Server, server).sockets)
        ]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        # Open connections finish their request (up to shutdown_timeout), then close.
        await self.runner.cleanup()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
