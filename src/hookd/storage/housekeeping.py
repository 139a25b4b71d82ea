"""Housekeeping, the same for every backend: retention, the 429 lane's bound, interrupted tests.

Every call does one short transaction: the caller (``hookd/maintenance.py``)
loops, with pauses, so that nothing it deletes holds the database long.
"""

from __future__ import annotations

from hookd import lifecycle
from hookd.models import Status
from hookd.storage.admin import apply_in_chunks
from hookd.storage.sql import Statements


class Housekeeping(Statements):
    # Events are kept this long for their idempotency keys.
    _idempotency_window_ms: int

    async def ping(self) -> None:
        await self._db.row("SELECT 1")

    async def delete_ended_before(self, status: Status, cutoff_ms: int, batch: int) -> int:
        async with self._db.transaction() as tx:
            return await tx.execute(self._q.DELETE_ENDED, (status.value, cutoff_ms, batch))

    async def delete_orphan_events(self, batch: int) -> int:
        # Kept through the idempotency window: a repeat must still find its event.
        before = self._clock.now_ms() - self._idempotency_window_ms
        async with self._db.transaction() as tx:
            return await tx.execute(self._q.DELETE_ORPHAN_EVENTS, (before, batch))

    async def delete_deleted_webhooks(self, batch: int) -> int:
        async with self._db.transaction() as tx:
            return await tx.execute(self._q.DELETE_DELETED_WEBHOOKS, (batch,))

    async def end_expired_lanes(self, limited_before_ms: int) -> int:
        now = self._clock.now_ms()
        ended = 0
        for row in await self._db.rows(self._q.LIMITED_WEBHOOKS, (limited_before_ms, now)):
            webhook_id = row[0]
            async with self._db.transaction() as tx:
                ended += await apply_in_chunks(
                    tx,
                    self._q,
                    lifecycle.lane_expired(),
                    self._q.OPEN_OF_WEBHOOK,
                    (webhook_id,),
                    now,
                )
        return ended

    async def end_interrupted_tests(self, older_than_ms: int) -> int:
        now = self._clock.now_ms()
        async with self._db.transaction() as tx:
            return await apply_in_chunks(
                tx,
                self._q,
                lifecycle.test_interrupted(),
                self._q.INTERRUPTED_TESTS,
                (older_than_ms,),
                now,
            )
