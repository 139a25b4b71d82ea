"""The SQLite store's ingest: who plans a group, groups too large for one statement, durability.

A keyless group is planned on the event loop when its workspaces'
subscriptions are cached, so that the ingest thread, handed the group with
the GIL, only starts the statement; a group planned from subscriptions that
changed since is planned again on that thread from fresh ones.  A group
whose JSON would pass JSON_STATEMENT_MAX_CHARS is written by several INGEST
statements in one transaction.  The 202 comes after a durable commit.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path

import pytest

import hookd.storage.sqlite.ingest as sqlite_ingest
from hookd.clock import ManualClock
from hookd.storage import NewEvent, StoreError
from hookd.storage.events import IngestItem
from hookd.storage.sqlite.ingest import SqliteIngest
from tests.api.conftest import Api
from tests.sqlite.support import INGEST_THREAD, another_process, on_connect, open_store
from tests.support.storage import IDEMPOTENCY_WINDOW_MS, WS, make_webhook

INGEST = "INSERT INTO ingest_group"


class ThreadNotingClock(ManualClock):
    """A manual clock that notes the thread each reading is taken on (a group's planning reads it)."""

    def __init__(self) -> None:
        super().__init__()
        self.read_on: list[str] = []

    def now_ms(self) -> int:
        self.read_on.append(threading.current_thread().name)
        return super().now_ms()


async def test_groups_are_planned_on_the_loop_once_subscriptions_are_cached(
    tmp_path: Path,
) -> None:
    clock = ThreadNotingClock()
    loop_thread = threading.current_thread().name
    async with open_store(tmp_path / "ingest.db") as store:
        first = await make_webhook(store, name="first")
        ingest = SqliteIngest(
            store.path,
            clock,
            busy_timeout_ms=5000,
            idempotency_window_ms=IDEMPOTENCY_WINDOW_MS,
            synchronous="FULL",
        )

        async def submit(data: object) -> list[str]:
            (result,) = await ingest.submit(IngestItem(WS, (("t", data, None),), batch=False))
            return list(result.delivery_ids)

        try:
            # Unknown workspace: the ingest thread reads its subscriptions and
            # plans the group; known: the loop does.
            cold = await submit({})
            assert clock.read_on == [INGEST_THREAD]
            clock.read_on.clear()
            warm = await asyncio.gather(*(submit({"n": n}) for n in range(5)))
            assert clock.read_on and set(clock.read_on) == {loop_thread}
            assert len(cold) == 1 and all(len(ids) == 1 for ids in warm)

            # A webhook created since, by another connection (the store's, as
            # by another process): the loop's group, planned from the cached
            # subscriptions, is refused by the statement and planned again on
            # the thread.
            second = await make_webhook(store, name="second")
            clock.read_on.clear()
            delivery_ids = await submit({"after": True})
            assert clock.read_on == [loop_thread, INGEST_THREAD]
            targets = set()
            for delivery_id in delivery_ids:
                delivery = await store.get_delivery(WS, delivery_id)
                assert delivery is not None
                targets.add(delivery.webhook_id)
            assert targets == {first.id, second.id}
        finally:
            await ingest.close()


async def test_a_group_too_large_for_one_json_string_is_stored_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past JSON_STATEMENT_MAX_CHARS a group is written by several statements in one
    transaction: a string of the whole group (~2,400 characters) would pass the
    ingest connection's limit on a string's length (2,000 here); one row (~450) does
    not.  A row over that limit fails the group and none of it is stored."""
    monkeypatch.setattr(sqlite_ingest, "JSON_STATEMENT_MAX_CHARS", 500)
    traced: list[str] = []

    def limited(conn: sqlite3.Connection, thread: str) -> None:
        if thread == INGEST_THREAD:
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 2000)
            conn.set_trace_callback(traced.append)

    path = tmp_path / "big.db"
    async with open_store(path) as store:
        await make_webhook(store)
        with on_connect(limited):
            datas = [{"i": i, "pad": "x" * 300} for i in range(6)]
            results = await store.ingest_events(WS, [NewEvent("t", d) for d in datas])
            for result, data in zip(results, datas, strict=True):
                event = await store.get_event(WS, result.event.id)
                assert event is not None and event.body == result.event.body
                assert json.loads(event.body)["data"] == data
                assert len(result.delivery_ids) == 1
            written = _statements(traced)
            assert written[0] == "BEGIN IMMEDIATE" and written[-1] == "COMMIT", written
            assert written.count(INGEST) > 2

            traced.clear()
            too_long = [*datas[:5], {"i": 6, "pad": "x" * 2500}]
            with pytest.raises(StoreError, match="too big"):
                await store.ingest_events(WS, [NewEvent("t", d) for d in too_long])
            written = _statements(traced)
            assert written[0] == "BEGIN IMMEDIATE" and written[-1] == "ROLLBACK", written
            assert written.count(INGEST) > 2  # some written before it failed
    with another_process(path) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 6
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 6


def _statements(traced: list[str]) -> list[str]:
    """The traced transaction control and INGEST statements, once each (a trigger's
    statements are traced again with the statement that fires them)."""
    kept = [
        INGEST if sql.startswith(INGEST) else sql
        for i, sql in enumerate(traced)
        if (i == 0 or traced[i - 1] != sql)
        and sql.startswith((INGEST, "BEGIN", "COMMIT", "ROLLBACK"))
    ]
    return kept


async def test_the_202_comes_after_a_durable_commit(api: Api) -> None:
    """The events are in the file when the answer arrives, committed with synchronous=FULL."""
    key = await api.key("ws_a")
    await api.webhook(key)
    traced: list[str] = []

    def trace_ingest(conn: sqlite3.Connection, thread: str) -> None:
        if thread == INGEST_THREAD:
            conn.set_trace_callback(traced.append)

    # The ingest connection opens at the first ingest.
    with on_connect(trace_ingest):
        reply = await api.call(
            "POST",
            "/v1/events/batch",
            key=key,
            json_body={"events": [{"type": "t", "data": {"i": i}} for i in range(3)]},
        )
    assert reply.status == 202
    ids = [item["_id"] for item in reply.body["data"]]
    with another_process(api.store.path) as conn:
        found = conn.execute(f"SELECT id FROM events WHERE id IN ({','.join('?' * 3)})", ids)
        assert sorted(r[0] for r in found) == sorted(ids)
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 3
    # Written by one autocommit statement on the ingest connection, which
    # runs under synchronous=FULL and never changes it: the statement's
    # commit (and fsync) came before the answer.
    assert any(sql.startswith(INGEST) for sql in traced), traced
    assert [sql for sql in traced if sql.startswith("PRAGMA synchronous")] == [
        "PRAGMA synchronous = FULL"
    ]
    assert not [sql for sql in traced if sql.startswith(("BEGIN", "SAVEPOINT"))], traced
