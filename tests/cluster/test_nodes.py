"""Three ``hookd serve`` nodes on one PostgreSQL database, one SIGKILLed mid-run.

30,000 deliveries over 30 webhooks go to one recording receiver on loopback,
which keeps every request's arrival and end (a delivery in flight twice at
once shows as an overlap) and the most requests in progress per endpoint.
Among the endpoints, one always fails (dead letters after the retry budget),
one answers a 429 with Retry-After once (a pause for the whole cluster) and
one answers 410 Gone after a while (a deactivation every node sees).

Leases are short (timeouts are small, so the lease check allows it): the
killed node's leases expire within the test, and its deliveries are taken by
the survivors.  A request the receiver saw but the database holds no attempt
for can only be one the killed node sent before it died.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime

import pytest

from tests.cluster.receiver import Answer, RecordingReceiver, overlaps
from tests.cluster.support import fetch, post_events, provision
from tests.ops.support import Serve, wait_until

pytestmark = pytest.mark.cluster

WS = "ws_nodes"
WEBHOOKS = 30
DELIVERIES = 30_000
LIMIT = 4
BATCH = 500
RETRY_AFTER_SECONDS = 2
# Requests claimed before a 429's pause (or a 410's deactivation) was written
# may still arrive just after the answer: how long after it they may.
GRACE_SECONDS = 0.5
ENV = {
    "HOOKD_DELIVERY_ALLOW_NETWORKS": "127.0.0.0/8",
    "HOOKD_DELIVERY_PER_WEBHOOK_CONCURRENCY": str(LIMIT),
    # Small timeouts allow short leases: the killed node's expire within the test.
    "HOOKD_DELIVERY_MAX_TIMEOUT_MS": "1000",
    "HOOKD_DELIVERY_LEASE_SECONDS": "3",
    "HOOKD_DELIVERY_LEASE_MARGIN_SECONDS": "1",
    "HOOKD_DELIVERY_BACKOFF_BASE_SECONDS": "0.05",
    "HOOKD_DELIVERY_BACKOFF_CAP_SECONDS": "0.2",
    # Which node sent what is read from the logs, and plain successes are
    # logged at debug.
    "HOOKD_LOGGING_LEVEL": "debug",
}


def _setup(url: str, receiver: RecordingReceiver) -> tuple[str, dict[str, str]]:
    """The workspace's key and the webhooks (path -> id), made on the database directly."""
    paths = {i: f"/ok{i}" for i in range(WEBHOOKS - 3)}
    paths.update({WEBHOOKS - 3: "/fail", WEBHOOKS - 2: "/limited", WEBHOOKS - 1: "/gone"})
    for path in paths.values():
        receiver.answer(path, Answer(200, delay=0.02))
    receiver.answer("/fail", Answer(500, delay=0.02))
    receiver.script("/limited", *[Answer(200, delay=0.02)] * 150)
    receiver.script("/limited", Answer(429, (("Retry-After", str(RETRY_AFTER_SECONDS)),)))
    receiver.script("/gone", *[Answer(200, delay=0.02)] * 300)
    receiver.answer("/gone", Answer(410))
    key, ids = provision(
        url,
        WS,
        [
            {
                "name": f"hook {i}",
                "url": receiver.url(path),
                "events": (f"t.{i}",),
                "retry_attempts": 1 if path == "/fail" else 3,
            }
            for i, path in paths.items()
        ],
    )
    return key, dict(zip(paths.values(), ids, strict=True))


def _ingest(node: Serve, key: str, batches: range, acknowledged: list[str]) -> None:
    for b in batches:
        events = [
            {"type": f"t.{n % WEBHOOKS}", "data": {"n": n}}
            for n in range(b * BATCH, (b + 1) * BATCH)
        ]
        status, answer = post_events(node, key, events)
        assert status == 202, answer
        acknowledged.extend(e["_id"] for e in answer["data"])


def test_three_nodes_one_killed(
    pg_url: str, nodes: Callable[..., Serve], receiver: RecordingReceiver
) -> None:
    key, hooks = _setup(pg_url, receiver)
    cluster = [nodes(**ENV) for _ in range(3)]
    started = time.time()
    acknowledged: list[str] = []
    per_node = DELIVERIES // BATCH // len(cluster)
    ingesting = [
        threading.Thread(
            target=_ingest, args=(node, key, range(i * per_node, (i + 1) * per_node), acknowledged)
        )
        for i, node in enumerate(cluster)
    ]
    for thread in ingesting:
        thread.start()
    for thread in ingesting:
        thread.join(120)
    assert len(acknowledged) == DELIVERIES
    ingested = time.time()

    wait_until(lambda: len(receiver.seen()) >= DELIVERIES // 4, 60, 0.05)
    # The busiest node dies: the one with the most attempts logged so far.
    victim = max(cluster, key=lambda n: len(n.lines))
    victim.kill()
    killed_at = time.time()
    survivors = [n for n in cluster if n is not victim]

    def open_deliveries() -> int:
        rows = fetch(
            pg_url,
            "SELECT count(*) FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id"
            " WHERE d.status NOT IN ('delivered', 'dead_letter') AND w.status = 'active'",
        )
        return int(rows[0][0])

    wait_until(lambda: open_deliveries() == 0, 120, 0.5)
    finished = time.time()
    # The records of the last attempts are in: nothing in flight anywhere.
    wait_until(lambda: not any(receiver.in_progress.values()), 10)

    rows = fetch(
        pg_url,
        "SELECT d.id, d.event_id, d.webhook_id, d.status, d.attempt_count,"
        " (SELECT count(*) FROM attempts a WHERE a.delivery_id = d.id) FROM deliveries d",
    )
    by_hook = {hook_id: path for path, hook_id in hooks.items()}
    seen = receiver.seen()

    # -- none lost, every one terminal per policy --------------------------------------
    assert len(rows) == DELIVERIES
    assert {r[1] for r in rows} == set(acknowledged)
    final: dict[str, Counter[str]] = defaultdict(Counter)
    for _id, _event, hook, status, _count, _rows in rows:
        final[by_hook[hook]][status] += 1
    for path, statuses in final.items():
        if path.startswith("/ok") or path == "/limited":
            assert statuses == {"delivered": DELIVERIES // WEBHOOKS}, path
    assert final["/fail"] == {"dead_letter": DELIVERIES // WEBHOOKS}
    assert all(r[4] == 2 for r in rows if by_hook[r[2]] == "/fail"), "one retry each"
    # Gone: what was answered 410 is dead, the rest wait for the webhook to be
    # enabled.  (Of the 300 answers before the 410s, those the killed node
    # received and never wrote, one per lease it held at most, were sent again.)
    assert final["/gone"]["delivered"] >= 300 - LIMIT and final["/gone"]["dead_letter"] >= 1
    assert set(final["/gone"]) <= {"delivered", "dead_letter", "pending"}
    gone = fetch(pg_url, f"SELECT status FROM webhooks WHERE id = '{hooks['/gone']}'")
    assert gone == [("inactive",)]

    # -- never in flight twice at once; duplicates only from the killed node -----------
    assert overlaps(seen) == []
    requests_of: Counter[str] = Counter(r.msg_id for r in seen)
    before_kill: Counter[str] = Counter(r.msg_id for r in seen if r.arrived < killed_at)
    unrecorded = 0
    duplicates = 0
    for _id, event, _hook, _status, _count, recorded in rows:
        # Every attempt on record reached the receiver (all of them answer).
        assert recorded <= requests_of[event], event
        missing = requests_of[event] - recorded
        # A request with no record: the killed node sent it and died.
        assert missing <= before_kill[event], event
        unrecorded += missing
        ok = sum(1 for r in seen if r.msg_id == event and 200 <= r.status < 300) if missing else 0
        duplicates += max(0, ok - 1)
    # At most what the killed node had in flight or waiting to be written:
    # its share of every webhook's limit.
    assert unrecorded <= 2 * len(hooks) * -(-LIMIT // 3)

    # -- the per-webhook limit is the cluster's ------------------------------------------
    most = {path: receiver.most_in_progress[path] for path in hooks}
    assert max(most.values()) == LIMIT, most
    assert all(n <= LIMIT for n in most.values()), most

    # -- a 429's pause and a 410's deactivation hold on every node ----------------------
    (answered_429,) = [r for r in seen if r.path == "/limited" and r.status == 429]
    ((paused_until,),) = fetch(
        pg_url, f"SELECT paused_until FROM webhooks WHERE id = '{hooks['/limited']}'"
    )
    assert paused_until >= (answered_429.ended + RETRY_AFTER_SECONDS) * 1000 - 50
    during = [
        r
        for r in seen
        if r.path == "/limited"
        and answered_429.ended + GRACE_SECONDS <= r.arrived < paused_until / 1000
    ]
    assert during == [], "a request reached a paused endpoint"
    after = [r for r in seen if r.path == "/limited" and r.arrived >= paused_until / 1000]
    assert after, "the endpoint resumed"
    first_410 = min(r.ended for r in seen if r.path == "/gone" and r.status == 410)
    late = [r for r in seen if r.path == "/gone" and r.arrived > first_410 + GRACE_SECONDS]
    assert late == []
    # Both survivors delivered to the paused endpoint once its pause was over:
    # the window above was empty for each of them, not only for the node that
    # received the 429.
    limited = hooks["/limited"]
    for node in survivors:
        resumed = [
            e
            for e in node.events("delivery.attempt")
            if e.get("webhook_id") == limited and _epoch(str(e["timestamp"])) * 1000 > paused_until
        ]
        assert resumed, "every survivor sent to the endpoint after its pause"

    # The work is shared: a node settling its attempts and claiming in one turn
    # takes only its share of each webhook's limit, not every slot it frees.
    attempts = [len(node.events("delivery.attempt")) for node in cluster]
    assert min(attempts) >= 500, attempts

    elapsed = finished - started
    print(
        f"\n{DELIVERIES} deliveries on 3 nodes (one SIGKILLed): {elapsed:.1f} s,"
        f" {DELIVERIES / elapsed:,.0f}/s (ingest {ingested - started:.1f} s);"
        f" unrecorded requests of the killed node {unrecorded}, duplicate deliveries"
        f" {duplicates}; most in progress per endpoint {max(most.values())} (limit {LIMIT});"
        f" attempts logged per node {[len(n.events('delivery.attempt')) for n in cluster]}"
    )


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
