"""Identifiers and timestamp formatting shared by storage and API.

IDs are 24 lowercase hex characters: 4 bytes of big-endian seconds followed by
8 random bytes, so they sort by creation time like the ``_id`` values in the
reference documents.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime


def new_id(now_ms: int) -> str:
    seconds = (now_ms // 1000) & 0xFFFFFFFF
    return seconds.to_bytes(4, "big").hex() + secrets.token_hex(8)


def is_id(value: str) -> bool:
    return len(value) == 24 and all(c in "0123456789abcdef" for c in value)


def iso_ms(ms: int) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, as the API shows timestamps."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_iso_ms(value: str) -> int:
    """Parse an ISO 8601 timestamp (``Z`` or an offset) into epoch milliseconds.

    Raises ``ValueError`` for anything else, including naive timestamps: a
    filter without a zone would silently mean the server's local time.
    """
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError("timestamp needs a timezone (e.g. a trailing Z)")
    return int(dt.timestamp() * 1000)
