"""Group commit: whatever queued up while the previous commit ran goes into the next.

A caller is answered only after the commit that holds its item returned.
Under light load each item gets a commit of its own at once; under heavy load
many share one, so the fsync is paid per group rather than per item.

Items that write many rows (one workspace's large fan-outs) take turns with
light ones: after a group that held a heavy item, the light items waiting go
first, all in one group, ahead of any heavy one queued before them.  A light
item then waits for at most one heavy commit, not for every heavy item queued
ahead of it; a heavy one waits for at most one light group per heavy commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

# An item weighing more than this share of max_weight is heavy.
HEAVY_SHARE = 4


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
        # Whether the next group takes the light items first (see the module).
        self._light_turn = False

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
            batch = self._take()
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

    def _take(self) -> list[tuple[I, asyncio.Future[R]]]:
        """Remove the next group from the queue and return it."""
        weigh, max_weight = self._weigh, self._max_weight
        if weigh is None or max_weight is None:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            return batch
        heavy = max_weight // HEAVY_SHARE
        if self._light_turn:
            self._light_turn = False
            light: list[tuple[I, asyncio.Future[R]]] = []
            total = 0
            for entry in self._queue:
                weight = weigh(entry[0])
                if weight <= heavy and total + weight <= max_weight:
                    light.append(entry)
                    total += weight
                    if len(light) >= self._max_batch:
                        break
            if light and len(light) < len(self._queue):
                taken = {id(entry) for entry in light}
                self._queue = [entry for entry in self._queue if id(entry) not in taken]
                return light
        # As many as fit under max_weight (an item heavier than it goes alone).
        size, total, held_heavy = 0, 0, False
        for item, _fut in self._queue[: self._max_batch]:
            weight = weigh(item)
            if size > 0 and total + weight > max_weight:
                break
            size += 1
            total += weight
            held_heavy = held_heavy or weight > heavy
        batch = self._queue[:size]
        del self._queue[:size]
        self._light_turn = held_heavy
        return batch

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed (or failed)."""
        if self._runner is not None:
            await asyncio.shield(self._runner)
