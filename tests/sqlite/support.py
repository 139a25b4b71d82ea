"""What the SQLite tests share: another process's connection, the scheduler's part of the
store on a connection of the test's own, and the store's own connections as they open."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from hookd.clock import Clock, ManualClock
from hookd.storage.sqlite import SqliteStore, schema
from hookd.storage.sqlite import queries as q
from hookd.storage.sqlite.scheduling import SqliteScheduling
from hookd.storage.sqlite.thread import DatabaseThread

# The names of the threads that own the store's scheduler and ingest connections.
SCHEDULER_THREAD = "hookd-scheduler"
INGEST_THREAD = "hookd-ingest"


def other_connection(path: str | Path) -> sqlite3.Connection:
    """A connection to the store's file as another process has one (autocommit)."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


@contextmanager
def another_process(path: str | Path) -> Iterator[sqlite3.Connection]:
    """:func:`other_connection`, closed when the block ends."""
    conn = other_connection(path)
    try:
        yield conn
    finally:
        conn.close()


def holding_the_lock(path: str | Path) -> sqlite3.Connection:
    """Another process's connection, holding the write lock until it commits or rolls back."""
    other = other_connection(path)
    other.execute("BEGIN IMMEDIATE")
    return other


def lock_is_free(path: str | Path) -> bool:
    """Whether another connection could take the write lock right now."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


@asynccontextmanager
async def open_store(
    path: str | Path, clock: Clock | None = None, busy_timeout_ms: int = 10_000
) -> AsyncIterator[SqliteStore]:
    """A SqliteStore on ``path``, closed when the block ends however it ends.

    (A store left open keeps aiosqlite's thread, which is not a daemon, and
    with it the test process, alive.)
    """
    store = SqliteStore(path, clock or ManualClock(), busy_timeout_ms=busy_timeout_ms)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class Scheduler(NamedTuple):
    """The store's scheduling part, on a connection and thread the test owns."""

    thread: DatabaseThread
    scheduling: SqliteScheduling


@asynccontextmanager
async def scheduling_on(
    path: str | Path, clock: Clock, busy_timeout_ms: int = 10_000
) -> AsyncIterator[Scheduler]:
    """SqliteScheduling on a connection set up as the store sets up its scheduler's.

    The file must be migrated (open a SqliteStore on it first).  The test may
    run what it likes on ``thread`` (traces, progress handlers): the
    connection is the test's own.
    """
    thread = DatabaseThread(lambda: sqlite3.connect(path, isolation_level=None), "test-scheduler")

    def setup(conn: sqlite3.Connection) -> None:
        schema.configure(conn, str(path), "NORMAL")
        for statement in q.SETTLE_DDL:
            conn.execute(statement)

    try:
        await thread.start()
        await thread.run(setup)
        yield Scheduler(thread, SqliteScheduling(thread, clock, busy_timeout_ms))
    finally:
        await thread.close()


# -- the store's own connections, as each opens ----------------------------------------------

ConnectionSetup = Callable[[sqlite3.Connection, str], None]


@contextmanager
def on_connect(setup: ConnectionSetup) -> Iterator[None]:
    """Run ``setup(connection, thread name)`` on each SQLite connection opened meanwhile.

    It runs in ``sqlite3.connect`` (wrapped for the block), on the thread that
    opens the connection and owns it, before anything else runs on it: a test
    reaches the store's own connections (a trace, a limit, a pragma) without
    any attribute of the store.
    """
    connect = sqlite3.connect

    def connect_and_set_up(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        setup(conn, threading.current_thread().name)
        return conn

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite3, "connect", connect_and_set_up)
        yield


class WriteRefusal:
    """Writes to hookd's tables refused, while on, by connections opened under :func:`on_connect`.

    Use ``on_connect(refusal.install)``.  SQLite asks a connection's authorizer
    whether a statement may write when it compiles it; :meth:`switch` changes
    the schema from another connection, which makes every connection compile
    its statements again.  (TEMP objects stay writable, as with a read-only file.)
    """

    WRITES = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE})

    def __init__(self) -> None:
        self.on = False
        self.installed: list[str] = []  # the threads whose connections have it
        self.test_thread = threading.current_thread().name

    def install(self, conn: sqlite3.Connection, thread_name: str) -> None:
        if thread_name == self.test_thread:  # the test's own, as another process's
            return
        conn.set_authorizer(self.authorize)
        self.installed.append(thread_name)

    def authorize(self, action: int, *details: str | None) -> int:
        table, _column, database, _trigger = details
        # (SQLite's own tables are left alone: building json_each asks to update sqlite_master.)
        refused = self.on and action in self.WRITES and database == "main"
        if refused and table is not None and not table.startswith("sqlite_"):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def switch(self, path: str | Path, on: bool) -> None:
        self.on = on
        with another_process(path) as conn:
            conn.execute("CREATE TABLE hookd_test_recompile (x)")
            conn.execute("DROP TABLE hookd_test_recompile")
