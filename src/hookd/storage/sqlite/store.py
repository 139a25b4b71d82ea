"""SqliteStore: the embedded, single-file implementation of :class:`hookd.storage.Store`.

Three connections to one WAL file, each doing one kind of work:

- the scheduler's (``scheduling.py``), on a thread of hookd's own
  (``thread.py``): claims, attempt records, lease releases;
- ingest's (``ingest.py``), on another such thread, opened at the first
  ingest: events and their deliveries, group committed;
- the admin connection (``connection.py``, through aiosqlite), on which the
  shared ``storage/admin.py``, ``figures.py`` and ``housekeeping.py`` run
  (keys, webhooks, reads, operator actions, retention and statistics).

The schema (``schema.py``) is migrated on the scheduler's connection at open.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from hookd.clock import Clock, SystemClock
from hookd.storage.base import (
    StoreError,
)
from hookd.storage.composed import NO_QUOTAS, ComposedStore, Quotas
from hookd.storage.sqlite import operations, schema
from hookd.storage.sqlite import queries as q
from hookd.storage.sqlite.connection import AdminConnection
from hookd.storage.sqlite.ingest import SqliteIngest
from hookd.storage.sqlite.scheduling import SqliteScheduling
from hookd.storage.sqlite.thread import DatabaseThread, in_transaction, wait_out_busy


def _optimize(conn: sqlite3.Connection) -> None:
    # Statistics for the planner; a database that cannot take them still closes.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA optimize")


class SqliteStore(ComposedStore):
    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Clock | None = None,
        *,
        busy_timeout_ms: int = 5000,
        idempotency_window_ms: int = 86_400_000,
        synchronous: str = "FULL",
        quotas: Quotas = NO_QUOTAS,
    ) -> None:
        self.path = str(path)
        self.clock: Clock = clock or SystemClock()
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._thread = self._scheduler_thread()
        self._admin_db = AdminConnection(self.path, busy_timeout_ms, synchronous)
        self._compose(
            self._admin_db,
            operations,
            self.clock,
            scheduling=SqliteScheduling(self._thread, self.clock, busy_timeout_ms),
            ingest=SqliteIngest(
                self.path,
                self.clock,
                busy_timeout_ms=busy_timeout_ms,
                idempotency_window_ms=idempotency_window_ms,
                synchronous=synchronous,
                max_deliveries=quotas.deliveries_per_request,
            ),
            idempotency_window_ms=idempotency_window_ms,
            quotas=quotas,
        )

    # -- plumbing -------------------------------------------------------------------

    def _scheduler_thread(self) -> DatabaseThread:
        return DatabaseThread(
            lambda: sqlite3.connect(self.path, isolation_level=None), "hookd-scheduler"
        )

    async def open(self) -> None:
        if self.path == ":memory:":
            # Three connections must share one database: it has to be a file.
            raise StoreError("cannot open database :memory:: hookd needs a file")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)

        timeout = self._busy_timeout_ms / 1000

        def setup(conn: sqlite3.Connection) -> None:
            # Other processes (serve, its workers, the CLI) may hold the lock.
            wait_out_busy(
                conn, lambda c: schema.configure(c, self.path, self._synchronous), timeout
            )
            wait_out_busy(
                conn, lambda c: in_transaction(c, lambda t: schema.migrate(t, self.clock)), timeout
            )
            # The scheduler's own writes need not be durable (scheduling.py).
            conn.execute("PRAGMA synchronous = NORMAL")
            for statement in q.SETTLE_DDL:
                conn.execute(statement)

        if self._thread.used:  # opened before: a closed thread does not start again
            self._thread = self._scheduler_thread()
            self._scheduling = SqliteScheduling(self._thread, self.clock, self._busy_timeout_ms)
        try:
            await self._thread.start()
            await self._thread.run(setup)
            await self._admin_db.open()
        except (sqlite3.Error, StoreError) as exc:
            # Close what opened: a thread left running keeps the process alive.
            await self.close()
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    async def close(self) -> None:
        await self._ingest.close()
        await self._admin_db.close()
        await self._thread.close(last=_optimize)

    def watch_due(self, wake: Callable[[], None]) -> None:
        """Nothing to watch: this process's ingests wake its scheduler themselves.

        (Delivery workers beside ``serve`` look every ``poll_interval_seconds``.)
        """

    async def is_leader(self) -> bool:
        # Only ``serve`` runs retention and statistics, not its delivery workers.
        return True
