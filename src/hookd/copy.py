"""``hookd copy``: move a single-box installation from its SQLite file to PostgreSQL.

Every row moves as it is, ids included: workspaces, API keys, webhooks (secrets,
rotation, pause and disabled state, deleted ones), events (idempotency keys),
deliveries (every counter, their insertion order, which is the FIFO tie-break
of equal due times) and attempts.  A lease taken by the daemon that used the
file is copied too: its delivery is due again once the lease expires, as it
would have been on SQLite, so nothing is sent twice at once.

- The source is read in one read transaction (a consistent snapshot) on a
  read-only connection, in chunks, each chunk read while the previous one is
  written; the target is written with ``COPY`` (asyncpg's
  ``copy_records_to_table``).
- The target's schema is created or migrated first; the copy refuses a
  database that holds any hookd row.  Everything is written in one
  transaction that also locks the tables against writers, and the counts of
  every table are compared with the source's before it commits: a failed or
  interrupted copy leaves the target as empty as it was.
- On a terminal a progress line is drawn (``progress.py``); elsewhere the
  command prints only its one-line summary.

Stop the daemon that uses the file first: what it writes after the snapshot
is not copied.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hookd.clock import SystemClock
from hookd.progress import Progress
from hookd.storage.sqlite import schema as sqlite_schema

if TYPE_CHECKING:
    import asyncpg

# In the order the foreign keys need.
TABLES = ("workspaces", "api_keys", "webhooks", "events", "deliveries", "attempts")
# Target columns the source holds under another name: the deliveries' insertion
# order is SQLite's rowid.
SOURCE_EXPRESSIONS = {("deliveries", "seq"): "rowid"}
CHUNK_ROWS = 10_000
SQLITE_PREFIX = "sqlite://"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class CopyError(Exception):
    """The copy cannot go on: one line naming why, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def add_parser(sub: Any) -> None:
    cp = sub.add_parser(
        "copy",
        help="copy a SQLite installation (stopped) into an empty PostgreSQL database",
    )
    cp.add_argument("--from", dest="source", required=True, metavar="sqlite:///PATH")
    cp.add_argument("--to", dest="target", required=True, metavar="postgresql://...")


async def command(args: argparse.Namespace) -> int:
    try:
        path = source_path(args.source)
        if not args.target.startswith(POSTGRES_SCHEMES):
            raise CopyError("--to: expected a postgresql:// URL", 2)
        await copy(path, args.target)
    except CopyError as exc:
        print(f"hookd: copy: {exc}", file=sys.stderr)
        return exc.status
    return 0


def source_path(url: str) -> Path:
    """The file of a ``sqlite:///path`` (absolute) or ``sqlite://path`` (relative) URL."""
    if not url.startswith(SQLITE_PREFIX) or len(url) == len(SQLITE_PREFIX):
        raise CopyError("--from: expected sqlite:///path/to/hookd.db", 2)
    path = Path(url[len(SQLITE_PREFIX) :])
    if not path.is_file():
        raise CopyError(f"--from: no such file {path}", 2)
    return path


class Source:
    """The SQLite file, read in one snapshot, chunk by chunk, on a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # Read-only: the copy never changes the installation it moves.
            self.conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            try:
                self.conn.execute("BEGIN")
                self._check()
            except BaseException:
                self.conn.close()
                raise
        except sqlite3.Error as exc:
            raise CopyError(f"--from: cannot read {path}: {exc}") from None

    def _check(self) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
        if "schema_migrations" not in tables or not set(TABLES) <= tables:
            raise CopyError(f"--from: {self.path} is not a hookd database")
        (version,) = self.conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        known = max(v for v, _ in sqlite_schema.MIGRATIONS)
        if version is not None and version > known:
            raise CopyError(
                f"--from: {self.path} has schema version {version}, newer than this hookd knows"
            )

    def columns(self, table: str) -> set[str]:
        return {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}

    def count(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def leased(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM deliveries WHERE lease_token IS NOT NULL")
        return int(row.fetchone()[0])

    def cursor(self, table: str, expressions: Sequence[str]) -> sqlite3.Cursor:
        # Rowid order: the deliveries' FIFO order, and a plain scan for the rest.
        return self.conn.execute(f"SELECT {', '.join(expressions)} FROM {table} ORDER BY rowid")

    def close(self) -> None:
        self.conn.close()


async def _target_columns(conn: asyncpg.Connection, table: str) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return [(r[0], r[1]) for r in rows]


def _as_bytes(value: Any) -> Any:
    # A BLOB column of SQLite may hold text (its typing is per value).
    return value.encode() if isinstance(value, str) else value


async def _copy_table(
    conn: asyncpg.Connection, source: Source, table: str, progress: Progress
) -> None:
    target = await _target_columns(conn, table)
    present = source.columns(table)
    names = [name for name, _ in target]
    expressions = []
    for name in names:
        expression = SOURCE_EXPRESSIONS.get((table, name), name)
        if expression == name and name not in present:
            raise CopyError(f"--from: {table}.{name} is missing from {source.path}")
        expressions.append(expression)
    binary = [i for i, (_, kind) in enumerate(target) if kind == "bytea"]
    cursor = source.cursor(table, expressions)
    chunk = await asyncio.to_thread(cursor.fetchmany, CHUNK_ROWS)
    while chunk:
        # The next chunk is read while this one is written.
        reading = asyncio.ensure_future(asyncio.to_thread(cursor.fetchmany, CHUNK_ROWS))
        try:
            if binary:
                chunk = [_with_bytes(row, binary) for row in chunk]
            await conn.copy_records_to_table(table, records=chunk, columns=names)
        except BaseException:
            await asyncio.gather(reading, return_exceptions=True)
            raise
        progress.advance(len(chunk))
        chunk = await reading
    if table == "deliveries":
        # New deliveries come after every copied one.
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('deliveries', 'seq'),"
            " coalesce(max(seq), 0) + 1, false) FROM deliveries"
        )


def _with_bytes(row: tuple[Any, ...], binary: list[int]) -> tuple[Any, ...]:
    values = list(row)
    for i in binary:
        values[i] = _as_bytes(values[i])
    return tuple(values)


async def copy(path: Path, url: str, *, stream: Any = None) -> None:
    """Copy the installation at ``path`` into the empty database at ``url``, verified."""
    # The driver is loaded by the one command that needs it, so that the CLI and
    # a daemon on SQLite start without it.
    import asyncpg

    from hookd.storage.postgres import schema as pg_schema
    from hookd.storage.postgres.connection import redacted, store_error

    source = Source(path)
    try:
        counts = {table: source.count(table) for table in TABLES}
        leased = source.leased()
        try:
            conn = await asyncpg.connect(url)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise store_error(exc, f"cannot connect to {redacted(url)}") from exc
        try:
            await pg_schema.migrate(conn, SystemClock())
            progress = Progress("copying", total=sum(counts.values()), unit="rows", stream=stream)
            async with conn.transaction():
                await _write(conn, source, counts, progress, redacted(url))
            await conn.execute(f"ANALYZE {', '.join(TABLES)}")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise store_error(exc, f"cannot copy into {redacted(url)}") from exc
        finally:
            await conn.close()
    finally:
        source.close()
    figures = ", ".join(f"{table} {n:,}" for table, n in counts.items())
    in_flight = (
        f"; {leased:,} leased deliveries are due again when their leases expire" if leased else ""
    )
    progress.finish(
        f"copied {sum(counts.values()):,} rows from {path} to {redacted(url)};"
        f" counts verified: {figures}{in_flight}"
    )


async def _write(
    conn: asyncpg.Connection,
    source: Source,
    counts: dict[str, int],
    progress: Progress,
    where: str,
) -> None:
    # No node writes while the copy runs; a second copy waits, then finds rows.
    await conn.execute(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE")
    for table in TABLES:
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            raise CopyError(
                f"--to: {where} is not empty ({table} has rows);"
                " hookd copies only into an empty database"
            )
    for table in TABLES:
        await _copy_table(conn, source, table, progress)
    for table, expected in counts.items():
        found = await conn.fetchval(f"SELECT count(*) FROM {table}")
        if found != expected:
            raise CopyError(
                f"verification failed: {table} has {found:,} rows in the target and"
                f" {expected:,} in the source; nothing was copied"
            )
