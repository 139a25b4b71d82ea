"""Database faults under load: connections killed, the server restarted or frozen.

Two nodes take a steady stream of events while the database fails under
them: every backend of the test's database is killed with
``pg_terminate_backend`` (on the shared server, only the test database's),
or a server of the test's own is stopped and started again.  Throughout:

- every event answered 202 is stored and delivered: none acknowledged is lost;
- the API answers 202 or 503 in its JSON envelope, never a 500, and
  ``/readyz`` answers 503 while the database is down;
- the nodes recover by themselves, without a restart;
- no delivery is in flight twice at once, and every attempt on record was
  either applied once or fenced (its lease had moved on): for each delivery,
  attempt rows = attempts applied (``attempt_count``) + writes fenced.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.cluster.conftest import node_env
from tests.cluster.receiver import Answer, RecordingReceiver, overlaps
from tests.cluster.server import OwnServer
from tests.cluster.support import fetch, post_events, provision
from tests.ops.support import Serve, http, wait_until

pytestmark = pytest.mark.cluster

WS = "ws_faults"
ENV = {
    "HOOKD_DELIVERY_ALLOW_NETWORKS": "127.0.0.0/8",
    "HOOKD_DELIVERY_MAX_TIMEOUT_MS": "1000",
    "HOOKD_DELIVERY_LEASE_SECONDS": "3",
    "HOOKD_DELIVERY_LEASE_MARGIN_SECONDS": "1",
    "HOOKD_DELIVERY_BACKOFF_BASE_SECONDS": "0.05",
    "HOOKD_DELIVERY_BACKOFF_CAP_SECONDS": "0.2",
}
# Events of the slow type are in flight for most of a second: a fault finds some.
TYPES = ("fast", "slow")


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    server = OwnServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


def _setup(url: str, receiver: RecordingReceiver) -> str:
    receiver.answer("/fast", Answer(200, delay=0.02))
    receiver.answer("/slow", Answer(200, delay=0.6))
    hooks = [
        {"name": name, "url": receiver.url(f"/{name}"), "events": (f"f.{name}",)} for name in TYPES
    ]
    return provision(url, WS, [{**hook, "retry_attempts": 5} for hook in hooks])[0]


class Load:
    """Small batches of events posted to the nodes in turn, on a thread, until stopped."""

    def __init__(self, nodes: list[Serve], key: str) -> None:
        self.nodes, self.key = nodes, key
        self.acknowledged: list[str] = []
        self.refused: list[tuple[int, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            node = self.nodes[n % len(self.nodes)]
            # One slow event in ten.
            events = [{"type": f"f.{TYPES[i == 0]}", "data": {"n": n, "i": i}} for i in range(10)]
            try:
                status, answer = post_events(node, self.key, events)
            except OSError as exc:  # no answer at all is a failure too
                self.refused.append((0, str(exc)))
            else:
                if status == 202:
                    self.acknowledged.extend(e["_id"] for e in answer["data"])
                else:
                    self.refused.append((status, answer))
            n += 1
            time.sleep(0.02)


def _undelivered(url: str, events: list[str]) -> int:
    rows = fetch(
        url,
        "SELECT count(*) FROM unnest($1::text[]) AS e(id) WHERE NOT EXISTS"
        " (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'delivered')",
        events,
    )
    return int(rows[0][0])


def _ready(node: Serve) -> int:
    return http("GET", node.url("/readyz"), timeout=10)[0]


def _assert_outcome(url: str, cluster: list[Serve], load: Load, seen: RecordingReceiver) -> None:
    """What every fault must leave: see the module's docstring."""
    assert load.acknowledged, "the load was acknowledged at all"
    wait_until(lambda: _undelivered(url, load.acknowledged) == 0, 60, 0.5)
    for node in cluster:
        errors = node.events("api.unhandled_error")
        assert errors == [], errors[0].get("exception")
    for status, body in load.refused:
        assert status == 503, (status, body)
        assert body["code"] == 503 and body["error"] == "Service Unavailable", body
    for node in cluster:
        assert node.events("api.unhandled_error") == []
        assert node.proc.poll() is None, "the node kept running"
        assert _ready(node) == 200
    assert overlaps(seen.seen()) == []
    fenced: Counter[str] = Counter(
        str(e["delivery_id"]) for node in cluster for e in node.events("delivery.write_fenced")
    )
    rows = fetch(
        url,
        "SELECT d.id, d.attempt_count, (SELECT count(*) FROM attempts a"
        " WHERE a.delivery_id = d.id) FROM deliveries d",
    )
    for delivery_id, counted, recorded in rows:
        # A fenced attempt is on record and counted too: one truth for both.
        assert recorded == counted, (delivery_id, fenced[delivery_id])


def test_connections_killed_under_load(
    pg_url: str, nodes: Callable[..., Serve], receiver: RecordingReceiver
) -> None:
    key = _setup(pg_url, receiver)
    cluster = [nodes(**ENV) for _ in range(2)]
    database = pg_url.rpartition("/")[2]
    killed = []

    async def kill_backends() -> int:
        conn = await asyncpg.connect(pg_url)
        try:
            # Only this test's database: other engineers' sessions share the server.
            return int(
                await conn.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                    " FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database,
                )
            )
        finally:
            await conn.close()

    with Load(cluster, key) as load:
        time.sleep(1.0)
        for _ in range(5):
            killed.append(asyncio.run(kill_backends()))
            time.sleep(0.7)
        acknowledged_by_then = len(load.acknowledged)
        # Recovered without a restart: events are taken and delivered again.
        wait_until(lambda: len(load.acknowledged) > acknowledged_by_then + 50, 20)
    assert all(n > 0 for n in killed), killed
    _assert_outcome(pg_url, cluster, load, receiver)
    print(
        f"\nbackends killed {killed}; events acknowledged {len(load.acknowledged)},"
        f" refused with 503 {len(load.refused)}"
    )


def test_a_database_restart_under_load(
    own_server: OwnServer, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    key = _setup(own_server.url, receiver)
    cluster = [Serve(node_env(own_server.url, tmp_path, **ENV)) for _ in range(2)]
    try:
        with Load(cluster, key) as load:
            wait_until(lambda: len(receiver.seen("/slow")) > 5, 20)
            own_server.stop()
            stopped = time.time()
            down: list[tuple[str, int, Any]] = []
            # Down longer than a lease: what was in flight outlives its lease.
            while time.time() < stopped + 4.0:
                for node in cluster:
                    status, raw = http("GET", node.url("/readyz"), timeout=10)
                    down.append(("readyz", status, json.loads(raw)))
                    status, raw = http(
                        "GET",
                        node.url("/v1/webhooks"),
                        headers={"Authorization": f"Bearer {key}"},
                        timeout=10,
                    )
                    down.append(("webhooks", status, json.loads(raw)))
                time.sleep(0.3)
            own_server.start()
            restarted = time.time()
            wait_until(lambda: all(_ready(node) == 200 for node in cluster), 30, 0.1)
            ready_after = time.time() - restarted
            acknowledged_by_then = len(load.acknowledged)
            wait_until(lambda: len(load.acknowledged) > acknowledged_by_then + 50, 20)
        for what, status, body in down:
            assert status == 503, (what, status, body)
            if what == "readyz":
                assert body["status"] == "unavailable"
                assert any(p.startswith("database: ") for p in body["problems"]), body
            else:
                assert body["code"] == 503 and body["error"] == "Service Unavailable", body
        assert load.refused, "ingest was refused while the database was down"
        _assert_outcome(own_server.url, cluster, load, receiver)
        first_after = min(r.arrived for r in receiver.seen() if r.arrived > restarted)
        fenced = sum(len(n.events("delivery.write_fenced")) for n in cluster)
        print(
            f"\nrestart: ready {ready_after:.2f} s after the server came back, first delivery"
            f" {first_after - restarted:.2f} s after; acknowledged {len(load.acknowledged)},"
            f" refused with 503 {len(load.refused)}; writes fenced {fenced}"
        )
    finally:
        for node in cluster:
            node.kill()


def test_a_database_that_stops_answering(
    own_server: OwnServer, tmp_path: Path, receiver: RecordingReceiver
) -> None:
    """A server that answers nothing and closes nothing (cut off): every wait is bounded."""
    key = _setup(own_server.url, receiver)
    node = Serve(node_env(own_server.url, tmp_path, **ENV))
    auth = {"Authorization": f"Bearer {key}"}
    event = {"type": "f.fast", "data": {}}
    try:
        node.wait_for("store.leader")
        own_server.freeze()
        frozen = time.time()
        answers: dict[str, tuple[int, Any, float]] = {}

        def ask(what: str, method: str, path: str, body: Any = None) -> None:
            status, raw = http(method, node.url(path), body, auth, timeout=60)
            answers[what] = (status, json.loads(raw), time.time() - frozen)

        asking = [
            threading.Thread(target=ask, args=("readyz", "GET", "/readyz")),
            threading.Thread(target=ask, args=("webhooks", "GET", "/v1/webhooks")),
            threading.Thread(target=ask, args=("events", "POST", "/v1/events", event)),
        ]
        for t in asking:
            t.start()
        for t in asking:
            t.join(60)
        # The node let its leadership go: it cannot run the cluster's housekeeping.
        node.wait_for("store.control_lost", timeout=30)
        own_server.thaw()
        thawed = time.time()
        wait_until(lambda: _ready(node) == 200, 30, 0.1)
        ready_after = time.time() - thawed
        status, answer = post_events(node, key, [event])
        assert status == 202
        wait_until(lambda: _undelivered(own_server.url, [answer["data"][0]["_id"]]) == 0, 20)
    finally:
        own_server.thaw()
        node.kill()
    status, body, took = answers["readyz"]
    # Within its 5 s ping deadline (plus slack for a busy machine), not after the
    # 10 s bound of the query it gave up on.
    assert status == 503 and body["status"] == "unavailable" and took < 9, answers
    for what in ("webhooks", "events"):
        status, body, took = answers[what]
        assert status == 503 and body["code"] == 503 and took < 30, answers
    assert node.events("api.unhandled_error") == []
    print(
        f"\nfrozen database: /readyz 503 after {answers['readyz'][2]:.1f} s, the API 503 after"
        f" {answers['webhooks'][2]:.1f} s; ready {ready_after:.1f} s after it answered again"
    )
