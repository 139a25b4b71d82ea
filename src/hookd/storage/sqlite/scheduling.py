"""The scheduler's side of the SQLite store: choose, settle and claim, release.

A scheduler turn is one call on the scheduler's connection (``settle_and_claim``):

1. choose what to lease by reading the due queue, without the write lock
   (a wake-up with nothing to claim takes no lock at all);
2. one SETTLE statement writes the previous turn's records, their pauses and
   deactivations, and the leases of what was chosen; only this step holds
   SQLite's write lock;
3. one read brings back what the leases took and which records were fenced.

A webhook that the turn's own records pause or deactivate gets nothing in its
claim, as if the pause had been written first.  The connection commits with
``synchronous = NORMAL``: losing such a commit to a power cut only means a
delivery is sent again, which at-least-once allows, and the next durable
commit (an ingest's) syncs the shared WAL file, these frames included.
"""

from __future__ import annotations

import json
import random
import secrets
import sqlite3
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import structlog

from hookd.clock import Clock
from hookd.models import ClaimedDelivery, Status
from hookd.storage.base import AttemptRecord, RecordResult
from hookd.storage.fairness import Candidate, Lane, fair_pick, top_ups
from hookd.storage.rows import STATUS, claimed, record_results, settle_rows
from hookd.storage.sqlite import queries as q
from hookd.storage.sqlite.thread import DatabaseThread, in_transaction, wait_out_busy

log = structlog.get_logger("hookd.storage")

# What a turn returns: the records' results, the claims.
Round = tuple[list[RecordResult], list[ClaimedDelivery]]

# Head rows read past the batch, so that webhooks at their limit can still
# leave a full batch; a window this crowded sends the claim to the per-webhook
# queues instead.
SCAN_SLACK = 64
# How long claims skip a head of the queue found blocked before reading it again.
HEAD_BLOCKED_RECHECK_MS = 1000
# Behind a backlog, how often a claim takes fair shares of every webhook's
# due work rather than the oldest (storage/fairness.py).
FAIR_EVERY_MS = 100
# A due time later than any real one.
FAR_FUTURE_MS = 2**62


def claim_window(limit: int) -> int:
    """How many head rows a claim of ``limit`` reads before turning to the webhooks' queues."""
    return min(limit + SCAN_SLACK, limit * 4)


class SettleArgs(NamedTuple):
    """Records as SETTLE takes them (JSON arrays), and the webhooks they stop."""

    records: str
    attempts: str
    pauses: str
    deactivations: str
    reliefs: str
    stopped: frozenset[str]


def settle_args(records: Sequence[AttemptRecord]) -> SettleArgs:
    rows = settle_rows(records)
    return SettleArgs(
        json.dumps(rows.transitions),
        json.dumps(rows.attempts),
        json.dumps(rows.pauses),
        json.dumps(rows.deactivations),
        json.dumps(rows.reliefs),
        rows.stopped,
    )


class _Choice(NamedTuple):
    """What _choose_due chose, and whether a later commit could add to it."""

    ids: list[str]  # deliveries to lease, in the order due
    # The connection's data_version as of a read that saw the whole due queue
    # and chose all of it that may go (None: it did not).  Work committed by
    # another connection after that version is all another choice could find.
    whole_queue_at: int | None


_NO_RECORDS = settle_args(())


class SqliteScheduling:
    """Claims, records and releases, on the scheduler's connection and thread."""

    def __init__(
        self,
        thread: DatabaseThread,
        clock: Clock,
        busy_timeout_ms: int,
        rng: random.Random | None = None,
    ) -> None:
        self._thread = thread
        self._clock = clock
        self._busy_timeout = busy_timeout_ms / 1000
        self._rng = rng or random.Random()
        # Until when the head of the due queue is known to hold nothing that
        # may go (see _choose_due); claims read the webhooks' queues meanwhile.
        self._head_blocked_until = 0
        # Whether the last look at the head found a backlog (more due than a
        # claim reads), and when the next fair claim is due (see _choose_due).
        self._backlog = False
        self._fair_at = 0

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
        unread: list[str] = []  # why what was committed could not be read back

        def round_trip(conn: sqlite3.Connection) -> Round:
            written = settle_args(records) if records else _NO_RECORDS
            # A webhook that these records pause or deactivate gets none, as if
            # its pause had been written first.
            room = dict(per_webhook_room)
            room.update(dict.fromkeys(written.stopped, 0))
            choice = (
                self._choose_due(conn, now, limit, room, default_room)
                if limit > 0
                else _Choice([], None)
            )
            if not choice.ids and not records:
                return [], []
            self._settle(conn, written, choice.ids, token, now + lease_ms, now)
            # Committed: from here on nothing runs again and no error is
            # raised (the records would be written twice).  Leases that cannot
            # be read back expire, and their deliveries are claimed again then.
            try:
                claims, fenced = self._settled(conn, choice.ids, token, now)
            except sqlite3.Error as exc:
                unread.append(str(exc))
                return record_results(records, {}), []
            results = record_results(records, fenced)
            # Choose once more, in two cases.  Another process leased some of
            # the chosen first (it had read the same head of the queue):
            # seeing its leases now keeps the batch full (a short one leaves
            # the loop waiting for a wake-up).  Or the choice took all the due
            # queue held and another connection committed since, mostly an
            # ingest whose commit held the write lock this turn waited for:
            # its events are due now, and would otherwise wait for the next
            # turn (at 1,000 events/s, 62 % of turns; ack to first attempt p50
            # 2.9-3.4 -> 1.7-1.9 ms).  (Not when webhooks at their limit left
            # due work behind: a second look would find only more of theirs.)
            try:
                if len(claims) < len(choice.ids) or (
                    len(claims) < limit
                    and choice.whole_queue_at is not None
                    and conn.execute(q.DATA_VERSION).fetchone()[0] != choice.whole_queue_at
                ):
                    claims += self._claim_more(
                        conn, claims, limit, room, default_room, token, lease_ms
                    )
            except sqlite3.Error as exc:
                unread.append(str(exc))
            return results, claims

        done = await self._thread.run(round_trip)
        if unread:
            log.error("store.claim_unread", error=unread[0])
        return done

    def _claim_more(
        self,
        conn: sqlite3.Connection,
        claims: list[ClaimedDelivery],
        limit: int,
        room: dict[str, int],
        default_room: int,
        token: str,
        lease_ms: int,
    ) -> list[ClaimedDelivery]:
        taken = Counter(c.webhook_id for c in claims)
        room.update({w: room.get(w, default_room) - n for w, n in taken.items()})
        # (Now, not the turn's start: what was committed meanwhile may be due after it.)
        later = self._clock.now_ms()
        more = self._choose_due(conn, later, limit - len(claims), room, default_room).ids
        if not more:
            return []
        self._settle(conn, _NO_RECORDS, more, token, later + lease_ms, later)
        return self._settled(conn, more, token, later)[0]

    def _settle(
        self,
        conn: sqlite3.Connection,
        written: SettleArgs,
        leases: list[str],
        token: str,
        lease_until: int,
        now: int,
    ) -> None:
        args = (*written[:5], json.dumps(leases), token, lease_until, now)
        wait_out_busy(conn, lambda c: c.execute(q.SETTLE, args), self._busy_timeout)

    @staticmethod
    def _settled(
        conn: sqlite3.Connection, chosen: list[str], token: str, now: int
    ) -> tuple[list[ClaimedDelivery], dict[int, Status]]:
        """What ``token`` leased among ``chosen``, in the order chosen, and the fenced records."""
        claims_json, fenced_json = conn.execute(q.SETTLED, (json.dumps(chosen), token)).fetchone()
        rows = json.loads(claims_json)
        for row in rows:
            if row[5] is None:  # a body too large for the JSON
                (row[5],) = conn.execute(q.EVENT_BODY, (row[3],)).fetchone()
        position = {delivery_id: i for i, delivery_id in enumerate(chosen)}
        rows.sort(key=lambda row: position[row[0]])
        fenced = {ordinal: STATUS[status] for ordinal, status in json.loads(fenced_json)}
        return [claimed(r, now) for r in rows], fenced

    def _choose_due(
        self,
        conn: sqlite3.Connection,
        now: int,
        limit: int,
        per_webhook_room: Mapping[str, int],
        default_room: int,
    ) -> _Choice:
        """Up to ``limit`` due deliveries whose webhooks may take them, in the order due."""
        room = dict(per_webhook_room)
        chosen: list[str] = []

        def take(rows: Iterable[list[Any]]) -> None:
            """Choose deliveries in the given order while their webhooks have room."""
            for _due, _rowid, delivery_id, webhook_id, sendable in rows:
                if not sendable:
                    continue
                left = room.get(webhook_id, default_room)
                if left <= 0:
                    continue
                room[webhook_id] = left - 1
                chosen.append(delivery_id)
                if len(chosen) >= limit:
                    return

        window = claim_window(limit)
        if self._backlog and now >= self._fair_at:
            # Behind a backlog the head of the queue is its oldest work only,
            # whoever's it is: every FAIR_EVERY_MS a claim takes fair shares
            # of every webhook's due work instead, so another workspace's
            # fresh events go within that, not after the backlog.
            self._fair_at = now + FAIR_EVERY_MS
            return _Choice(self._fair_choice(conn, now, limit, room, default_room), None)
        head: list[list[Any]] = []
        head_read = now >= self._head_blocked_until
        whole_queue_at: int | None = None
        if head_read:
            rows, version = conn.execute(q.CLAIM_SCAN, (now, now, window)).fetchone()
            head = json.loads(rows) if rows else []
            # (The aggregate keeps the scan's order in practice; sorting makes
            # it a promise, and costs little on a sorted list.  Rows compare by
            # due time, then rowid, which is unique.)
            head.sort()
            take(head)
            # A backlog: more work that may go than a claim reads.
            self._backlog = len(head) >= window and bool(chosen)
            if len(head) < window and len(chosen) == sum(1 for row in head if row[4]):
                whole_queue_at = version
            if not chosen and len(head) >= window:
                # Nothing at all could go from the head: the claims that follow
                # go straight to the webhooks' own queues (below) for a while,
                # skipping a read that would only find the same blocked rows.
                self._head_blocked_until = now + HEAD_BLOCKED_RECHECK_MS
        if len(chosen) < limit and (len(head) >= window or not head_read):
            # The head of the queue is crowded with deliveries of webhooks that
            # may not take them now (a slow endpoint's backlog, a 429's pause,
            # an inactive webhook): take the oldest due work of each webhook
            # that has room, from its own queue, instead of reading on through
            # rows none may take.
            wanted = limit - len(chosen)
            found: list[list[Any]] = []
            for may_go, _hook, _ws, rows in self._webhook_queues(
                conn, now, wanted, room, default_room, chosen
            ):
                found.extend(rows[:may_go])
            found.sort()
            chosen.extend(delivery_id for _due, _rowid, delivery_id in found[:wanted])
        return _Choice(chosen, whole_queue_at)

    def _fair_choice(
        self,
        conn: sqlite3.Connection,
        now: int,
        limit: int,
        room: Mapping[str, int],
        default_room: int,
    ) -> list[str]:
        """Fair shares of every webhook's due work (storage/fairness.py)."""
        queues = self._webhook_queues(conn, now, limit, room, default_room, [])
        lanes = {hook: (ws, rows[:may_go]) for may_go, hook, ws, rows in queues}
        # The read gives each webhook a few rows: a workspace with few webhooks
        # is read again, up to its share of the claim.
        again = top_ups(
            (
                Lane(
                    ws,
                    hook,
                    min(len(rows), may_go),
                    room.get(hook, default_room),
                    len(rows) >= may_go,
                )
                for may_go, hook, ws, rows in queues
            ),
            limit,
        )
        if again:
            wanted = sum(again.values())
            for may_go, hook, ws, rows in self._webhook_queues(conn, now, wanted, again, 0, []):
                lanes[hook] = (ws, rows[:may_go])
        candidates = (
            Candidate(ws, hook, row[2]) for hook, (ws, rows) in lanes.items() for row in rows
        )
        return fair_pick(candidates, limit, self._rng)

    @staticmethod
    def _webhook_queues(
        conn: sqlite3.Connection,
        now: int,
        wanted: int,
        room: Mapping[str, int],
        default_room: int,
        chosen: list[str],
    ) -> list[list[Any]]:
        """[[n, webhook, workspace, [[due, rowid, id], ...]], ...]: WEBHOOK_QUEUES."""
        exclude = json.dumps(chosen) if chosen else None
        args = (now, now, json.dumps(room), default_room, wanted, exclude)
        (text,) = conn.execute(q.WEBHOOK_QUEUES, args).fetchone()
        queues: list[list[Any]] = json.loads(text) if text else []
        return queues

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

        rows = [(now, delivery_id, token) for delivery_id, token in leases]

        def write(conn: sqlite3.Connection) -> int:
            return conn.executemany(q.RELEASE, rows).rowcount

        def work(conn: sqlite3.Connection) -> int:
            return wait_out_busy(conn, lambda c: in_transaction(c, write), self._busy_timeout)

        return await self._thread.run(work)

    async def next_due_at(self) -> int | None:
        """When the earliest scheduled delivery of an active, unpaused webhook is due."""
        now = self._clock.now_ms()

        def work(conn: sqlite3.Connection) -> int | None:
            (due,) = conn.execute(q.FIRST_SENDABLE, (FAR_FUTURE_MS, now)).fetchone()
            (paused,) = conn.execute(q.PAUSE_ENDS, (now,)).fetchone()
            candidates = [v for v in (due, paused) if v is not None]
            return min(candidates) if candidates else None

        return await self._thread.run(work)
