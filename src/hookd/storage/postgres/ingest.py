"""Ingest on PostgreSQL: group committed, one INGEST statement a group.

Items without idempotency keys are planned from a cached copy of each
workspace's subscriptions and written by one autocommit statement that
checks the copy against the table and writes nothing when a webhook changed
since (then the group is planned again from a fresh read).  Items with keys
take a transaction that first locks each key (``pg_advisory_xact_lock``), so
that two nodes given the same key at once store one event: the second finds
the first's.  Every node listening is woken at the commit of a group that
made work (``NOTIFY``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hookd import lifecycle
from hookd.clock import Clock
from hookd.models import IngestResult
from hookd.storage.events import (
    Earlier,
    GroupedIngest,
    GroupPlan,
    IngestItem,
    ItemResult,
    PlannedDelivery,
    PlannedEvent,
)
from hookd.storage.postgres import queries as q
from hookd.storage.postgres.connection import Conn, PgDatabase
from hookd.storage.rows import SubscriptionsRow, event_of

# Plans made from subscriptions found stale before a group holds webhook changes back.
STALE_TRIES = 3


def _workspaces(items: Sequence[IngestItem]) -> list[str]:
    return sorted({item.workspace_id for item in items})


def _keys(items: Sequence[IngestItem], workspace: str) -> list[str]:
    return sorted(
        {key for item in items if item.workspace_id == workspace for *_, key in item.events if key}
    )


class PostgresIngest(GroupedIngest):
    def __init__(
        self,
        db: PgDatabase,
        clock: Clock,
        idempotency_window_ms: int,
        max_deliveries: int | None = None,
    ) -> None:
        super().__init__(clock, idempotency_window_ms, max_deliveries)
        self._db = db

    async def _commit(self, items: list[IngestItem]) -> list[ItemResult]:
        """Commit a group: keyless items in one statement, keyed ones in a transaction.

        Each part fails alone: an item is told it failed only if its own commit did.
        """
        results: dict[int, ItemResult] = {}
        for keyed in (False, True):
            indexes = [i for i, item in enumerate(items) if item.keyed is keyed]
            if not indexes:
                continue
            group = [items[i] for i in indexes]
            write = self._write_keyed if keyed else self._write_plain
            try:
                done = await self._db.run(lambda conn, w=write, g=group: w(conn, g))  # type: ignore[misc]
            except Exception as exc:  # the part's commit failed: each of its items fails
                done = [exc] * len(indexes)
            results.update(zip(indexes, done, strict=True))
        return [results[i] for i in range(len(items))]

    async def _write_plain(self, conn: Conn, items: list[IngestItem]) -> list[ItemResult]:
        done = await self._write(conn, items, fresh=False, earlier=None)
        if done is not None:
            return done
        # Webhooks changing faster than a group commits: hold their changes
        # back until this group has committed.
        async with conn.transaction():
            await conn.execute(q.HOLD_WEBHOOKS)
            done = await self._write(conn, items, fresh=True, earlier=None)
        assert done is not None  # nothing changes webhooks while they are held
        return done

    async def _write_keyed(self, conn: Conn, items: list[IngestItem]) -> list[ItemResult]:
        async with conn.transaction():
            for ws in _workspaces(items):
                await conn.execute(q.LOCK_KEYS, [f"{ws}\x1f{key}" for key in _keys(items, ws)])
            found = await self._earlier(conn, items)

            def earlier(ws: str, key: str) -> IngestResult | None:
                return found.get((ws, key))

            done = await self._write(conn, items, fresh=True, earlier=earlier)
            if done is None:
                await conn.execute(q.HOLD_WEBHOOKS)
                done = await self._write(conn, items, fresh=True, earlier=earlier)
            assert done is not None  # nothing changes webhooks while they are held
            return done

    async def _write(
        self,
        conn: Conn,
        items: list[IngestItem],
        *,
        fresh: bool,
        earlier: Earlier | None,
    ) -> list[ItemResult] | None:
        """Plan and write ``items``; None when the subscriptions kept changing under them."""
        workspaces = _workspaces(items)
        for _ in range(STALE_TRIES):
            missing = self._subscriptions.missing(workspaces, fresh=fresh)
            if missing:
                for ws, text in await conn.fetch(q.SUBSCRIPTIONS, missing):
                    self._subscriptions.learn(ws, text)
            known = self._subscriptions.known(workspaces)
            assert known is not None
            plan = GroupPlan(
                self._clock.now_ms(),
                {w: h for w, (_, h) in known.items()},
                earlier,
                max_deliveries=self._max_deliveries,
            )
            results = plan.add_all(items)
            if not plan.events:
                return results
            change = lifecycle.created(plan.now)
            checked = [SubscriptionsRow(w, text) for w, (text, _) in known.items()]
            args: list[Any] = [
                *q.arrays(SubscriptionsRow, checked),
                *q.arrays(PlannedEvent, plan.events),
                *q.arrays(PlannedDelivery, plan.deliveries),
                change.status.value,
                change.next_attempt_at,
                plan.now,
            ]
            answer = await conn.fetchrow(q.INGEST, *args)
            if answer is not None and not answer[0]:
                return results
            # Planned from subscriptions that changed since: nothing was
            # written; read them again.
            fresh = True
        return None

    async def _earlier(
        self, conn: Conn, items: Sequence[IngestItem]
    ) -> dict[tuple[str, str], IngestResult]:
        """The events that took the items' keys within the window (read under the keys' locks)."""
        found: dict[tuple[str, str], IngestResult] = {}
        oldest = self._clock.now_ms() - self._idempotency_window_ms
        for ws in _workspaces(items):
            rows = await conn.fetch(q.EARLIER_EVENTS, ws, _keys(items, ws), oldest)
            if not rows:
                continue
            ids: dict[str, list[str]] = {
                event_id: delivery_ids
                for event_id, delivery_ids in await conn.fetch(
                    q.DELIVERIES_OF_EVENTS, [r[0] for r in rows]
                )
            }
            for r in rows:
                event = event_of(r)
                found[(ws, r[4])] = IngestResult(event, tuple(ids.get(r[0], ())), duplicate=False)
        return found
