"""The contract of operator actions and reads: replay, webhook deletion, test sends, lists, keys."""

from __future__ import annotations

import asyncio

import pytest

from hookd.clock import ManualClock
from hookd.lifecycle import Counters, Transition, test_send_result
from hookd.models import Status, WebhookStatus
from hookd.policy import Outcome
from hookd.storage import DeliveryFilter, Store, WebhookChanges
from tests.support.storage import LEASE_MS, WS, delivered, first_attempt, make_webhook, record_for


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
    limited = first_attempt(Outcome.RATE_LIMITED, clock.now_ms(), 30.0)
    await s.record_attempts([record_for(claim, limited, 429)])
    replay = await s.claim_for_replay(WS, dead, LEASE_MS)
    assert replay.replayed and replay.claim is None
    d = await s.get_delivery(WS, dead)
    assert d is not None and d.status is Status.PENDING
    assert d.next_attempt_at == clock.now_ms() + 30_000


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
    ended = await s.get_delivery(WS, in_flight)
    assert ended is not None and ended.status is Status.DEAD_LETTER
    # The attempt in flight went out: on record and counted, the status kept.
    assert ended.attempt_count == 1 == len(await s.list_attempts(in_flight))
    assert await s.delete_webhook(WS, hook.id) is False


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
