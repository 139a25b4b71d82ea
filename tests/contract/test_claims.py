"""The contract of claiming: leases, each webhook's room, pauses, the order due."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from hookd.clock import ManualClock
from hookd.models import WebhookStatus
from hookd.policy import Outcome
from hookd.storage import NewEvent, Store, WebhookChanges
from tests.support.storage import LEASE_MS, WS, first_attempt, make_webhook, record_for


async def test_claim_takes_due_deliveries_once_until_the_lease_expires(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    await make_webhook(s)
    ids = [(await s.ingest_event(WS, "t", {"i": i})).delivery_ids[0] for i in range(5)]
    first = await s.claim_due(3, LEASE_MS, {}, 16)
    assert [c.delivery_id for c in first] == ids[:3]
    second = await s.claim_due(10, LEASE_MS, {}, 16)
    assert [c.delivery_id for c in second] == ids[3:]
    assert await s.claim_due(10, LEASE_MS, {}, 16) == []
    clock.advance(LEASE_MS / 1000)
    again = await s.claim_due(10, LEASE_MS, {}, 16)
    assert sorted(c.delivery_id for c in again) == sorted(ids)
    assert {c.lease_token for c in again}.isdisjoint({c.lease_token for c in first})


async def test_claim_respects_per_webhook_room(contract_store: Store) -> None:
    s = contract_store
    busy = await make_webhook(s, events=("busy",))
    calm = await make_webhook(s, events=("calm",))
    for _ in range(6):
        await s.ingest_event(WS, "busy", {})
    for _ in range(2):
        await s.ingest_event(WS, "calm", {})
    claims = await s.claim_due(10, LEASE_MS, {busy.id: 1}, 3)
    per_hook: dict[str, int] = {}
    for c in claims:
        per_hook[c.webhook_id] = per_hook.get(c.webhook_id, 0) + 1
    assert per_hook == {busy.id: 1, calm.id: 2}
    assert await s.claim_due(10, LEASE_MS, {busy.id: 0}, 3) == []


async def test_paused_and_inactive_webhooks_are_not_claimed(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    hook = await make_webhook(s)
    (a,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    (b,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    limited = first_attempt(Outcome.RATE_LIMITED, clock.now_ms(), 60.0)
    (res,) = await s.record_attempts([record_for(claim, limited, 429)])
    assert res.applied
    assert await s.claim_due(10, LEASE_MS, {}, 16) == []
    assert await s.next_due_at() == clock.now_ms() + 60_000
    clock.advance(60)
    assert len(await s.claim_due(10, LEASE_MS, {}, 16)) == 2
    clock.advance(LEASE_MS / 1000)
    await s.update_webhook(WS, hook.id, WebhookChanges(status=WebhookStatus.INACTIVE), 0)
    assert await s.claim_due(10, LEASE_MS, {}, 16) == []
    assert {a, b}


async def test_large_and_small_bodies_are_claimed_exactly(contract_store: Store) -> None:
    s = contract_store
    await make_webhook(s)
    datas = [{"small": "é"}, {"big": '\u00e9"x' * 40_000}, {"small": 2}]
    results = [await s.ingest_event(WS, "t", data) for data in datas]
    claims = await s.claim_due(10, LEASE_MS, {}, 16)
    assert [c.delivery_id for c in claims] == [r.delivery_ids[0] for r in results]
    for claim, result, data in zip(claims, results, datas, strict=True):
        assert claim.body == result.event.body
        assert json.loads(claim.body)["data"] == data
    assert len(claims[1].body) > 64 * 1024


async def test_claim_reads_past_one_busy_webhook_to_the_others(contract_store: Store) -> None:
    """The one webhook at its limit fills the head; the others still get their turn
    in due order, and a claim with no room anywhere takes nothing."""
    s = contract_store
    busy = await make_webhook(s, events=("busy",))
    quiet = await make_webhook(s, events=("quiet",))
    busy_ids = [(await s.ingest_event(WS, "busy", {})).delivery_ids[0] for _ in range(150)]
    quiet_ids = [(await s.ingest_event(WS, "quiet", {})).delivery_ids[0] for _ in range(5)]
    claims = await s.claim_due(256, LEASE_MS, {busy.id: 3}, 32)
    assert [c.delivery_id for c in claims if c.webhook_id == busy.id] == busy_ids[:3]
    assert [c.delivery_id for c in claims if c.webhook_id == quiet.id] == quiet_ids
    assert await s.claim_due(256, LEASE_MS, {busy.id: 0, quiet.id: 0}, 32) == []


async def test_release_makes_a_delivery_due_at_once(contract_store: Store) -> None:
    s = contract_store
    await make_webhook(s)
    await s.ingest_event(WS, "t", {})
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    assert await s.release([(claim.delivery_id, "not-the-token")]) == 0
    assert await s.release([(claim.delivery_id, claim.lease_token)]) == 1
    (again,) = await s.claim_due(1, LEASE_MS, {}, 16)
    assert again.delivery_id == claim.delivery_id


async def test_secret_rotation_keeps_the_old_secret_for_the_grace_period(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    hook = await make_webhook(s, secret="old-secret-123")
    await s.update_webhook(WS, hook.id, WebhookChanges(secret="new-secret-456"), 60_000)
    await s.ingest_event(WS, "t", {})
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    assert claim.secrets == ("new-secret-456", "old-secret-123")
    await s.release([(claim.delivery_id, claim.lease_token)])
    clock.advance(61)
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    assert claim.secrets == ("new-secret-456",)


async def test_claim_looks_past_webhooks_at_their_limit(contract_store: Store) -> None:
    s = contract_store
    slow = await make_webhook(s, events=("slow",))
    fast = await make_webhook(s, events=("fast",))
    # The slow endpoint's backlog fills the head of the queue, far past one scan window.
    await asyncio.gather(*(s.ingest_event(WS, "slow", {}) for _ in range(300)))
    await asyncio.gather(*(s.ingest_event(WS, "fast", {}) for _ in range(20)))
    claims = await s.claim_due(40, LEASE_MS, {}, 4)
    per_hook: dict[str, int] = {}
    for c in claims:
        per_hook[c.webhook_id] = per_hook.get(c.webhook_id, 0) + 1
    assert per_hook == {slow.id: 4, fast.id: 4}


async def test_claim_past_a_crowded_head_respects_each_webhooks_own_room(
    contract_store: Store,
) -> None:
    s = contract_store
    slow = await make_webhook(s, events=("slow",))
    narrow = await make_webhook(s, events=("narrow",))
    wide = await make_webhook(s, events=("wide",))
    await asyncio.gather(*(s.ingest_event(WS, "slow", {}) for _ in range(400)))
    narrow_ids = [(await s.ingest_event(WS, "narrow", {})).delivery_ids[0] for _ in range(10)]
    wide_ids = [(await s.ingest_event(WS, "wide", {})).delivery_ids[0] for _ in range(10)]
    claims = await s.claim_due(64, LEASE_MS, {slow.id: 0, narrow.id: 2}, 5)
    assert [c.delivery_id for c in claims if c.webhook_id == narrow.id] == narrow_ids[:2]
    assert [c.delivery_id for c in claims if c.webhook_id == wide.id] == wide_ids[:5]
    assert all(c.webhook_id != slow.id for c in claims)
    # Claims come back in the order they were due.
    assert [c.delivery_id for c in claims] == narrow_ids[:2] + wide_ids[:5]


async def test_claim_past_a_crowded_head_is_not_thinned_by_webhooks_with_nothing_due(
    contract_store: Store,
) -> None:
    """Past a head crowded by a webhook at its limit, the batch is shared among
    the webhooks that have due work, however many others have none."""
    s = contract_store
    slow = await make_webhook(s, events=("slow",))
    busy = [await make_webhook(s, events=(f"busy{n}",)) for n in range(2)]
    for n in range(60):
        await make_webhook(s, events=(f"idle{n}",))
    await asyncio.gather(*(s.ingest_event(WS, "slow", {}) for _ in range(200)))
    for hook in busy:
        await asyncio.gather(*(s.ingest_event(WS, hook.events[0], {}) for _ in range(30)))
    claims = await s.claim_due(64, LEASE_MS, {slow.id: 0}, 16)
    per_hook = Counter(c.webhook_id for c in claims)
    assert per_hook == {busy[0].id: 16, busy[1].id: 16}


async def test_a_backlog_that_may_not_go_hides_nothing_behind_it(
    contract_store: Store, clock: ManualClock
) -> None:
    """An inactive webhook's backlog, then a paused one's, at the head of the
    queue: other webhooks' work behind it is claimed and its due time known."""
    s = contract_store
    stuck = await make_webhook(s, events=("stuck",))
    live = await make_webhook(s, events=("live",))
    # Far past a claim's head window and next_due_at's.
    stuck_ids = [
        r.delivery_ids[0]
        for r in await s.ingest_events(WS, [NewEvent("stuck", {"n": n}) for n in range(300)])
    ]
    await s.update_webhook(WS, stuck.id, WebhookChanges(status=WebhookStatus.INACTIVE), 0)
    clock.advance(1)
    (live_id,) = (await s.ingest_event(WS, "live", {})).delivery_ids
    (claim,) = await s.claim_due(10, LEASE_MS, {}, 16)
    assert (claim.delivery_id, claim.webhook_id) == (live_id, live.id)
    # Its retry is the next thing due, whatever waits before it.
    retry = first_attempt(Outcome.FAILED, clock.now_ms())
    assert retry.next_attempt_at is not None and retry.next_attempt_at > clock.now_ms()
    await s.record_attempts([record_for(claim, retry, 500)])
    assert await s.next_due_at() == retry.next_attempt_at
    assert await s.claim_due(10, LEASE_MS, {}, 16) == []

    # Active again: its backlog goes first, in order; a 429 then parks the rest.
    await s.update_webhook(WS, stuck.id, WebhookChanges(status=WebhookStatus.ACTIVE), 0)
    first, second = await s.claim_due(2, LEASE_MS, {}, 16)
    assert [first.delivery_id, second.delivery_id] == stuck_ids[:2]
    limited = first_attempt(Outcome.RATE_LIMITED, clock.now_ms(), 60.0)
    shorter = first_attempt(Outcome.RATE_LIMITED, clock.now_ms(), 5.0)
    await s.record_attempts([record_for(first, limited, 429)])
    # A later answer asking for less leaves the longer pause in place.
    await s.record_attempts([record_for(second, shorter, 429)])
    paused = await s.get_webhook(None, stuck.id)
    assert paused is not None and paused.paused_until == clock.now_ms() + 60_000
    clock.advance(1)
    (live_2,) = (await s.ingest_event(WS, "live", {})).delivery_ids
    assert [c.delivery_id for c in await s.claim_due(10, LEASE_MS, {}, 16)] == [live_2]
    assert await s.next_due_at() == min(retry.next_attempt_at, clock.now_ms() + 59_000)
    # The backlog waiting for its pause is not late work.
    assert (await s.queue_stats()).oldest_due_ms is None
    # When the pause ends the waiting deliveries go in the order they came.
    clock.advance(60)
    claims = await s.claim_due(5, LEASE_MS, {}, 16)
    resumed = [c.delivery_id for c in claims if c.webhook_id == stuck.id]
    # (The live webhook's retry may be due by now too.)
    assert len(resumed) >= 4 and resumed == stuck_ids[2 : 2 + len(resumed)]


async def test_another_workspaces_fresh_event_is_not_held_back_by_a_backlog(
    contract_store: Store, clock: ManualClock
) -> None:
    """One workspace's backlog over many webhooks, all due long ago; another
    workspace's event, due now, is claimed within a few claims, not after the
    backlog (storage/fairness.py)."""
    s = contract_store
    for n in range(20):
        await make_webhook(s, workspace="ws_busy", name=f"busy {n}")
    await s.ingest_events("ws_busy", [NewEvent("t", {"i": i}) for i in range(30)])
    clock.advance(600)
    await make_webhook(s, workspace="ws_quiet")
    (fresh,) = (await s.ingest_event("ws_quiet", "t", {})).delivery_ids
    claimed: list[str] = []
    for _ in range(3):
        clock.advance(0.2)
        claimed += [c.delivery_id for c in await s.claim_due(16, LEASE_MS, {}, 16)]
        if fresh in claimed:
            break
    assert fresh in claimed
    assert len(claimed) <= 48  # 600 were queued before it


async def test_a_workspace_with_one_webhook_gets_its_share_of_a_claim_beside_many(
    contract_store: Store, clock: ManualClock
) -> None:
    """Fresh work of a workspace with one webhook, beside another's backlog over
    twenty: a fair claim gives it half the batch, not the few rows each
    webhook's queue is first read for (storage/fairness.py, top_ups)."""
    s = contract_store
    for n in range(20):
        await make_webhook(s, workspace="ws_busy", name=f"busy {n}")
    await s.ingest_events("ws_busy", [NewEvent("t", {"i": i}) for i in range(30)])
    clock.advance(600)
    quiet = await make_webhook(s, workspace="ws_quiet")
    await s.ingest_events("ws_quiet", [NewEvent("t", {"i": i}) for i in range(40)])
    per_claim = []
    for _ in range(3):
        clock.advance(0.2)
        claims = await s.claim_due(16, LEASE_MS, {}, 16)
        assert len(claims) == 16
        per_claim.append(sum(c.webhook_id == quiet.id for c in claims))
    assert max(per_claim) == 8, per_claim
