"""The contract of ingest: fan-out, event bodies, idempotency keys, group commits."""

from __future__ import annotations

import asyncio
import json

import pytest

from hookd.clock import ManualClock
from hookd.models import Status, WebhookStatus
from hookd.policy import Outcome
from hookd.storage import DeliveryFilter, IdempotencyConflict, NewEvent, Store, WebhookChanges
from tests.support.storage import (
    IDEMPOTENCY_WINDOW_MS,
    LEASE_MS,
    WS,
    first_attempt,
    make_webhook,
    record_for,
)


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
    first = await s.ingest_event(WS, "t", {"v": 1, "w": [1, 2]}, idempotency_key="k1")
    # The same data, keys in another order: the same event.
    again = await s.ingest_event(WS, "t", {"w": [1, 2], "v": 1}, idempotency_key="k1")
    assert again.duplicate and again.event.id == first.event.id
    assert again.delivery_ids == first.delivery_ids
    assert again.event.body == first.event.body
    other_ws = await s.ingest_event("ws_b", "t", {}, idempotency_key="k1")
    assert not other_ws.duplicate
    with pytest.raises(IdempotencyConflict) as other_type:
        await s.ingest_event(WS, "other.type", {}, idempotency_key="k1")
    assert other_type.value.differs == "type"
    with pytest.raises(IdempotencyConflict) as other_data:
        await s.ingest_event(WS, "t", {"v": 2, "w": [1, 2]}, idempotency_key="k1")
    assert other_data.value.differs == "data"
    assert str(other_data.value) == "idempotencyKey: already used for an event with other data"
    page = await s.list_deliveries(WS, DeliveryFilter(), 50)
    assert len(page.items) == 1
    clock.advance(IDEMPOTENCY_WINDOW_MS / 1000 + 1)
    later = await s.ingest_event(WS, "t", {}, idempotency_key="k1")
    assert not later.duplicate and later.event.id != first.event.id


async def test_concurrent_ingests_are_group_committed_and_all_kept(contract_store: Store) -> None:
    s = contract_store
    await make_webhook(s)
    results = await asyncio.gather(*(s.ingest_event(WS, "t", {"i": i}) for i in range(300)))
    ids = {r.event.id for r in results}
    assert len(ids) == 300
    same_key = await asyncio.gather(
        *(s.ingest_event(WS, "t", {"same": 1}, idempotency_key="dup") for _ in range(20))
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
    limited = first_attempt(Outcome.RATE_LIMITED, clock.now_ms(), 45.0)
    await s.record_attempts([record_for(claim, limited, 429)])
    (later,) = (await s.ingest_event(WS, "t", {})).delivery_ids
    d = await s.get_delivery(WS, later)
    assert d is not None and d.next_attempt_at == clock.now_ms() + 45_000


async def test_keyed_and_plain_ingests_in_one_group_are_all_kept(contract_store: Store) -> None:
    s = contract_store
    await make_webhook(s)
    results = await asyncio.gather(
        *(
            s.ingest_event(
                WS,
                "t",
                {"i": i % 5} if i % 2 else {"i": i},
                idempotency_key=f"k{i % 5}" if i % 2 else None,
            )
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


async def test_a_batch_is_stored_whole_or_not_at_all(contract_store: Store) -> None:
    """A batch's results come in its order; a key repeated in it (or from before) gives the
    original back; an event that conflicts or cannot be serialized fails the whole batch,
    naming its index, and stores none of it."""
    s = contract_store
    await make_webhook(s)
    earlier = await s.ingest_event(WS, "t", {"v": 0}, idempotency_key="before")
    results = await s.ingest_events(
        WS,
        [
            NewEvent("t", {"v": 1}),
            NewEvent("t", {"v": 2}, "k"),
            NewEvent("t", {"v": 2}, "k"),
            NewEvent("t", {"v": 0}, "before"),
        ],
    )
    assert [json.loads(r.event.body)["data"] for r in results] == [
        {"v": 1},
        {"v": 2},
        {"v": 2},
        {"v": 0},
    ]
    assert [r.duplicate for r in results] == [False, False, True, True]
    assert results[2].event.id == results[1].event.id
    assert results[3].event.id == earlier.event.id
    stored = (await s.list_deliveries(WS, DeliveryFilter(), 50)).items
    assert len(stored) == 3

    with pytest.raises(IdempotencyConflict) as conflict:
        await s.ingest_events(WS, [NewEvent("t", {"new": 1}), NewEvent("t", {"v": 3}, "k")])
    assert (conflict.value.index, conflict.value.differs) == (1, "data")
    with pytest.raises(IdempotencyConflict) as conflict:
        await s.ingest_events(WS, [NewEvent("t", {}, "x"), NewEvent("other", {}, "x")])
    assert (conflict.value.index, conflict.value.differs) == (1, "type")
    with pytest.raises(ValueError, match=r"^events\[2\]\.data: "):
        await s.ingest_events(
            WS, [NewEvent("t", {}), NewEvent("t", {}, "y"), NewEvent("t", {"x": float("inf")})]
        )
    assert len((await s.list_deliveries(WS, DeliveryFilter(), 50)).items) == 3
    # Nothing of the refused batches took its key.
    fresh = await s.ingest_event(WS, "other", {}, idempotency_key="x")
    assert not fresh.duplicate
