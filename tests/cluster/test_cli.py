"""Every CLI command against PostgreSQL, and ``hookd migrate`` on both backends.

The commands run in-process through ``hookd.cli.main`` (logging setup skipped:
it is process-wide and pytest's); the daemon they work beside is a real
``hookd serve`` subprocess on the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from hookd.components import build_store
from hookd.config import load_config
from hookd.storage import Store
from hookd.storage.postgres.connection import DUE_CHANNEL
from tests.cluster.support import fetch
from tests.ops.conftest import Cli
from tests.ops.support import Receiver, Serve, wait_until

pytestmark = pytest.mark.cluster

WS = "ws_cli"


def _status(url: str, delivery_id: str) -> str:
    return str(fetch(url, f"SELECT status FROM deliveries WHERE id = '{delivery_id}'")[0][0])


def test_migrate_creates_the_schema_once_on_postgres_and_sqlite(
    hookd: Cli, pg_url: str, tmp_path: Path
) -> None:
    assert fetch(pg_url, "SELECT to_regclass('deliveries')")[0][0] is None
    for _ in range(2):  # a second run finds nothing to do
        code, out, err = hookd("migrate", HOOKD_DATABASE_URL=pg_url)
        assert (code, err) == (0, "")
        assert out.startswith("schema up to date: postgresql://")
    versions = fetch(pg_url, "SELECT version FROM schema_migrations")
    assert [v[0] for v in versions] == [1]
    assert fetch(pg_url, "SELECT count(*) FROM deliveries")[0][0] == 0

    db = tmp_path / "box" / "hookd.db"
    code, out, _ = hookd("migrate", HOOKD_DATABASE_PATH=str(db))
    assert (code, out) == (0, f"schema up to date: {db}\n")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] >= 2

    # An unreachable server: one line, exit 1.
    code, _, err = hookd("migrate", HOOKD_DATABASE_URL="postgresql://hookd@127.0.0.1:9/none")
    assert code == 1 and err.startswith("hookd: cannot connect to postgresql://hookd@127.0.0.1:9")


def test_a_cli_store_stays_out_of_the_clusters_control(pg_url: str) -> None:
    """A CLI command neither leads (retention, figures) nor is woken, even alone."""
    config = load_config(None, {"HOOKD_DATABASE_URL": pg_url})

    async def woken_and_leading(store: Store, tries: int) -> tuple[bool, bool]:
        woken = asyncio.Event()
        store.watch_due(woken.set)
        await store.open()
        try:
            notifier = await asyncpg.connect(pg_url)
            try:
                for _ in range(tries):
                    await notifier.execute(f"SELECT pg_notify('{DUE_CHANNEL}', '')")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), 0.1)
                    if woken.is_set() and await store.is_leader():
                        break
                    await asyncio.sleep(0.1)
            finally:
                await notifier.close()
            return woken.is_set(), await store.is_leader()
        finally:
            await store.close()

    assert asyncio.run(woken_and_leading(build_store(config), 5)) == (False, False)
    # What a node builds is woken and leads (alone on the database): the
    # check above can tell the difference.
    node_store = build_store(config, listen=True, lead=True)
    assert asyncio.run(woken_and_leading(node_store, 50)) == (True, True)


def test_every_command_on_postgres_beside_a_node(
    hookd: Cli,
    pg_url: str,
    nodes: Callable[..., Serve],
    threaded_receiver: Receiver,
) -> None:
    loopback = "127.0.0.0/8,::1/128"
    pg = {"HOOKD_DATABASE_URL": pg_url, "HOOKD_DELIVERY_ALLOW_NETWORKS": loopback}
    code, out, err = hookd("keys", "create", "--workspace", WS, "--owner", "user_cli", **pg)
    assert code == 0, err
    key, info = out.splitlines()
    assert key.startswith("sk_") and "kind=workspace" in info
    key_id = info.split()[0].removeprefix("id=")
    code, out, _ = hookd("keys", "create", **pg)
    assert code == 0 and "kind=platform" in out
    code, out, _ = hookd("keys", "list", **pg)
    assert code == 0 and len(out.splitlines()) == 2 and key not in out
    assert hookd("keys", "revoke", key_id, **pg)[:2] == (0, f"revoked {key_id}\n")
    assert hookd("keys", "revoke", key_id, **pg)[0] == 1
    assert f"{key_id} " in hookd("keys", "list", **pg)[1]
    assert "revoked" in hookd("keys", "list", **pg)[1]

    # Port 9 refuses: with no retries, dead at the first attempt.
    code, out, err = hookd(
        "webhooks", "create", "--workspace", WS, "--name", "refused",
        "--url", "http://127.0.0.1:9/x", "--events", "cli.blocked", "--retry-attempts", "0",
        **pg,
    )  # fmt: skip
    assert code == 0, err
    blocked = json.loads(out)["_id"]
    code, out, err = hookd(
        "webhooks", "create", "--workspace", WS, "--name", "open",
        "--url", threaded_receiver.url("/open"), "--events", "cli.open", **pg,
    )  # fmt: skip
    assert code == 0, err
    delivered_hook = json.loads(out)["_id"]
    code, out, _ = hookd("webhooks", **pg)
    assert code == 0 and {line.split()[0] for line in out.splitlines()} == {
        blocked,
        delivered_hook,
    }

    sent = []
    for _ in range(2):
        code, out, err = hookd("events", "send", "--workspace", WS, "--type", "cli.blocked", **pg)
        assert code == 0, err
        sent.append(json.loads(out)["deliveryIds"][0])
    first, second = sent
    keyed = ("events", "send", "--workspace", WS, "--type", "cli.open", "--idempotency-key", "k1")
    code, out, _ = hookd(*keyed, **pg)
    original = json.loads(out)
    assert code == 0 and original["duplicate"] is False
    again = json.loads(hookd(*keyed, **pg)[1])
    assert again == {**original, "duplicate": True}

    node = nodes(HOOKD_DELIVERY_ALLOW_NETWORKS=loopback)
    check_env = {**pg, "HOOKD_SERVER_LISTEN": node.listen[0]}
    code, out, _ = hookd("check", **check_env)
    assert code == 0 and '"ready"' in out
    # The node delivers what the CLI queued.
    wait_until(lambda: _status(pg_url, original["deliveryIds"][0]) == "delivered", 15)
    wait_until(lambda: all(_status(pg_url, d) == "dead_letter" for d in sent), 15)
    assert node.stop() == 0
    code, _, err = hookd("check", **check_env)
    assert code == 1 and err.startswith("hookd: not ready")

    code, out, _ = hookd("deliveries", **pg)
    assert code == 0 and [line.split()[0] for line in out.splitlines()][:2] == [
        original["deliveryIds"][0],
        second,
    ]
    code, out, _ = hookd("deliveries", "--status", "dead_letter", "--webhook", blocked, **pg)
    assert sorted(line.split()[0] for line in out.splitlines()) == sorted(sent)

    assert hookd("replay", first, **pg)[:2] == (0, f"replayed {first}: pending\n")
    code, _, err = hookd("replay", first, **pg)
    assert code == 1 and "is pending; only dead_letter" in err
    assert _status(pg_url, first) == "pending"
    code, out, _ = hookd("replay", "--webhook", blocked, **pg)
    assert code == 0 and out.startswith(f"replayed 1 dead letter of webhook {blocked}")
    assert _status(pg_url, second) == "pending"

    code, out, _ = hookd("purge", "--older-than", "0", **pg)
    assert code == 0 and out.startswith("deleted 1 delivered delivery, 0 dead letters")
    assert fetch(pg_url, "SELECT count(*) FROM deliveries WHERE status = 'delivered'")[0][0] == 0
