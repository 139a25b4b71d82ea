"""The SQLite store's ingest thread: who makes a group ready, and the hand-over.

A keyless group is made ready on the event loop when its workspaces'
subscriptions are cached, so that the ingest thread, handed the group with
the GIL, only starts the statement; a group made from subscriptions that
changed since is made again on that thread from fresh ones.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hookd.clock import ManualClock
from hookd.models import NewWebhook
from hookd.storage import StoreError
from hookd.storage.sqlite import SqliteStore

WS = "ws_ingest"


def _hook(name: str) -> NewWebhook:
    return NewWebhook(
        workspace_id=WS,
        name=name,
        url=f"https://example.com/{name}",
        events=("*",),
        secret="secret-ingest-0123",
        retry_attempts=3,
        timeout_ms=1000,
        created_by="user_1",
    )


async def test_groups_are_made_ready_on_the_loop_once_subscriptions_are_cached(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "ingest.db", ManualClock())
    await store.open()
    first = await store.create_webhook(_hook("first"))
    prepared_on: list[bool] = []
    prepare = store._prepare_plain

    def spy(*args: Any) -> Any:
        prepared_on.append(threading.current_thread() is threading.main_thread())
        return prepare(*args)

    store._prepare_plain = spy  # type: ignore[method-assign]
    try:
        # Unknown workspace: the ingest thread reads its subscriptions and
        # makes the group ready; known: the loop does.
        (cold,) = await asyncio.gather(store.ingest_event(WS, "t", {}))
        warm = await asyncio.gather(*(store.ingest_event(WS, "t", {"n": n}) for n in range(5)))
        assert prepared_on[0] is False and prepared_on[1:] and all(prepared_on[1:])
        assert len(cold.delivery_ids) == 1 and all(len(r.delivery_ids) == 1 for r in warm)

        # A webhook created since (here by another connection, as by another
        # process): the loop's group, made from the cached subscriptions, is
        # refused by the statement and made again on the thread.
        other = SqliteStore(tmp_path / "ingest.db", ManualClock())
        await other.open()
        second = await other.create_webhook(_hook("second"))
        await other.close()
        prepared_on.clear()
        result = await store.ingest_event(WS, "t", {"after": True})
        assert prepared_on == [True, False]
        targets = set()
        for delivery_id in result.delivery_ids:
            delivery = await store.get_delivery(WS, delivery_id)
            assert delivery is not None
            targets.add(delivery.webhook_id)
        assert targets == {first.id, second.id}
    finally:
        await store.close()


async def test_a_hand_over_without_aiosqlites_queue_is_a_plain_call(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "hand.db", ManualClock())
    await store.open()
    db = await store._ingest_connection()
    try:
        # The hand-over and its fallback (a connection object without the
        # worker queue) run the function on the connection's thread alike, and
        # both turn a SQLite error into a StoreError.
        plain = SimpleNamespace(_execute=db._execute, _conn=db._conn)
        for target in (db, plain):
            ran_on: list[int] = []

            def one(conn: sqlite3.Connection, ran_on: list[int] = ran_on) -> int:
                ran_on.append(threading.get_ident())
                return int(conn.execute("SELECT 41 + 1").fetchone()[0])

            assert await store._call(one, db=target, wait_busy=False, hand_over=True) == 42  # type: ignore[arg-type]
            assert ran_on and ran_on[0] != threading.get_ident()

            def broken(conn: sqlite3.Connection) -> None:
                raise sqlite3.OperationalError("disk I/O error")

            with pytest.raises(StoreError, match="disk I/O error"):
                await store._call(broken, db=target, wait_busy=False, hand_over=True)  # type: ignore[arg-type]
    finally:
        await store.close()
