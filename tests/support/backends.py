"""A fresh store of each backend, for the suites that run on every one of them."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from hookd.clock import Clock
from hookd.storage import Store
from hookd.storage.composed import NO_QUOTAS, Quotas
from hookd.storage.postgres import PostgresStore
from hookd.storage.sqlite import SqliteStore
from tests.support.postgres import empty_schema
from tests.support.storage import IDEMPOTENCY_WINDOW_MS

BACKENDS = ("sqlite", "postgres")


@contextlib.asynccontextmanager
async def fresh_store(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    clock: Clock,
    quotas: Quotas = NO_QUOTAS,
) -> AsyncIterator[Store]:
    """An open, empty store of ``backend``, closed afterwards.

    SQLite: a file in ``tmp_path``; PostgreSQL: the session's database, emptied.
    """
    store: Store
    if backend == "sqlite":
        store = SqliteStore(
            tmp_path / "hookd.db", clock, idempotency_window_ms=IDEMPOTENCY_WINDOW_MS, quotas=quotas
        )
    else:
        url = request.getfixturevalue("postgres_database")
        await empty_schema(url)
        store = PostgresStore(
            url, clock, idempotency_window_ms=IDEMPOTENCY_WINDOW_MS, listen=False, quotas=quotas
        )
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def committed_rows(store: Store, sql: str, *args: object) -> list[tuple[object, ...]]:
    """What a separate connection sees (only what was committed); ``?`` placeholders."""
    if isinstance(store, PostgresStore):
        numbered = iter(range(1, sql.count("?") + 1))
        pg_sql = re.sub(r"\?", lambda _m: f"${next(numbered)}", sql)
        conn = await asyncpg.connect(store.url)
        try:
            return [tuple(r) for r in await conn.fetch(pg_sql, *args)]
        finally:
            await conn.close()
    assert isinstance(store, SqliteStore)

    def read() -> list[tuple[object, ...]]:
        with sqlite3.connect(store.path) as conn:
            return conn.execute(sql, args).fetchall()

    return await asyncio.to_thread(read)
