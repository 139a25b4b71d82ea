"""Figures: the gauges of /metrics and what the dashboard shows, the same for every backend.

All of it reads, on the operators' connection, never on the scheduler's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hookd.models import Status
from hookd.storage.base import QueueStats, RateLimitStats, WebhookStats
from hookd.storage.sql import Statements


def _by_status(rows: Iterable[Any]) -> dict[str, int]:
    counts = {s.value: 0 for s in Status}
    for status, count in rows:
        counts[status] = count
    return counts


class Figures(Statements):
    async def _value(self, sql: str, *params: Any) -> int | None:
        """The first column of a one-row read (an aggregate: NULL over no rows)."""
        row = await self._db.row(sql, params)
        return None if row is None or row[0] is None else int(row[0])

    async def queue_stats(self) -> QueueStats:
        now = self._clock.now_ms()
        by_status = _by_status(await self._db.rows(self._q.COUNT_BY_STATUS))
        # Scheduling lag: how long the oldest delivery that could go now has
        # been able to (see OLDEST_DUE).
        oldest = await self._value(self._q.OLDEST_DUE, now)
        in_flight = await self._value(self._q.LEASED_NOW, now)
        return QueueStats(by_status, oldest, in_flight or 0, read_at_ms=now)

    async def workspace_queue_stats(self, workspace_id: str) -> QueueStats:
        now = self._clock.now_ms()
        by_status = _by_status(
            await self._db.rows(self._q.WORKSPACE_COUNT_BY_STATUS, (workspace_id,))
        )
        oldest = await self._value(self._q.WORKSPACE_OLDEST_DUE, workspace_id, now)
        in_flight = await self._value(self._q.WORKSPACE_LEASED_NOW, workspace_id, now)
        return QueueStats(by_status, oldest, in_flight or 0)

    async def webhook_stats(
        self, workspace_id: str, webhook_id: str, since_ms: int
    ) -> WebhookStats | None:
        now = self._clock.now_ms()
        if await self._db.row(self._q.WEBHOOK_OF_WORKSPACE, (webhook_id, workspace_id)) is None:
            return None
        outcomes = await self._db.row(self._q.WEBHOOK_OUTCOMES, (webhook_id, since_ms))
        delivered, dead, queued = (
            (outcomes[0], outcomes[1], outcomes[2]) if outcomes is not None else (0, 0, 0)
        )
        last = await self._db.row(self._q.WEBHOOK_LAST_ERROR, (webhook_id, since_ms))
        return WebhookStats(
            since_ms=since_ms,
            delivered=delivered,
            dead_lettered=dead,
            queued=queued,
            in_flight=await self._value(self._q.WEBHOOK_LEASED_NOW, webhook_id, now) or 0,
            last_error_at=last[0] if last else None,
            last_error_status_code=last[1] if last else None,
            last_error=last[2] if last else None,
            last_error_delivery_id=last[3] if last else None,
        )

    async def rate_limit_stats(self) -> RateLimitStats:
        paused = await self._value(self._q.PAUSED_WEBHOOKS, self._clock.now_ms())
        return RateLimitStats(paused or 0, await self._value(self._q.OLDEST_RATE_LIMITED))

    async def database_size_bytes(self) -> int:
        return await self._value(self._q.DATABASE_SIZE) or 0
