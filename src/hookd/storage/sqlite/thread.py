"""One SQLite connection and the one thread that uses it.

The scheduler's round trips and the ingest group commits are units of work:
plain synchronous functions of a ``sqlite3.Connection`` that run back to back
on the connection's own thread, handed over as a single call each, so that a
unit's statements are never interleaved with another coroutine's and a whole
batch costs one thread hop.  aiosqlite (which the store uses for everything
else) offers no documented way to run such a function on its thread, so this
small piece is hookd's own.

``close`` answers every unit still queued with :class:`StoreError` before the
thread ends: an await on a closed database fails, it never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from hookd.storage.base import StoreError

T = TypeVar("T")

# How long the event loop waits for the thread to start a unit it handed over
# (see DatabaseThread.run): a woken thread takes tens of microseconds; this
# bounds the loop's wait should it be slower.
HAND_OVER_WAIT_SECONDS = 0.002

# (answer, unit of work, set when it starts, whether it runs without a connection)
_Work = tuple[asyncio.Future[Any], Callable[[Any], Any], threading.Event | None, bool]


def _answer(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller went away (cancelled)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _as_store_error(exc: sqlite3.Error) -> StoreError:
    error = StoreError(f"database error: {exc}")
    error.__cause__ = exc
    return error


class DatabaseThread:
    """A ``sqlite3.Connection`` owned by a dedicated thread; units of work run there in order."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._queue: SimpleQueue[_Work | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @property
    def used(self) -> bool:
        """Whether it was started (a thread starts only once)."""
        return self._thread.ident is not None

    async def start(self) -> None:
        """Start the thread and open the connection on it."""
        self._thread.start()
        self._conn = await self._submit(lambda _conn: self._connect(), None, opening=True)

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, hand_over: bool = False) -> T:
        """``fn(connection)`` on the connection's thread; its SQLite errors as StoreError.

        ``hand_over``: block the event loop until the thread has started
        ``fn`` (at most HAND_OVER_WAIT_SECONDS).  A thread woken while the
        loop is busy otherwise waits for the GIL until the loop idles or is
        made to let go after sys.getswitchinterval() (5 ms); ``fn`` should
        then hold the GIL only until its statement starts, and the loop goes
        on answering requests while SQLite works.  Measured on ingest at 64
        clients: a group's start 2.2 -> 0.1 ms (docs/benchmarks.md).
        """
        started = threading.Event() if hand_over else None
        return await self._submit(fn, started)

    async def _submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        started: threading.Event | None,
        *,
        opening: bool = False,
    ) -> T:
        if self._closed or (self._conn is None and not opening):
            raise StoreError("store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((future, fn, started, opening))
        if started is not None:
            started.wait(HAND_OVER_WAIT_SECONDS)
        return await future

    def _serve(self) -> None:
        while (work := self._queue.get()) is not None:
            future, fn, started, opening = work
            if started is not None:
                started.set()
            result: Any = None
            error: BaseException | None = None
            try:
                if self._conn is None and not opening:
                    raise StoreError("store is closed")
                result = fn(self._conn)
            except sqlite3.Error as exc:
                error = _as_store_error(exc)
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
            # (A closed event loop raises RuntimeError: nobody waits any more.)
            with contextlib.suppress(RuntimeError):
                future.get_loop().call_soon_threadsafe(_answer, future, result, error)
        # Closing: whatever was queued behind the close is refused, never left hanging.
        while not self._queue.empty():
            leftover = self._queue.get()
            if leftover is not None:
                refused = StoreError("store is closed")
                with contextlib.suppress(RuntimeError):
                    leftover[0].get_loop().call_soon_threadsafe(_answer, leftover[0], None, refused)

    async def close(self, last: Callable[[sqlite3.Connection], Any] | None = None) -> None:
        """Run ``last`` (if any), close the connection and end the thread.

        Units already queued run first; any submitted from now on is refused.
        """
        if self._closed:
            return
        self._closed = True
        if not self._thread.is_alive():
            return

        def shut(conn: sqlite3.Connection | None) -> None:
            if conn is None:  # the connection never opened
                return
            try:
                if last is not None:
                    last(conn)
            finally:
                conn.close()
                self._conn = None

        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put((future, shut, None, True))
        self._queue.put(None)
        try:
            await future
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says another connection holds a lock this one needs."""
    # Errors hookd raises itself carry no code.  The primary code:
    # SQLITE_BUSY_RECOVERY, _SNAPSHOT and _TIMEOUT count too.
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def wait_out_busy(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], timeout: float
) -> T:
    """``fn(conn)``, run again while another connection holds the lock it needs.

    Another connection may hold it: this process's other ones, or another
    process's (serve, its delivery workers and the CLI share the file).
    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between
    tries, so a waiter often slept through several of the other side's short
    transactions, leaving both idle; here the wait polls from 50 us up to
    1 ms, for up to ``timeout`` seconds.  Only a unit of work that met the lock
    outside a transaction runs again: nothing of it was written.
    """
    deadline: float | None = None
    pause = 0.00005
    while True:
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or conn.in_transaction:
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            elif now >= deadline:
                raise
        # Sleeping releases the GIL: the event loop runs meanwhile.
        time.sleep(pause)
        pause = min(pause * 2, 0.001)


def in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(conn)`` in a write transaction: committed if it returns, rolled back if not."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result
