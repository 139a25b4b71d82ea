"""Work a request starts that must finish even if the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# The event loop only holds weak references to tasks; these must not vanish.
_running: set[asyncio.Task[Any]] = set()


async def finish_even_if_cancelled(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` in a task of its own that a cancelled request does not cancel.

    A test send or replay holds a lease and sends a real request: if the
    handler were cancelled half way, the delivery would keep its lease and
    the attempt would go unrecorded.
    """
    task = asyncio.ensure_future(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return await asyncio.shield(task)
