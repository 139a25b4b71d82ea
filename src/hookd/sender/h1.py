"""HTTP/1.1 on an asyncio Protocol: one exchange at a time per connection, bounded parsing.

This is the wire half of hookd's own client (``sender.h1client`` holds the pool,
DNS, the address policy and the deadline).  It does only what a webhook POST
needs, so it can be small enough to read in one sitting and cheap enough per
request:

- The request arrives formatted (``sender.request``): one ``transport.write``.
- :class:`H1Connection` is one TCP (or TLS) connection.  It parses the
  response in ``data_received`` with ``bytes.find``/``split`` and a small
  state machine, and wakes the waiting coroutine through one future per
  exchange.  Everything is bounded: the head (64 KiB, 8190-byte lines,
  128 lines), chunk-size lines, trailers, and the kept body
  (``sender.body``).

Response framing follows RFC 9112 section 6.3 for a client that only sends
POST: 1xx are interim (101 is an error, we never ask to switch), 204 and 304
have no body, ``Transfer-Encoding`` ending in ``chunked`` wins over
``Content-Length``, a response with neither is read until the peer closes.
Like aiohttp's response parser it is lenient where leniency cannot desync
the stream (bare LF line ends, spaces around chunk sizes) and strict where
it could (conflicting lengths, malformed sizes).

A response is complete when its framing says so (the announced length, the
last chunk and trailers) or, for a body delimited by the connection's close,
at the close.  A body the peer cuts short is *incomplete*: the exchange ends
with an error (``incomplete``) beside the status of its head and what
arrived of the body; the sender reports it as a failed attempt, as RFC 9112
section 8 asks.  A body we stop reading at our own limit is complete as far
as we are concerned (the receiver answered; we keep what we need).  Either
way the connection is closed rather than reused.  Garbled chunked framing
is an invalid response, like a garbled head.
"""

from __future__ import annotations

import asyncio
from typing import Final, cast

from hookd.sender.body import Body
from hookd.sender.chunked import CHUNK_SIZE, ChunkedBody
from hookd.sender.head import (
    MAX_HEAD_BYTES,
    MAX_LINE_BYTES,
    InvalidResponse,
    parse_head,
    status_line,
)

# Parser states.  The body states are the ones above _HEAD, so a single
# comparison routes data_received's common case.
_IDLE: Final = 0
_DONE: Final = 1
_HEAD: Final = 2
_LENGTH: Final = 3
_UNTIL_CLOSE: Final = 4
# and the chunked body's, CHUNK_SIZE and up (sender.chunked).

# A parked connection's body: it holds nothing, and start() replaces it.
_PARKED = Body(0)


class H1Connection(ChunkedBody, asyncio.Protocol):
    """One connection to a receiver, carrying one exchange at a time.

    The sender calls :meth:`start` with the request, awaits the returned
    future, then reads the outcome fields: ``status`` (a final head
    arrived), ``error`` (no complete response: ``invalid`` tells a malformed
    response from a lost connection, ``incomplete`` a body the peer cut
    short after a good head), ``timed_out`` (the deadline ended the exchange,
    with or without a head), ``body``, ``retry_after``, ``received`` (any
    response byte at all) and :meth:`reusable`.
    """

    __slots__ = (
        "body",
        "closed",
        "error",
        "idle_since",
        "incomplete",
        "internal",
        "invalid",
        "key",
        "line_checked",
        "live",
        "loop",
        "received",
        "retry_after",
        "status",
        "timed_out",
        "transport",
        "waiter",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, live: set[H1Connection], key: tuple[str, str, int]
    ) -> None:
        self.loop = loop
        self.live = live
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.waiter: asyncio.Future[None] | None = None
        self.state = _IDLE
        # What arrived of an unfinished head or chunk-framing line.  Appended
        # to, never rebuilt, and searched only where new bytes came in: a
        # receiver that sends its head a byte at a time costs us a constant
        # per byte, not the whole head again on every read.
        self.buf = bytearray()
        self.received = False
        self.status: int | None = None
        self.retry_after: str | None = None
        self.body = _PARKED
        self.remaining = 0
        self.keep_alive = True
        self.error: str | None = None
        self.invalid = False
        self.incomplete = False
        self.timed_out = False
        self.line_checked = False
        self.trailer_bytes = 0
        # Connected to an address only [delivery] allow_networks permits (set by the client).
        self.internal = False

    # -- the sender's side ------------------------------------------------------------

    def start(self, request: bytes, limit: int) -> asyncio.Future[None]:
        """Send ``request``; the future resolves when the exchange has an outcome."""
        self.state = _HEAD
        if self.buf:
            self.buf.clear()
        self.received = False
        self.status = None
        self.retry_after = None
        self.body = Body(limit)
        self.keep_alive = True
        self.error = None
        self.invalid = False
        self.incomplete = False
        self.timed_out = False
        self.line_checked = False
        self.trailer_bytes = 0
        self.waiter = waiter = self.loop.create_future()
        assert self.transport is not None
        self.transport.write(request)
        return waiter

    def expire(self) -> None:
        """The request's deadline passed: end the exchange with what has arrived."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            self.timed_out = True
            self.keep_alive = False
            self.state = _DONE
            waiter.set_result(None)

    def reusable(self) -> bool:
        """Whether this connection may carry another exchange (checked after one ended)."""
        transport = self.transport
        return (
            self.keep_alive
            and self.state == _DONE
            and not self.closed
            and self.error is None
            and not self.timed_out
            and transport is not None
            and not transport.is_closing()
            # The receiver answered before taking our whole request: it may
            # still be discarding it, so the stream's position is unknown.
            and transport.get_write_buffer_size() == 0
        )

    def park(self, now: float) -> None:
        """Idle in the pool from ``now``."""
        self.state = _IDLE
        self.waiter = None
        self.idle_since = now
        self.body = _PARKED

    def abort(self) -> None:
        self.closed = True
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports are not asyncio.Transport
        # subclasses, though they offer the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.live.discard(self)
        self._ended(exc)
        self.closed = True

    def eof_received(self) -> bool:
        self._ended(None)
        self.closed = True
        return False  # let the transport close

    def data_received(self, data: bytes) -> None:
        state = self.state
        try:
            if state > _HEAD:
                self._body(data)
            elif state == _HEAD:
                self.received = True
                buf = self.buf
                if buf:
                    # Resume the search where the new bytes begin (less the two
                    # that could start a line-end sequence split across reads).
                    start = len(buf) - 2
                    buf += data
                    self._head(buf, start if start > 0 else 0)
                else:
                    self._head(data, 0)
            else:
                # Bytes nobody asked for (idle, or after a complete response):
                # the stream's framing can no longer be trusted.
                self.abort()
        except InvalidResponse as exc:
            self._fail(str(exc), invalid=True)

    # -- parsing -------------------------------------------------------------------------

    def _head(self, buf: bytes | bytearray, start: int) -> None:
        """Look for the end of the head in ``buf`` from ``start`` (``buf`` is
        ``self.buf`` when earlier reads left part of the head there)."""
        while True:
            # The head ends at the first empty line; a line end is CRLF or a bare LF.
            crlf = buf.find(b"\n\r\n", start)
            lf = buf.find(b"\n\n", start, crlf + 1 if crlf >= 0 else len(buf))
            if lf >= 0:
                end, skip = lf, 2
            elif crlf >= 0:
                end, skip = crlf, 3
            else:
                self._partial_head(buf, start)
                return
            if end > MAX_HEAD_BYTES:
                raise InvalidResponse("response head larger than 64 KiB")
            rest = buf[end + skip :]
            mode = self._parse_head(bytes(buf[:end]))
            if self.buf:
                self.buf.clear()  # ``rest`` is a copy
            if mode == _IDLE:  # an interim 1xx: the real head follows
                self.line_checked = False
                buf = rest
                start = 0
                continue
            if mode == _DONE:
                if rest:
                    self.keep_alive = False
                self._complete()
                return
            self.state = mode
            if rest:
                self._body(rest)
            return

    def _partial_head(self, buf: bytes | bytearray, start: int) -> None:
        if len(buf) > MAX_HEAD_BYTES:
            raise InvalidResponse("response head larger than 64 KiB")
        if not self.line_checked:
            # Judge the status line as soon as it is there, so a peer that is not
            # HTTP at all fails now rather than at the deadline.  (No line end
            # was before ``start``, or the line would have been judged then.)
            nl = buf.find(b"\n", start)
            if nl >= 0:
                status_line(bytes(buf[:nl]).rstrip(b"\r"))
                self.line_checked = True
            elif len(buf) > MAX_LINE_BYTES or not b"HTTP/1.".startswith(buf[:7]):
                raise InvalidResponse(f"bad status line {bytes(buf[:40])!r}")
        if buf is not self.buf:
            self.buf += buf

    def _parse_head(self, raw: bytes) -> int:
        """Take a complete head; the body mode to go on with (_IDLE for an interim 1xx)."""
        head = parse_head(raw)
        if head is None:
            return _IDLE
        status, self.keep_alive, length, codings, encoding, retry_after = head
        self.status = status
        if retry_after is not None:
            self.retry_after = retry_after.decode("latin-1")
        if status == 204 or status == 304:
            return _DONE
        if encoding is not None:
            self.body.decode(encoding)
        if codings:
            # With a Transfer-Encoding, Content-Length means nothing, and a
            # sender that used both is one we would rather not reuse.
            if length >= 0:
                self.keep_alive = False
            if codings[-1] == b"chunked":
                return CHUNK_SIZE
            self.keep_alive = False
            return _UNTIL_CLOSE
        if length == 0:
            return _DONE
        if length > 0:
            self.remaining = length
            return _LENGTH
        self.keep_alive = False
        return _UNTIL_CLOSE

    def _body(self, data: bytes | bytearray) -> None:
        state = self.state
        if state == _LENGTH:
            remaining = self.remaining
            if len(data) < remaining:
                self.remaining = remaining - len(data)
                self._keep(data)
                return
            extra = len(data) > remaining
            if not self._keep(data[:remaining] if extra else data):
                return
            self.remaining = 0
            if extra:
                self.keep_alive = False
            self._complete()
        elif state == _UNTIL_CLOSE:
            self._keep(data)
        elif state != _DONE:
            self._chunked(data)

    def _keep(self, piece: bytes | bytearray) -> bool:
        """Keep what fits of a body piece; False when we stop reading (limit reached)."""
        if self.body.add(piece):
            return True
        self._stop_early()
        return False

    # -- endings -------------------------------------------------------------------------

    def _complete(self) -> None:
        self.state = _DONE
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop_early(self) -> None:
        # We stop reading a body that goes on: the rest must never be taken
        # for the next response, so the connection goes.
        self.keep_alive = False
        self._complete()
        self.abort()

    def _broken_body(self, reason: str) -> None:
        # Garbled framing is a receiver that does not speak HTTP properly, like a
        # bad head, whatever status it announced (a body merely cut short, by the
        # peer or by our deadline, is reported with its status instead).
        self._fail(reason, invalid=True)

    def _fail(self, reason: str, *, invalid: bool) -> None:
        self.error = reason
        self.invalid = invalid
        self._complete()
        self.abort()

    def _ended(self, exc: BaseException | None) -> None:
        """The peer closed (``exc`` None) or the connection broke."""
        state = self.state
        if state in (_IDLE, _DONE):
            return
        self.keep_alive = False
        if state == _HEAD:
            if exc is not None:
                reason = str(exc) or type(exc).__name__
            elif self.received:
                reason = "Server disconnected inside the response head"
            else:
                reason = "Server disconnected"
            self._fail(reason, invalid=False)
            return
        if state != _UNTIL_CLOSE:
            # Cut short: the head's status is no answer without its body.
            reason = (str(exc) or type(exc).__name__) if exc is not None else "Server disconnected"
            self.error = f"{reason} before the end of the body"
            self.incomplete = True
        # A body delimited by the close is complete here.
        self._complete()
