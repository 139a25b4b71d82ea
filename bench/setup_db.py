"""Filling a database before the daemon starts (never part of a measurement).

Small and medium queues go through the store API (``SqliteStore.ingest_event``,
group committed), so they are exactly what the API would have written.  The
million-row backlog is written with ``executemany`` straight into the schema
the store has just migrated (see ``MIGRATIONS`` in ``hookd/storage/sqlite/schema.py``).
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from hookd.ids import iso_ms
from hookd.models import NewWebhook
from hookd.storage.events import event_body
from hookd.storage.sqlite import SqliteStore

WORKSPACE = "ws_bench"


@dataclass(frozen=True)
class Hook:
    url: str
    timeout_ms: int = 10_000
    events: tuple[str, ...] = ("*",)


async def _create_hooks(
    store: SqliteStore, hooks: list[Hook], workspace: str = WORKSPACE
) -> list[str]:
    await store.ensure_workspace(workspace)
    ids = []
    for i, hook in enumerate(hooks):
        created = await store.create_webhook(
            NewWebhook(
                workspace_id=workspace,
                name=f"bench-{i}",
                url=hook.url,
                events=hook.events,
                secret=secrets.token_hex(32),
                retry_attempts=3,
                timeout_ms=hook.timeout_ms,
                created_by="bench",
            )
        )
        ids.append(created.id)
    return ids


async def _fanout(db: Path, hooks: list[Hook], events: int, concurrency: int) -> list[str]:
    store = SqliteStore(db)
    await store.open()
    try:
        ids = await _create_hooks(store, hooks)
        seq = 0
        while seq < events:
            n = min(concurrency, events - seq)
            await asyncio.gather(
                *(
                    store.ingest_event(WORKSPACE, "bench.event", {"seq": seq + i, "pad": "x" * 32})
                    for i in range(n)
                )
            )
            seq += n
        return ids
    finally:
        await store.close()


def prequeue_fanout(db: Path, hooks: list[Hook], events: int) -> list[str]:
    """``events`` events through ``ingest_event``, each fanned out to every hook."""
    return asyncio.run(_fanout(db, hooks, events, concurrency=512))


def create_hooks(db: Path, hooks: list[Hook], workspace: str = WORKSPACE) -> list[str]:
    async def run() -> list[str]:
        store = SqliteStore(db)
        await store.open()  # migrates: the schema is the daemon's
        try:
            return await _create_hooks(store, hooks, workspace)
        finally:
            await store.close()

    return asyncio.run(run())


def prequeue_bulk(
    db: Path, hook_ids: list[str], deliveries: int, workspace: str = WORKSPACE
) -> None:
    """``deliveries`` due deliveries, ``len(hook_ids)`` per event, by ``executemany``."""
    now = int(time.time() * 1000)
    due = now - 1000
    secs = (now // 1000) & 0xFFFFFFFF
    n_events = -(-deliveries // len(hook_ids))
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -400000")
        conn.execute("BEGIN")
        event_ids = [f"{secs:08x}{i:016x}" for i in range(n_events)]
        conn.executemany(
            "INSERT INTO events (id, workspace_id, type, body, created_at) VALUES (?, ?, ?, ?, ?)",
            (
                (
                    eid,
                    workspace,
                    "bench.event",
                    event_body(eid, workspace, "bench.event", {"seq": i}, iso_ms(now)).encode(),
                    now,
                )
                for i, eid in enumerate(event_ids)
            ),
        )

        def rows() -> object:
            k = 0
            for eid in event_ids:
                for hid in hook_ids:
                    if k >= deliveries:
                        return
                    yield (
                        f"{secs:08x}{(1 << 62) + k:016x}",
                        workspace,
                        eid,
                        hid,
                        "bench.event",
                        due,
                        now,
                        now,
                    )
                    k += 1

        conn.executemany(
            "INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status,"
            " next_attempt_at, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
            rows(),  # type: ignore[arg-type]
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
