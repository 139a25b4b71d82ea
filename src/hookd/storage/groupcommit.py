"""Group commit: whatever queued up while the previous commit ran goes into the next.

A caller is answered only after the commit that holds its item returned.
Under light load each item gets a commit of its own at once; under heavy load
many share one, so the fsync is paid per group rather than per item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


class GroupCommit(Generic[I, R]):
    def __init__(
        self,
        commit: Callable[[list[I]], Awaitable[list[R | Exception]]],
        max_batch: int,
        *,
        weigh: Callable[[I], int] | None = None,
        max_weight: int | None = None,
    ) -> None:
        # ``commit`` answers each item with its result or its own error.
        self._commit = commit
        self._max_batch = max_batch
        # A group stops short of max_weight (an item heavier than it goes
        # alone): no commit holds the database much longer than one item's.
        self._weigh = weigh
        self._max_weight = max_weight
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: I) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        # A caller that goes away (client disconnect) only cancels its own
        # future: the group, and the other callers waiting on it, go on.
        return await fut

    async def _run(self) -> None:
        while self._queue:
            size = self._group_size()
            batch = self._queue[:size]
            del self._queue[:size]
            try:
                results = await self._commit([item for item, _ in batch])
            except Exception as exc:  # the whole commit failed
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    def _group_size(self) -> int:
        if self._weigh is None or self._max_weight is None:
            return self._max_batch
        total = 0
        for size, (item, _fut) in enumerate(self._queue[: self._max_batch]):
            total += self._weigh(item)
            if total > self._max_weight and size > 0:
                return size
        return min(len(self._queue), self._max_batch)

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed (or failed)."""
        if self._runner is not None:
            await asyncio.shield(self._runner)
