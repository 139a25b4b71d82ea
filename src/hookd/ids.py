"""Identifiers and timestamp formatting shared by storage and API.

IDs are 24 lowercase hex characters: 4 bytes of big-endian seconds followed by
8 random bytes, so they sort by creation time like the ``_id`` values in the
reference documents.
"""

from __future__ import annotations

import random
import re
import secrets
import threading
from datetime import UTC, datetime

_lock = threading.Lock()
# Ids need to be unique and hard to guess, not secret keys: a Random seeded
# from the OS is ample and avoids a getrandom() syscall per id.
_rng = random.Random(secrets.randbits(128))
_last_seconds = -1
_last_tail = 0
_TAIL_MAX = (1 << 64) - 1


def new_id(now_ms: int) -> str:
    """A new id; ids made by this process in the same second sort in creation order.

    The 8 tail bytes start at a random value each second and then grow by a
    random step (as ULID's monotonic mode does), so they stay unguessable while
    lists ordered by id keep insertion order.
    """
    global _last_seconds, _last_tail
    seconds = (now_ms // 1000) & 0xFFFFFFFF
    with _lock:  # ids are made on the event loop and on the database thread
        if seconds == _last_seconds and _last_tail < _TAIL_MAX - (1 << 32):
            tail = _last_tail + 1 + _rng.getrandbits(24)
        else:
            # Top bit clear: room for billions of increments within one second.
            tail = _rng.getrandbits(63)
        _last_seconds, _last_tail = seconds, tail
    return seconds.to_bytes(4, "big").hex() + tail.to_bytes(8, "big").hex()


ID_REGEX = "[0-9a-f]{24}"
_ID = re.compile(ID_REGEX)


def is_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


# A workspace id, as X-Workspace-Id and `hookd ... --workspace` both take it:
# ASCII only, so that it reads the same in a header, a URL and a log line.
WORKSPACE_ID_REGEX = "ws_[A-Za-z0-9_-]{1,61}"
WORKSPACE_ID_PROBLEM = (
    "expected a workspace id such as ws_123: ws_ and 1 to 61 ASCII letters, digits, '_' or '-'"
)
_WORKSPACE_ID = re.compile(WORKSPACE_ID_REGEX)


def is_workspace_id(value: str) -> bool:
    return _WORKSPACE_ID.fullmatch(value) is not None


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
