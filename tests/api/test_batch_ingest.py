"""``POST /v1/events/batch``: many events, one durable commit, all or nothing.

Real HTTP into the real app, a real SQLite file read back with a separate
``sqlite3`` connection (as an operator or a crash would see it), and one suite
that SIGKILLs a real ``hookd serve`` while batches are in flight.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hookd.bodies import MAX_BATCH_EVENTS
from hookd.clock import ManualClock
from hookd.keys import generate_key
from hookd.models import IngestResult, NewWebhook
from hookd.storage import IdempotencyConflict
from hookd.storage.base import NewEvent
from hookd.storage.sqlite import SqliteStore
from tests.api.conftest import MAX_BODY_BYTES, Api, Reply
from tests.conftest import Receiver
from tests.daemon_proc import DaemonProcess, query
from tests.support.backends import committed_rows

BATCH = "/v1/events/batch"
EVENT_KEYS = {
    "_id",
    "workspaceId",
    "type",
    "idempotencyKey",
    "createdAt",
    "deliveryIds",
    "duplicate",
}


def ev(type_: str = "email.replied", data: Any = None, key: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "data": {} if data is None else data}
    if key is not None:
        out["idempotencyKey"] = key
    return out


async def post_batch(api: Api, key: str, events: list[Any], **kw: Any) -> Reply:
    return await api.call("POST", BATCH, key=key, json_body={"events": events}, **kw)


async def rows(api: Api, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """The database as a separate connection sees it: only what was committed."""
    return await committed_rows(api.store, sql, *args)


async def counts(api: Api) -> tuple[int, int]:
    (events,) = (await rows(api, "SELECT count(*) FROM events"))[0]
    (deliveries,) = (await rows(api, "SELECT count(*) FROM deliveries"))[0]
    return events, deliveries


# -- the answer and the fan-out ---------------------------------------------------------


async def test_batch_fans_out_each_event_and_answers_in_request_order(api: Api) -> None:
    # No attempt may move the deliveries on before they are read back.
    await api.scheduler.stop(drain_timeout=0)
    key = await api.key("ws_a")
    email = await api.webhook(key, events=["email.*"])
    every = await api.webhook(key, events=["*"])
    billing = await api.webhook(key, events=["billing.paid"])
    sent = [ev("email.replied", {"n": 0}), ev("billing.paid", {"n": 1}), ev("other.x", {"n": 2})]
    reply = await post_batch(api, key, sent)
    assert reply.status == 202, reply.body
    assert reply.body["success"] is True
    assert "Idempotent-Replayed" not in reply.headers
    data = reply.body["data"]
    assert [set(item) for item in data] == [EVENT_KEYS] * 3
    assert [item["type"] for item in data] == ["email.replied", "billing.paid", "other.x"]
    assert all(item["duplicate"] is False and item["workspaceId"] == "ws_a" for item in data)
    assert len({item["_id"] for item in data}) == 3
    expected = [{email["_id"], every["_id"]}, {every["_id"], billing["_id"]}, {every["_id"]}]
    for item, hooks in zip(data, expected, strict=True):
        stored = await rows(
            api,
            "SELECT webhook_id, event_id, status FROM deliveries WHERE event_id = ?",
            item["_id"],
        )
        assert {r[0] for r in stored} == hooks
        assert sorted(
            r[0]
            for r in await rows(api, "SELECT id FROM deliveries WHERE event_id = ?", item["_id"])
        ) == sorted(item["deliveryIds"])
        assert {r[2] for r in stored} == {"pending"}
    # Each event keeps its own body, in the shape every attempt sends.
    for item, event in zip(data, sent, strict=True):
        ((body,),) = await rows(api, "SELECT body FROM events WHERE id = ?", item["_id"])
        parsed = json.loads(body)
        assert list(parsed) == ["id", "type", "createdAt", "workspaceId", "data"]
        assert parsed["id"] == item["_id"] and parsed["data"] == event["data"]


async def test_batch_events_are_delivered(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    await api.webhook(key, url=receiver.url("/in"), events=["order.*"])
    reply = await post_batch(api, key, [ev("order.created", {"i": i}) for i in range(5)])
    assert reply.status == 202
    arrived = await receiver.wait_for("/in", 5)
    assert sorted(json.loads(r.body)["data"]["i"] for r in arrived) == list(range(5))
    ids = {item["_id"] for item in reply.body["data"]}
    assert {r.headers["X-Webhook-Id"] for r in arrived} == ids


async def test_workspace_is_created_on_first_use_by_a_platform_key(api: Api) -> None:
    platform = await api.key(None)
    reply = await post_batch(
        api, platform, [ev(), ev()], headers={"X-Workspace-Id": "ws_brand_new"}
    )
    assert reply.status == 202, reply.body
    assert {item["workspaceId"] for item in reply.body["data"]} == {"ws_brand_new"}
    assert await rows(api, "SELECT id FROM workspaces WHERE id = 'ws_brand_new'") == [
        ("ws_brand_new",)
    ]


# -- validation: all or nothing, before anything is stored -------------------------------


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([ev(), {"type": "bad type!", "data": {}}], "events[1].type: must be dotted words"),
        ([ev(), ev(), {"data": {}}], "events[2].type: is required"),
        ([{"type": "a.b"}], "events[0].data: is required"),
        ([ev(), "not an event"], "events[1]: must be a JSON object"),
        ([ev(), {**ev(), "extra": 1}], "events[1].extra: unknown field"),
        ([ev(), ev(key="")], "events[1].idempotencyKey: must be 1 to 255 characters"),
        ([ev(), {"type": 7, "data": {}}], "events[1].type: must be a string"),
        ([ev(), ev(key="has space")], "events[1].idempotencyKey: must be printable ASCII"),
        ([], "events: must not be empty"),
        ([ev()] * (MAX_BATCH_EVENTS + 1), f"events: must have at most {MAX_BATCH_EVENTS}"),
    ],
)
async def test_one_invalid_event_refuses_the_whole_batch(
    api: Api, events: list[Any], message: str
) -> None:
    key = await api.key("ws_a")
    await api.webhook(key)
    before = await counts(api)
    reply = await post_batch(api, key, events)
    assert reply.status == 400, reply.body
    assert reply.body["error"] == "Bad Request" and reply.body["code"] == 400
    assert reply.body["message"].startswith(message), reply.body["message"]
    assert await counts(api) == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"events": [ev()], "more": 1}, "more: unknown field"),
        ({}, "events: is required"),
        ({"events": {"type": "a"}}, "events: must be a list"),
        ([ev()], "body: must be a JSON object"),
    ],
)
async def test_the_envelope_is_validated_too(api: Api, body: Any, message: str) -> None:
    key = await api.key("ws_a")
    reply = await api.call("POST", BATCH, key=key, json_body=body)
    assert reply.status == 400
    assert reply.body["message"].startswith(message), reply.body["message"]
    assert await counts(api) == (0, 0)


async def test_a_batch_wide_idempotency_key_header_is_refused(api: Api) -> None:
    key = await api.key("ws_a")
    reply = await post_batch(api, key, [ev()], headers={"Idempotency-Key": "whole-batch"})
    assert reply.status == 400
    assert reply.body["message"].startswith("Idempotency-Key: not accepted on a batch")
    assert await counts(api) == (0, 0)


async def test_body_and_size_limits(api: Api) -> None:
    key = await api.key("ws_a")
    await api.webhook(key)
    # The most events allowed, each as small as it gets, fit the body limit and are stored.
    full = await post_batch(api, key, [ev("a", None)] * MAX_BATCH_EVENTS)
    assert full.status == 202, full.body
    assert len(full.body["data"]) == MAX_BATCH_EVENTS
    assert await counts(api) == (MAX_BATCH_EVENTS, MAX_BATCH_EVENTS)
    # A body over server.max_body_bytes is refused whole: 413, nothing stored.
    pad = "x" * 1000
    big = [ev(data={"pad": pad, "i": i}) for i in range(MAX_BODY_BYTES // 1000 + 1)]
    assert len(json.dumps({"events": big})) > MAX_BODY_BYTES
    reply = await post_batch(api, key, big)
    assert reply.status == 413
    assert reply.body["message"] == f"body: larger than the {MAX_BODY_BYTES} bytes allowed"
    assert await counts(api) == (MAX_BATCH_EVENTS, MAX_BATCH_EVENTS)
    # Nesting: an event's data may nest as deep as on the single route, not one level more.
    deep: Any = 1
    for _ in range(32):
        deep = [deep]
    reply = await post_batch(api, key, [ev(), ev(data=deep)])
    assert reply.status == 400
    assert reply.body["message"] == "events[1].data: nested deeper than 31 levels"
    assert await counts(api) == (MAX_BATCH_EVENTS, MAX_BATCH_EVENTS)


# -- idempotency ---------------------------------------------------------------------------


async def test_a_key_repeated_inside_one_batch_returns_the_first_event(api: Api) -> None:
    key = await api.key("ws_a")
    await api.webhook(key)
    reply = await post_batch(
        api,
        key,
        [ev(data={"v": 1}, key="k1"), ev(data={"v": 2}), ev(data={"v": 1}, key="k1")],
    )
    assert reply.status == 202, reply.body
    first, other, again = reply.body["data"]
    assert first["duplicate"] is False and other["duplicate"] is False
    assert again == {**first, "duplicate": True}
    assert "Idempotent-Replayed" not in reply.headers
    assert await counts(api) == (2, 2)


async def test_keys_are_honoured_across_batches_and_the_single_route(api: Api) -> None:
    key = await api.key("ws_a")
    await api.webhook(key)
    single = await api.call("POST", "/v1/events", key=key, json_body=ev(data={"s": 1}, key="s1"))
    assert single.status == 202
    first = await post_batch(api, key, [ev(data={"v": 1}, key="k1"), ev(data={"v": 2}, key="k2")])
    assert first.status == 202
    second = await post_batch(
        api,
        key,
        [ev(data={"v": 2}, key="k2"), ev(data={"v": 3}, key="k3"), ev(data={"s": 1}, key="s1")],
    )
    assert second.status == 202, second.body
    k2, k3, s1 = second.body["data"]
    assert k2 == {**first.body["data"][1], "duplicate": True}
    assert k3["duplicate"] is False
    assert s1 == {**single.body["data"], "duplicate": True}
    assert "Idempotent-Replayed" not in second.headers
    assert await counts(api) == (4, 4)
    # The very same batch again creates nothing and says so.
    replay = await post_batch(api, key, [ev(data={"v": 1}, key="k1"), ev(data={"v": 2}, key="k2")])
    assert replay.status == 202
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.body["data"] == [{**item, "duplicate": True} for item in first.body["data"]]
    assert await counts(api) == (4, 4)
    # And the single route sees the keys a batch took.
    later = await api.call("POST", "/v1/events", key=key, json_body=ev(data={"v": 3}, key="k3"))
    assert later.headers["Idempotent-Replayed"] == "true"
    assert later.body["data"]["_id"] == k3["_id"]
    # Keys belong to a workspace, and expire with the window.
    other = await post_batch(api, await api.key("ws_b"), [ev(data={"v": 1}, key="k1")])
    assert other.body["data"][0]["duplicate"] is False
    api.clock.advance(24 * 3600 + 1)
    fresh = await post_batch(api, key, [ev(data={"v": 1}, key="k1")])
    assert fresh.body["data"][0]["duplicate"] is False
    assert fresh.body["data"][0]["_id"] != first.body["data"][0]["_id"]


@pytest.mark.parametrize(
    ("events", "message"),
    [
        # Reused inside the batch.
        (
            [ev(data={"v": 1}), ev(data={"v": 1}, key="dup"), ev(data={"v": 2}, key="dup")],
            "events[2].idempotencyKey: already used for an event with other data",
        ),
        (
            [ev("a.b", key="dup"), ev("a.c", key="dup")],
            "events[1].idempotencyKey: already used for an event of another type",
        ),
        # Reused from an earlier request.
        (
            [ev(data={"new": 1}, key="fresh"), ev(data={"v": 2}, key="earlier")],
            "events[1].idempotencyKey: already used for an event with other data",
        ),
        (
            [ev(data={"new": 1}), ev("other.type", {"v": 1}, key="earlier")],
            "events[1].idempotencyKey: already used for an event of another type",
        ),
        # true == 1 in Python; not in JSON.
        (
            [ev(data={"v": True}, key="earlier")],
            "events[0].idempotencyKey: already used for an event with other data",
        ),
    ],
)
async def test_a_key_reused_with_other_type_or_data_refuses_the_batch(
    api: Api, events: list[Any], message: str
) -> None:
    key = await api.key("ws_a")
    await api.webhook(key)
    earlier = await post_batch(api, key, [ev(data={"v": 1}, key="earlier")])
    assert earlier.status == 202
    before = await counts(api)
    reply = await post_batch(api, key, events)
    assert reply.status == 422, reply.body
    assert reply.body == {"error": "Unprocessable Entity", "message": message, "code": 422}
    assert await counts(api) == before
    # Nothing of the refused batch took a key either.
    retry = await post_batch(api, key, [ev(data={"new": 1}, key="fresh")])
    assert retry.body["data"][0]["duplicate"] is False


async def test_events_and_deliveries_are_counted_once(api: Api) -> None:
    key = await api.key("ws_a")
    await api.webhook(key)
    await api.webhook(key, events=["a.*"])
    events = [ev("a.b", key="once"), ev("z.z"), ev("a.b", key="once")]
    for _ in range(2):
        assert (await post_batch(api, key, events)).status == 202
    text = (await api.call("GET", "/metrics")).body
    # First batch: 2 new events (a.b to both webhooks, z.z to one); the repeats count nothing.
    assert "hookd_events_ingested_total 3.0" in text
    assert "hookd_deliveries_created_total 4.0" in text


# -- the store: one transaction per group, a batch atomic inside it -------------------------


@pytest.fixture
async def store_with_hook(tmp_path: Path, clock: ManualClock) -> SqliteStore:
    store = SqliteStore(tmp_path / "batch.db", clock)
    await store.open()
    await store.ensure_workspace("ws_s")
    await store.create_webhook(
        NewWebhook("ws_s", "h", "https://h.example/x", ("*",), "secret-0001", 3, 1000, "t")
    )
    return store


async def test_a_failing_batch_leaves_the_singles_of_its_group_alone(
    store_with_hook: SqliteStore,
) -> None:
    """A batch queued with single ingests shares their transaction, not their fate."""
    s = store_with_hook
    try:
        await s.ingest_event("ws_s", "t", {"v": 1}, idempotency_key="taken")
        singles = [s.ingest_event("ws_s", "t", {"i": i}) for i in range(10)]
        bad_data = s.ingest_events(
            "ws_s", [NewEvent("t", {"ok": 1}), NewEvent("t", {"x": float("nan")})]
        )
        conflict = s.ingest_events(
            "ws_s", [NewEvent("t", {"ok": 2}), NewEvent("t", {"v": 2}, "taken")]
        )
        good = s.ingest_events("ws_s", [NewEvent("t", {"b": i}) for i in range(5)])
        results = await asyncio.gather(
            *singles[:5], bad_data, conflict, good, *singles[5:], return_exceptions=True
        )
        failed_data, failed_key = results[5], results[6]
        assert isinstance(failed_data, ValueError)
        assert str(failed_data).startswith("events[1].data: ")
        assert isinstance(failed_key, IdempotencyConflict)
        assert (failed_key.index, failed_key.differs) == (1, "data")
        accepted = [r for r in results[:5] + results[8:] if isinstance(r, IngestResult)]
        good_results = results[7]
        assert isinstance(good_results, list) and len(accepted) == 10
        events = [r.event for r in accepted + good_results]
        assert len({e.id for e in events}) == 15
        with sqlite3.connect(s.path) as conn:
            datas = [json.loads(b)["data"] for (b,) in conn.execute("SELECT body FROM events")]
        assert {"ok": 1} not in datas and {"ok": 2} not in datas
        assert len(datas) == 16  # the first keyed event, 10 singles, 5 of the good batch
    finally:
        await s.close()


async def test_store_batch_keeps_order_and_fifo(store_with_hook: SqliteStore) -> None:
    s = store_with_hook
    try:
        results = await s.ingest_events("ws_s", [NewEvent("t", {"i": i}) for i in range(20)])
        assert [json.loads(r.event.body)["data"]["i"] for r in results] == list(range(20))
        claimed = await s.claim_due(50, 60_000, {}, 100)
        # Deliveries are claimed in the order the events were given.
        assert [c.event_id for c in claimed] == [r.event.id for r in results]
        assert await s.ingest_events("ws_s", []) == []
    finally:
        await s.close()


# -- crash: every acknowledged batch is whole on disk, no batch is ever half there -----------


async def _post_batches(
    base_url: str, key: str, first: int, acked: list[int], sent: list[int]
) -> None:
    async with aiohttp.ClientSession() as session:
        b = first
        while True:
            b += 1
            sent.append(b)
            body = {"events": [{"type": "crash.t", "data": {"b": b, "i": i}} for i in range(20)]}
            try:
                async with session.post(
                    f"{base_url}{BATCH}", json=body, headers={"X-Api-Key": key}
                ) as resp:
                    if resp.status == 202:
                        acked.append(b)
            except (aiohttp.ClientError, ConnectionError):
                await asyncio.sleep(0.01)  # the daemon died under us


@pytest.mark.slow
async def test_sigkill_never_loses_an_acknowledged_batch_nor_leaves_half_of_one(
    daemon: DaemonProcess,
) -> None:
    rng = random.Random(7)
    store = SqliteStore(daemon.db_path)
    await store.open()
    await store.ensure_workspace("ws_crash")
    # A webhook nobody listens on: deliveries fail and retry meanwhile.
    await store.create_webhook(
        NewWebhook("ws_crash", "h", "http://127.0.0.1:9/x", ("*",), "secret-0001", 3, 500, "t")
    )
    key = generate_key(platform=False)
    await store.create_api_key("ws_crash", key.digest, key.prefix, "user_crash")
    await store.close()
    acked: list[int] = []
    sent: list[int] = []
    for round_ in range(3):
        await daemon.start()
        assert daemon.listen is not None
        clients = [
            asyncio.create_task(
                _post_batches(
                    f"http://{daemon.listen}", key.plaintext, (round_ * 4 + c) * 10**6, acked, sent
                )
            )
            for c in range(4)
        ]
        await asyncio.sleep(rng.uniform(0.3, 0.8))
        await daemon.kill()
        for client in clients:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        assert query(daemon.db_path, "PRAGMA integrity_check") == [("ok",)]
        per_batch = dict(
            query(
                daemon.db_path,
                "SELECT json_extract(CAST(body AS TEXT), '$.data.b'), count(*)"
                " FROM events GROUP BY 1",
            )
        )
        lost = [b for b in acked if per_batch.get(b) != 20]
        assert not lost, f"acknowledged batches not whole on disk: {lost[:5]}"
        partial = {b: n for b, n in per_batch.items() if n != 20}
        assert not partial, f"batches stored in part: {partial}"
        fanned = query(
            daemon.db_path,
            "SELECT count(*) FROM events e WHERE NOT EXISTS"
            " (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)",
        )
        assert fanned == [(0,)], "an event without its delivery"
    assert len(acked) >= 3, f"few batches acknowledged between kills: {acked}"


# -- the parser's shortcut never lets through what the full walk refuses -----------------


@pytest.mark.parametrize(
    ("raw", "refused"),
    [
        (b'{"type":"a","data":"\\ud800"}', True),
        (b'{"type":"a","data":"\\uDFFF"}', True),
        (b'{"type":"a","data":{"\\uDbff":1}}', True),
        (b'{"type":"a","data":"\\ud83d\\ude00"}', False),  # a pair is one character
        (b'{"type":"a","data":"\\\\ud800"}', False),  # an escaped backslash, then text
        (b'{"type":"a","data":"\\u00e9\\ud7ff"}', False),
        (b'{"type":"a","data":' + b"[" * 31 + b"]" * 31 + b"}", False),  # 32 levels
        (b'{"type":"a","data":' + b"[" * 32 + b"]" * 32 + b"}", True),  # data: 32
        (b'{"type":"a","data":"' + b"[" * 40 + b'"}', False),  # brackets inside a string
    ],
)
async def test_surrogates_and_depth_are_still_refused(api: Api, raw: bytes, refused: bool) -> None:
    key = await api.key("ws_a")
    reply = await api.call(
        "POST", "/v1/events", key=key, data=raw, headers={"Content-Type": "application/json"}
    )
    assert reply.status == (400 if refused else 202), reply.body
    if refused:
        assert reply.body["message"].startswith(("body: ", "data: "))
