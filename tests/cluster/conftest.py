"""Fixtures of the cluster tests: hookd on PostgreSQL, one node or several.

Every test gets the session's database (``tests/support/postgres.py``) with an
empty schema; nodes are real ``hookd serve`` processes on it, each on its own
loopback port, always killed at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.receiver import RecordingReceiver
from tests.ops.conftest import db, hookd, threaded_receiver  # noqa: F401 - fixtures
from tests.ops.support import Serve, serve_env
from tests.support.postgres import empty_schema

# Small pools: three nodes and the other suites share the server's connections.
NODE_POOL_SIZE = "4"


@pytest.fixture
def pg_url(postgres_database: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    asyncio.run(empty_schema(postgres_database))
    return postgres_database


def node_env(url: str, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A ``hookd serve`` on ``url``: an ephemeral loopback port, quick to notice work."""
    base = {
        "HOOKD_DATABASE_URL": url,
        "HOOKD_DATABASE_POOL_SIZE": NODE_POOL_SIZE,
        "HOOKD_LOGGING_FORMAT": "json",
    }
    base.update(overrides)
    # The SQLite path is ignored once a URL is set; it names a file never made.
    return serve_env(tmp_path / "unused.db", **base)


@pytest.fixture
def nodes(pg_url: str, tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    """Start a ``hookd serve`` node on the test's database with extra variables."""
    started: list[Serve] = []

    def start(**env: str) -> Serve:
        node = Serve(node_env(pg_url, tmp_path, **env))
        started.append(node)
        return node

    yield start
    for node in started:
        node.kill()


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    """A recording receiver on loopback (``receiver.py``), answering 200 until scripted."""
    rec = RecordingReceiver().start()
    yield rec
    rec.close()
