"""DatabaseThread and the lock-waiting helpers: a connection on a thread of hookd's own.

Units of work run on the connection's thread and answer the awaiting
coroutine; SQLite's errors arrive as StoreError; nothing submitted around a
close is left hanging.  wait_out_busy runs a unit again only while another
connection holds the lock and nothing of it was written.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hookd.storage import StoreError
from hookd.storage.sqlite.thread import DatabaseThread, in_transaction, wait_out_busy
from tests.sqlite.support import holding_the_lock, other_connection


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[DatabaseThread]:
    thread = DatabaseThread(
        lambda: sqlite3.connect(tmp_path / "thread.db", isolation_level=None), "test-db"
    )
    await thread.start()
    yield thread
    await thread.close()


def _on_thread(conn: sqlite3.Connection) -> tuple[str, int]:
    return threading.current_thread().name, int(conn.execute("SELECT 41 + 1").fetchone()[0])


@pytest.mark.parametrize("hand_over", [False, True])
async def test_a_unit_runs_on_the_connections_thread_and_returns_its_result(
    db: DatabaseThread, hand_over: bool
) -> None:
    assert await db.run(_on_thread, hand_over=hand_over) == ("test-db", 42)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(StoreError, match="no such table") as raised:
        await db.run(broken, hand_over=hand_over)
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)

    def not_sqlite(conn: sqlite3.Connection) -> None:
        raise KeyError("mine")

    # Errors of the unit's own are the caller's as they are.
    with pytest.raises(KeyError, match="mine"):
        await db.run(not_sqlite, hand_over=hand_over)
    assert await db.run(_on_thread, hand_over=hand_over) == ("test-db", 42)


async def test_units_run_in_the_order_submitted(db: DatabaseThread) -> None:
    ran: list[int] = []

    def unit(n: int) -> None:
        ran.append(n)

    await asyncio.gather(*(db.run(lambda _conn, n=n: unit(n)) for n in range(20)))
    assert ran == list(range(20))


async def test_close_runs_what_was_queued_and_refuses_what_comes_after(tmp_path: Path) -> None:
    db = DatabaseThread(lambda: sqlite3.connect(tmp_path / "close.db"), "test-close")
    await db.start()
    release = threading.Event()
    busy = asyncio.ensure_future(db.run(lambda _conn: release.wait(10)))
    queued = asyncio.ensure_future(db.run(_on_thread))
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(db.close(last=lambda conn: conn.execute("SELECT 1")))
    await asyncio.sleep(0.05)
    assert not closing.done()
    # Work arriving behind the close is answered at once, never left waiting.
    with pytest.raises(StoreError, match="not open"):
        await asyncio.wait_for(db.run(_on_thread), 5)
    release.set()
    await asyncio.wait_for(closing, 10)
    assert await busy is True
    assert await queued == ("test-close", 42)
    with pytest.raises(StoreError, match="not open"):
        await asyncio.wait_for(db.run(_on_thread, hand_over=True), 5)
    await db.close()  # a second close does nothing


async def test_a_connection_that_cannot_open_fails_start_and_closes(tmp_path: Path) -> None:
    db = DatabaseThread(lambda: sqlite3.connect(tmp_path / "missing" / "x.db"), "test-missing")
    with pytest.raises(StoreError, match="unable to open"):
        await db.start()
    await asyncio.wait_for(db.close(), 10)
    with pytest.raises(StoreError, match="not open"):
        await db.run(_on_thread)


# -- waiting for another connection's lock ------------------------------------------------


def _counting_insert(calls: list[int]) -> Callable[[sqlite3.Connection], int]:
    def insert(conn: sqlite3.Connection) -> int:
        calls.append(1)
        conn.execute("INSERT INTO t VALUES (1)")
        return len(calls)

    return insert


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "busy.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
    return path


def test_a_unit_that_met_the_lock_runs_again_once_it_is_free(path: Path) -> None:
    other = holding_the_lock(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    calls: list[int] = []
    started = time.monotonic()
    threading.Timer(0.2, lambda: other.execute("COMMIT")).start()
    tries = wait_out_busy(conn, _counting_insert(calls), timeout=10)
    assert time.monotonic() - started >= 0.2
    assert tries == len(calls) > 1
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    conn.close()
    other.close()


def test_waiting_for_the_lock_ends_after_the_timeout(path: Path) -> None:
    other = holding_the_lock(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        wait_out_busy(conn, _counting_insert([]), timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 10
    other.execute("ROLLBACK")
    assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    conn.close()
    other.close()


def test_other_errors_and_a_lock_met_inside_a_transaction_are_not_waited_on(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    calls: list[int] = []

    def readonly(c: sqlite3.Connection) -> None:
        calls.append(1)
        raise sqlite3.OperationalError("attempt to write a readonly database")

    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        wait_out_busy(conn, readonly, timeout=10)
    assert calls == [1]

    # A transaction that met the lock after writing: running it again would
    # write twice, so the error goes to the caller at once.
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM t").fetchone()  # a read snapshot ...
    writer = other_connection(path)
    writer.execute("INSERT INTO t VALUES (2)")  # ... that another commit makes stale
    writer.close()
    calls.clear()
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError) as raised:
        wait_out_busy(conn, _counting_insert(calls), timeout=10)
    assert raised.value.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
    assert calls == [1] and time.monotonic() - started < 5
    conn.execute("ROLLBACK")
    conn.close()


def test_in_transaction_commits_what_returns_and_rolls_back_what_raises(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)

    def insert_then_fail(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (7)")
        raise ValueError("no")

    assert in_transaction(conn, lambda c: c.execute("INSERT INTO t VALUES (6)").rowcount) == 1
    with pytest.raises(ValueError, match="no"):
        in_transaction(conn, insert_then_fail)
    assert not conn.in_transaction
    with sqlite3.connect(path) as reader:
        assert reader.execute("SELECT x FROM t").fetchall() == [(6,)]
    conn.close()
