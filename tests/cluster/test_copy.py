"""``hookd copy``: a single-box installation moved to PostgreSQL, then served from there.

The SQLite installation is made by a real ``hookd serve`` against a scripted
receiver, so its rows are what a daemon writes: delivered and dead-lettered
deliveries, one failing and waiting for its retry, one rate limited behind
its webhook's 429 pause, a webhook disabled by a 410, a deleted webhook with
its delivery, a test send, a rotated secret, an idempotency key, a delivery
in flight when the daemon was SIGKILLed (its lease copied as it is), and
deliveries queued while no daemon ran.  After the copy every row is compared
with its source, and a node on PostgreSQL carries on where SQLite stopped.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hookd import copy as copy_module
from hookd.models import Status
from hookd.storage.sqlite import SqliteStore
from tests.cluster.conftest import node_env
from tests.cluster.receiver import Answer, RecordingReceiver
from tests.cluster.support import fetch
from tests.ops.support import (
    WORKSPACE,
    Serve,
    create_key,
    get_delivery,
    http,
    ingest,
    run_hookd,
    serve_env,
    wait_until,
)

pytestmark = pytest.mark.cluster

TABLES = ("workspaces", "api_keys", "webhooks", "events", "deliveries", "attempts")
# Quick retries and leases, so the test sees them continue within seconds.
QUICK = {
    "HOOKD_DELIVERY_ALLOW_NETWORKS": "127.0.0.0/8",
    "HOOKD_DELIVERY_MAX_TIMEOUT_MS": "2000",
    "HOOKD_DELIVERY_LEASE_SECONDS": "4",
    "HOOKD_DELIVERY_LEASE_MARGIN_SECONDS": "1",
    "HOOKD_DELIVERY_BACKOFF_BASE_SECONDS": "2",
    "HOOKD_DELIVERY_BACKOFF_CAP_SECONDS": "2",
    "HOOKD_LOGGING_FORMAT": "json",
}
PAUSE_SECONDS = 5


class Api:
    def __init__(self, node: Serve, key: str) -> None:
        self.node, self.key = node, key

    def __call__(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        status, raw = http(
            method,
            self.node.url(path),
            body,
            {"Authorization": f"Bearer {self.key}", **headers},
        )
        return status, json.loads(raw) if raw else None

    def webhook(self, name: str, url: str, retries: int = 0) -> str:
        body = {"name": name, "url": url, "events": [f"copy.{name}"], "retryAttempts": retries}
        status, answer = self("POST", "/v1/webhooks", body)
        assert status == 201, answer
        return str(answer["data"]["_id"])

    def send(self, name: str, key: str | None = None) -> list[str]:
        headers = {"Idempotency-Key": key} if key else {}
        status, answer = self("POST", "/v1/events", {"type": f"copy.{name}", "data": {}}, **headers)
        assert status == 202, answer
        return list(answer["data"]["deliveryIds"])


def _sqlite_columns(db: Path, table: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _sqlite_rows(db: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()


def _make_installation(
    db: Path, tmp_path: Path, receiver: RecordingReceiver
) -> tuple[dict[str, str], dict[str, list[str]], str]:
    """A SQLite installation with every kind of row; its webhooks, deliveries and key."""
    key = create_key(db)
    node = Serve(serve_env(db, **QUICK))
    api = Api(node, key)
    try:
        receiver.answer("/dead", Answer(500))
        receiver.answer("/retry", Answer(500))
        receiver.script("/paused", Answer(429, (("Retry-After", str(PAUSE_SECONDS)),)))
        receiver.answer("/gone", Answer(410))
        receiver.answer("/slow", Answer(200, delay=3.0))
        hooks = {
            "ok": api.webhook("ok", receiver.url("/ok"), retries=3),
            "dead": api.webhook("dead", receiver.url("/dead")),
            "retry": api.webhook("retry", receiver.url("/retry"), retries=10),
            "paused": api.webhook("paused", receiver.url("/paused"), retries=3),
            "gone": api.webhook("gone", receiver.url("/gone")),
            "deleted": api.webhook("deleted", receiver.url("/deleted")),
            "slow": api.webhook("slow", receiver.url("/slow")),
        }
        # A rotated secret: the old one still signs during its grace period.
        status, _ = api("PATCH", f"/v1/webhooks/{hooks['ok']}", {"secret": "s" * 32})
        assert status == 200
        ids = {name: api.send(name) for name in ("ok", "dead", "retry", "paused", "gone")}
        ids["dead"] += api.send("dead")
        ids["keyed"] = api.send("ok", key="order-1")
        ids["deleted"] = api.send("deleted")

        def status_of(delivery_id: str) -> Status:
            return get_delivery(db, delivery_id).status

        wait_until(lambda: status_of(ids["deleted"][0]) is Status.DELIVERED)
        assert api("DELETE", f"/v1/webhooks/{hooks['deleted']}")[0] == 200
        wait_until(lambda: status_of(ids["paused"][0]) is Status.RATE_LIMITED)
        # Queued behind the pause.
        ids["paused"] += api.send("paused")
        status, answer = api("POST", f"/v1/webhooks/{hooks['ok']}/test", {})
        assert status == 200, answer
        wait_until(lambda: all(status_of(d) is Status.DEAD_LETTER for d in ids["dead"]))
        wait_until(lambda: status_of(ids["gone"][0]) is Status.DEAD_LETTER)
        wait_until(lambda: status_of(ids["keyed"][0]) is Status.DELIVERED)
        wait_until(lambda: get_delivery(db, ids["retry"][0]).attempt_count >= 1)
        ids["slow"] = api.send("slow")
        wait_until(lambda: len(receiver.seen("/slow")) == 1)
    finally:
        # In flight: the slow delivery's lease stays in the file.
        node.kill()
    # Queued while no daemon runs: due now, never attempted.
    ids["queued"] = [ingest(db, "copy.ok").delivery_ids[0] for _ in range(3)]
    return hooks, ids, key


def test_copy_moves_an_installation_and_a_node_on_postgres_carries_on(
    tmp_path: Path,
    pg_url: str,
    receiver: RecordingReceiver,
    nodes: Callable[..., Serve],
) -> None:
    db = tmp_path / "box" / "hookd.db"
    hooks, ids, key = _make_installation(db, tmp_path, receiver)
    retry_attempts_before = get_delivery(db, ids["retry"][0]).attempt_count
    assert get_delivery(db, ids["retry"][0]).status is Status.FAILED
    (slow,) = ids["slow"]
    assert get_delivery(db, slow).status is Status.PENDING  # leased, in flight
    ((lease_token, lease_ends),) = _sqlite_rows_where(db, slow)
    assert lease_token is not None
    _assert_every_kind_of_row(db)

    copied = run_hookd(
        "copy", "--from", f"sqlite://{db}", "--to", pg_url, env=node_env(pg_url, tmp_path)
    )
    assert copied.returncode == 0, copied.stderr
    (summary,) = copied.stdout.splitlines()  # no progress line off a terminal
    assert "counts verified" in summary and "1 leased deliveries" in summary
    assert copied.stderr == ""

    for table in TABLES:
        source = _sqlite_rows(db, table)
        # By name: a column a migration added sits last in SQLite's table.
        columns = ", ".join(_sqlite_columns(db, table))
        if table == "deliveries":
            target = fetch(pg_url, f"SELECT seq, {columns} FROM deliveries ORDER BY seq")
        else:
            target = fetch(pg_url, f"SELECT {columns} FROM {table} ORDER BY id")
        if table == "deliveries":
            # Insertion order kept: the FIFO tie-break of equal due times.
            assert [r[1] for r in target] == [r[0] for r in source]
            target = [r[1:] for r in target]
        else:
            source.sort(key=lambda r: r[0])
        assert [tuple(r) for r in source] == target, table
        assert f"{table} {len(source):,}" in summary

    again = run_hookd(
        "copy", "--from", f"sqlite://{db}", "--to", pg_url, env=node_env(pg_url, tmp_path)
    )
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.startswith("hookd: copy: --to: postgresql://")
    assert "is not empty (workspaces has rows)" in again.stderr
    assert len(again.stderr.splitlines()) == 1

    # The installation, now on PostgreSQL.
    receiver.answer("/retry", Answer(200))
    receiver.answer("/slow", Answer(200))
    receiver.answer("/dead", Answer(200))
    copied_at = time.time()
    node = nodes(**QUICK)
    api = Api(node, key)

    def status_of(delivery_id: str) -> str:
        return str(fetch(pg_url, f"SELECT status FROM deliveries WHERE id = '{delivery_id}'")[0][0])

    wait_until(lambda: all(status_of(d) == "delivered" for d in ids["queued"]), 15)
    ok_requests = [r for r in receiver.seen("/ok")[1:] if r.msg_id]
    # Both secrets sign: the rotated one moved with its grace period.
    assert all(len(r.signature.split()) == 2 for r in ok_requests)
    wait_until(lambda: status_of(ids["retry"][0]) == "delivered", 15)
    assert fetch(
        pg_url, f"SELECT attempt_count FROM deliveries WHERE id = '{ids['retry'][0]}'"
    ) == [(retry_attempts_before + 1,)]
    numbers = fetch(
        pg_url,
        f"SELECT number FROM attempts WHERE delivery_id = '{ids['retry'][0]}' ORDER BY number",
    )
    assert [n for (n,) in numbers] == list(range(1, retry_attempts_before + 2))

    wait_until(lambda: status_of(slow) == "delivered", 15)
    slow_again = receiver.seen("/slow")[1:]
    assert len(slow_again) == 1 and slow_again[0].arrived * 1000 >= lease_ends

    wait_until(lambda: all(status_of(d) == "delivered" for d in ids["paused"]), 15)
    (paused_until,) = fetch(
        pg_url, f"SELECT paused_until FROM webhooks WHERE id = '{hooks['paused']}'"
    )[0]
    after_copy = [r for r in receiver.seen("/paused") if r.arrived > copied_at]
    assert len(after_copy) == 2
    assert all(r.arrived * 1000 >= paused_until for r in after_copy), "the pause moved with it"

    # The idempotency key still dedupes; the event is the copied one.
    status, answer = api(
        "POST", "/v1/events", {"type": "copy.ok", "data": {}}, **{"Idempotency-Key": "order-1"}
    )
    assert status == 202 and answer["data"]["deliveryIds"] == ids["keyed"]
    # Replay of a dead letter made on SQLite.
    dead = ids["dead"][0]
    status, answer = api("POST", f"/v1/deliveries/{dead}/replay")
    assert status == 200 and answer["data"]["status"] == "delivered", answer
    assert status_of(ids["dead"][1]) == "dead_letter"
    # The disabled webhook stays disabled; the deleted one's delivery stays readable.
    status, answer = api("GET", f"/v1/webhooks/{hooks['gone']}")
    assert status == 200 and answer["data"]["status"] == "inactive"
    status, answer = api("GET", f"/v1/deliveries/{ids['deleted'][0]}")
    assert status == 200 and answer["data"]["status"] == "delivered"
    assert api("GET", f"/v1/webhooks/{hooks['deleted']}")[0] == 404
    assert node.stop() == 0
    assert WORKSPACE in {r[0] for r in fetch(pg_url, "SELECT id FROM workspaces")}


def _sqlite_rows_where(db: Path, delivery_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT lease_token, next_attempt_at FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchall()


def _assert_every_kind_of_row(db: Path) -> None:
    with sqlite3.connect(db) as conn:

        def one(sql: str) -> Any:
            return conn.execute(sql).fetchone()[0]

        statuses = {r[0] for r in conn.execute("SELECT DISTINCT status FROM deliveries")}
        assert statuses == {"pending", "delivered", "failed", "rate_limited", "dead_letter"}
        assert one("SELECT count(*) FROM deliveries WHERE is_test = 1") == 1
        assert one("SELECT count(*) FROM webhooks WHERE deleted_at IS NOT NULL") == 1
        assert one("SELECT count(*) FROM webhooks WHERE disabled_reason IS NOT NULL") == 1
        assert one("SELECT count(*) FROM webhooks WHERE previous_secret IS NOT NULL") == 1
        assert one("SELECT count(*) FROM webhooks WHERE paused_until > 0") == 1
        assert one("SELECT count(*) FROM events WHERE idempotency_key IS NOT NULL") == 1
        assert one("SELECT count(*) FROM api_keys") == 1


def test_copy_refuses_what_it_cannot_copy_in_one_line(tmp_path: Path, pg_url: str) -> None:
    env = node_env(pg_url, tmp_path)
    not_hookd = tmp_path / "other.db"
    with sqlite3.connect(not_hookd) as conn:
        conn.execute("CREATE TABLE t (x)")
    cases = [
        (("--from", str(not_hookd), "--to", pg_url), 2, "--from: expected sqlite:///"),
        (("--from", "sqlite:///nowhere/hookd.db", "--to", pg_url), 2, "--from: no such file"),
        (("--from", f"sqlite://{not_hookd}", "--to", "mysql://x"), 2, "--to: expected a post"),
        (("--from", f"sqlite://{not_hookd}", "--to", pg_url), 1, "is not a hookd database"),
    ]
    for args, code, message in cases:
        done = run_hookd("copy", *args, env=env)
        assert done.returncode == code, done.stderr
        assert done.stderr.startswith("hookd: copy: ") and message in done.stderr
        assert len(done.stderr.splitlines()) == 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_copy_shows_progress_on_a_terminal(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "hookd.db"
    store = SqliteStore(db)
    await store.open()
    try:
        await store.ensure_workspace("ws_a")
        for _ in range(3):
            await store.ingest_event("ws_a", "t", {})
    finally:
        await store.close()
    terminal = _Terminal()
    await copy_module.copy(db, pg_url, stream=terminal)
    assert "\r\x1b[Kcopying: " in terminal.getvalue()
    assert "/4 (" in terminal.getvalue() and " rows" in terminal.getvalue()
