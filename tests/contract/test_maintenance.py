"""The contract of housekeeping: retention, interrupted test sends, queue figures."""

from __future__ import annotations

import random

from hookd import lifecycle
from hookd.clock import ManualClock
from hookd.config import DeliveryConfig
from hookd.lifecycle import Transition
from hookd.models import Status, WebhookStatus
from hookd.policy import Outcome
from hookd.storage import NewEvent, Store, WebhookChanges
from tests.support.storage import (
    IDEMPOTENCY_WINDOW_MS,
    LEASE_MS,
    WS,
    delivered,
    first_attempt,
    make_webhook,
    record_for,
)


async def test_retention_removes_old_ended_deliveries_of_the_status_asked(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    await make_webhook(s)
    ok, dead = [(await s.ingest_event(WS, "t", {"i": i})).delivery_ids[0] for i in range(2)]
    claims = {c.delivery_id: c for c in await s.claim_due(2, LEASE_MS, {}, 16)}
    await s.record_attempts(
        [
            record_for(claims[ok], delivered()),
            record_for(claims[dead], Transition(Status.DEAD_LETTER, None, 1, 0, None), 500),
        ]
    )
    pending_id = (await s.ingest_event(WS, "t", {})).delivery_ids[0]
    clock.advance(3600)
    cutoff = clock.now_ms() - 1000
    assert await s.delete_ended_before(Status.DELIVERED, cutoff, 100) == 1
    assert await s.get_delivery(WS, ok) is None and await s.list_attempts(ok) == []
    assert await s.get_delivery(WS, dead) is not None
    assert await s.delete_ended_before(Status.DEAD_LETTER, cutoff - 3_600_000, 100) == 0
    assert await s.delete_ended_before(Status.DEAD_LETTER, cutoff, 100) == 1
    assert await s.get_delivery(WS, dead) is None and await s.list_attempts(dead) == []
    assert await s.get_delivery(WS, pending_id) is not None


async def test_retention_goes_in_batches(contract_store: Store, clock: ManualClock) -> None:
    s = contract_store
    await make_webhook(s)
    await s.ingest_events(WS, [NewEvent("t", {"i": i}) for i in range(5)])
    claims = await s.claim_due(10, LEASE_MS, {}, 16)
    await s.record_attempts([record_for(c, delivered()) for c in claims])
    clock.advance(10)
    counts = [await s.delete_ended_before(Status.DELIVERED, clock.now_ms(), 2) for _ in range(4)]
    assert counts == [2, 2, 1, 0]


async def test_orphan_events_go_once_past_the_idempotency_window(
    contract_store: Store, clock: ManualClock
) -> None:
    """An event no delivery refers to any more (or never did) is deleted, but only
    once its idempotency key can no longer be repeated."""
    s = contract_store
    await make_webhook(s, events=("kept.*",))
    lonely = await s.ingest_event(WS, "nobody.listens", {}, idempotency_key="k")
    kept = await s.ingest_event(WS, "kept.one", {})
    assert await s.delete_orphan_events(100) == 0
    clock.advance(IDEMPOTENCY_WINDOW_MS / 1000 + 1)
    assert await s.delete_orphan_events(100) == 1
    assert await s.get_event(WS, lonely.event.id) is None
    assert await s.get_event(WS, kept.event.id) is not None


async def test_deleted_webhooks_go_once_none_of_their_deliveries_is_left(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    gone = await make_webhook(s)
    (waiting,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    await s.delete_webhook(WS, gone.id)
    assert await s.delete_deleted_webhooks(100) == 0  # its dead letter is still there
    clock.advance(10)
    assert await s.delete_ended_before(Status.DEAD_LETTER, clock.now_ms(), 100) == 1
    assert await s.get_delivery(WS, waiting) is None
    assert await s.delete_deleted_webhooks(100) == 1
    assert await s.delete_deleted_webhooks(100) == 0


async def test_an_endpoint_limited_longer_than_the_lane_allows_ends_its_waiting_work(
    contract_store: Store, clock: ManualClock
) -> None:
    """Deliveries queued behind an endpoint that answers 429 are never tried, so
    their own lane age never grows: the bound holds for the endpoint as a whole,
    from the first 429 of its current run."""
    s = contract_store
    limited = await make_webhook(s, events=("limited",))
    healthy = await make_webhook(s, events=("healthy",))
    for event_type in ("limited", "healthy"):
        await s.ingest_event(WS, event_type, {})
    claims = {c.webhook_id: c for c in await s.claim_due(2, LEASE_MS, {}, 16)}
    started = clock.now_ms()
    await s.record_attempts(
        [
            # Paused for two hours: still answering 429 when the sweep looks.
            record_for(
                claims[limited.id], first_attempt(Outcome.RATE_LIMITED, started, 7200.0), 429
            ),
            record_for(claims[healthy.id], first_attempt(Outcome.DELIVERED, started)),
        ]
    )
    waiting = [(await s.ingest_event(WS, "limited", {})).delivery_ids[0] for _ in range(3)]
    clock.advance(3600)
    # Not yet past the bound, counted from the run's start.
    assert await s.end_expired_lanes(started - 1) == 0
    assert await s.end_expired_lanes(started + 1) == 4  # the limited one and the 3 waiting
    for delivery_id in [claims[limited.id].delivery_id, *waiting]:
        d = await s.get_delivery(WS, delivery_id)
        assert d is not None and d.status is Status.DEAD_LETTER
        assert d.last_error == lifecycle.LANE_EXPIRED
    healthy_delivery = await s.get_delivery(WS, claims[healthy.id].delivery_id)
    assert healthy_delivery is not None and healthy_delivery.status is Status.DELIVERED


async def test_an_answer_that_is_not_a_429_ends_the_endpoints_run(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    await make_webhook(s)
    for _ in range(2):
        await s.ingest_event(WS, "t", {})
    first, second = await s.claim_due(2, LEASE_MS, {}, 16)
    started = clock.now_ms()
    limited = first_attempt(Outcome.RATE_LIMITED, started, 1.0)
    await s.record_attempts([record_for(first, limited, 429)])
    clock.advance(2)
    failed = first_attempt(Outcome.FAILED, clock.now_ms())
    await s.record_attempts([record_for(second, failed, 500)])
    (waiting,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    clock.advance(3600)
    assert await s.end_expired_lanes(clock.now_ms()) == 0
    d = await s.get_delivery(WS, waiting)
    assert d is not None and d.status is Status.PENDING


async def _limited_once(s: Store, clock: ManualClock, retry_after: float) -> str:
    """A webhook whose only delivery was answered 429 with ``retry_after``; its id."""
    hook = await make_webhook(s)
    await s.ingest_event(WS, "t", {})
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    limited = first_attempt(Outcome.RATE_LIMITED, clock.now_ms(), retry_after)
    await s.record_attempts([record_for(claim, limited, 429)])
    return hook.id


async def test_an_endpoint_nobody_tried_since_its_pause_is_not_ended(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    await _limited_once(s, clock, 1.0)
    clock.advance(3600)  # the pause ended long ago; what waits was never tried
    (waiting,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    assert await s.end_expired_lanes(clock.now_ms()) == 0
    d = await s.get_delivery(WS, waiting)
    assert d is not None and d.status is Status.PENDING


async def test_a_429_long_after_the_last_pause_starts_a_new_run(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    await _limited_once(s, clock, 1.0)
    clock.advance(3600)
    # The retried delivery is due again; its next answer is a 429, a day later.
    (again,) = await s.claim_due(1, LEASE_MS, {}, 16)
    restarted = clock.now_ms()
    transition = lifecycle.decide(
        lifecycle.Counters.of(again),
        Outcome.RATE_LIMITED,
        7200.0,
        restarted,
        DeliveryConfig(),
        random.Random(0),
    )
    await s.record_attempts([record_for(again, transition, 429)])
    # Limited since `restarted`, not since the first 429 an hour before.
    assert await s.end_expired_lanes(restarted) == 0
    assert await s.end_expired_lanes(restarted + 1) == 1


async def test_reactivating_a_webhook_ends_its_run(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    hook_id = await _limited_once(s, clock, 7200.0)
    for status in (WebhookStatus.INACTIVE, WebhookStatus.ACTIVE):
        changed = await s.update_webhook(WS, hook_id, WebhookChanges(status=status), 0)
        assert changed is not None and changed.status is status
    clock.advance(3600)
    assert await s.end_expired_lanes(clock.now_ms()) == 0


async def test_interrupted_test_sends_are_ended(contract_store: Store, clock: ManualClock) -> None:
    s = contract_store
    hook = await make_webhook(s)
    claim = await s.create_test_delivery(hook, "test", {})
    assert await s.end_interrupted_tests(clock.now_ms() - 1000) == 0
    clock.advance(120)
    assert await s.end_interrupted_tests(clock.now_ms() - 90_000) == 1
    d = await s.get_delivery(WS, claim.delivery_id)
    assert d is not None and d.status is Status.DEAD_LETTER
    assert d.last_error == "test delivery interrupted"


async def test_queue_stats_counts_by_status(contract_store: Store, clock: ManualClock) -> None:
    s = contract_store
    await make_webhook(s)
    for _ in range(3):
        await s.ingest_event(WS, "t", {})
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    clock.advance(5)
    stats = await s.queue_stats()
    assert stats.by_status["pending"] == 3 and stats.by_status["delivered"] == 0
    assert stats.in_flight == 1
    assert stats.oldest_due_ms == clock.now_ms() - 5000
    await s.record_attempts([record_for(claim, delivered())])
    stats = await s.queue_stats()
    assert stats.by_status["delivered"] == 1 and stats.in_flight == 0


async def test_lag_counts_from_the_end_of_a_pause_not_from_the_queue_time(
    contract_store: Store, clock: ManualClock
) -> None:
    """Deliveries that waited behind a 429 pause were not late while it lasted:
    when it ends, the lag counts from its end."""
    s = contract_store
    hook = await make_webhook(s)
    await s.ingest_event(WS, "t", {})
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    await s.ingest_event(WS, "t", {})
    limited = first_attempt(Outcome.RATE_LIMITED, clock.now_ms(), 600.0)
    await s.record_attempts([record_for(claim, limited, 429)])
    clock.advance(300)
    # Paused: waiting on purpose, for the cluster's gauge and the workspace's figures.
    assert (await s.queue_stats()).oldest_due_ms is None
    assert (await s.workspace_queue_stats(WS)).oldest_due_ms is None
    clock.advance(301)  # the pause is over since a second
    paused = await s.get_webhook(WS, hook.id)
    assert paused is not None and paused.paused_until is not None
    assert (await s.queue_stats()).oldest_due_ms == paused.paused_until
    assert (await s.workspace_queue_stats(WS)).oldest_due_ms == paused.paused_until
