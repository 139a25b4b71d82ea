"""The SQLite file itself: its migrations, the SQLite it needs, the plans of the claim's reads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hookd.clock import ManualClock
from hookd.storage import StoreError
from hookd.storage.sqlite import SqliteStore
from hookd.storage.sqlite import queries as q
from hookd.storage.sqlite.schema import MIGRATIONS
from tests.sqlite.support import another_process
from tests.support.storage import WS, make_webhook


async def test_a_file_is_reopened_as_it_was_and_a_newer_schema_is_refused(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "reopen.db"
    first = SqliteStore(path, clock)
    await first.open()
    await make_webhook(first)
    await first.close()
    second = SqliteStore(path, clock)
    await second.open()
    try:
        assert len((await second.list_webhooks(WS, 10)).items) == 1
    finally:
        await second.close()
    with another_process(path) as conn:
        applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        assert applied == [version for version, _ in MIGRATIONS]
        # A hookd that knows more migrations has opened the file.
        conn.execute("INSERT INTO schema_migrations VALUES (999, 0)")
    third = SqliteStore(path, clock)
    with pytest.raises(StoreError, match="newer"):
        await third.open()


async def test_an_sqlite_without_update_from_is_refused_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    store = SqliteStore(tmp_path / "old.db", ManualClock())
    with pytest.raises(StoreError, match=r"3\.33\.0 or newer is required.*3\.31\.1"):
        await store.open()


async def test_the_claims_reads_walk_the_due_indexes_whatever_the_statistics(
    store: SqliteStore,
) -> None:
    await make_webhook(store)
    for _ in range(50):
        await store.ingest_event(WS, "t", {})
    with another_process(store.path) as conn:
        # Statistics for webhooks alone: what PRAGMA optimize may leave behind.
        conn.execute("ANALYZE webhooks")
        plan = conn.execute("EXPLAIN QUERY PLAN " + q.CLAIM_SCAN, (0, 0, 10)).fetchall()
        seek = conn.execute(
            "EXPLAIN QUERY PLAN " + q.WEBHOOK_QUEUES, (0, 0, "{}", 32, 10, "[]")
        ).fetchall()
    details = " | ".join(str(row[-1]) for row in plan)
    assert "deliveries_due" in details
    assert "TEMP B-TREE" not in details, details
    # The seek past webhooks at their limit reads each webhook's queue in order.
    details = " | ".join(str(row[-1]) for row in seek)
    assert "SEARCH deliveries USING INDEX deliveries_webhook_due" in details, details
    assert "TEMP B-TREE" not in details, details
