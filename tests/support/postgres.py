"""A PostgreSQL database of the test session's own, on the machine's server.

The session creates one database (``hookd_test_<random>``) on the server at
``HOOKD_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``,
trust auth) and drops it at the end; each test that uses it gets an empty
schema.  Without a reachable server the tests skip on a laptop, and fail in CI
(``tests/support/services.py``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.support.services import require

SERVER = os.environ.get("HOOKD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(SERVER, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _admin_now(sql: str) -> None:
    """``_admin(sql)`` from any context (an async test may be what asks for the fixture)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _admin(sql)).result()


def _reachable() -> bool:
    try:
        _admin_now("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The URL of the session's own database (created now, dropped at the end)."""
    require(_reachable(), "PostgreSQL", f"no server answers at {SERVER}")
    name = f"hookd_test_{secrets.token_hex(4)}"
    _admin_now(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(SERVER, name)
    finally:
        _admin_now(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def empty_schema(url: str) -> None:
    """Drop everything a previous test left in the database."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
