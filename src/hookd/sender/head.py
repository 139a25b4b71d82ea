"""Reading a response head: the status line and the few headers that matter.

Pure functions over bytes: the status line, and of the header lines only
those that change how the body is framed or what is reported
(Content-Length, Transfer-Encoding, Connection, Content-Encoding,
Retry-After); the rest are checked for shape and skipped.  Everything is
bounded, and anything that two parsers could read differently (conflicting
lengths, a folded line on a header we act on, a NUL, a bare CR) is refused.
"""

from __future__ import annotations

from typing import Final

MAX_HEAD_BYTES: Final = 64 * 1024
MAX_LINE_BYTES: Final = 8190  # aiohttp's (and nginx's) line limit
MAX_HEADER_LINES: Final = 128
MAX_CHUNK_LINE_BYTES: Final = 4096  # size, extensions and line end
MAX_TRAILER_BYTES: Final = 64 * 1024

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


# (status, keep-alive: HTTP/1.1 and no "Connection: close", Content-Length or -1,
# Transfer-Encoding codings in order, Content-Encoding, Retry-After), lower case
# where case does not matter.  A plain tuple: one is made for every response.
Head = tuple[int, bool, int, list[bytes], bytes | None, bytes | None]


class InvalidResponse(Exception):
    """A response that is not HTTP/1.x as we accept it; the text says why."""


def status_line(line: bytes) -> tuple[int, bool]:
    """(status, speaks HTTP/1.1) from a status line, or InvalidResponse."""
    if (
        len(line) < 12
        or not line.startswith(b"HTTP/1.")
        or line[8] != 0x20
        or not line[7:8].isdigit()
        or not line[9:12].isdigit()
        or (len(line) > 12 and line[12] != 0x20)
    ):
        raise InvalidResponse(f"bad status line {line[:40]!r}")
    status = int(line[9:12])
    if status < 100:
        raise InvalidResponse(f"bad status code {status}")
    return status, line[7] != 0x30


def _content_length(value: bytes, known: int) -> int:
    # "5, 5" (a list of equal values) is allowed; anything else that disagrees is not.
    length = known
    for part in value.split(b","):
        part = part.strip()
        if not part.isdigit() or len(part) > 18:
            raise InvalidResponse(f"bad Content-Length {value[:40]!r}")
        n = int(part)
        if length >= 0 and n != length:
            raise InvalidResponse("conflicting Content-Length values")
        length = n
    return length


def parse_head(head: bytes) -> Head | None:
    """Read a complete head (up to, not including, its last LF); None for an interim 1xx."""
    # A NUL or a CR that ends no line: parsers disagree on where such a
    # value (or line) ends, which is how one response is read as two.
    # (``head`` stops before the last line's LF, so it may end in a CR.)
    if b"\x00" in head:
        raise InvalidResponse("NUL in the response head")
    if head.count(b"\r") != head.count(b"\r\n") + head.endswith(b"\r"):
        raise InvalidResponse("bare CR in the response head")
    lines = head.split(b"\n")
    if len(lines) > MAX_HEADER_LINES + 1:
        raise InvalidResponse("too many header lines")
    status, http11 = status_line(lines[0].rstrip(b"\r"))
    if status < 200:
        if status == 101:
            raise InvalidResponse("unexpected 101 Switching Protocols")
        return None
    keep_alive = http11
    length = -1
    codings: list[bytes] = []
    encoding: bytes | None = None
    retry_after: bytes | None = None
    last_known = False
    for i in range(1, len(lines)):
        line = lines[i]
        if len(line) > MAX_LINE_BYTES:
            raise InvalidResponse("header line longer than 8190 bytes")
        colon = line.find(b":")
        if colon <= 0:
            if line[:1] in (b" ", b"\t"):
                # An obsolete folded continuation: harmless on a header we
                # skip, ambiguous on one we act on.
                if last_known:
                    raise InvalidResponse("folded header line")
                continue
            if not line.strip():
                raise InvalidResponse("stray empty line in the head")
            raise InvalidResponse(f"bad header line {line[:40]!r}")
        name = line[:colon]
        if name[:1] in (b" ", b"\t"):
            raise InvalidResponse(f"bad header line {line[:40]!r}")
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
    return status, keep_alive, length, codings, encoding, retry_after
