"""The storage contract: every Store implementation must pass this suite.

The ``contract_store`` fixture is parametrized over the implementations; a new
backend (PostgreSQL for multi-node use) adds itself to ``BACKENDS`` and must
pass unchanged.  Each test talks to the store only through the ``Store``
protocol, with the manual clock driving leases and windows.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from hookd.clock import ManualClock
from hookd.lifecycle import Counters, Transition, decide, test_send_result
from hookd.models import NewWebhook, Status, Webhook, WebhookStatus
from hookd.policy import Outcome
from hookd.storage import (
    AttemptRecord,
    DeliveryFilter,
    IdempotencyConflict,
    Store,
    StoreError,
    WebhookChanges,
)
from hookd.storage.base import NewEvent
from hookd.storage.sqlite import SqliteStore

LEASE_MS = 90_000
WS = "ws_a"


async def _sqlite(tmp_path: Path, clock: ManualClock) -> Store:
    store = SqliteStore(tmp_path / "contract.db", clock, idempotency_window_ms=86_400_000)
    await store.open()
    return store


BACKENDS: dict[str, Callable[[Path, ManualClock], Awaitable[Store]]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
async def contract_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Store]:
    store = await BACKENDS[request.param](tmp_path, clock)
    yield store
    await store.close()


async def make_webhook(store: Store, workspace: str = WS, **overrides: object) -> Webhook:
    fields: dict[str, object] = {
        "workspace_id": workspace,
        "name": "hook",
        "url": "https://example.com/hook",
        "events": ("*",),
        "secret": "secret-one-0123",
        "retry_attempts": 3,
        "timeout_ms": 1000,
        "created_by": "user_1",
    }
    fields.update(overrides)
    return await store.create_webhook(NewWebhook(**fields))  # type: ignore[arg-type]


def record_for(claim, transition: Transition, status_code: int | None = 200) -> AttemptRecord:  # type: ignore[no-untyped-def]
    return AttemptRecord(
        delivery_id=claim.delivery_id,
        lease_token=claim.lease_token,
        webhook_id=claim.webhook_id,
        number=claim.attempt_count + 1,
        started_at=0,
        duration_ms=5,
        status_code=status_code,
        error=None,
        response_body="ok",
        outcome="2xx",
        transition=transition,
    )


def delivered() -> Transition:
    return Transition(Status.DELIVERED, None, 1, 0, None)


# -- ingest and fan-out ------------------------------------------------------------


async def test_ingest_fans_out_to_matching_active_webhooks(contract_store: Store) -> None:
    s = contract_store
    exact = await make_webhook(s, events=("email.replied",))
    star = await make_webhook(s, events=("*",))
    prefix = await make_webhook(s, events=("email.*",))
    other = await make_webhook(s, events=("invoice.paid", "email.bounced"))
    inactive = await make_webhook(s, events=("*",))
    await s.update_webhook(WS, inactive.id, WebhookChanges(status=WebhookStatus.INACTIVE), 0)
    deleted = await make_webhook(s, events=("*",))
    await s.delete_webhook(WS, deleted.id)
    elsewhere = await make_webhook(s, workspace="ws_b", events=("*",))

    result = await s.ingest_event(WS, "email.replied", {"to": "a@b.c"})
    targets = set()
    for delivery_id in result.delivery_ids:
        d = await s.get_delivery(WS, delivery_id)
        assert d is not None
        assert d.status is Status.PENDING and d.event_id == result.event.id
        targets.add(d.webhook_id)
    assert targets == {exact.id, star.id, prefix.id}
    assert other.id not in targets and elsewhere.id not in targets
    assert not result.duplicate

    deep = await s.ingest_event(WS, "email.bounce.hard", {})
    assert len(deep.delivery_ids) == 2  # "*" and "email.*" match any depth


async def test_event_body_is_serialized_once_in_the_spec_shape(contract_store: Store) -> None:
    s = contract_store
    await make_webhook(s)
    result = await s.ingest_event(WS, "user.created", {"name": "Zoë", "n": [1, 2.5, None]})
    body = json.loads(result.event.body)
    assert list(body) == ["id", "type", "createdAt", "workspaceId", "data"]
    assert body["id"] == result.event.id
    assert body["workspaceId"] == WS
    assert body["createdAt"].endswith("Z") and len(body["createdAt"]) == 24
    assert body["data"] == {"name": "Zoë", "n": [1, 2.5, None]}
    stored = await s.get_event(WS, result.event.id)
    assert stored is not None and stored.body == result.event.body
    (claim,) = await s.claim_due(10, LEASE_MS, {}, 16)
    assert claim.body == result.event.body


async def test_unserializable_data_stores_nothing(contract_store: Store) -> None:
    s = contract_store
    await make_webhook(s)
    with pytest.raises(ValueError, match="Out of range float"):
        await s.ingest_event(WS, "t", {"x": float("nan")})
    page = await s.list_deliveries(WS, DeliveryFilter(), 50)
    assert page.items == []


async def test_idempotency_key_returns_the_original_within_the_window(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    await make_webhook(s)
    first = await s.ingest_event(WS, "t", {"v": 1}, idempotency_key="k1")
    again = await s.ingest_event(WS, "t", {"v": 2}, idempotency_key="k1")
    assert again.duplicate and again.event.id == first.event.id
    assert again.delivery_ids == first.delivery_ids
    assert again.event.body == first.event.body
    other_ws = await s.ingest_event("ws_b", "t", {}, idempotency_key="k1")
    assert not other_ws.duplicate
    with pytest.raises(IdempotencyConflict):
        await s.ingest_event(WS, "other.type", {}, idempotency_key="k1")
    page = await s.list_deliveries(WS, DeliveryFilter(), 50)
    assert len(page.items) == 1
    clock.advance(86_401)
    later = await s.ingest_event(WS, "t", {}, idempotency_key="k1")
    assert not later.duplicate and later.event.id != first.event.id


async def test_concurrent_ingests_are_group_committed_and_all_kept(contract_store: Store) -> None:
    s = contract_store
    await make_webhook(s)
    results = await asyncio.gather(*(s.ingest_event(WS, "t", {"i": i}) for i in range(300)))
    ids = {r.event.id for r in results}
    assert len(ids) == 300
    same_key = await asyncio.gather(
        *(s.ingest_event(WS, "t", {"i": i}, idempotency_key="dup") for i in range(20))
    )
    assert len({r.event.id for r in same_key}) == 1
    assert sum(not r.duplicate for r in same_key) == 1
    page = await s.list_deliveries(WS, DeliveryFilter(), 200)
    assert len(page.items) == 200 and page.next_cursor is not None


async def _targets(s: Store, event_type: str = "t", workspace: str = WS) -> set[str]:
    result = await s.ingest_event(workspace, event_type, {})
    targets = set()
    for delivery_id in result.delivery_ids:
        d = await s.get_delivery(workspace, delivery_id)
        assert d is not None
        targets.add(d.webhook_id)
    return targets


async def test_fan_out_follows_every_webhook_change_between_ingests(
    contract_store: Store,
) -> None:
    """What an earlier ingest saw of the webhooks never decides a later fan-out."""
    s = contract_store
    first = await make_webhook(s, events=("t",))
    assert await _targets(s) == {first.id}
    second = await make_webhook(s, events=("*",))
    assert await _targets(s) == {first.id, second.id}
    await s.update_webhook(WS, first.id, WebhookChanges(events=("other",)), 0)
    assert await _targets(s) == {second.id}
    assert await _targets(s, "other") == {first.id, second.id}
    await s.update_webhook(WS, second.id, WebhookChanges(status=WebhookStatus.INACTIVE), 0)
    assert await _targets(s) == set()
    await s.update_webhook(WS, second.id, WebhookChanges(status=WebhookStatus.ACTIVE), 0)
    assert await _targets(s) == {second.id}
    await s.delete_webhook(WS, second.id)
    assert await _targets(s) == set()
    # A workspace seen for the first time, beside one already seen, in one group.
    elsewhere = await make_webhook(s, workspace="ws_new", events=("*",))
    here, there = await asyncio.gather(_targets(s, "other"), _targets(s, "t", "ws_new"))
    assert (here, there) == ({first.id}, {elsewhere.id})


async def test_new_work_for_a_paused_webhook_waits_for_the_pause(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    await make_webhook(s)
    await s.ingest_event(WS, "t", {})  # the webhook's subscriptions are now known
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    limited = decide(
        Counters(0, 3, 0, None), Outcome.RATE_LIMITED, 45.0, clock.now_ms(), _cfg(), _rng()
    )
    await s.record_attempts([record_for(claim, limited, 429)])
    (later,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    d = await s.get_delivery(WS, later)
    assert d is not None and d.next_attempt_at == clock.now_ms() + 45_000


async def test_keyed_and_plain_ingests_in_one_group_are_all_kept(contract_store: Store) -> None:
    s = contract_store
    await make_webhook(s)
    results = await asyncio.gather(
        *(
            s.ingest_event(WS, "t", {"i": i}, idempotency_key=f"k{i % 5}" if i % 2 else None)
            for i in range(60)
        ),
        s.ingest_events(WS, [NewEvent("t", {"b": j}, None) for j in range(4)]),
        s.ingest_events(WS, [NewEvent("t", {"b": 9}, "kb")]),
    )
    singles = results[:60]
    plain = [r for i, r in enumerate(singles) if i % 2 == 0]
    keyed = [r for i, r in enumerate(singles) if i % 2]
    assert all(not r.duplicate for r in plain)  # type: ignore[union-attr]
    assert sum(not r.duplicate for r in keyed) == 5  # type: ignore[union-attr]
    stored = set()
    for r in [*plain, *keyed, *results[60], *results[61]]:  # type: ignore[misc]
        event = await s.get_event(WS, r.event.id)
        assert event is not None and event.body == r.event.body
        stored.add(r.event.id)
    assert len(stored) == 30 + 5 + 4 + 1
    page = await s.list_deliveries(WS, DeliveryFilter(), 100)
    assert len(page.items) == 40


# -- claims and leases ------------------------------------------------------------------


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
    limited = decide(
        Counters(0, 3, 0, None), Outcome.RATE_LIMITED, 60.0, clock.now_ms(), _cfg(), _rng()
    )
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
    limited = decide(
        Counters(0, 3, 0, None), Outcome.RATE_LIMITED, 30.0, clock.now_ms(), _cfg(), _rng()
    )
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


def _cfg():  # type: ignore[no-untyped-def]
    from hookd.config import DeliveryConfig

    return DeliveryConfig()


def _rng():  # type: ignore[no-untyped-def]
    import random

    return random.Random(0)


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
    # Both requests went out, so both are on record.
    assert len(await s.list_attempts(delivery_id)) == 2


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
    longer, shorter = (
        decide(Counters(0, 3, 0, None), Outcome.RATE_LIMITED, wait, now, _cfg(), _rng())
        for wait in (60.0, 5.0)
    )
    answered_gone = decide(Counters(0, 3, 0, None), Outcome.GONE, None, now, _cfg(), _rng())
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


@pytest.mark.parametrize(
    "body", ["plain", 'ünïcødé € \U0001f600 "quoted" \\ \n', "nul \x00 inside", ""]
)
async def test_recorded_text_is_stored_exactly(contract_store: Store, body: str) -> None:
    s = contract_store
    await make_webhook(s)
    ids = [(await s.ingest_event(WS, "t", {})).delivery_ids[0] for _ in range(2)]
    claims = await s.claim_due(2, LEASE_MS, {}, 16)
    records = [
        record_for(c, delivered())._replace(response_body=body, error=body or None) for c in claims
    ]
    await s.settle_and_claim(records, 0, LEASE_MS, {}, 16)
    for delivery_id in ids:
        d = await s.get_delivery(WS, delivery_id)
        assert d is not None and d.last_response_body == body
        (attempt,) = await s.list_attempts(delivery_id)
        assert (attempt.response_body, attempt.error) == (body, body or None)


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


async def test_record_applies_transition_and_webhook_side_effects(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    hook = await make_webhook(s)
    (delivery_id,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    gone = decide(Counters(0, 3, 0, None), Outcome.GONE, None, clock.now_ms(), _cfg(), _rng())
    (res,) = await s.record_attempts([record_for(claim, gone, 410)])
    assert res.applied and res.status is Status.DEAD_LETTER
    w = await s.get_webhook(WS, hook.id)
    assert w is not None and w.status is WebhookStatus.INACTIVE
    assert w.disabled_reason == "endpoint answered 410 Gone"
    d = await s.get_delivery(WS, delivery_id)
    assert d is not None and d.next_attempt_at is None and d.attempt_count == 1


# -- operator actions -------------------------------------------------------------------


async def _dead_letter(s: Store) -> str:
    (delivery_id,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    dead = Transition(Status.DEAD_LETTER, None, 4, 2, 5, dead_letter_reason="budget")
    await s.record_attempts([record_for(claim, dead, 500)])
    return delivery_id


async def test_replay_gives_a_dead_letter_a_fresh_budget_once(contract_store: Store) -> None:
    s = contract_store
    await make_webhook(s)
    delivery_id = await _dead_letter(s)
    results = await asyncio.gather(
        *(s.claim_for_replay(WS, delivery_id, LEASE_MS) for _ in range(5))
    )
    winners = [r for r in results if r.claim is not None]
    assert len(winners) == 1
    assert all(r.found for r in results)
    assert sorted(r.status.value for r in results if r.claim is None) == ["pending"] * 4  # type: ignore[union-attr]
    claim = winners[0].claim
    assert claim is not None
    assert (claim.budget_used, claim.rate_limited_count, claim.rate_limited_since) == (0, 0, None)
    d = await s.get_delivery(WS, delivery_id)
    assert d is not None and d.status is Status.PENDING
    # The replaying caller holds the lease: the scheduler cannot take it meanwhile.
    assert await s.claim_due(10, LEASE_MS, {}, 16) == []
    assert (await s.claim_for_replay("ws_b", delivery_id, LEASE_MS)).found is False
    assert (await s.claim_for_replay(WS, "0" * 24, LEASE_MS)).found is False


async def test_bulk_replay_per_webhook_with_since(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    hook = await make_webhook(s)
    old = await _dead_letter(s)
    clock.advance(100)
    cutoff = clock.now_ms()
    new = await _dead_letter(s)
    assert await s.replay_webhook(WS, hook.id, cutoff) == 1
    assert (await s.get_delivery(WS, new)).status is Status.PENDING  # type: ignore[union-attr]
    assert (await s.get_delivery(WS, old)).status is Status.DEAD_LETTER  # type: ignore[union-attr]
    assert await s.replay_webhook(WS, hook.id, None) == 1
    assert await s.replay_webhook("ws_b", hook.id, None) is None


async def test_delete_webhook_ends_its_open_deliveries(contract_store: Store) -> None:
    s = contract_store
    hook = await make_webhook(s)
    (in_flight,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    (waiting,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    assert await s.delete_webhook("ws_b", hook.id) is False
    assert await s.delete_webhook(WS, hook.id) is True
    assert await s.get_webhook(WS, hook.id) is None
    for delivery_id in (in_flight, waiting):
        d = await s.get_delivery(WS, delivery_id)
        assert d is not None and d.status is Status.DEAD_LETTER
        assert d.last_error == "webhook deleted"
    (res,) = await s.record_attempts([record_for(claim, delivered())])
    assert not res.applied
    assert (await s.get_delivery(WS, in_flight)).status is Status.DEAD_LETTER  # type: ignore[union-attr]
    assert await s.delete_webhook(WS, hook.id) is False


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


async def test_test_delivery_is_never_claimed_by_the_scheduler(contract_store: Store) -> None:
    s = contract_store
    hook = await make_webhook(s)
    claim = await s.create_test_delivery(hook, "test", {"test": True})
    assert await s.claim_due(10, LEASE_MS, {}, 16) == []
    (res,) = await s.record_attempts(
        [record_for(claim, test_send_result(False, Counters(0, 0, 0, None)), 500)]
    )
    assert res.applied and res.status is Status.DEAD_LETTER
    d = await s.get_delivery(WS, claim.delivery_id)
    assert d is not None and d.is_test
    assert await s.replay_webhook(WS, hook.id, None) == 0


# -- listing -----------------------------------------------------------------------------


async def test_list_deliveries_newest_first_with_filters_and_cursor(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    a = await make_webhook(s, events=("a.*",))
    await make_webhook(s, events=("b.*",))
    created = []
    for i in range(7):
        clock.advance(1)
        created += (await s.ingest_event(WS, "a.x" if i % 2 == 0 else "b.y", {})).delivery_ids
    await s.ingest_event("ws_b", "a.x", {})
    seen: list[str] = []
    cursor = None
    while True:
        page = await s.list_deliveries(WS, DeliveryFilter(), 3, cursor)
        seen += [d.id for d in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(created))
    only_a = await s.list_deliveries(WS, DeliveryFilter(webhook_id=a.id), 50)
    assert {d.webhook_id for d in only_a.items} == {a.id} and len(only_a.items) == 4
    by_type = await s.list_deliveries(WS, DeliveryFilter(event_type="b.y"), 50)
    assert len(by_type.items) == 3
    start = clock.now_ms() - 3000
    window = await s.list_deliveries(WS, DeliveryFilter(since_ms=start, until_ms=start + 1000), 50)
    assert len(window.items) == 2
    assert len((await s.list_deliveries(WS, DeliveryFilter(status=Status.PENDING), 50)).items) == 7
    assert (await s.list_deliveries(WS, DeliveryFilter(status=Status.DELIVERED), 50)).items == []


async def test_list_webhooks_pages_in_creation_order(contract_store: Store) -> None:
    s = contract_store
    hooks = [await make_webhook(s, name=f"h{i}") for i in range(5)]
    await make_webhook(s, workspace="ws_b")
    first = await s.list_webhooks(WS, 2)
    second = await s.list_webhooks(WS, 2, first.next_cursor)
    third = await s.list_webhooks(WS, 2, second.next_cursor)
    assert [w.id for w in [*first.items, *second.items, *third.items]] == [h.id for h in hooks]
    assert third.next_cursor is None
    with pytest.raises(ValueError, match="cursor"):
        await s.list_webhooks(WS, 2, "garbage")


async def test_retention_removes_only_old_delivered(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    await make_webhook(s)
    (old,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    await s.record_attempts([record_for(claim, delivered())])
    pending_id = (await s.ingest_event(WS, "t", {})).delivery_ids[0]
    clock.advance(3600)
    assert await s.delete_delivered_before(clock.now_ms() - 1000, 100) == 1
    assert await s.get_delivery(WS, old) is None
    assert await s.list_attempts(old) == []
    assert await s.get_delivery(WS, pending_id) is not None


async def test_keys_are_found_by_digest_and_revocable(contract_store: Store) -> None:
    s = contract_store
    key = await s.create_api_key(None, b"\x01" * 32, "sk_user_abcd", "user_1")
    found = await s.find_api_key(b"\x01" * 32)
    assert found is not None and found[0].id == key.id and found[0].is_platform
    assert await s.find_api_key(b"\x02" * 32) is None
    assert await s.count_api_keys() == 1
    assert await s.revoke_api_key(key.id)
    assert not await s.revoke_api_key(key.id)
    revoked = await s.find_api_key(b"\x01" * 32)
    assert revoked is not None and revoked[0].revoked_at is not None
    assert await s.count_api_keys() == 0


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


# -- SQLite specifics ----------------------------------------------------------------------


async def test_sqlite_reopens_its_file_and_refuses_a_newer_schema(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "reopen.db"
    first = SqliteStore(path, clock)
    await first.open()
    await make_webhook(first)
    await first.close()
    second = SqliteStore(path, clock)
    await second.open()
    assert len((await second.list_webhooks(WS, 10)).items) == 1
    await second._call(lambda c: c.execute("INSERT INTO schema_migrations VALUES (999, 0)"))
    await second.close()
    third = SqliteStore(path, clock)
    with pytest.raises(StoreError, match="newer"):
        await third.open()


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


async def test_concurrent_replays_behind_an_inactive_webhook_replay_once(
    contract_store: Store,
) -> None:
    s = contract_store
    hook = await make_webhook(s)
    delivery_id = await _dead_letter(s)
    await s.update_webhook(WS, hook.id, WebhookChanges(status=WebhookStatus.INACTIVE), 0)
    results = await asyncio.gather(
        *(s.claim_for_replay(WS, delivery_id, LEASE_MS) for _ in range(4))
    )
    assert sum(r.replayed for r in results) == 1
    assert all(r.claim is None for r in results)


async def test_replay_waits_for_a_rate_limit_pause(
    contract_store: Store, clock: ManualClock
) -> None:
    s = contract_store
    await make_webhook(s)
    dead = await _dead_letter(s)
    await s.ingest_event(WS, "t", {})
    (claim,) = await s.claim_due(1, LEASE_MS, {}, 16)
    limited = decide(
        Counters(0, 3, 0, None), Outcome.RATE_LIMITED, 30.0, clock.now_ms(), _cfg(), _rng()
    )
    await s.record_attempts([record_for(claim, limited, 429)])
    replay = await s.claim_for_replay(WS, dead, LEASE_MS)
    assert replay.replayed and replay.claim is None
    d = await s.get_delivery(WS, dead)
    assert d is not None and d.status is Status.PENDING
    assert d.next_attempt_at == clock.now_ms() + 30_000


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
    retry = decide(Counters(0, 3, 0, None), Outcome.FAILED, None, clock.now_ms(), _cfg(), _rng())
    assert retry.next_attempt_at is not None and retry.next_attempt_at > clock.now_ms()
    await s.record_attempts([record_for(claim, retry, 500)])
    assert await s.next_due_at() == retry.next_attempt_at
    assert await s.claim_due(10, LEASE_MS, {}, 16) == []

    # Active again: its backlog goes first, in order; a 429 then parks the rest.
    await s.update_webhook(WS, stuck.id, WebhookChanges(status=WebhookStatus.ACTIVE), 0)
    first, second = await s.claim_due(2, LEASE_MS, {}, 16)
    assert [first.delivery_id, second.delivery_id] == stuck_ids[:2]
    limited = decide(
        Counters(0, 3, 0, None), Outcome.RATE_LIMITED, 60.0, clock.now_ms(), _cfg(), _rng()
    )
    shorter = decide(
        Counters(0, 3, 0, None), Outcome.RATE_LIMITED, 5.0, clock.now_ms(), _cfg(), _rng()
    )
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


async def test_sqlite_claim_cost_does_not_grow_with_a_backlog_that_may_not_go(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A claim, its nothing-due probe and next_due_at (whose statement also finds
    queue_stats' oldest due delivery) read a bounded head of the queue, not an
    inactive webhook's whole backlog (about 1 us a row each)."""
    store = SqliteStore(tmp_path / "cost.db", clock)
    await store.open()
    stuck = await make_webhook(store, events=("stuck",))
    live = await make_webhook(store, events=("live",))
    steps = 0

    def count(conn: object) -> None:
        def tick() -> int:
            nonlocal steps
            steps += 1
            return 0

        conn.set_progress_handler(tick, 100)  # type: ignore[attr-defined]

    async def cost(backlog: int) -> int:
        nonlocal steps
        await store.ingest_events(WS, [NewEvent("stuck", {}) for _ in range(backlog)])
        await store.update_webhook(WS, stuck.id, WebhookChanges(status=WebhookStatus.INACTIVE), 0)
        clock.advance(1)
        await store.ingest_event(WS, "live", {})
        await store._call(count)
        steps = 0
        claimed = await store.claim_due(10, LEASE_MS, {}, 16)
        assert [c.webhook_id for c in claimed] == [live.id]
        assert await store.settle_and_claim([], 10, LEASE_MS, {}, 16) == ([], [])
        await store.next_due_at()
        await store._call(lambda c: c.set_progress_handler(None, 0))
        await store.update_webhook(WS, stuck.id, WebhookChanges(status=WebhookStatus.ACTIVE), 0)
        return steps

    small = await cost(300)
    large = await cost(6_000)  # 6,300 waiting at the head now
    await store.close()
    assert large < small * 1.5, (small, large)


async def test_sqlite_claim_plan_walks_the_due_index_whatever_the_statistics(
    tmp_path: Path, clock: ManualClock
) -> None:
    from hookd.storage.sqlite import _CLAIM_SCAN_SQL, _WEBHOOK_QUEUES_SQL

    store = SqliteStore(tmp_path / "plan.db", clock)
    await store.open()
    await make_webhook(store)
    for _ in range(50):
        await store.ingest_event(WS, "t", {})
    # Statistics for webhooks alone: what PRAGMA optimize may leave behind.
    await store._call(lambda c: c.execute("ANALYZE webhooks"))
    plan = await store._call(
        lambda c: c.execute("EXPLAIN QUERY PLAN " + _CLAIM_SCAN_SQL, (0, 0, 10)).fetchall()
    )
    seek = await store._call(
        lambda c: c.execute(
            "EXPLAIN QUERY PLAN " + _WEBHOOK_QUEUES_SQL, (0, 0, "{}", 32, 10, "[]")
        ).fetchall()
    )
    await store.close()
    details = " | ".join(str(row[-1]) for row in plan)
    assert "deliveries_due" in details
    assert "TEMP B-TREE" not in details, details
    # The seek past webhooks at their limit reads each webhook's queue in order.
    details = " | ".join(str(row[-1]) for row in seek)
    assert "SEARCH deliveries USING INDEX deliveries_webhook_due" in details, details
    assert "TEMP B-TREE" not in details, details
