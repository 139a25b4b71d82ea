"""Another process holding SQLite's write lock: the store waits for it, up to busy_timeout_ms.

``hookd serve``, its delivery workers and the operator CLI share one file;
the store takes the write lock itself, polling finely instead of SQLite's
coarse sleeping busy handler.  What must hold whatever the polling does: a
writer that waits gets the lock once it is free and stores its data; past
busy_timeout_ms it gives up with a clear error and stores nothing; another
error is not waited on; a reader is never held up by a writer (WAL), and a
claim with nothing to take needs no lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hookd.storage import NewEvent, StoreError
from hookd.storage.sqlite import SqliteStore
from hookd.storage.sqlite.connection import AdminConnection
from tests.sqlite.support import (
    INGEST_THREAD,
    another_process,
    holding_the_lock,
    on_connect,
    open_store,
)
from tests.support.storage import WS, make_webhook

T = TypeVar("T")


async def _waits_for_commit(other: Any, write: Coroutine[Any, Any, T]) -> T:
    """Run ``write`` while ``other`` holds the lock: it must wait until ``other`` commits."""
    task = asyncio.create_task(write)
    await asyncio.sleep(0.3)
    assert not task.done(), "wrote while another connection held the lock"
    await asyncio.to_thread(other.execute, "COMMIT")
    return await asyncio.wait_for(task, 10)


async def test_a_writer_waits_for_the_lock_and_then_commits(tmp_path: Path) -> None:
    async with open_store(tmp_path / "lock.db", busy_timeout_ms=10_000) as store:
        await make_webhook(store)
        other = holding_the_lock(store.path)
        result = await _waits_for_commit(other, store.ingest_event(WS, "t", {"n": 1}))
        assert len(result.delivery_ids) == 1
        stored = other.execute(
            "SELECT count(*) FROM deliveries WHERE event_id = ?", (result.event.id,)
        ).fetchone()[0]
        assert stored == 1
        other.close()


async def test_a_writer_gives_up_after_busy_timeout_and_stores_nothing(tmp_path: Path) -> None:
    async with open_store(tmp_path / "lock.db", busy_timeout_ms=300) as store:
        await make_webhook(store)
        other = holding_the_lock(store.path)
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


async def test_other_errors_are_not_waited_on(tmp_path: Path) -> None:
    """The ingest connection may not grow the file (another error than a lock): a
    group, with or without idempotency keys, fails at once, well inside the 10 s
    busy timeout, and stores nothing."""
    path = tmp_path / "full.db"
    limited: list[str] = []

    def no_growth(conn: sqlite3.Connection, thread: str) -> None:
        if thread == INGEST_THREAD:
            conn.execute("PRAGMA max_page_count = 1")  # (it cannot go below the file's size)
            limited.append(thread)

    async with open_store(path, busy_timeout_ms=10_000) as store:
        await make_webhook(store)
        with on_connect(no_growth):
            for key in (None, "k1"):
                started = time.monotonic()
                with pytest.raises(StoreError, match="full"):
                    await store.ingest_event(WS, "t", {"pad": "x" * 20_000}, idempotency_key=key)
                assert time.monotonic() - started < 5
        assert limited == [INGEST_THREAD]
    with another_process(path) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0


async def _claims_nothing_while_locked(store: SqliteStore) -> Any:
    """Another connection takes the write lock; a claim still answers, empty, at
    once (well inside the store's 10 s busy timeout).  Returns that connection."""
    other = holding_the_lock(store.path)
    started = time.monotonic()
    assert await store.settle_and_claim([], 16, 30_000, {}, 8) == ([], [])
    assert time.monotonic() - started < 5
    return other


async def test_a_claim_with_nothing_due_needs_no_lock(tmp_path: Path) -> None:
    """A wake-up that finds nothing to claim answers at once, even while another writes."""
    async with open_store(tmp_path / "lock.db", busy_timeout_ms=10_000) as store:
        await make_webhook(store)
        other = await _claims_nothing_while_locked(store)
        # With something due, the claim needs the lock: it waits for it.
        await asyncio.to_thread(other.execute, "ROLLBACK")
        await store.ingest_event(WS, "t", {})
        await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
        _, claims = await _waits_for_commit(other, store.settle_and_claim([], 16, 30_000, {}, 8))
        assert len(claims) == 1
        other.close()


async def test_a_paused_backlog_at_the_head_needs_no_lock_to_wait_on(tmp_path: Path) -> None:
    """A 429 leaves the webhook's backlog where it was, due; wake-ups meanwhile
    see that none of it may go without taking the write lock."""
    async with open_store(tmp_path / "lock.db", busy_timeout_ms=10_000) as store:
        hook = await make_webhook(store)
        await store.ingest_events(WS, [NewEvent("t", {}) for _ in range(400)])
        # A webhook that may send, with nothing due: its queue is looked at too.
        await make_webhook(store, name="idle", events=("other",))
        with another_process(store.path) as conn:
            conn.execute(
                "UPDATE webhooks SET paused_until = ? WHERE id = ?",
                (store.clock.now_ms() + 60_000, hook.id),
            )
        other = await _claims_nothing_while_locked(store)
        other.close()


async def test_reads_go_on_while_another_process_writes(tmp_path: Path) -> None:
    async with open_store(tmp_path / "lock.db", busy_timeout_ms=10_000) as store:
        await make_webhook(store)
        (delivery_id,) = (await store.ingest_event(WS, "t", {})).delivery_ids
        other = holding_the_lock(store.path)
        other.execute("UPDATE deliveries SET last_error = 'uncommitted'")
        started = time.monotonic()
        delivery = await store.get_delivery(WS, delivery_id)
        assert delivery is not None and delivery.last_error is None
        assert time.monotonic() - started < 5
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.parametrize("yields", [0, 1, 2, 3])
async def test_a_transaction_cancelled_at_any_step_leaves_no_lock_behind(
    tmp_path: Path, yields: int
) -> None:
    """A task cancelled while its write transaction begins (a retention sweep at
    shutdown) must not leave the admin connection holding the write lock: the
    scheduler's last writes would then fail, and the daemon with them."""
    db = tmp_path / "hookd.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    admin = AdminConnection(str(db), 1000, "FULL")
    await admin.open()
    try:

        async def sweep() -> None:
            async with admin.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (1)")

        task = asyncio.create_task(sweep())
        for _ in range(yields):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        other = sqlite3.connect(db, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")  # "database is locked" if it were held
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert await admin.rows("SELECT count(*) FROM t") == [(0,)]
    finally:
        await admin.close()
