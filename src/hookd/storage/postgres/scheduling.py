"""The scheduler's side of the PostgreSQL store: settle and claim, cluster-wide.

A scheduler turn is one transaction holding CLAIM_LOCK, an advisory lock of
the whole cluster: turns of different nodes take it in turn, so that

- the per-webhook limit is the cluster's: a turn counts every node's
  unexpired leases of a webhook before leasing more (``queries.CLAIM``),
  exactly, not with each node's own count;
- a 429 pause or a 410 deactivation written by one node's turn is in place
  before any node's next claim looks at the webhook.

Inside it, SETTLE writes the previous turn's records (fenced by their lease
tokens: a node whose lease expired never overwrites another's attempt) and
CLAIM leases the next batch with ``FOR UPDATE SKIP LOCKED``.  The turn commits
with ``synchronous_commit = off`` (its pool is set so): losing it to a crash of
the database only means a delivery is sent again, which at-least-once allows.
"""

from __future__ import annotations

import random
import secrets
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from hookd.clock import Clock
from hookd.models import Attempt, ClaimedDelivery
from hookd.storage.base import AttemptRecord, RecordResult
from hookd.storage.fairness import Candidate, fair_pick
from hookd.storage.postgres import queries as q
from hookd.storage.postgres.connection import CLAIM_LOCK, Conn, PgDatabase
from hookd.storage.rows import (
    STATUS,
    DeactivationRow,
    PauseRow,
    ReliefRow,
    TransitionRow,
    claimed,
    record_results,
    settle_rows,
)

Round = tuple[list[RecordResult], list[ClaimedDelivery]]
# A due time later than any real one.
FAR_FUTURE_MS = 2**62


class PostgresScheduling:
    def __init__(
        self,
        db: PgDatabase,
        clock: Clock,
        per_webhook_limit: int,
        rng: random.Random | None = None,
        nodes: Callable[[], int] = lambda: 1,
    ) -> None:
        self._db = db
        self._clock = clock
        self._rng = rng or random.Random()
        # per_webhook_concurrency, for the whole cluster.
        self._per_webhook_limit = per_webhook_limit
        self._nodes = nodes
        # This process's leases (delivery -> webhook) from its turns' claims
        # until their records or releases, and their count by webhook: its part
        # of each webhook's limit.
        self._leased: dict[str, str] = {}
        self._own: Counter[str] = Counter()

    async def settle_and_claim(
        self,
        records: Sequence[AttemptRecord],
        limit: int,
        lease_ms: int,
        per_webhook_room: Mapping[str, int],
        default_room: int,
    ) -> Round:
        if limit <= 0 and not records:
            return [], []
        now = self._clock.now_ms()
        token = secrets.token_hex(12)

        for record in records:
            self._forget(record.delivery_id)
        rooms, default_room = self._shares(per_webhook_room, default_room)

        async def turn(conn: Conn) -> Round:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
                results = await self._settle(conn, records, now) if records else []
                if limit <= 0:
                    return results, []
                candidates = await conn.fetch(
                    q.CANDIDATES,
                    now,
                    limit,
                    list(rooms),
                    list(rooms.values()),
                    default_room,
                    self._per_webhook_limit,
                )
                chosen = fair_pick(
                    (Candidate(row[0], row[1], row[2]) for row in candidates), limit, self._rng
                )
                if not chosen:
                    return results, []
                rows = await conn.fetch(q.LEASE, chosen, token, now + lease_ms)
                # Sent in the order they were due.
                due = {row[2]: (row[3], row[4]) for row in candidates}
                claims = [claimed(row, now) for row in rows]
                claims.sort(key=lambda c: due[c.delivery_id])
                return results, claims

        results, claims = await self._db.run_turn(turn)
        for claim in claims:
            self._leased[claim.delivery_id] = claim.webhook_id
            self._own[claim.webhook_id] += 1
        return results, claims

    def _shares(self, rooms: Mapping[str, int], default_room: int) -> tuple[dict[str, int], int]:
        """The rooms the scheduler asks for, each cut to this process's share of
        its webhook's limit: with several nodes, one that settles its attempts
        and claims in the same turn would otherwise take every slot it frees,
        and the others would find none.  (The cluster's limit itself holds in
        the CANDIDATES statement, whatever the shares.)"""
        nodes = self._nodes()
        if nodes <= 1:
            return dict(rooms), default_room
        share = -(-self._per_webhook_limit // nodes)
        cut = {w: min(room, max(0, share - self._own[w])) for w, room in rooms.items()}
        for webhook_id, own in self._own.items():
            if webhook_id not in cut:
                cut[webhook_id] = min(default_room, max(0, share - own))
        return cut, min(default_room, share)

    def _forget(self, delivery_id: str) -> None:
        webhook_id = self._leased.pop(delivery_id, None)
        if webhook_id is not None:
            self._own[webhook_id] -= 1
            if not self._own[webhook_id]:
                del self._own[webhook_id]

    @staticmethod
    async def _settle(conn: Conn, records: Sequence[AttemptRecord], now: int) -> list[RecordResult]:
        rows = settle_rows(records)
        args: list[Any] = [
            *q.arrays(TransitionRow, rows.transitions),
            *q.arrays(Attempt, rows.attempts),
            *q.arrays(PauseRow, rows.pauses),
            *q.arrays(DeactivationRow, rows.deactivations),
            *q.arrays(ReliefRow, rows.reliefs),
            now,
        ]
        fenced = {
            position: STATUS[status] for position, status in await conn.fetch(q.SETTLE, *args)
        }
        if fenced:
            # (Its own statement: one row updated twice by a statement is not allowed.)
            await conn.execute(q.COUNT_FENCED, [records[i].delivery_id for i in fenced])
        return record_results(records, fenced)

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[RecordResult]:
        """The records of attempts made outside a turn (replay, test send)."""
        if not records:
            return []
        results, _claims = await self.settle_and_claim(records, 0, 0, {}, 0)
        return results

    async def release(self, leases: Collection[tuple[str, str]]) -> int:
        """Give leases back so the deliveries are due again at once."""
        if not leases:
            return 0
        now = self._clock.now_ms()
        ids = [delivery_id for delivery_id, _token in leases]
        for delivery_id in ids:
            self._forget(delivery_id)
        tokens = [token for _delivery_id, token in leases]

        async def release(conn: Conn) -> int:
            status = await conn.execute(q.RELEASE, now, ids, tokens)
            return int(status.rpartition(" ")[2])

        return await self._db.run(release)

    async def next_due_at(self) -> int | None:
        """When the earliest scheduled delivery of an active, unpaused webhook is due."""
        now = self._clock.now_ms()

        async def work(conn: Conn) -> int | None:
            due = await conn.fetchval(q.FIRST_SENDABLE, FAR_FUTURE_MS, now)
            paused = await conn.fetchval(q.PAUSE_ENDS, now)
            candidates = [v for v in (due, paused) if v is not None]
            return min(candidates) if candidates else None

        return await self._db.run(work)
