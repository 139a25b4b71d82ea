"""A response body as far as a delivery keeps it: bounded, decoded, and stored as text.

Both transports feed what arrives of a body, piece by piece, into one
:class:`Body`: at most ``limit`` decoded bytes are kept (gzip and deflate
are decoded here, under the same bound), and compressed input is read at
most ``RAW_LIMIT_FACTOR`` times the limit, so a body that inflates to
nothing cannot keep us reading forever.  Of what was kept, the first 256
characters are stored with the attempt.
"""

from __future__ import annotations

import zlib
from typing import Any, Final

RAW_LIMIT_FACTOR: Final = 4
STORED_BODY_CHARS: Final = 256


class Body:
    __slots__ = ("data", "decompressor", "limit", "raw_limit", "raw_read")

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.limit = limit
        self.raw_limit = limit * RAW_LIMIT_FACTOR
        self.raw_read = 0
        self.decompressor: Any = None

    def decode(self, encoding: bytes) -> None:
        """Decode what follows as the lower-case ``Content-Encoding`` says, if we know it."""
        if encoding in (b"gzip", b"x-gzip"):
            self.decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == b"deflate":
            self.decompressor = zlib.decompressobj()

    def add(self, piece: bytes | bytearray) -> bool:
        """Keep what fits of ``piece``; False when reading should stop (the limit is reached)."""
        data = self.data
        room = self.limit - len(data)
        decompressor = self.decompressor
        if decompressor is None:
            if len(piece) > room:
                data += piece[:room]
                return False
            data += piece
            return True
        raw_read = self.raw_read + len(piece)
        self.raw_read = raw_read
        over = raw_read > self.raw_limit
        if over:
            piece = piece[: len(piece) - (raw_read - self.raw_limit)]
        if room <= 0:  # max_length=0 would mean "no limit" to zlib
            return False
        try:
            data += decompressor.decompress(piece, room)
        except zlib.error:
            # Not really compressed: keep the raw bytes from here on.
            self.decompressor = None
            data += piece[:room]
            if len(piece) > room:
                over = True
        else:
            if decompressor.unconsumed_tail:
                over = True
        return not over

    def text(self) -> str:
        """The first 256 characters, as stored with the attempt."""
        # 256 characters never take more than 1024 bytes of UTF-8 (an
        # undecodable byte becomes one character), so decoding a prefix gives
        # the same text.
        return self.data[: STORED_BODY_CHARS * 4].decode("utf-8", errors="replace")[
            :STORED_BODY_CHARS
        ]
