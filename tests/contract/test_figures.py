"""The storage contract for what operators look at: per-webhook and per-workspace
figures, the 429 lane as a whole, and bulk replay in chunks.

Runs on every backend through the contract suite's fixture.
"""

from __future__ import annotations

from hookd.clock import ManualClock
from hookd.lifecycle import Transition
from hookd.models import Status, WebhookStatus
from hookd.storage import Store, WebhookChanges
from hookd.storage.base import RateLimitStats
from tests.support.storage import LEASE_MS, WS, delivered, make_webhook, record_for

HOUR_MS = 3_600_000


def _dead() -> Transition:
    return Transition(Status.DEAD_LETTER, None, 1, 0, None, dead_letter_reason="budget")


def _failed(at: int) -> Transition:
    return Transition(Status.FAILED, at, 1, 0, None)


async def _attempt(
    s: Store, clock: ManualClock, transition: Transition, code: int, error: str | None = None
) -> str:
    """Claim the one due delivery and record an attempt now with ``code``; its id."""
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    record = record_for(claim, transition, code)
    outcome = "2xx" if 200 <= code < 300 else f"{code // 100}xx"
    await s.record_attempts(
        [record._replace(outcome=outcome, error=error, started_at=clock.now_ms())]
    )
    return claim.delivery_id


async def test_webhook_stats_count_what_ended_in_the_window(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    hook = await make_webhook(s)
    # Ended before the window: counted only by a window that reaches back to them.
    for code, transition in ((200, delivered()), (500, _dead())):
        await s.ingest_event(WS, "t", {})
        await _attempt(s, clock, transition, code)
    clock.advance(2 * 3600)
    since = clock.now_ms() - HOUR_MS
    for code, transition in ((200, delivered()), (200, delivered()), (503, _dead())):
        await s.ingest_event(WS, "t", {})
        await _attempt(s, clock, transition, code)
    stats = await s.webhook_stats(WS, hook.id, since)
    assert stats is not None
    assert (stats.delivered, stats.dead_lettered) == (2, 1)
    assert stats.success_rate == 2 / 3
    assert stats.since_ms == since
    assert stats.last_error_status_code == 503 and stats.last_error_at == clock.now_ms()
    assert stats.last_error_delivery_id is not None
    d = await s.get_delivery(WS, stats.last_error_delivery_id)
    assert d is not None and d.webhook_id == hook.id and d.status is Status.DEAD_LETTER
    everything = await s.webhook_stats(WS, hook.id, 0)
    assert everything is not None
    assert (everything.delivered, everything.dead_lettered) == (3, 2)
    # Another webhook's work is not this one's.
    other = await make_webhook(s, name="other", events=("other",))
    quiet = await s.webhook_stats(WS, other.id, 0)
    assert quiet is not None and (quiet.delivered, quiet.dead_lettered) == (0, 0)


async def test_webhook_stats_of_a_quiet_or_foreign_webhook(contract_store: Store) -> None:
    s = contract_store
    hook = await make_webhook(s)
    stats = await s.webhook_stats(WS, hook.id, 0)
    assert stats is not None
    assert (stats.delivered, stats.dead_lettered, stats.queued, stats.in_flight) == (0, 0, 0, 0)
    assert stats.success_rate is None and stats.last_error is None
    assert stats.last_error_at is None
    assert await s.webhook_stats("ws_b", hook.id, 0) is None
    assert await s.webhook_stats(WS, "0" * 24, 0) is None
    await s.delete_webhook(WS, hook.id)
    assert await s.webhook_stats(WS, hook.id, 0) is None


async def test_webhook_stats_queue_in_flight_and_the_last_error_text(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    hook = await make_webhook(s)
    for _ in range(3):
        await s.ingest_event(WS, "t", {})
    # One fails with a connection error and waits for its retry; one is claimed.
    await _attempt(s, clock, _failed(clock.now_ms() + 60_000), 0, "connection refused")
    claims = await s.claim_due(1, LEASE_MS, {}, 16)
    assert len(claims) == 1
    # A test send neither counts nor shows.
    test = await s.create_test_delivery(await _hook(s, hook.id), "test", {})
    stats = await s.webhook_stats(WS, hook.id, 0)
    assert stats is not None
    assert stats.queued == 3 and stats.in_flight == 1
    assert stats.last_error == "connection refused"
    assert (stats.delivered, stats.dead_lettered) == (0, 0)
    await s.record_attempts([record_for(test, delivered())])
    stats = await s.webhook_stats(WS, hook.id, 0)
    assert stats is not None and stats.delivered == 0


async def _hook(s: Store, hook_id: str):  # type: ignore[no-untyped-def]
    found = await s.get_webhook(WS, hook_id)
    assert found is not None
    return found


async def test_workspace_queue_stats_are_the_workspaces_own(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    await make_webhook(s)
    await make_webhook(s, workspace="ws_b")
    await s.ensure_workspace("ws_b")
    for _ in range(3):
        await s.ingest_event(WS, "t", {})
    await s.ingest_event("ws_b", "t", {})
    clock.advance(5)
    mine = await s.workspace_queue_stats(WS)
    assert mine.by_status["pending"] == 3 and mine.by_status["delivered"] == 0
    assert set(mine.by_status) == {s.value for s in Status}
    assert mine.oldest_due_ms == clock.now_ms() - 5000
    assert mine.in_flight == 0
    theirs = await s.workspace_queue_stats("ws_b")
    assert theirs.by_status["pending"] == 1
    # Claimed work is in flight, not due; delivered work is neither.
    claims = await s.claim_due(10, LEASE_MS, {}, 16)
    assert len(claims) == 4
    mine = await s.workspace_queue_stats(WS)
    assert mine.in_flight == 3 and mine.oldest_due_ms is None
    await s.record_attempts([record_for(c, delivered()) for c in claims])
    mine = await s.workspace_queue_stats(WS)
    assert mine.by_status["delivered"] == 3 and mine.by_status["pending"] == 0
    assert mine.in_flight == 0
    empty = await s.workspace_queue_stats("ws_none")
    assert sum(empty.by_status.values()) == 0 and empty.oldest_due_ms is None


async def test_workspace_oldest_due_leaves_out_work_that_waits_on_purpose(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    hook = await make_webhook(s)
    await s.ingest_event(WS, "t", {})
    clock.advance(10)
    await s.update_webhook(WS, hook.id, WebhookChanges(status=WebhookStatus.INACTIVE), 0)
    stats = await s.workspace_queue_stats(WS)
    assert stats.by_status["pending"] == 1 and stats.oldest_due_ms is None
    await s.update_webhook(WS, hook.id, WebhookChanges(status=WebhookStatus.ACTIVE), 0)
    stats = await s.workspace_queue_stats(WS)
    assert stats.oldest_due_ms == clock.now_ms() - 10_000


async def test_rate_limit_stats_see_paused_webhooks_and_the_oldest_429(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    await make_webhook(s)
    assert await s.rate_limit_stats() == RateLimitStats(0, None)
    await s.ingest_event(WS, "t", {})
    first_429 = clock.now_ms()
    limited = Transition(
        Status.RATE_LIMITED,
        first_429 + 30_000,
        0,
        1,
        first_429,
        pause_webhook_until=first_429 + 30_000,
    )
    await _attempt(s, clock, limited, 429)
    clock.advance(10)
    stats = await s.rate_limit_stats()
    assert stats.paused_webhooks == 1
    assert stats.oldest_rate_limited_since_ms == first_429
    clock.advance(30)
    stats = await s.rate_limit_stats()
    assert stats.paused_webhooks == 0
    assert stats.oldest_rate_limited_since_ms == first_429


async def test_bulk_replay_in_chunks_moves_each_dead_letter_once(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    hook = await make_webhook(s)
    ids = []
    for _ in range(5):
        (delivery_id,) = (await s.ingest_event(WS, "t", {})).delivery_ids
        await _attempt(s, clock, _dead(), 500)
        ids.append(delivery_id)
    chunks = []
    while (moved := await s.replay_webhook(WS, hook.id, None, limit=2)) != 0:
        assert moved is not None
        chunks.append(moved)
    assert chunks == [2, 2, 1]
    for delivery_id in ids:
        d = await s.get_delivery(WS, delivery_id)
        assert d is not None and d.status is Status.PENDING and d.next_attempt_at is not None
    assert await s.replay_webhook("ws_b", hook.id, None, limit=2) is None
