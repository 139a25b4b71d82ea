"""The SQLite scheduler's round trip: choose without the lock, one SETTLE, read back.

The store's scheduling part (SqliteScheduling) runs here on a connection the
test owns, on the migrated file of an open store: its statements are traced
as they run, with whether another connection could take the write lock at
that moment, and other processes' commits land between its steps.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from typing import Any

import pytest

from hookd.clock import ManualClock
from hookd.lifecycle import Transition
from hookd.models import Status, WebhookStatus
from hookd.policy import Outcome
from hookd.storage import NewEvent, WebhookChanges
from hookd.storage.sqlite import SqliteStore
from hookd.storage.sqlite import queries as q
from tests.sqlite.support import Scheduler, another_process, lock_is_free, scheduling_on
from tests.support.storage import WS, delivered, first_attempt, make_webhook, record_for

LEASE_MS = 30_000
SETTLE = q.SETTLE.split(" VALUES")[0]
HEAD_READ = q.CLAIM_SCAN[:40]
READ_BACK = q.SETTLED[:40]


class Trace:
    """The statements run on the test's scheduler connection, in order.

    Each entry is (SQL with its arguments, whether another connection could
    take the write lock then).  A trigger's statements are traced again with
    the statement that fires them, so a statement starts where its text
    differs from the entry before.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: list[tuple[str, bool]] = []
        # Called as each statement starts, on the connection's thread.
        self.on_start: Callable[[str], None] | None = None

    def __call__(self, sql: str) -> None:
        starts = not self.entries or self.entries[-1][0] != sql
        self.entries.append((sql, lock_is_free(self.path)))
        if starts and self.on_start is not None:
            self.on_start(sql)

    def statements(self) -> list[str]:
        return [
            sql
            for i, (sql, _) in enumerate(self.entries)
            if i == 0 or self.entries[i - 1][0] != sql
        ]

    def leases(self) -> list[list[str]]:
        """The deliveries each SETTLE that ran was asked to lease."""
        position = SETTLE_COLUMNS.index("leases")
        return [
            json.loads(settle_arguments(sql)[position])
            for sql in self.statements()
            if is_settle(sql)
        ]

    def count(self, prefix: str) -> int:
        return sum(sql.startswith(prefix) for sql in self.statements())


# SETTLE's arguments by name, as its statement lists them.
SETTLE_COLUMNS = SETTLE.partition("(")[2].partition(")")[0].split(", ")


def is_settle(sql: str) -> bool:
    return sql.startswith(SETTLE)


def settle_arguments(sql: str) -> tuple[Any, ...]:
    """A traced SETTLE's arguments (the trace shows them as SQL literals)."""
    values = sql[sql.index(" VALUES (") + len(" VALUES (") : -1]
    with closing(sqlite3.connect(":memory:")) as conn:
        return tuple(conn.execute("SELECT " + values).fetchone())


@pytest.fixture
async def own(store: SqliteStore, clock: ManualClock) -> AsyncIterator[Scheduler]:
    """The scheduling part, on the store's migrated file and the test's own connection."""
    async with scheduling_on(store.path, clock) as scheduler:
        yield scheduler


async def _trace(own: Scheduler, path: str) -> Trace:
    trace = Trace(path)
    await own.thread.run(lambda conn: conn.set_trace_callback(trace))
    return trace


def _held_only_by_settle(trace: Trace) -> None:
    """Only SETTLE writes, in autocommit, and the lock is taken only while one runs."""
    statements = trace.statements()
    assert not [s for s in statements if s.startswith(("BEGIN", "COMMIT"))], statements
    writes = [s for s in statements if not s.startswith(("SELECT", "PRAGMA", "-- "))]
    assert writes and all(is_settle(s) for s in writes), writes
    held = [sql for sql, free in trace.entries if not free]
    assert held and all(is_settle(sql) for sql in held)
    # Each statement found the lock free as it started: a SETTLE takes it itself.
    entries = trace.entries
    assert all(free for i, (sql, free) in enumerate(entries) if i == 0 or entries[i - 1][0] != sql)


async def test_a_round_trip_holds_the_write_lock_for_one_statement_only(
    store: SqliteStore, own: Scheduler
) -> None:
    """Choosing what to claim and reading back what was leased (bodies included)
    keep no other connection waiting: only the one statement that writes the
    records and the leases takes the lock."""
    await make_webhook(store)
    for i in range(3):
        await store.ingest_event(WS, "t", {"i": i})
    trace = await _trace(own, store.path)
    _, claims = await own.scheduling.settle_and_claim([], 16, LEASE_MS, {}, 8)
    assert [json.loads(c.body)["data"] for c in claims] == [{"i": 0}, {"i": 1}, {"i": 2}]
    records = [record_for(c, delivered()) for c in claims]
    results, _ = await own.scheduling.settle_and_claim(records, 16, LEASE_MS, {}, 8)
    assert all(r.applied for r in results)
    _held_only_by_settle(trace)
    starts = trace.statements()
    assert sum(map(is_settle, starts)) == 2  # one a round trip
    # Chosen before the SETTLE, read back after it.
    first_settle = starts.index(next(filter(is_settle, starts)))
    assert starts[0].startswith(HEAD_READ) and starts[first_settle + 1].startswith(READ_BACK)


async def test_one_settle_fences_a_moved_and_a_spent_lease_and_their_side_effects(
    store: SqliteStore, own: Scheduler, clock: ManualClock
) -> None:
    """One SETTLE: a record whose lease was taken over (a 429), one whose lease an
    earlier record of the batch spent (a 410), and two current ones.  It writes
    the current ones, every attempt, none of the fenced records' pauses or
    deactivations, and the leases of the next claim, as one statement."""
    a = await make_webhook(store, events=("a",))
    b = await make_webhook(store, events=("b",))
    c = await make_webhook(store, events=("c",))
    (a1,) = (await store.ingest_event(WS, "a", {})).delivery_ids
    b1, b2 = [(await store.ingest_event(WS, "b", {})).delivery_ids[0] for _ in range(2)]
    scheduling = own.scheduling
    _, claims = await scheduling.settle_and_claim([], 10, LEASE_MS, {}, 8)
    by_id = {claim.delivery_id: claim for claim in claims}
    assert sorted(by_id) == sorted([a1, b1, b2])
    clock.advance(LEASE_MS / 1000 + 1)
    _, (taken_over,) = await scheduling.settle_and_claim([], 1, LEASE_MS, {a.id: 0}, 8)
    assert taken_over.delivery_id == b1
    (c1,) = (await store.ingest_event(WS, "c", {})).delivery_ids
    retry_at = clock.now_ms() + 7000
    records = [
        record_for(by_id[a1], delivered()),
        record_for(by_id[b1], first_attempt(Outcome.RATE_LIMITED, clock.now_ms(), 60.0), 429),
        record_for(by_id[b2], Transition(Status.FAILED, retry_at, 1, 0, None), 500),
        record_for(by_id[a1], first_attempt(Outcome.GONE, clock.now_ms()), 410),
    ]
    trace = await _trace(own, store.path)
    results, claimed = await scheduling.settle_and_claim(records, 10, LEASE_MS, {}, 8)

    assert [(r.delivery_id, r.applied, r.status) for r in results] == [
        (a1, True, Status.DELIVERED),
        (b1, False, Status.PENDING),
        (b2, True, Status.FAILED),
        (a1, False, Status.DELIVERED),
    ]
    assert [claim.delivery_id for claim in claimed] == [c1]
    _held_only_by_settle(trace)
    assert trace.leases() == [[c1]]  # the one write of the round trip
    with another_process(store.path) as conn:
        rows = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT id, status, attempt_count, lease_token, next_attempt_at,"
                " last_status_code FROM deliveries"
            )
        }
        attempts = dict(conn.execute("SELECT delivery_id, count(*) FROM attempts GROUP BY 1"))
        hooks = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT id, status, disabled_reason, paused_until FROM webhooks"
            )
        }
    # Every request went out, so every attempt is on record and counted,
    # fenced or not (a1's second record spent its lease; b1 was taken over).
    assert rows[a1] == ("delivered", 2, None, None, 200)
    assert rows[b1][:3] == ("pending", 1, taken_over.lease_token)
    assert rows[b2] == ("failed", 1, None, retry_at, 500)
    assert rows[c1][:3] == ("pending", 0, claimed[0].lease_token)
    assert attempts == {a1: 2, b1: 1, b2: 1}
    assert hooks[a.id] == ("active", None, None)
    assert hooks[b.id] == ("active", None, None)
    assert hooks[c.id] == ("active", None, None)


async def test_a_delivery_taken_between_choice_and_lease_is_replaced(
    store: SqliteStore, own: Scheduler
) -> None:
    """Another process leases a delivery after this one chose it without the
    lock: the lease goes only where the delivery is still due, and the batch is
    filled with the next one due, chosen again."""
    await make_webhook(store)
    ids = [(await store.ingest_event(WS, "t", {"i": i})).delivery_ids[0] for i in range(4)]
    trace = await _trace(own, store.path)

    def lease_theirs_first(sql: str) -> None:
        if is_settle(sql) and trace.count(SETTLE) == 1:
            with another_process(store.path) as other:
                other.execute(
                    "UPDATE deliveries SET lease_token = 'theirs',"
                    " next_attempt_at = next_attempt_at + 60000 WHERE id = ?",
                    (ids[0],),
                )

    trace.on_start = lease_theirs_first
    _, claims = await own.scheduling.settle_and_claim([], 3, LEASE_MS, {}, 8)
    assert trace.leases() == [ids[:3], [ids[3]]]
    assert [c.delivery_id for c in claims] == ids[1:]
    with another_process(store.path) as conn:
        (token,) = conn.execute(
            "SELECT lease_token FROM deliveries WHERE id = ?", (ids[0],)
        ).fetchone()
    assert token == "theirs"


async def test_work_committed_during_a_turn_that_read_the_whole_queue_is_claimed_in_it(
    store: SqliteStore, own: Scheduler, clock: ManualClock
) -> None:
    """An ingest (another connection) commits after the turn chose, while it
    waits for the lock: the turn chooses once more and claims the new work
    too; a turn during which nothing else committed chooses once."""
    await make_webhook(store)
    ids = [(await store.ingest_event(WS, "t", {"i": i})).delivery_ids[0] for i in range(2)]
    with another_process(store.path) as conn:  # the second is not due yet
        conn.execute(
            "UPDATE deliveries SET next_attempt_at = ? WHERE id = ?",
            (clock.now_ms() + 60_000, ids[1]),
        )
    trace = await _trace(own, store.path)
    late: list[str] = []

    def committed_meanwhile(sql: str) -> None:
        if is_settle(sql) and late and trace.count(SETTLE) == 1:
            # Ingested a moment after the turn began: due after its start.
            clock.advance(0.005)
            with another_process(store.path) as other:
                other.execute(
                    "UPDATE deliveries SET next_attempt_at = ? WHERE id = ?",
                    (clock.now_ms(), late[0]),
                )

    trace.on_start = committed_meanwhile
    _, claims = await own.scheduling.settle_and_claim([], 16, LEASE_MS, {}, 8)
    assert trace.leases() == [ids[:1]]  # nothing committed during the turn: one choice
    assert [c.delivery_id for c in claims] == ids[:1]

    late.append(ids[1])
    trace.entries.clear()
    records = [record_for(c, delivered()) for c in claims]
    results, claims = await own.scheduling.settle_and_claim(records, 16, LEASE_MS, {}, 8)
    assert all(r.applied for r in results)
    assert trace.leases() == [[], ids[1:]]
    assert [c.delivery_id for c in claims] == ids[1:]

    # Due work its webhook has no room for was left behind: no second look.
    await store.ingest_event(WS, "t", {"i": 2})
    late[0] = (await store.ingest_event(WS, "t", {"i": 3})).delivery_ids[0]
    trace.entries.clear()
    records = [record_for(c, delivered()) for c in claims]
    results, none = await own.scheduling.settle_and_claim(
        records, 16, LEASE_MS, {claims[0].webhook_id: 0}, 8
    )
    assert all(r.applied for r in results)
    assert (trace.leases(), none) == ([[]], [])


async def test_a_claim_that_cannot_be_read_back_is_left_to_its_lease(
    store: SqliteStore, own: Scheduler, clock: ManualClock
) -> None:
    """Committed leases whose rows could not be read (the read back fails after
    the write) are not sent now and not lost: they are claimed again once the
    lease has expired, and the records of the same round trip are written."""
    await make_webhook(store)
    await store.ingest_event(WS, "t", {"n": 1})
    _, (first,) = await own.scheduling.settle_and_claim([], 1, LEASE_MS, {}, 8)
    await store.ingest_event(WS, "t", {"n": 2})
    trace = await _trace(own, store.path)
    failing = [False]

    def fail_the_read_back(sql: str) -> None:
        failing[0] = sql.startswith(READ_BACK)

    trace.on_start = fail_the_read_back
    # Interrupted: the read back ends in an error ("interrupted"), after the SETTLE committed.
    await own.thread.run(lambda conn: conn.set_progress_handler(lambda: failing[0], 1))
    results, claims = await own.scheduling.settle_and_claim(
        [record_for(first, delivered())], 16, LEASE_MS, {}, 8
    )
    assert trace.count(READ_BACK) == 1
    assert [(r.delivery_id, r.applied) for r in results] == [(first.delivery_id, True)]
    assert claims == []
    assert await store.claim_due(16, LEASE_MS, {}, 8) == []  # leased, not lost
    clock.advance(LEASE_MS / 1000)
    (again,) = await store.claim_due(16, LEASE_MS, {}, 8)
    assert json.loads(again.body)["data"] == {"n": 2}
    assert len(await store.list_attempts(first.delivery_id)) == 1


async def test_a_blocked_head_of_the_queue_is_skipped_for_a_while(
    store: SqliteStore, own: Scheduler, clock: ManualClock
) -> None:
    """A head of the due queue where nothing may go (an inactive webhook's
    backlog) is not read again for a second: claims meanwhile come from the
    webhooks' own queues and miss nothing, a webhook active again included."""
    stuck = await make_webhook(store, name="stuck", events=("stuck",))
    await make_webhook(store, name="live", events=("live",))
    stuck_ids = [
        r.delivery_ids[0]
        for r in await store.ingest_events(WS, [NewEvent("stuck", {"n": n}) for n in range(100)])
    ]
    await store.update_webhook(WS, stuck.id, WebhookChanges(status=WebhookStatus.INACTIVE), 0)
    trace = await _trace(own, store.path)

    async def claim() -> list[str]:
        clock.advance(0.001)
        _, claims = await own.scheduling.settle_and_claim([], 8, LEASE_MS, {}, 8)
        return [c.delivery_id for c in claims]

    live = [(await store.ingest_event(WS, "live", {})).delivery_ids[0]]
    assert await claim() == live
    assert trace.count(HEAD_READ) == 1
    live.append((await store.ingest_event(WS, "live", {})).delivery_ids[0])
    assert await claim() == live[1:]
    assert trace.count(HEAD_READ) == 1  # skipped
    await store.update_webhook(WS, stuck.id, WebhookChanges(status=WebhookStatus.ACTIVE), 0)
    assert await claim() == stuck_ids[:8]
    assert trace.count(HEAD_READ) == 1
    clock.advance(1)
    assert await claim() == stuck_ids[8:16]
    assert trace.count(HEAD_READ) == 2  # read again after the second


async def test_claim_cost_does_not_grow_with_a_backlog_that_may_not_go(
    store: SqliteStore, own: Scheduler, clock: ManualClock
) -> None:
    """A claim, its nothing-due probe and next_due_at (whose statement also finds
    queue_stats' oldest due delivery) read a bounded head of the queue, not an
    inactive webhook's whole backlog (about 1 us a row each)."""
    stuck = await make_webhook(store, events=("stuck",))
    live = await make_webhook(store, events=("live",))
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    async def cost(backlog: int) -> int:
        nonlocal steps
        await store.ingest_events(WS, [NewEvent("stuck", {}) for _ in range(backlog)])
        await store.update_webhook(WS, stuck.id, WebhookChanges(status=WebhookStatus.INACTIVE), 0)
        clock.advance(1)
        await store.ingest_event(WS, "live", {})
        await own.thread.run(lambda conn: conn.set_progress_handler(tick, 100))
        steps = 0
        _, claimed = await own.scheduling.settle_and_claim([], 10, LEASE_MS, {}, 16)
        assert [c.webhook_id for c in claimed] == [live.id]
        assert await own.scheduling.settle_and_claim([], 10, LEASE_MS, {}, 16) == ([], [])
        await own.scheduling.next_due_at()
        await own.thread.run(lambda conn: conn.set_progress_handler(None, 0))
        await store.update_webhook(WS, stuck.id, WebhookChanges(status=WebhookStatus.ACTIVE), 0)
        return steps

    small = await cost(300)
    large = await cost(6_000)  # 6,300 waiting at the head now
    assert large < small * 1.5, (small, large)
