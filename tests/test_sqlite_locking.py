"""SQLite underneath the store: another process's lock, the size of one statement, the version.

Another process holding SQLite's write lock: hookd waits for it, up to busy_timeout_ms.

`hookd serve` and its delivery workers (and the operator CLI) share one file;
the store takes the write lock itself, polling finely instead of SQLite's
coarse sleeping busy handler.  What must hold whatever the polling does: a
writer that waits gets the lock once it is free and stores its data; past
busy_timeout_ms it gives up with a clear error and stores nothing; the
reader is never held up by a writer (WAL).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hookd.clock import ManualClock
from hookd.models import NewWebhook, Webhook, WebhookStatus
from hookd.storage import StoreError, WebhookChanges
from hookd.storage.base import NewEvent
from hookd.storage.sqlite import SqliteStore
from tests.test_store_contract import delivered, record_for

WS = "ws_lock"
T = TypeVar("T")


async def _open(path: Path, busy_timeout_ms: int, clock: ManualClock | None = None) -> SqliteStore:
    store = SqliteStore(path, clock or ManualClock(), busy_timeout_ms=busy_timeout_ms)
    await store.open()
    await _webhook(store, "hook", "*")
    return store


async def _webhook(store: SqliteStore, name: str, events: str) -> Webhook:
    return await store.create_webhook(
        NewWebhook(
            workspace_id=WS,
            name=name,
            url=f"https://example.com/{name}",
            events=(events,),
            secret="secret-lock-0123",
            retry_attempts=3,
            timeout_ms=1000,
            created_by="user_1",
        )
    )


def _holder(path: Path) -> sqlite3.Connection:
    """Another process's connection, holding the write lock."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


async def _waits_for_commit(other: sqlite3.Connection, write: Coroutine[Any, Any, T]) -> T:
    """Run ``write`` while ``other`` holds the lock: it must wait until ``other`` commits."""
    task = asyncio.create_task(write)
    await asyncio.sleep(0.3)
    assert not task.done(), "wrote while another connection held the lock"
    await asyncio.to_thread(other.execute, "COMMIT")
    return await asyncio.wait_for(task, 10)


async def test_a_writer_waits_for_the_lock_and_then_commits(tmp_path: Path) -> None:
    store = await _open(tmp_path / "lock.db", busy_timeout_ms=10_000)
    try:
        other = _holder(tmp_path / "lock.db")
        result = await _waits_for_commit(other, store.ingest_event(WS, "t", {"n": 1}))
        assert len(result.delivery_ids) == 1
        stored = other.execute(
            "SELECT count(*) FROM deliveries WHERE event_id = ?", (result.event.id,)
        ).fetchone()[0]
        assert stored == 1
        other.close()
    finally:
        await store.close()


async def test_a_writer_gives_up_after_busy_timeout_and_stores_nothing(tmp_path: Path) -> None:
    store = await _open(tmp_path / "lock.db", busy_timeout_ms=300)
    try:
        other = _holder(tmp_path / "lock.db")
        started = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            await store.ingest_event(WS, "t", {"n": 1})
        waited = time.monotonic() - started
        assert waited >= 0.3
        assert waited < 10, "gave up far later than busy_timeout_ms"
        other.execute("ROLLBACK")
        assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        other.close()
        # The lock is free again: the store writes as before.
        result = await store.ingest_event(WS, "t", {"n": 2})
        assert len(result.delivery_ids) == 1
    finally:
        await store.close()


async def test_other_errors_at_begin_are_not_waited_on(tmp_path: Path) -> None:
    store = await _open(tmp_path / "lock.db", busy_timeout_ms=10_000)
    ingest_db = await store._ingest_connection()
    try:
        # A read-only connection fails at once: no lock to wait for.
        await store._call(lambda c: c.execute("PRAGMA query_only = 1"), db=ingest_db)
        started = time.monotonic()
        with pytest.raises(StoreError):
            await store.ingest_event(WS, "t", {})
        assert time.monotonic() - started < 5
    finally:
        await store._call(lambda c: c.execute("PRAGMA query_only = 0"), db=ingest_db)
        await store.close()


async def _claims_nothing_while_locked(store: SqliteStore, path: Path) -> sqlite3.Connection:
    """Another connection takes the write lock; a claim still answers, empty, at
    once (well inside the store's 10 s busy timeout).  Returns that connection."""
    other = _holder(path)
    started = time.monotonic()
    assert await store.settle_and_claim([], 16, 30_000, {}, 8) == ([], [])
    assert time.monotonic() - started < 5
    return other


async def test_a_claim_with_nothing_due_needs_no_lock(tmp_path: Path) -> None:
    """A wake-up that finds nothing to claim answers at once, even while another writes."""
    store = await _open(tmp_path / "lock.db", busy_timeout_ms=10_000)
    try:
        other = await _claims_nothing_while_locked(store, tmp_path / "lock.db")
        # With something due, the claim needs the lock: it waits for it.
        await asyncio.to_thread(other.execute, "ROLLBACK")
        await store.ingest_event(WS, "t", {})
        await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
        _, claims = await _waits_for_commit(other, store.settle_and_claim([], 16, 30_000, {}, 8))
        assert len(claims) == 1
        other.close()
    finally:
        await store.close()


async def test_a_paused_backlog_at_the_head_needs_no_lock_to_wait_on(tmp_path: Path) -> None:
    """A 429 leaves the webhook's backlog where it was, due; wake-ups meanwhile
    see that none of it may go without taking the write lock."""
    store = await _open(tmp_path / "lock.db", busy_timeout_ms=10_000)
    try:
        await store.ingest_events(WS, [NewEvent("t", {}) for _ in range(400)])
        # A webhook that may send, with nothing due: its queue is looked at too.
        await _webhook(store, "idle", "other")
        await store._call(
            lambda c: c.execute(
                "UPDATE webhooks SET paused_until = ? WHERE name = 'hook'",
                (store.clock.now_ms() + 60_000,),
            )
        )
        other = await _claims_nothing_while_locked(store, tmp_path / "lock.db")
        other.close()
    finally:
        await store.close()


async def test_reads_go_on_while_another_process_writes(tmp_path: Path) -> None:
    store = await _open(tmp_path / "lock.db", busy_timeout_ms=10_000)
    try:
        (delivery_id,) = (await store.ingest_event(WS, "t", {})).delivery_ids
        other = _holder(tmp_path / "lock.db")
        other.execute("UPDATE deliveries SET last_error = 'uncommitted'")
        started = time.monotonic()
        delivery = await store.get_delivery(WS, delivery_id)
        assert delivery is not None and delivery.last_error is None
        assert time.monotonic() - started < 5
        other.execute("ROLLBACK")
        other.close()
    finally:
        await store.close()


async def test_a_group_too_large_for_one_json_string_is_written_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hookd.storage.sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "_JSON_BATCH_MAX_CHARS", 500)
    store = await _open(tmp_path / "big.db", busy_timeout_ms=1000)
    try:
        # A string of the whole group (~2,400 characters) would be refused
        # outright; one row (~450) is not.
        await store._call(
            lambda c: c.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 2000),
            db=await store._ingest_connection(),
        )
        datas = [{"i": i, "pad": "x" * 300} for i in range(6)]
        results = await store.ingest_events(WS, [NewEvent("t", d, None) for d in datas])
        for result, data in zip(results, datas, strict=True):
            event = await store.get_event(WS, result.event.id)
            assert event is not None and event.body == result.event.body
            assert json.loads(event.body)["data"] == data
            assert len(result.delivery_ids) == 1
    finally:
        await store.close()


async def test_an_sqlite_without_update_from_is_refused_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    store = SqliteStore(tmp_path / "old.db", ManualClock())
    with pytest.raises(StoreError, match=r"3\.33\.0 or newer is required.*3\.31\.1"):
        await store.open()


def _lock_is_free(path: Path) -> bool:
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


async def test_a_round_trip_holds_the_write_lock_for_one_statement_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Choosing what to claim and reading back what was leased (bodies included)
    keep no other connection waiting: only the one statement that writes the
    records and the leases takes the lock."""
    path = tmp_path / "lock.db"
    store = await _open(path, busy_timeout_ms=10_000)
    choose, read_back = SqliteStore._choose_due, SqliteStore._leased_claims
    free: list[tuple[str, bool]] = []

    def choosing(*args: Any) -> Any:
        free.append(("choose", _lock_is_free(path)))
        return choose(*args)

    def reading(*args: Any) -> Any:
        free.append(("read back", _lock_is_free(path)))
        return read_back(*args)

    monkeypatch.setattr(SqliteStore, "_choose_due", choosing)
    monkeypatch.setattr(SqliteStore, "_leased_claims", staticmethod(reading))
    try:
        for i in range(3):
            await store.ingest_event(WS, "t", {"i": i})
        _, claims = await store.settle_and_claim([], 16, 30_000, {}, 8)
        assert [json.loads(c.body)["data"] for c in claims] == [{"i": 0}, {"i": 1}, {"i": 2}]
        records = [record_for(c, delivered()) for c in claims]
        results, _ = await store.settle_and_claim(records, 16, 30_000, {}, 8)
        assert all(r.applied for r in results)
        assert free == [("choose", True), ("read back", True), ("choose", True)]
    finally:
        await store.close()


async def test_a_delivery_taken_between_choice_and_lease_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process leases a delivery after this one chose it without the
    lock: the lease goes only where the delivery is still due, and the batch is
    filled with the next one due, chosen again."""
    path = tmp_path / "lock.db"
    store = await _open(path, busy_timeout_ms=10_000)
    choose = SqliteStore._choose_due
    calls: list[list[str]] = []

    def raced(*args: Any) -> Any:
        choice = choose(*args)
        calls.append(choice.ids)
        if len(calls) == 1:
            other = sqlite3.connect(path, isolation_level=None)
            other.execute(
                "UPDATE deliveries SET lease_token = 'theirs', next_attempt_at = next_attempt_at"
                " + 60000 WHERE id = ?",
                (choice.ids[0],),
            )
            other.close()
        return choice

    monkeypatch.setattr(SqliteStore, "_choose_due", raced)
    try:
        ids = [(await store.ingest_event(WS, "t", {"i": i})).delivery_ids[0] for i in range(4)]
        _, claims = await store.settle_and_claim([], 3, 30_000, {}, 8)
        assert calls == [ids[:3], [ids[3]]]
        assert [c.delivery_id for c in claims] == ids[1:]
        with sqlite3.connect(path) as conn:
            (token,) = conn.execute(
                "SELECT lease_token FROM deliveries WHERE id = ?", (ids[0],)
            ).fetchone()
        assert token == "theirs"
    finally:
        await store.close()


async def test_work_committed_during_a_turn_that_read_the_whole_queue_is_claimed_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ingest (another connection) commits after the turn chose, while it
    waits for the lock: the turn chooses once more and claims the new work
    too; a turn during which nothing else committed chooses once."""
    path = tmp_path / "lock.db"
    clock = ManualClock()
    store = await _open(path, busy_timeout_ms=10_000, clock=clock)
    choose = SqliteStore._choose_due
    calls: list[list[str]] = []
    late: list[str] = []

    def committed_meanwhile(*args: Any) -> Any:
        choice = choose(*args)
        calls.append(choice.ids)
        if len(calls) == 1 and late:
            # Ingested a moment after the turn began: due after its start.
            clock.advance(0.005)
            other = sqlite3.connect(path, isolation_level=None)
            other.execute(
                "UPDATE deliveries SET next_attempt_at = ? WHERE id = ?", (clock.now_ms(), late[0])
            )
            other.close()
        return choice

    monkeypatch.setattr(SqliteStore, "_choose_due", committed_meanwhile)
    try:
        ids = [(await store.ingest_event(WS, "t", {"i": i})).delivery_ids[0] for i in range(2)]
        with sqlite3.connect(path) as conn:  # the second is not due yet
            conn.execute(
                "UPDATE deliveries SET next_attempt_at = ? WHERE id = ?",
                (clock.now_ms() + 60_000, ids[1]),
            )
        _, claims = await store.settle_and_claim([], 16, 30_000, {}, 8)
        assert calls == [ids[:1]]  # nothing committed during the turn: one choice
        assert [c.delivery_id for c in claims] == ids[:1]

        late.append(ids[1])
        calls.clear()
        records = [record_for(c, delivered()) for c in claims]
        results, claims = await store.settle_and_claim(records, 16, 30_000, {}, 8)
        assert all(r.applied for r in results)
        assert calls == [[], ids[1:]]
        assert [c.delivery_id for c in claims] == ids[1:]

        # Due work its webhook has no room for was left behind: no second look.
        await store.ingest_event(WS, "t", {"i": 2})
        late[0] = (await store.ingest_event(WS, "t", {"i": 3})).delivery_ids[0]
        calls.clear()
        records = [record_for(c, delivered()) for c in claims]
        results, none = await store.settle_and_claim(
            records, 16, 30_000, {claims[0].webhook_id: 0}, 8
        )
        assert all(r.applied for r in results)
        assert (calls, none) == ([[]], [])
    finally:
        await store.close()


async def test_a_claim_that_cannot_be_read_back_is_left_to_its_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Committed leases whose rows could not be read (an I/O error after the
    write) are not sent now and not lost: they are claimed again once the lease
    has expired, and the records of the same round trip are written."""
    clock = ManualClock()
    store = await _open(tmp_path / "unread.db", busy_timeout_ms=10_000, clock=clock)
    try:
        await store.ingest_event(WS, "t", {"n": 1})
        (first,) = await store.claim_due(1, 30_000, {}, 8)
        await store.ingest_event(WS, "t", {"n": 2})

        def failing(*_args: object) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(SqliteStore, "_leased_claims", staticmethod(failing))
        results, claims = await store.settle_and_claim(
            [record_for(first, delivered())], 16, 30_000, {}, 8
        )
        assert [(r.delivery_id, r.applied) for r in results] == [(first.delivery_id, True)]
        assert claims == []
        monkeypatch.undo()
        assert await store.claim_due(16, 30_000, {}, 8) == []  # leased, not lost
        clock.advance(30)
        (again,) = await store.claim_due(16, 30_000, {}, 8)
        assert json.loads(again.body)["data"] == {"n": 2}
        assert len(await store.list_attempts(first.delivery_id)) == 1
    finally:
        await store.close()


async def test_a_blocked_head_of_the_queue_is_skipped_for_a_while(tmp_path: Path) -> None:
    """A head of the due queue where nothing may go (an inactive webhook's
    backlog) is not read again for a second: claims meanwhile come from the
    webhooks' own queues and miss nothing, a webhook active again included."""
    clock = ManualClock()
    store = SqliteStore(tmp_path / "head.db", clock)
    await store.open()
    try:
        stuck = await _webhook(store, "stuck", "stuck")
        await _webhook(store, "live", "live")
        stuck_ids = [
            r.delivery_ids[0]
            for r in await store.ingest_events(
                WS, [NewEvent("stuck", {"n": n}) for n in range(100)]
            )
        ]
        await store.update_webhook(WS, stuck.id, WebhookChanges(status=WebhookStatus.INACTIVE), 0)
        traced: list[str] = []
        await store._call(lambda conn: conn.set_trace_callback(traced.append))

        def head_reads() -> int:
            return sum(sql.startswith("SELECT json_group_array(json_array(due,") for sql in traced)

        async def claim() -> list[str]:
            clock.advance(0.001)
            _, claims = await store.settle_and_claim([], 8, 30_000, {}, 8)
            return [c.delivery_id for c in claims]

        live = [(await store.ingest_event(WS, "live", {})).delivery_ids[0]]
        assert await claim() == live
        assert head_reads() == 1
        live.append((await store.ingest_event(WS, "live", {})).delivery_ids[0])
        assert await claim() == live[1:]
        assert head_reads() == 1  # skipped
        await store.update_webhook(WS, stuck.id, WebhookChanges(status=WebhookStatus.ACTIVE), 0)
        assert await claim() == stuck_ids[:8]
        assert head_reads() == 1
        clock.advance(1)
        assert await claim() == stuck_ids[8:16]
        assert head_reads() == 2  # read again after the second
    finally:
        await store.close()
