"""The contract of recording attempts: each record fenced by its own lease, its side
effects in place before the next claim."""

from __future__ import annotations

import pytest

from hookd.clock import ManualClock
from hookd.lifecycle import Transition
from hookd.models import Status, WebhookStatus
from hookd.policy import Outcome
from hookd.storage import Store
from tests.support.storage import LEASE_MS, WS, delivered, first_attempt, make_webhook, record_for


async def test_settle_and_claim_writes_records_before_claiming(
    contract_store: Store, clock: ManualClock
) -> None:
    """The scheduler's round trip: a 429's pause is in place before the claim
    in the same transaction looks at its webhook; fenced records are reported."""
    s = contract_store
    limited_hook = await make_webhook(s, events=("limited",))
    healthy = await make_webhook(s, events=("healthy",))
    for _ in range(3):
        await s.ingest_event(WS, "limited", {})
    (first,) = await s.claim_due(1, LEASE_MS, {}, 16)
    assert first.webhook_id == limited_hook.id
    stale_hook_claim = first
    await s.ingest_event(WS, "healthy", {})
    await s.ingest_event(WS, "healthy", {})
    limited = first_attempt(Outcome.RATE_LIMITED, clock.now_ms(), 30.0)
    results, claims = await s.settle_and_claim(
        [record_for(first, limited, 429)], 10, LEASE_MS, {}, 16
    )
    assert [(r.delivery_id, r.applied, r.status) for r in results] == [
        (first.delivery_id, True, Status.RATE_LIMITED)
    ]
    # The limited webhook's two waiting deliveries stay behind its pause.
    assert [c.webhook_id for c in claims] == [healthy.id, healthy.id]
    # Settling a lease that moved on is reported, not applied; an empty claim is fine.
    results, claims = await s.settle_and_claim(
        [record_for(stale_hook_claim, delivered())], 0, LEASE_MS, {}, 16
    )
    assert [(r.applied, r.status) for r in results] == [(False, Status.RATE_LIMITED)]
    assert claims == []
    assert len(await s.list_attempts(first.delivery_id)) == 2


async def test_a_stale_lease_can_never_overwrite_a_newer_attempt(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    await make_webhook(s)
    (delivery_id,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    (old,) = await s.claim_due(1, LEASE_MS, {}, 16)
    clock.advance(LEASE_MS / 1000 + 1)
    (new,) = await s.claim_due(1, LEASE_MS, {}, 16)
    assert new.lease_token != old.lease_token
    failed = Transition(Status.FAILED, clock.now_ms() + 5000, 1, 0, None)
    (fresh,) = await s.record_attempts([record_for(new, failed, 500)])
    assert fresh.applied
    (stale,) = await s.record_attempts([record_for(old, delivered())])
    assert not stale.applied and stale.status is Status.FAILED
    d = await s.get_delivery(WS, delivery_id)
    assert d is not None and d.status is Status.FAILED and d.last_status_code == 500
    # Both requests went out, so both are on record, and counted.
    assert len(await s.list_attempts(delivery_id)) == 2 == d.attempt_count


async def test_one_settle_writes_each_record_as_if_alone(
    contract_store: Store, clock: ManualClock
) -> None:
    """A batch of records: each applied or fenced by its own lease, every field
    of its transition stored, every attempt on record, even for one delivery
    listed twice (a stale lease's record beside the current one)."""
    s = contract_store
    await make_webhook(s)
    ids = [(await s.ingest_event(WS, "t", {"i": i})).delivery_ids[0] for i in range(4)]
    (old,) = await s.claim_due(1, LEASE_MS, {}, 16)
    clock.advance(LEASE_MS / 1000 + 1)
    claims = await s.claim_due(10, LEASE_MS, {}, 16)
    by_id = {c.delivery_id: c for c in claims}
    assert sorted(by_id) == sorted(ids) and by_id[old.delivery_id].lease_token != old.lease_token
    retry_at = clock.now_ms() + 7000
    failed = Transition(Status.FAILED, retry_at, 1, 0, None)
    dead = Transition(Status.DEAD_LETTER, None, 3, 0, None, dead_letter_reason="why not")
    records = [
        record_for(by_id[ids[0]], delivered()),
        record_for(old, delivered()),  # stale: the delivery was claimed again since
        record_for(by_id[ids[1]], failed, 500),
        record_for(by_id[ids[2]], dead, 400),
        record_for(by_id[ids[0]], delivered()),  # its lease was spent by the first record
    ]
    results, _ = await s.settle_and_claim(records, 0, LEASE_MS, {}, 16)
    assert [(r.delivery_id, r.applied) for r in results] == [
        (ids[0], True),
        (old.delivery_id, False),
        (ids[1], True),
        (ids[2], True),
        (ids[0], False),
    ]
    d1 = await s.get_delivery(WS, ids[1])
    assert d1 is not None
    assert (d1.status, d1.next_attempt_at, d1.budget_used, d1.attempt_count) == (
        Status.FAILED,
        retry_at,
        1,
        1,
    )
    assert (d1.last_status_code, d1.last_response_body) == (500, "ok")
    d2 = await s.get_delivery(WS, ids[2])
    assert d2 is not None and d2.status is Status.DEAD_LETTER and d2.last_status_code == 400
    assert len(await s.list_attempts(ids[0])) == 2 + (old.delivery_id == ids[0])
    assert sum([len(await s.list_attempts(i)) for i in ids]) == len(records)
    for delivery_id in ids:
        d = await s.get_delivery(WS, delivery_id)
        assert d is not None and d.attempt_count == len(await s.list_attempts(delivery_id))


async def test_pauses_and_deactivations_of_a_round_trip_precede_its_claim(
    contract_store: Store, clock: ManualClock
) -> None:
    """Two 429s (the longer pause wins) and a 410 recorded in the round trip
    that claims next: neither webhook's waiting work is claimed by it."""
    s = contract_store
    limited = await make_webhook(s, events=("limited",))
    gone = await make_webhook(s, events=("gone",))
    healthy = await make_webhook(s, events=("healthy",))
    for event_type in ("limited", "limited", "gone", "gone"):
        await s.ingest_event(WS, event_type, {})
    claims = await s.claim_due(4, LEASE_MS, {}, 16)
    by_hook = {h: [c for c in claims if c.webhook_id == h] for h in (limited.id, gone.id)}
    for event_type in ("limited", "gone", "healthy"):
        await s.ingest_event(WS, event_type, {})
    now = clock.now_ms()
    longer, shorter = (first_attempt(Outcome.RATE_LIMITED, now, wait) for wait in (60.0, 5.0))
    answered_gone = first_attempt(Outcome.GONE, now)
    records = [
        record_for(by_hook[limited.id][0], longer, 429),
        record_for(by_hook[limited.id][1], shorter, 429),
        record_for(by_hook[gone.id][0], answered_gone, 410),
        record_for(by_hook[gone.id][1], delivered()),
    ]
    results, claimed = await s.settle_and_claim(records, 10, LEASE_MS, {}, 16)
    assert [r.applied for r in results] == [True] * 4
    assert [c.webhook_id for c in claimed] == [healthy.id]
    paused = await s.get_webhook(WS, limited.id)
    assert paused is not None and paused.paused_until == now + 60_000
    inactive = await s.get_webhook(WS, gone.id)
    assert inactive is not None and inactive.status is WebhookStatus.INACTIVE
    assert inactive.disabled_reason == "endpoint answered 410 Gone"
    assert await s.claim_due(10, LEASE_MS, {}, 16) == []


async def test_a_fenced_record_among_current_ones_is_the_only_one_refused(
    contract_store: Store, clock: ManualClock
) -> None:
    """Distinct deliveries in one round trip, one of them re-claimed since: the
    others are applied and the new batch claimed; every attempt is on record once."""
    s = contract_store
    await make_webhook(s)
    ids = [(await s.ingest_event(WS, "t", {"i": i})).delivery_ids[0] for i in range(3)]
    first = await s.claim_due(3, LEASE_MS, {}, 16)
    clock.advance(LEASE_MS / 1000 + 1)
    (again,) = await s.claim_due(1, LEASE_MS, {}, 16)  # the oldest, under a new lease
    assert again.delivery_id == ids[0]
    later = (await s.ingest_event(WS, "t", {"i": 3})).delivery_ids[0]
    results, claims = await s.settle_and_claim(
        [record_for(c, delivered()) for c in first], 10, LEASE_MS, {}, 16
    )
    assert [(r.delivery_id, r.applied) for r in results] == [
        (ids[0], False),
        (ids[1], True),
        (ids[2], True),
    ]
    assert [c.delivery_id for c in claims] == [later]
    for delivery_id, status in ((ids[0], Status.PENDING), (ids[1], Status.DELIVERED)):
        d = await s.get_delivery(WS, delivery_id)
        assert d is not None and d.status is status
    assert [len(await s.list_attempts(i)) for i in ids] == [1, 1, 1]


async def test_a_fenced_record_brings_no_pause_and_no_deactivation(
    contract_store: Store, clock: ManualClock
) -> None:
    """A 429 whose lease was taken over and a 410 whose lease an earlier record of
    the batch spent: their attempts are on record, their webhooks untouched."""
    s = contract_store
    limited = await make_webhook(s, events=("limited",))
    gone = await make_webhook(s, events=("gone",))
    (late,) = (await s.ingest_event(WS, "limited", {})).delivery_ids
    (done,) = (await s.ingest_event(WS, "gone", {})).delivery_ids
    old = {c.delivery_id: c for c in await s.claim_due(2, LEASE_MS, {}, 16)}
    clock.advance(LEASE_MS / 1000 + 1)
    (again,) = await s.claim_due(1, LEASE_MS, {gone.id: 0}, 16)
    assert again.delivery_id == late
    now = clock.now_ms()
    records = [
        record_for(old[late], first_attempt(Outcome.RATE_LIMITED, now, 60.0), 429),
        record_for(old[done], delivered()),
        record_for(old[done], first_attempt(Outcome.GONE, now), 410),
    ]
    results = await s.record_attempts(records)
    assert [(r.applied, r.status) for r in results] == [
        (False, Status.PENDING),
        (True, Status.DELIVERED),
        (False, Status.DELIVERED),
    ]
    paused = await s.get_webhook(WS, limited.id)
    assert paused is not None and paused.paused_until is None
    active = await s.get_webhook(WS, gone.id)
    assert active is not None and active.status is WebhookStatus.ACTIVE
    assert active.disabled_reason is None
    assert [len(await s.list_attempts(i)) for i in (late, done)] == [1, 2]


@pytest.mark.parametrize(
    ("body", "stored"),
    [
        ("plain", "plain"),
        ('ünïcødé € \U0001f600 "quoted" \\ \n', 'ünïcødé € \U0001f600 "quoted" \\ \n'),
        # Every backend stores NUL as U+FFFD (PostgreSQL's text cannot hold it).
        ("nul \x00 inside", "nul \ufffd inside"),
        ("", ""),
    ],
)
async def test_recorded_text_is_stored_exactly(
    contract_store: Store, body: str, stored: str
) -> None:
    s = contract_store
    await make_webhook(s)
    ids = [(await s.ingest_event(WS, "t", {})).delivery_ids[0] for _ in range(2)]
    claims = await s.claim_due(2, LEASE_MS, {}, 16)
    records = [record_for(c, delivered(), error=body or None, response_body=body) for c in claims]
    await s.settle_and_claim(records, 0, LEASE_MS, {}, 16)
    for delivery_id in ids:
        d = await s.get_delivery(WS, delivery_id)
        assert d is not None and d.last_response_body == stored
        (attempt,) = await s.list_attempts(delivery_id)
        assert (attempt.response_body, attempt.error) == (stored, stored or None)


async def test_record_applies_transition_and_webhook_side_effects(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    hook = await make_webhook(s)
    (delivery_id,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    gone = first_attempt(Outcome.GONE, clock.now_ms())
    (res,) = await s.record_attempts([record_for(claim, gone, 410)])
    assert res.applied and res.status is Status.DEAD_LETTER
    w = await s.get_webhook(WS, hook.id)
    assert w is not None and w.status is WebhookStatus.INACTIVE
    assert w.disabled_reason == "endpoint answered 410 Gone"
    d = await s.get_delivery(WS, delivery_id)
    assert d is not None and d.next_attempt_at is None and d.attempt_count == 1
