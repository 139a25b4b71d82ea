"""HTTP/1.1 on an asyncio Protocol: one exchange at a time per connection, bounded parsing.

This is the wire half of the delivery client (``sender.http`` holds the pool,
DNS, the address policy and the deadline).  It does only what a webhook POST
needs, so it can be small enough to read in one sitting and cheap enough per
request:

- :class:`Target` is everything a URL means for a request, parsed once and
  cached by the sender; the request head is formatted from it with one
  f-string, one ``encode`` and one ``transport.write``.
- :class:`H1Connection` is one TCP (or TLS) connection.  It parses the
  response in ``data_received`` with ``bytes.find``/``split`` and a small
  state machine, and wakes the waiting coroutine through one future per
  exchange.  Everything is bounded: the head (64 KiB, 8190-byte lines,
  128 lines), chunk-size lines, trailers, the kept body (``limit`` decoded
  bytes) and the compressed input (4 x ``limit``).

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
import ipaddress
import re
import socket
import zlib
from typing import Any, Final, cast
from urllib.parse import quote

from yarl import URL

from hookd.sender.addresses import literal_address

MAX_HEAD_BYTES: Final = 64 * 1024
MAX_LINE_BYTES: Final = 8190  # aiohttp's (and nginx's) line limit
MAX_HEADER_LINES: Final = 128
MAX_CHUNK_LINE_BYTES: Final = 4096  # size, extensions and line end
MAX_TRAILER_BYTES: Final = 64 * 1024
# Compressed input read at most this many times the decoded limit: a body that
# inflates to nothing must not keep us reading forever.
RAW_LIMIT_FACTOR: Final = 4

# Parser states.  The body states are the ones above _HEAD, so a single
# comparison routes data_received's common case.
_IDLE: Final = 0
_DONE: Final = 1
_HEAD: Final = 2
_LENGTH: Final = 3
_UNTIL_CLOSE: Final = 4
_CHUNK_SIZE: Final = 5
_CHUNK_DATA: Final = 6
_CHUNK_END: Final = 7
_TRAILERS: Final = 8
_CHUNK_CR: Final = 9  # a CR after chunk data arrived; its LF has not

# Response headers that change how we read or what we report; the rest are skipped.
_CONTENT_LENGTH: Final = 1
_TRANSFER_ENCODING: Final = 2
_CONNECTION: Final = 3
_CONTENT_ENCODING: Final = 4
_RETRY_AFTER: Final = 5
_KNOWN_HEADERS: Final = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"content-encoding": _CONTENT_ENCODING,
    b"retry-after": _RETRY_AFTER,
}
_HEX_DIGITS: Final = b"0123456789abcdefABCDEF"

# Request headers the client owns: a caller's value would change framing or routing.
_RESERVED_REQUEST_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-connection",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters no header value may carry (RFC 9110 section 5.5: HTAB is
# the only one allowed).  CR and LF are counted separately, since the joined
# header lines contain them.  A receiver or a proxy in between may cut a
# value at a NUL or take a VT or FF for a line end: such a value is refused
# before anything is sent.
_VALUE_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# RFC 3986 characters that may stand in a path or query as they are; anything
# else is percent-encoded (as UTF-8).  "%" is kept only as the start of an
# escape, so the URL's own escapes are sent exactly as written.
_TARGET_SAFE = "!$&'()*+,;=:@/?~-._%"
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


class InvalidURLError(ValueError):
    """The URL cannot be sent to (scheme, credentials, host, notation)."""


class Target:
    """What one webhook URL means for a request: parsed once, reused for every delivery.

    ``host`` is yarl's ``raw_host`` (IDNA-encoded, as the address policy's
    static check reads it); ``key`` is the pool key (scheme, host, port).
    """

    __slots__ = (
        "addr_infos",
        "host",
        "key",
        "port",
        "prefix",
        "server_hostname",
        "tls",
    )

    def __init__(self, url: str) -> None:
        try:
            parsed = URL(url)
            raw = URL(url, encoded=True)
            port = parsed.port
        except (ValueError, UnicodeError) as exc:
            raise InvalidURLError(str(exc) or "cannot parse") from None
        scheme = parsed.scheme.lower()
        if scheme not in ("http", "https"):
            raise InvalidURLError(f"{url[:100]!r} is not an http:// or https:// URL")
        host = parsed.raw_host
        if not host or port is None:
            raise InvalidURLError(f"{url[:100]!r} has no host")
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise InvalidURLError("credentials in the URL are not sent")
        self.tls = scheme == "https"
        self.host = host
        self.port = port
        self.key = (scheme, host, port)
        # TLS names carry no trailing dot (certificates never do).
        self.server_hostname = host.rstrip(".")
        self.addr_infos = _literal_addr_infos(host, port)
        host_header = parsed.host_port_subcomponent or host
        request_target = _request_target(raw.raw_path, raw.raw_query_string)
        self.prefix = f"POST {request_target} HTTP/1.1\r\nHost: {host_header}\r\n"


def _literal_addr_infos(host: str, port: int) -> list[AddrInfo] | None:
    """Connect candidates for an IP-literal host (no DNS), or None for a name.

    Legacy IPv4 notations (``0177.1``, ``0x7f000001``) mean the address a
    resolver's ``inet_aton`` makes of them; we make it ourselves, so the
    policy judges that address and no resolver is asked about such a "name".
    """
    text = host.replace("%25", "%")  # a zone index, percent-encoded in the URL
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text)
    except ValueError:
        legacy = literal_address(host)
        if legacy is None:
            return None
        address = legacy
        text = str(legacy)
    if address.version == 6:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (text, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (text, port))]


def _request_target(path: str, query: str) -> str:
    target = path or "/"
    if query:
        target = f"{target}?{query}"
    return quote(_LONE_PERCENT.sub("%25", target), safe=_TARGET_SAFE)


class RequestBuilder:
    """Formats request heads; remembers which caller header names it has vetted."""

    __slots__ = ("_defaults", "_names")

    def __init__(self, user_agent: str) -> None:
        _check_value(user_agent)
        self._defaults = {
            "content-type": "Content-Type: application/json\r\n",
            "user-agent": f"User-Agent: {user_agent}\r\n",
            "accept-encoding": "Accept-Encoding: gzip, deflate\r\n",
        }
        # name -> its lower-case form when it replaces a default, else "".
        self._names: dict[str, str] = {}

    def build(self, target: Target, body: bytes, headers: dict[str, str]) -> bytes:
        """The whole request as one bytes object; ValueError for an unsendable header."""
        names = self._names
        replaced: list[str] | None = None
        for name in headers:
            override = names.get(name)
            if override is None:
                override = self._vet_name(name)
            if override:
                replaced = [override] if replaced is None else [*replaced, override]
        caller = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        # One CR and one LF per line we wrote: any more came from a value.
        if caller.count("\n") != len(headers) or caller.count("\r") != len(headers):
            raise ValueError("a header value contains CR or LF")
        if _VALUE_CONTROLS.search(caller) is not None:
            raise ValueError("a header value contains a control character")
        if replaced is None:
            defaults = "".join(self._defaults.values())
        else:
            defaults = "".join(v for k, v in self._defaults.items() if k not in replaced)
        head = (f"{target.prefix}{defaults}{caller}Content-Length: {len(body)}\r\n\r\n").encode()
        return head + body

    def _vet_name(self, name: str) -> str:
        lower = name.lower()
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name[:50]!r} is not a token")
        if lower in _RESERVED_REQUEST_HEADERS:
            raise ValueError(f"header {name} is set by the client itself")
        override = lower if lower in self._defaults else ""
        if len(self._names) < 1024:  # caller names are a handful; never grow unbounded
            self._names[name] = override
        return override


def _check_value(value: str) -> None:
    if "\r" in value or "\n" in value or _VALUE_CONTROLS.search(value) is not None:
        raise ValueError("a header value contains a control character")


class _Invalid(Exception):
    """A response that is not HTTP/1.x as we accept it; the text says why."""


def _status_line(line: bytes) -> tuple[int, bool]:
    """(status, speaks HTTP/1.1) from a status line, or _Invalid."""
    if (
        len(line) < 12
        or not line.startswith(b"HTTP/1.")
        or line[8] != 0x20
        or not line[7:8].isdigit()
        or not line[9:12].isdigit()
        or (len(line) > 12 and line[12] != 0x20)
    ):
        raise _Invalid(f"bad status line {line[:40]!r}")
    status = int(line[9:12])
    if status < 100:
        raise _Invalid(f"bad status code {status}")
    return status, line[7] != 0x30


def _content_length(value: bytes, known: int) -> int:
    # "5, 5" (a list of equal values) is allowed; anything else that disagrees is not.
    length = known
    for part in value.split(b","):
        part = part.strip()
        if not part.isdigit() or len(part) > 18:
            raise _Invalid(f"bad Content-Length {value[:40]!r}")
        n = int(part)
        if length >= 0 and n != length:
            raise _Invalid("conflicting Content-Length values")
        length = n
    return length


class H1Connection(asyncio.Protocol):
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
        "buf",
        "closed",
        "decompressor",
        "error",
        "idle_since",
        "incomplete",
        "invalid",
        "keep_alive",
        "key",
        "limit",
        "line_checked",
        "live",
        "loop",
        "raw_limit",
        "raw_read",
        "received",
        "remaining",
        "retry_after",
        "state",
        "status",
        "timed_out",
        "trailer_bytes",
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
        self.body = bytearray()
        self.limit = 0
        self.raw_limit = 0
        self.raw_read = 0
        self.decompressor: Any = None
        self.remaining = 0
        self.keep_alive = True
        self.error: str | None = None
        self.invalid = False
        self.incomplete = False
        self.timed_out = False
        self.line_checked = False
        self.trailer_bytes = 0

    # -- the sender's side ------------------------------------------------------------

    def start(self, request: bytes, limit: int) -> asyncio.Future[None]:
        """Send ``request``; the future resolves when the exchange has an outcome."""
        self.state = _HEAD
        if self.buf:
            self.buf.clear()
        self.received = False
        self.status = None
        self.retry_after = None
        self.body = bytearray()
        self.limit = limit
        self.raw_limit = limit * RAW_LIMIT_FACTOR
        self.raw_read = 0
        self.decompressor = None
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
        self.body = bytearray()

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
        except _Invalid as exc:
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
                raise _Invalid("response head larger than 64 KiB")
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
            raise _Invalid("response head larger than 64 KiB")
        if not self.line_checked:
            # Judge the status line as soon as it is there, so a peer that is not
            # HTTP at all fails now rather than at the deadline.  (No line end
            # was before ``start``, or the line would have been judged then.)
            nl = buf.find(b"\n", start)
            if nl >= 0:
                _status_line(bytes(buf[:nl]).rstrip(b"\r"))
                self.line_checked = True
            elif len(buf) > MAX_LINE_BYTES or not b"HTTP/1.".startswith(buf[:7]):
                raise _Invalid(f"bad status line {bytes(buf[:40])!r}")
        if buf is not self.buf:
            self.buf += buf

    def _parse_head(self, head: bytes) -> int:
        """Read a complete head; the body mode to go on with (_IDLE for an interim 1xx)."""
        # A NUL or a CR that ends no line: parsers disagree on where such a
        # value (or line) ends, which is how one response is read as two.
        # (``head`` stops before the last line's LF, so it may end in a CR.)
        if b"\x00" in head:
            raise _Invalid("NUL in the response head")
        if head.count(b"\r") != head.count(b"\r\n") + head.endswith(b"\r"):
            raise _Invalid("bare CR in the response head")
        lines = head.split(b"\n")
        if len(lines) > MAX_HEADER_LINES + 1:
            raise _Invalid("too many header lines")
        status, http11 = _status_line(lines[0].rstrip(b"\r"))
        if status < 200:
            if status == 101:
                raise _Invalid("unexpected 101 Switching Protocols")
            return _IDLE
        keep_alive = http11
        length = -1
        codings: list[bytes] = []
        encoding: bytes | None = None
        retry_after: bytes | None = None
        last_known = False
        for i in range(1, len(lines)):
            line = lines[i]
            if len(line) > MAX_LINE_BYTES:
                raise _Invalid("header line longer than 8190 bytes")
            colon = line.find(b":")
            if colon <= 0:
                if line[:1] in (b" ", b"\t"):
                    # An obsolete folded continuation: harmless on a header we
                    # skip, ambiguous on one we act on.
                    if last_known:
                        raise _Invalid("folded header line")
                    continue
                if not line.strip():
                    raise _Invalid("stray empty line in the head")
                raise _Invalid(f"bad header line {line[:40]!r}")
            name = line[:colon]
            if name[:1] in (b" ", b"\t"):
                raise _Invalid(f"bad header line {line[:40]!r}")
            kind = _KNOWN_HEADERS.get(name.rstrip(b" \t").lower())
            last_known = kind is not None
            if kind is None:
                continue
            value = line[colon + 1 :].strip()
            if kind == _CONTENT_LENGTH:
                length = _content_length(value, length)
            elif kind == _TRANSFER_ENCODING:
                codings += [c.strip() for c in value.lower().split(b",") if c.strip()]
            elif kind == _CONNECTION:
                if b"close" in [t.strip() for t in value.lower().split(b",")]:
                    keep_alive = False
            elif kind == _CONTENT_ENCODING:
                if encoding is None:
                    encoding = value.lower()
            elif retry_after is None:
                retry_after = value
        self.status = status
        self.keep_alive = keep_alive
        if retry_after is not None:
            self.retry_after = retry_after.decode("latin-1")
        if status == 204 or status == 304:
            return _DONE
        if encoding in (b"gzip", b"x-gzip"):
            self.decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == b"deflate":
            self.decompressor = zlib.decompressobj()
        if codings:
            # With a Transfer-Encoding, Content-Length means nothing, and a
            # sender that used both is one we would rather not reuse.
            if length >= 0:
                self.keep_alive = False
            if codings[-1] == b"chunked":
                return _CHUNK_SIZE
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

    def _chunked(self, data: bytes | bytearray) -> None:
        pos = 0
        size = len(data)
        while pos < size:
            state = self.state
            if state == _CHUNK_DATA:
                take = min(size - pos, self.remaining)
                if not self._keep(data[pos : pos + take]):
                    return
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = _CHUNK_END
            elif state == _CHUNK_END:
                byte = data[pos]
                pos += 1
                if byte == 0x0A:
                    self.state = _CHUNK_SIZE
                elif byte == 0x0D:
                    self.state = _CHUNK_CR
                else:
                    return self._broken_body("no line end after chunk data")
            elif state == _CHUNK_CR:
                if data[pos] != 0x0A:
                    return self._broken_body("no line end after chunk data")
                pos += 1
                self.state = _CHUNK_SIZE
            elif state in (_CHUNK_SIZE, _TRAILERS):
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self._keep_line(data, pos, state)
                    return
                line = self._line(data, pos, nl, state)
                if line is None:
                    return  # the framing broke
                pos = nl + 1
                if state == _CHUNK_SIZE:
                    digits = line.split(b";", 1)[0].strip()
                    if not digits or len(digits) > 15 or digits.translate(None, _HEX_DIGITS):
                        return self._broken_body("bad chunk size")
                    n = int(digits, 16)
                    if n:
                        self.remaining = n
                        self.state = _CHUNK_DATA
                    else:
                        self.state = _TRAILERS
                elif line in (b"", b"\r"):
                    if pos < size:
                        self.keep_alive = False
                    self._complete()
                    return
                else:
                    self.trailer_bytes += len(line) + 1
                    if self.trailer_bytes > MAX_TRAILER_BYTES:
                        return self._broken_body("trailers larger than 64 KiB")
            else:
                return  # _DONE: stopped early inside _keep

    def _keep_line(self, data: bytes | bytearray, pos: int, state: int) -> None:
        """Keep the start of a chunk-size or trailer line for the next read."""
        buf = self.buf
        if state == _CHUNK_SIZE:
            if len(buf) + len(data) - pos > MAX_CHUNK_LINE_BYTES:
                return self._broken_body("chunk-size line too long")
        elif self.trailer_bytes + len(buf) + len(data) - pos > MAX_TRAILER_BYTES:
            return self._broken_body("trailers larger than 64 KiB")
        buf += data[pos:]

    def _line(self, data: bytes | bytearray, pos: int, nl: int, state: int) -> bytes | None:
        """The chunk-size or trailer line ending at ``nl``, with what earlier reads
        left of it; None (and the exchange failed) when a chunk-size line is too long."""
        buf = self.buf
        if not buf:
            line = bytes(data[pos:nl])
        else:
            line = bytes(buf) + data[pos:nl]
            buf.clear()
        if state == _CHUNK_SIZE and len(line) > MAX_CHUNK_LINE_BYTES:
            self._broken_body("chunk-size line too long")
            return None
        return line

    def _keep(self, piece: bytes | bytearray) -> bool:
        """Keep what fits of a body piece; False when we stop reading (limit reached)."""
        body = self.body
        room = self.limit - len(body)
        decompressor = self.decompressor
        if decompressor is None:
            if len(piece) > room:
                body += piece[:room]
                self._stop_early()
                return False
            body += piece
            return True
        raw_read = self.raw_read + len(piece)
        self.raw_read = raw_read
        over = raw_read > self.raw_limit
        if over:
            piece = piece[: len(piece) - (raw_read - self.raw_limit)]
        if room <= 0:  # max_length=0 would mean "no limit" to zlib
            self._stop_early()
            return False
        try:
            body += decompressor.decompress(piece, room)
        except zlib.error:
            # Not really compressed: keep the raw bytes from here on.
            self.decompressor = None
            body += piece[:room]
            if len(piece) > room:
                over = True
        else:
            if decompressor.unconsumed_tail:
                over = True
        if over:
            self._stop_early()
            return False
        return True

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
