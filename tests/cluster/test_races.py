"""What two nodes doing the same thing at once must leave: one event per
idempotency key, one replay of a dead letter, no write for a deleted webhook
or an expired lease.

The store-level races use two ``PostgresStore`` objects on the database, each
with its own connections, as two nodes have; replay goes through two real
``hookd serve`` nodes' API at the same moment.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from hookd.clock import ManualClock
from hookd.models import Status, WebhookStatus
from hookd.policy import Outcome
from hookd.storage import Store, WebhookChanges
from hookd.storage.base import NewEvent
from hookd.storage.postgres import PostgresStore
from tests.cluster.receiver import Answer, RecordingReceiver
from tests.cluster.support import provision
from tests.ops.support import Serve, http, wait_until
from tests.support.storage import delivered, first_attempt, make_webhook, record_for

pytestmark = pytest.mark.cluster

WS = "ws_races"
LEASE_MS = 3_000


@pytest.fixture
async def two_stores(pg_url: str, clock: ManualClock) -> AsyncIterator[tuple[Store, Store]]:
    stores = [PostgresStore(pg_url, clock, listen=False) for _ in range(2)]
    for store in stores:
        await store.open()
    yield stores[0], stores[1]
    for store in stores:
        await store.close()


async def test_one_idempotency_key_ingested_on_two_nodes_at_once_stores_one_event(
    two_stores: tuple[Store, Store],
) -> None:
    a, b = two_stores
    await a.ensure_workspace(WS)
    await make_webhook(a, WS)
    keys = [f"order-{i}" for i in range(40)]
    singles = [s.ingest_event(WS, "order.paid", {"k": k}, k) for k in keys for s in (a, b)]
    results = await asyncio.gather(*singles)
    for k, first, second in zip(keys, results[::2], results[1::2], strict=True):
        assert first.event.id == second.event.id, k
        assert first.delivery_ids == second.delivery_ids
        assert sorted([first.duplicate, second.duplicate]) == [False, True], k
    # Batches too, each key again on both nodes: every event a duplicate.
    batch = [NewEvent("order.paid", {"k": k}, k) for k in keys]
    again = await asyncio.gather(a.ingest_events(WS, batch), b.ingest_events(WS, batch))
    for answer in again:
        assert [r.event.id for r in answer] == [r.event.id for r in results[::2]]
        assert all(r.duplicate for r in answer)
    stats = await a.workspace_queue_stats(WS)
    assert sum(stats.by_status.values()) == len(keys), "one delivery per key"


async def test_a_webhook_deleted_on_one_node_fences_the_other_nodes_attempt(
    two_stores: tuple[Store, Store],
) -> None:
    a, b = two_stores
    await a.ensure_workspace(WS)
    hook = await make_webhook(a, WS)
    (delivery_id,) = (await b.ingest_event(WS, "t", {})).delivery_ids
    (claim,) = await a.claim_due(1, LEASE_MS, {}, 4)
    assert await b.delete_webhook(WS, hook.id)
    (result,) = await a.record_attempts([record_for(claim, delivered())])
    assert not result.applied and result.status is Status.DEAD_LETTER
    found = await b.get_delivery(WS, delivery_id)
    assert found is not None and found.status is Status.DEAD_LETTER
    assert found.last_error == "webhook deleted", "the fenced attempt changed nothing"
    # It is on record, and counted: attemptCount and the attempt list agree.
    assert found.attempt_count == len(await b.list_attempts(delivery_id)) == 1


async def test_an_expired_lease_taken_by_another_node_fences_the_first(
    two_stores: tuple[Store, Store], clock: ManualClock
) -> None:
    a, b = two_stores
    await a.ensure_workspace(WS)
    await make_webhook(a, WS)
    (delivery_id,) = (await a.ingest_event(WS, "t", {})).delivery_ids
    (first,) = await a.claim_due(1, LEASE_MS, {}, 4)
    assert await b.claim_due(1, LEASE_MS, {}, 4) == [], "not while the lease holds"
    clock.advance(LEASE_MS / 1000 + 0.001)
    (second,) = await b.claim_due(1, LEASE_MS, {}, 4)
    assert second.delivery_id == delivery_id
    (late,) = await a.record_attempts([record_for(first, delivered())])
    assert not late.applied and late.status is Status.PENDING
    (current,) = await b.record_attempts([record_for(second, delivered())])
    assert current.applied
    found = await a.get_delivery(WS, delivery_id)
    assert found is not None and found.status is Status.DELIVERED
    # Both attempts reached the receiver and both are on record.
    assert found.attempt_count == len(await a.list_attempts(delivery_id)) == 2


def test_replay_on_two_nodes_at_once_one_200_the_other_409(
    pg_url: str, nodes: Callable[..., Serve], receiver: RecordingReceiver
) -> None:
    hook = {"name": "race", "url": receiver.answer("/hook", Answer(500)), "events": ("*",)}
    key, _ = provision(pg_url, WS, [{**hook, "retry_attempts": 0}])
    env = {"HOOKD_DELIVERY_ALLOW_NETWORKS": "127.0.0.0/8"}
    cluster = [nodes(**env), nodes(**env)]
    auth = {"Authorization": f"Bearer {key}"}
    dead = []
    for i in range(6):
        status, raw = http(
            "POST", cluster[i % 2].url("/v1/events"), {"type": "t", "data": {}}, auth
        )
        assert status == 202
        dead.extend(json.loads(raw)["data"]["deliveryIds"])

    def status_of(delivery_id: str) -> str:
        _, raw = http("GET", cluster[0].url(f"/v1/deliveries/{delivery_id}"), headers=auth)
        return str(json.loads(raw)["data"]["status"])

    wait_until(lambda: all(status_of(d) == "dead_letter" for d in dead), 15)
    receiver.answer("/hook", Answer(200, delay=0.05))
    before = len(receiver.seen())
    for delivery_id in dead:
        answers = _at_once(cluster, f"/v1/deliveries/{delivery_id}/replay", auth)
        assert sorted(answers) == [200, 409], delivery_id
        assert status_of(delivery_id) == "delivered"
    # One request per replay: the 409 sent nothing.
    assert len(receiver.seen()) - before == len(dead)


def _at_once(cluster: list[Serve], path: str, headers: dict[str, str]) -> list[int]:
    """POST ``path`` to every node at the same moment; the statuses answered."""
    answers: list[int] = []
    start = threading.Barrier(len(cluster))

    def post(node: Serve) -> None:
        start.wait()
        answers.append(http("POST", node.url(path), headers=headers)[0])

    threads = [threading.Thread(target=post, args=(node,)) for node in cluster]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return answers


async def test_followers_show_when_the_leader_read_the_figures(
    pg_url: str, clock: ManualClock
) -> None:
    """A follower's figures carry the leader's reading time, so a leader that
    stopped publishing shows as stale statistics on every node."""
    leader = PostgresStore(pg_url, clock, lead=True)
    follower = PostgresStore(pg_url, clock, lead=False)
    for store in (leader, follower):
        await store.open()
    try:
        for _ in range(100):
            if await leader.is_leader():
                break
            await asyncio.sleep(0.05)
        assert await leader.is_leader() and not await follower.is_leader()
        await leader.ensure_workspace(WS)
        await make_webhook(leader, WS)
        await leader.ingest_event(WS, "t", {})
        read = clock.now_ms()
        assert (await leader.queue_stats()).read_at_ms == read
        clock.advance(600)
        published = await follower.queue_stats()
        assert published.read_at_ms == read
        assert published.by_status[Status.PENDING.value] == 1
        assert (await leader.queue_stats()).read_at_ms == read + 600_000
        assert (await follower.queue_stats()).read_at_ms == read + 600_000
    finally:
        for store in (leader, follower):
            await store.close()


async def test_a_replay_or_a_reactivation_on_one_node_wakes_the_others(
    pg_url: str, clock: ManualClock
) -> None:
    """Work an operator makes due is taken by idle nodes at once, not at their
    next poll: the writing transaction notifies them."""
    writer = PostgresStore(pg_url, clock, listen=False)
    idle = PostgresStore(pg_url, clock, lead=False)
    woken = asyncio.Event()
    idle.watch_due(woken.set)
    for store in (writer, idle):
        await store.open()
    try:
        await writer.ensure_workspace(WS)
        hook = await make_webhook(writer, WS)
        await writer.ingest_event(WS, "t", {})
        (claim,) = await writer.claim_due(1, LEASE_MS, {}, 4)
        gone = first_attempt(Outcome.BLOCKED, clock.now_ms())  # a dead letter at once
        await writer.record_attempts([record_for(claim, gone, None)])
        await asyncio.sleep(0.2)  # the ingest's own notification has come and gone
        woken.clear()
        assert await writer.replay_webhook(WS, hook.id, None) == 1
        await asyncio.wait_for(woken.wait(), 5)

        woken.clear()
        for status in (WebhookStatus.INACTIVE, WebhookStatus.ACTIVE):
            await writer.update_webhook(WS, hook.id, WebhookChanges(status=status), 0)
        await asyncio.wait_for(woken.wait(), 5)
    finally:
        for store in (writer, idle):
            await store.close()


async def test_each_node_takes_its_share_of_a_webhooks_limit(
    pg_url: str, clock: ManualClock
) -> None:
    """Two nodes, a limit of 4: each claims 2 of one webhook's backlog, so a
    node that keeps settling and claiming never keeps every slot to itself."""
    limit = 4
    a, b = (PostgresStore(pg_url, clock, lead=False, per_webhook_limit=limit) for _ in range(2))
    for store in (a, b):
        await store.open()
    try:
        for _ in range(150):  # the count is refreshed every few seconds
            if a.nodes == b.nodes == 2:
                break
            await asyncio.sleep(0.05)
        assert a.nodes == b.nodes == 2
        await a.ensure_workspace(WS)
        await make_webhook(a, WS)
        for _ in range(10):
            await a.ingest_event(WS, "t", {})
        first = await a.claim_due(10, LEASE_MS, {}, limit)
        assert len(first) == 2
        assert await a.claim_due(10, LEASE_MS, {}, limit) == [], "its share is taken"
        assert len(await b.claim_due(10, LEASE_MS, {}, limit)) == 2
        # A's attempt settles: it may take one more, no more than its share.
        _results, late = await a.settle_and_claim(
            [record_for(first[0], delivered())], 10, LEASE_MS, {}, limit
        )
        assert len(late) == 1
    finally:
        for store in (a, b):
            await store.close()
