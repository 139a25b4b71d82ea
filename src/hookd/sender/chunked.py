"""The chunked transfer coding (RFC 9112 section 7.1) of a response body, for
:class:`sender.h1.H1Connection`, which holds the state this reads and writes.

Lenient where leniency cannot desync the stream (bare LF line ends, spaces
around a chunk size, chunk extensions ignored), strict where it could (a
malformed size, no line end after chunk data); chunk-size lines and trailers
are bounded.  Garbled framing fails the exchange as an invalid response.
"""

from __future__ import annotations

from typing import Final

from hookd.sender.head import MAX_CHUNK_LINE_BYTES, MAX_TRAILER_BYTES

# H1Connection's parser states from here up are a chunked body's.
CHUNK_SIZE: Final = 5
CHUNK_DATA: Final = 6
CHUNK_END: Final = 7
TRAILERS: Final = 8
CHUNK_CR: Final = 9  # a CR after chunk data arrived; its LF has not

_HEX_DIGITS: Final = b"0123456789abcdefABCDEF"


class ChunkedBody:
    """The chunked-body half of H1Connection's parser: the parser's state lives
    here, set up by the connection."""

    __slots__ = ("buf", "keep_alive", "remaining", "state", "trailer_bytes")

    state: int
    remaining: int
    keep_alive: bool
    buf: bytearray
    trailer_bytes: int

    # The connection's: keep a body piece (False: stop reading), end the
    # exchange, fail it for garbled framing.
    def _keep(self, piece: bytes | bytearray) -> bool:
        raise NotImplementedError

    def _complete(self) -> None:
        raise NotImplementedError

    def _broken_body(self, reason: str) -> None:
        raise NotImplementedError

    def _chunked(self, data: bytes | bytearray) -> None:
        pos = 0
        size = len(data)
        while pos < size:
            state = self.state
            if state == CHUNK_DATA:
                take = min(size - pos, self.remaining)
                if not self._keep(data[pos : pos + take]):
                    return
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = CHUNK_END
            elif state == CHUNK_END:
                byte = data[pos]
                pos += 1
                if byte == 0x0A:
                    self.state = CHUNK_SIZE
                elif byte == 0x0D:
                    self.state = CHUNK_CR
                else:
                    return self._broken_body("no line end after chunk data")
            elif state == CHUNK_CR:
                if data[pos] != 0x0A:
                    return self._broken_body("no line end after chunk data")
                pos += 1
                self.state = CHUNK_SIZE
            elif state in (CHUNK_SIZE, TRAILERS):
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self._keep_line(data, pos, state)
                    return
                line = self._line(data, pos, nl, state)
                if line is None:
                    return  # the framing broke
                pos = nl + 1
                if state == CHUNK_SIZE:
                    digits = line.split(b";", 1)[0].strip()
                    if not digits or len(digits) > 15 or digits.translate(None, _HEX_DIGITS):
                        return self._broken_body("bad chunk size")
                    n = int(digits, 16)
                    if n:
                        self.remaining = n
                        self.state = CHUNK_DATA
                    else:
                        self.state = TRAILERS
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
                return  # DONE: stopped early inside _keep

    def _keep_line(self, data: bytes | bytearray, pos: int, state: int) -> None:
        """Keep the start of a chunk-size or trailer line for the next read."""
        buf = self.buf
        if state == CHUNK_SIZE:
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
        if state == CHUNK_SIZE and len(line) > MAX_CHUNK_LINE_BYTES:
            self._broken_body("chunk-size line too long")
            return None
        return line
