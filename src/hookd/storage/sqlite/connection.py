"""The store's third connection, for the API, the CLI and housekeeping, through aiosqlite.

Operators' requests (keys, webhooks, reads, replay) and the background
housekeeping (retention, stats) run here, one statement per call as
aiosqlite documents, beside the two connections that carry load (the
scheduler's and ingest's): a list or a key lookup never waits behind a
scheduler turn, and a turn never behind an operator.  Writes are short
transactions that wait for the write lock with SQLite's own busy handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiosqlite

from hookd.storage.base import StoreError


def _error(exc: sqlite3.Error) -> StoreError:
    return StoreError(f"database error: {exc}")


class AdminConnection:
    """An aiosqlite connection used one transaction (or one read) at a time."""

    # aiosqlite's thread is not a daemon: a process that exits without closing
    # its store would wait for it for ever.  stop_all() ends those left open.
    _open: weakref.WeakSet[aiosqlite.Connection] = weakref.WeakSet()

    @classmethod
    def stop_all(cls) -> None:
        """Stop the thread of every connection still open (a process on its way out)."""
        for db in list(cls._open):
            db.stop()
        cls._open.clear()

    def __init__(self, path: str, busy_timeout_ms: int, synchronous: str) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._synchronous = synchronous
        self._db: aiosqlite.Connection | None = None
        # Statements of one transaction must not interleave with another
        # coroutine's on the shared connection.
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            db = await aiosqlite.connect(self._path, isolation_level=None)
        except sqlite3.Error as exc:
            raise _error(exc) from exc
        try:
            for pragma in (
                f"PRAGMA busy_timeout = {self._busy_timeout_ms}",
                f"PRAGMA synchronous = {self._synchronous}",
                "PRAGMA foreign_keys = ON",
            ):
                await db.execute(pragma)
        except sqlite3.Error as exc:
            await db.close()
            raise _error(exc) from exc
        self._db = db
        self._open.add(db)

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            self._open.discard(db)
            async with self._lock:
                await db.close()

    def _open_db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Every row of one read."""
        db = self._open_db()
        async with self._lock:
            try:
                return list(await db.execute_fetchall(sql, tuple(params)))
            except sqlite3.Error as exc:
                raise _error(exc) from exc

    async def row(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = await self.rows(sql, params)
        return rows[0] if rows else None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        db = self._open_db()
        async with self._lock:
            # A statement whose caller is cancelled still runs on the
            # connection's thread, in order: a BEGIN cut short by a cancelled
            # task (a retention sweep at shutdown) would leave the write lock
            # held for good.  So the BEGIN is awaited to its end, and a
            # ROLLBACK queued behind whatever ran, unconditionally.
            begin = asyncio.ensure_future(db.execute("BEGIN IMMEDIATE"))
            try:
                await asyncio.shield(begin)
            except sqlite3.Error as exc:
                raise _error(exc) from exc
            except asyncio.CancelledError:
                await _rollback(db, begin)
                raise
            try:
                yield Transaction(db)
                await db.execute("COMMIT")
            except BaseException as exc:
                await _rollback(db)
                if isinstance(exc, sqlite3.Error):
                    raise _error(exc) from exc
                raise


async def _rollback(db: aiosqlite.Connection, begin: asyncio.Future[Any] | None = None) -> None:
    """End the transaction a block leaves unfinished (none left: nothing to do)."""
    with contextlib.suppress(sqlite3.Error):
        if begin is not None:
            await begin
        await db.execute("ROLLBACK")


class Transaction:
    """The statements of one write transaction."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, params: Any = ()) -> int:
        """Run a write; how many rows it changed."""
        cursor = await self._db.execute(sql, params)
        return cursor.rowcount

    async def rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return list(await self._db.execute_fetchall(sql, tuple(params)))

    async def row(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = await self.rows(sql, params)
        return rows[0] if rows else None
