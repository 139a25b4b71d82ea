"""Connections to PostgreSQL: a pool for statements, one control connection per node.

- The pool (asyncpg) serves every statement: the scheduler's round trips,
  ingest's group commits, operators' requests.  A connection lost with the
  server is replaced at the next acquire, so a node recovers by itself when
  the database comes back.
- The control connection holds what lives as long as a session: LISTEN for
  "work is due" notifications, and the advisory lock that makes one node the
  cluster's leader for retention and statistics.  It reconnects on its own.

Every database failure reaches the caller as :class:`StoreError` (the API's
503), never as a driver exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from hookd.storage.base import StoreError

log = structlog.get_logger("hookd.storage")

T = TypeVar("T")
if TYPE_CHECKING:  # the driver's classes are generic in its type stubs only
    from asyncpg.pool import PoolConnectionProxy

    # A connection of hookd's own, or one lent by a pool.
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Conn = Any

# The notification channel a node listens on: some delivery is due now.
DUE_CHANNEL = "hookd_due"
# Advisory lock keys (one namespace of bigint keys per database).
MIGRATION_LOCK = 0x686F6F6B_64000001
LEADER_LOCK = 0x686F6F6B_64000002
CLAIM_LOCK = 0x686F6F6B_64000003
# How long the control connection waits before connecting again.
RECONNECT_SECONDS = 1.0
# A server that stops answering without closing its connections (stopped,
# frozen, cut off by the network) must not hold an API request, a scheduler
# turn, /readyz or the leader's lock forever: connecting, waiting for a pooled
# connection and each statement give up after this long, as a StoreError (the
# API's 503).  Far above what any of hookd's statements takes on a healthy
# database; migrations, which may build indexes, are not bounded.
TIMEOUT_SECONDS = 10.0

# Every pooled session's settings.  No JIT: hookd's statements are short, but
# the planner's estimates for a large queue (the claim at 1,000,000 queued)
# pass jit_above_cost, and compiling then costs more than the statement itself
# (a scheduler turn at 1,000,000 queued: 105 ms with JIT, 68 ms without).
SESSION = {"jit": "off"}

# (InternalClientError: a connection whose server ended it in the middle of an
# operation can refuse the next one with "cannot switch to state ...": a lost
# connection like the rest, not a bug of the caller's.)
_FAILURES = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def redacted(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


def read_password(password_file: str) -> str | None:
    """The first line of ``password_file`` (None when no file is configured)."""
    if not password_file:
        return None
    try:
        lines = Path(password_file).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        problem = f"cannot read {password_file}: {exc.strerror}"
        raise StoreError(f"database.password_file: {problem}") from None
    return lines[0] if lines else ""


def store_error(exc: BaseException, what: str = "database error") -> StoreError:
    # The driver's message names the failure, never the password.
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")


class PgTransaction:
    """The statements of one transaction on one pooled connection."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        status = await self.conn.execute(sql, *params)
        # "UPDATE 3", "INSERT 0 1", "DELETE 0"
        tail = status.rpartition(" ")[2]
        return int(tail) if tail.isdigit() else 0

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> Sequence[asyncpg.Record]:
        return await self.conn.fetch(sql, *params)

    async def row(self, sql: str, params: Sequence[Any] = ()) -> asyncpg.Record | None:
        return await self.conn.fetchrow(sql, *params)


class PgDatabase:
    """The pool, and the operations every part of the store runs on it."""

    def __init__(self, url: str, password: str | None, pool_size: int) -> None:
        self.url = url
        self._password = password
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        # The scheduler's turns: their commits need not wait for the disk.
        self._turns: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await self._create_pool(self._pool_size - 1, SESSION)
            self._turns = await self._create_pool(1, {**SESSION, "synchronous_commit": "off"})
        except (StoreError, *_FAILURES):
            await self.close()
            raise

    async def _create_pool(self, size: int, settings: dict[str, str]) -> asyncpg.Pool:
        try:
            return await asyncpg.create_pool(
                self.url,
                password=self._password,
                min_size=1,
                max_size=max(1, size),
                server_settings=settings,
                timeout=TIMEOUT_SECONDS,
                command_timeout=TIMEOUT_SECONDS,
            )
        except _FAILURES as exc:
            raise store_error(exc, f"cannot connect to {redacted(self.url)}") from exc

    async def close(self) -> None:
        for pool in (self._pool, self._turns):
            if pool is not None:
                with contextlib.suppress(*_FAILURES):
                    await asyncio.wait_for(pool.close(), 10)
        self._pool = self._turns = None

    def _open_pool(self, pool: asyncpg.Pool | None = None) -> asyncpg.Pool:
        pool = pool or self._pool
        if pool is None:
            raise StoreError("store is not open")
        return pool

    async def connect(self, *, bounded: bool = True) -> asyncpg.Connection:
        """A connection of its own, outside the pool (the control connection, migrations).

        ``bounded``: its statements give up after TIMEOUT_SECONDS.
        """
        try:
            return await asyncpg.connect(
                self.url,
                password=self._password,
                timeout=TIMEOUT_SECONDS,
                command_timeout=TIMEOUT_SECONDS if bounded else None,
            )
        except _FAILURES as exc:
            raise store_error(exc, f"cannot connect to {redacted(self.url)}") from exc

    async def run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """``fn`` on a pooled connection; database failures as StoreError."""
        return await self._run(self._open_pool(), fn)

    async def run_turn(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """:meth:`run` for a scheduler turn (commits with synchronous_commit off)."""
        return await self._run(self._open_pool(self._turns), fn)

    @staticmethod
    async def _run(pool: asyncpg.Pool, fn: Callable[[Conn], Awaitable[T]]) -> T:
        try:
            # (The timeout bounds giving the connection back too.)
            async with pool.acquire(timeout=TIMEOUT_SECONDS) as conn:
                return await fn(conn)
        except _FAILURES as exc:
            raise store_error(exc) from exc

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> Sequence[asyncpg.Record]:
        return await self.run(lambda conn: conn.fetch(sql, *params))

    async def row(self, sql: str, params: Sequence[Any] = ()) -> asyncpg.Record | None:
        return await self.run(lambda conn: conn.fetchrow(sql, *params))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgTransaction]:
        pool = self._open_pool()
        try:
            async with pool.acquire(timeout=TIMEOUT_SECONDS) as conn, conn.transaction():
                yield PgTransaction(conn)
        except _FAILURES as exc:
            raise store_error(exc) from exc


# The control connections' application_name: counting them counts the
# processes that deliver from the database (nodes, and their workers).
NODE_APPLICATION = "hookd-node"
NODES = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name = $1"
)


class Control:
    """The node's control connection: LISTEN for due work, the leader's lock,
    and how many processes deliver from the database."""

    def __init__(self, db: PgDatabase, *, lead: bool) -> None:
        self._db = db
        # Whether this process may lead (a delivery worker beside serve does not).
        self._lead = lead
        self._wake: list[Callable[[], None]] = []
        self._leader = False
        self._nodes = 1
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()

    def on_due(self, wake: Callable[[], None]) -> None:
        self._wake.append(wake)

    @property
    def leader(self) -> bool:
        return self._leader

    @property
    def nodes(self) -> int:
        """Processes delivering from the database, this one included, as last
        counted (every few seconds).  Sessions of another role may be hidden
        from pg_stat_activity: then fewer are counted, never fewer than one."""
        return self._nodes

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name="hookd-pg-control")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop()

    async def _keep(self) -> None:
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (StoreError, *_FAILURES) as exc:
                log.warning("store.control_lost", error=str(exc))
            await self._drop()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _session(self) -> None:
        conn = await self._db.connect()
        self._conn = conn
        self._lost.clear()
        conn.add_termination_listener(lambda _conn: self._lost.set())
        await conn.execute(f"SET application_name = '{NODE_APPLICATION}'")
        await conn.add_listener(DUE_CHANNEL, self._notified)
        # Work may have become due while no one listened.
        self._notified()
        while not self._lost.is_set():
            if self._lead and not self._leader:
                self._leader = bool(
                    await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK)
                )
                if self._leader:
                    log.info("store.leader", leader=True)
            # (Also how a dead server without a FIN is noticed: this query fails.)
            self._nodes = max(1, int(await conn.fetchval(NODES, NODE_APPLICATION)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), 5.0)

    def _notified(self, *_args: Any) -> None:
        for wake in self._wake:
            wake()

    async def _drop(self) -> None:
        if self._leader:
            log.info("store.leader", leader=False)
        self._leader = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*_FAILURES):
                await asyncio.wait_for(conn.close(), 5)
