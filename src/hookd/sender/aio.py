"""aiohttp's ``ClientSession`` as the Sender's transport (``[delivery] client = "aiohttp"``).

For operators who would rather run the HTTP client of the named stack than
hookd's own: the same requests (``sender.request``), the same address policy
at connect time (the connector's ``socket_factory`` is the policy's, so
every address aiohttp connects to is judged, after DNS), the same single
deadline over DNS, connect, TLS, request and response (``asyncio.timeout``
around all of it), the same bounded, self-decoded body (``sender.body``),
the same results.  Nothing implicit: no redirects, no proxy from the
environment, no cookies, no automatic decompression.

Where aiohttp's public API offers no equivalent, it behaves as aiohttp
does (docs/http-client.md lists the differences): its head limits are per
line (8190 bytes) and per count (128 headers), not 64 KiB in all; a request
whose reused connection closed before the answer is sent once more on the
next connection the pool gives.
"""

from __future__ import annotations

import asyncio
import weakref
from contextvars import ContextVar
from typing import Any

import aiohttp

from hookd.policy import ErrorKind
from hookd.sender.addresses import BlockedAddressError
from hookd.sender.body import Body
from hookd.sender.head import MAX_HEADER_LINES, MAX_LINE_BYTES
from hookd.sender.request import Target
from hookd.sender.transport import (
    TIMEOUT_MESSAGE,
    ClientOptions,
    SendResult,
    cannot_connect,
    default_tls_context,
    elapsed_ms,
    failed,
    timed_out,
)

DNS_TTL_SECONDS = 60
# aiohttp's wording when the connection ended before the body its head announced.
_NOT_COMPLETED = "Response payload is not completed"


class _Exchange:
    """What arrived of one response, kept when the deadline or the peer cuts it short."""

    __slots__ = ("body", "internal", "retry_after", "reused", "status")

    def __init__(self, limit: int) -> None:
        self.status: int | None = None
        self.retry_after: str | None = None
        self.body = Body(limit)
        self.reused = False
        self.internal = False


# The exchange the current task is making, for the connector to mark.
_CURRENT: ContextVar[_Exchange | None] = ContextVar("hookd_aio_exchange", default=None)


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, noting whether the connection a request gets has
    carried one before (the only way to tell, with the public API, that a
    disconnect came from a kept-alive connection the peer had just closed)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.used: weakref.WeakSet[Any] = weakref.WeakSet()

    async def connect(self, *args: Any, **kwargs: Any) -> aiohttp.connector.Connection:
        conn = await super().connect(*args, **kwargs)
        got = _CURRENT.get()
        protocol = conn.protocol
        if got is not None and protocol is not None:
            got.reused = protocol in self.used
            self.used.add(protocol)
        return conn


class AiohttpClient:
    """The :class:`~hookd.sender.transport.Transport` on aiohttp's ``ClientSession``."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self._builder = options.builder
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        options = self.options
        connector = _Connector(
            limit=0,  # the scheduler's semaphores are the limits
            limit_per_host=0,
            ttl_dns_cache=DNS_TTL_SECONDS,
            keepalive_timeout=options.keepalive_seconds,
            socket_factory=options.policy.socket_factory,
            resolver=options.resolver,
            ssl=options.ssl_context or default_tls_context(),
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Never through an HTTP(S)_PROXY from the environment: the policy
            # would then judge the proxy's address, not the receiver's.
            trust_env=False,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # The request's headers are ours (sender.request), as the own client sends them.
            skip_auto_headers=("User-Agent", "Content-Type", "Accept", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=None),  # the deadline is ours
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_LINE_BYTES,
            max_headers=MAX_HEADER_LINES,
        )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def clear_dns_cache(self) -> None:
        if self._session is not None:
            connector = self._session.connector
            if isinstance(connector, aiohttp.TCPConnector):
                connector.clear_dns_cache()

    async def exchange(
        self, target: Target, body: bytes, headers: dict[str, str], timeout_ms: int, started: float
    ) -> SendResult:
        session = self._session
        if session is None:
            raise RuntimeError("sender is not started")
        try:
            request_headers = self._builder.headers(headers)
        except ValueError as exc:
            return failed(ErrorKind.CONNECT, f"invalid request: {exc}", started)
        got = _Exchange(self.options.max_response_bytes)
        token = _CURRENT.set(got)
        deadline = asyncio.timeout(timeout_ms / 1000)
        try:
            async with deadline:
                await self._post(session, target, body, request_headers, got)
        except TimeoutError:
            if not deadline.expired():
                return failed(ErrorKind.CONNECT, "timed out", started)
            if got.status is None:
                return timed_out(started)
            return _result(got, ErrorKind.TIMEOUT, TIMEOUT_MESSAGE, started)
        except aiohttp.ClientPayloadError as exc:
            text = str(exc)
            if got.status is not None and text.startswith(_NOT_COMPLETED):
                text = f"incomplete response: {text}"[:500]
                return _result(got, ErrorKind.INCOMPLETE, text, started)
            return failed(ErrorKind.INVALID_RESPONSE, f"invalid response: {text}"[:500], started)
        except aiohttp.ServerDisconnectedError as exc:
            if got.status is not None:
                return _result(got, ErrorKind.INCOMPLETE, "incomplete response", started)
            return failed(ErrorKind.CONNECT, _disconnected(exc), started)
        except aiohttp.ClientResponseError as exc:
            return failed(ErrorKind.INVALID_RESPONSE, f"invalid response: {exc.message}", started)
        except aiohttp.InvalidURL as exc:
            return failed(ErrorKind.CONNECT, f"invalid URL: {exc}"[:500], started)
        except aiohttp.ClientConnectorCertificateError as exc:
            return failed(ErrorKind.CONNECT, cannot_connect(target, exc.certificate_error), started)
        except aiohttp.ClientConnectorError as exc:
            if _blocked(exc.os_error):
                return failed(ErrorKind.BLOCKED, "blocked", started)
            return failed(ErrorKind.CONNECT, cannot_connect(target, exc.os_error), started)
        except (aiohttp.ClientError, OSError) as exc:
            text = str(exc) or type(exc).__name__
            if got.status is not None:
                text = f"incomplete response: {text}"[:500]
                return _result(got, ErrorKind.INCOMPLETE, text, started)
            return failed(ErrorKind.CONNECT, text[:500], started)
        finally:
            _CURRENT.reset(token)
        if got.status == 101:
            return failed(
                ErrorKind.INVALID_RESPONSE,
                "invalid response: unexpected 101 Switching Protocols",
                started,
            )
        return _result(got, None, None, started)

    def _internal(self, resp: aiohttp.ClientResponse) -> bool:
        """Whether ``resp`` comes from an address only ``allow_networks`` permits."""
        policy = self.options.policy
        if not policy.allowed:
            return False
        connection = resp.connection
        transport = connection.transport if connection is not None else None
        peer = transport.get_extra_info("peername") if transport is not None else None
        # A peer we cannot name is taken as one the list let through.
        return policy.connected_to_listed(str(peer[0])) if peer else True

    async def _post(
        self,
        session: aiohttp.ClientSession,
        target: Target,
        body: bytes,
        headers: dict[str, str],
        got: _Exchange,
    ) -> None:
        for attempt in range(2):
            try:
                async with session.post(
                    target.url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                ) as resp:
                    got.status = resp.status
                    got.internal = self._internal(resp)
                    if resp.status == 101:
                        resp.close()  # read nothing more: a protocol we never asked for
                        return
                    got.retry_after = resp.headers.get("Retry-After")
                    encoding = resp.headers.get("Content-Encoding")
                    if encoding is not None:
                        got.body.decode(encoding.strip().lower().encode("latin-1"))
                    content = resp.content
                    while chunk := await content.readany():
                        if not got.body.add(chunk):
                            # Stopped at our limit: the rest must never be taken
                            # for the next response, so the connection goes.
                            resp.close()
                            break
                    return
            except aiohttp.ServerDisconnectedError as exc:
                # The peer closed a kept-alive connection just as we reused it,
                # before any byte of the answer (aiohttp's message is then its
                # plain text, else what it parsed of a head): sent once more,
                # as the own client does, and counted.
                if (
                    got.status is not None
                    or not got.reused
                    or attempt
                    or not isinstance(exc.message, str)
                ):
                    raise
                got.reused = False
                if self.options.on_resend is not None:
                    self.options.on_resend()


def _result(got: _Exchange, kind: ErrorKind | None, text: str | None, started: float) -> SendResult:
    return SendResult(
        got.status,
        kind,
        text,
        got.body.text(),
        got.retry_after,
        elapsed_ms(started),
        got.internal,
    )


def _disconnected(exc: aiohttp.ServerDisconnectedError) -> str:
    if isinstance(exc.message, str):
        return "Server disconnected"
    return "Server disconnected inside the response head"


def _blocked(exc: BaseException | None) -> bool:
    """Whether the policy refused *every* address the connection could use.

    Happy Eyeballs raises the refusal itself when all candidates were refused
    (they share one message), but a plain ``OSError("Multiple exceptions:
    ...")`` when some were refused and others failed otherwise; that is an
    ordinary connection failure, worth a retry, not ``blocked``.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, BlockedAddressError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
