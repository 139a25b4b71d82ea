"""Test send, replay, events and lists end to end: real HTTP in, real loopback receivers out."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

from hookd.ids import iso_ms
from hookd.models import Status
from tests.api.conftest import Api
from tests.api.helpers import dead_letter, free_port, ingest, quiet, status_of, wait_status
from tests.conftest import Receiver, eventually

# -- test send ------------------------------------------------------------------------


async def test_test_send_is_signed_recorded_and_never_retried(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    secret = "test-send-secret-123"
    hook = await api.webhook(key, url=receiver.status("/t", 200), secret=secret)
    reply = await api.call("POST", f"/v1/webhooks/{hook['_id']}/test", key=key)
    assert reply.status == 200
    data = reply.body["data"]
    (sent,) = receiver.received("/t")
    assert sent.headers["X-Webhook-Event"] == "test"
    expected_sig = hmac.new(secret.encode(), sent.body, hashlib.sha256).hexdigest()
    assert sent.headers["X-Webhook-Signature"] == expected_sig
    payload = json.loads(sent.body)
    assert payload["type"] == "test" and payload["workspaceId"] == "ws_a"
    assert payload["data"]["webhookId"] == hook["_id"]

    got = await api.call("GET", f"/v1/deliveries/{data['deliveryId']}", key=key)
    d = got.body["data"]
    assert (d["isTest"], d["status"], d["attemptCount"], d["eventType"]) == (
        True,
        "delivered",
        1,
        "test",
    )
    assert d["nextAttemptAt"] is None
    (attempt,) = d["attempts"]
    assert (attempt["number"], attempt["statusCode"], attempt["outcome"]) == (1, 200, "2xx")
    assert attempt["responseBody"] == "answer 200"
    await quiet(api, receiver, "/t", 1)


async def test_failed_test_send_has_no_side_effects(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    # A 410 from a real delivery would disable the webhook; from a test it must not.
    hook = await api.webhook(key, url=receiver.status("/gone", 410), retryAttempts=5)
    reply = await api.call("POST", f"/v1/webhooks/{hook['_id']}/test", key=key)
    data = reply.body["data"]
    assert (data["statusCode"], data["delivered"], data["status"]) == (410, False, "dead_letter")
    fetched = (await api.call("GET", f"/v1/webhooks/{hook['_id']}", key=key)).body["data"]
    assert fetched["status"] == "active" and "disabledReason" not in fetched
    await quiet(api, receiver, "/gone", 1)
    again = await api.call("POST", f"/v1/deliveries/{data['deliveryId']}/replay", key=key)
    assert again.status == 409
    assert again.body["message"].startswith("status: test deliveries")


async def test_test_send_connection_refused(api: Api) -> None:
    key = await api.key("ws_a")
    hook = await api.webhook(key, url=f"http://127.0.0.1:{free_port()}/nobody")
    reply = await api.call("POST", f"/v1/webhooks/{hook['_id']}/test", key=key)
    data = reply.body["data"]
    assert data["statusCode"] is None and data["delivered"] is False
    assert data["error"] and data["responseBody"] is None and data["status"] == "dead_letter"


async def test_inactive_webhook_can_be_tested(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    hook = await api.webhook(key, url=receiver.status("/off", 204))
    await api.call(
        "PATCH", f"/v1/webhooks/{hook['_id']}", key=key, json_body={"status": "inactive"}
    )
    reply = await api.call("POST", f"/v1/webhooks/{hook['_id']}/test", key=key)
    assert reply.body["data"]["delivered"] is True
    assert len(receiver.received("/off")) == 1


# -- replay ---------------------------------------------------------------------------


async def test_replay_that_fails_again_retries_in_the_background(
    api: Api, receiver: Receiver
) -> None:
    key = await api.key("ws_a")
    url = receiver.status("/down", 500)
    hook_id, delivery_id = await dead_letter(api, key, url)
    await api.call("PATCH", f"/v1/webhooks/{hook_id}", key=key, json_body={"retryAttempts": 1})
    reply = await api.call("POST", f"/v1/deliveries/{delivery_id}/replay", key=key)
    assert reply.status == 200
    assert reply.body["data"] == {
        "deliveryId": delivery_id,
        "status": "failed",
        "httpStatusCode": 500,
        "responseBody": "answer 500",
    }
    assert len(receiver.received("/down")) == 2

    async def retried() -> bool:
        api.clock.advance(10)  # past the first backoff (at most 5 s)
        api.scheduler.wake()
        return await status_of(api, delivery_id) is Status.DEAD_LETTER

    await eventually(retried)
    assert len(receiver.received("/down")) == 3
    full = (await api.call("GET", f"/v1/deliveries/{delivery_id}", key=key)).body["data"]
    assert [a["number"] for a in full["attempts"]] == [1, 2, 3]
    assert full["attemptCount"] == 3 and full["lastStatusCode"] == 500


async def test_concurrent_replays_queue_it_once(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    answers = iter([500])

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        code = next(answers, 200)
        if code == 200:
            await asyncio.sleep(0.2)  # both replays are in flight meanwhile
        return web.Response(status=code, text=str(code))

    _, delivery_id = await dead_letter(api, key, receiver.on("/once", handler))
    path = f"/v1/deliveries/{delivery_id}/replay"
    first, second = await asyncio.gather(
        api.call("POST", path, key=key), api.call("POST", path, key=key)
    )
    assert sorted([first.status, second.status]) == [200, 409]
    winner = first if first.status == 200 else second
    assert winner.body["data"]["status"] == "delivered"
    loser = second if winner is first else first
    assert loser.body["message"].startswith("status: the delivery is pending")
    assert len(receiver.received("/once")) == 2


async def test_replay_of_an_inactive_webhooks_delivery_waits(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    answers = iter([500])

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=next(answers, 200))

    hook_id, delivery_id = await dead_letter(api, key, receiver.on("/later", handler))
    await api.call("PATCH", f"/v1/webhooks/{hook_id}", key=key, json_body={"status": "inactive"})
    reply = await api.call("POST", f"/v1/deliveries/{delivery_id}/replay", key=key)
    assert reply.body["data"] == {
        "deliveryId": delivery_id,
        "status": "pending",
        "httpStatusCode": None,
        "responseBody": None,
    }
    await asyncio.sleep(0.2)
    assert len(receiver.received("/later")) == 1
    await api.call("PATCH", f"/v1/webhooks/{hook_id}", key=key, json_body={"status": "active"})
    await wait_status(api, delivery_id, Status.DELIVERED)
    assert len(receiver.received("/later")) == 2


async def test_replay_of_other_statuses_is_409(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    await api.webhook(key, url=receiver.status("/fine", 200))
    (delivery_id,) = (await ingest(api, key))["deliveryIds"]
    await wait_status(api, delivery_id, Status.DELIVERED)
    reply = await api.call("POST", f"/v1/deliveries/{delivery_id}/replay", key=key)
    assert reply.status == 409
    assert reply.body == {
        "error": "Conflict",
        "message": "status: the delivery is delivered; only dead_letter deliveries can be replayed",
        "code": 409,
    }


async def test_bulk_replay_with_since(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    failing = {"on": True}

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500 if failing["on"] else 200)

    hook = await api.webhook(key, url=receiver.on("/bulk", handler), retryAttempts=0)
    ids, times = [], []
    for _ in range(3):
        times.append(api.clock.now_ms())
        (delivery_id,) = (await ingest(api, key))["deliveryIds"]
        ids.append(delivery_id)
        await wait_status(api, delivery_id, Status.DEAD_LETTER)
        api.clock.advance(60)
    failing["on"] = False
    path = f"/v1/webhooks/{hook['_id']}/replay"
    reply = await api.call("POST", path, key=key, json_body={"since": iso_ms(times[1])})
    assert reply.status == 200
    assert reply.body["data"] == {"webhookId": hook["_id"], "count": 2}
    for delivery_id in ids[1:]:
        await wait_status(api, delivery_id, Status.DELIVERED)
    assert await status_of(api, ids[0]) is Status.DEAD_LETTER
    rest = await api.call("POST", path, key=key)  # no body: every dead letter
    assert rest.body["data"]["count"] == 1
    await wait_status(api, ids[0], Status.DELIVERED)


async def test_delete_ends_unfinished_deliveries(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    hook = await api.webhook(key, url=receiver.status("/x", 500), retryAttempts=3)
    (delivery_id,) = (await ingest(api, key))["deliveryIds"]
    await wait_status(api, delivery_id, Status.FAILED)
    reply = await api.call("DELETE", f"/v1/webhooks/{hook['_id']}", key=key)
    assert reply.body == {"success": True, "data": {"_id": hook["_id"], "deleted": True}}
    d = (await api.call("GET", f"/v1/deliveries/{delivery_id}", key=key)).body["data"]
    assert (d["status"], d["lastError"], d["nextAttemptAt"]) == (
        "dead_letter",
        "webhook deleted",
        None,
    )
    assert (await api.call("GET", f"/v1/webhooks/{hook['_id']}", key=key)).status == 404
    assert (await api.call("DELETE", f"/v1/webhooks/{hook['_id']}", key=key)).status == 404
    assert (await api.call("GET", "/v1/webhooks", key=key)).body["data"] == []
    replay = await api.call("POST", f"/v1/deliveries/{delivery_id}/replay", key=key)
    assert replay.status == 409 and replay.body["message"].startswith("webhookId:")


async def test_410_disables_the_webhook_visibly(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    hook = await api.webhook(key, url=receiver.status("/bye", 410))
    (delivery_id,) = (await ingest(api, key))["deliveryIds"]
    await wait_status(api, delivery_id, Status.DEAD_LETTER)
    got = (await api.call("GET", f"/v1/webhooks/{hook['_id']}", key=key)).body["data"]
    assert got["status"] == "inactive"
    assert got["disabledReason"] == "endpoint answered 410 Gone"


# -- events ---------------------------------------------------------------------------


async def test_event_fan_out(api: Api) -> None:
    key = await api.key("ws_a")
    a = await api.webhook(key, events=["email.*"])
    b = await api.webhook(key, events=["email.replied", "other"])
    await api.webhook(key, events=["billing.*"])
    off = await api.webhook(key, events=["*"])
    await api.call("PATCH", f"/v1/webhooks/{off['_id']}", key=key, json_body={"status": "inactive"})
    event = await ingest(api, key)
    assert set(event.keys()) == {
        "_id",
        "workspaceId",
        "type",
        "idempotencyKey",
        "createdAt",
        "deliveryIds",
        "duplicate",
    }
    assert event["type"] == "email.replied" and event["duplicate"] is False
    hooks = set()
    for delivery_id in event["deliveryIds"]:
        d = (await api.call("GET", f"/v1/deliveries/{delivery_id}", key=key)).body["data"]
        assert d["eventId"] == event["_id"]
        hooks.add(d["webhookId"])
    assert hooks == {a["_id"], b["_id"]}


async def test_idempotency_key(api: Api) -> None:
    key = await api.key("ws_a")
    await api.webhook(key)
    first = await api.call(
        "POST",
        "/v1/events",
        key=key,
        json_body={"type": "a.b", "data": {"x": 1}, "idempotencyKey": "order-1"},
    )
    assert first.status == 202 and "Idempotent-Replayed" not in first.headers
    again = await api.call(
        "POST",
        "/v1/events",
        key=key,
        json_body={"type": "a.b", "data": {"x": 1}},
        headers={"Idempotency-Key": "order-1"},
    )
    assert again.status == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.body["data"] == {**first.body["data"], "duplicate": True}
    listed = await api.call("GET", "/v1/deliveries", key=key)
    assert len(listed.body["data"]) == 1

    def body(**kw: Any) -> dict[str, Any]:
        return {"type": "a.b", "data": {"x": 1}, "idempotencyKey": "order-1", **kw}

    other_type = await api.call("POST", "/v1/events", key=key, json_body=body(type="a.c"))
    assert other_type.status == 422
    assert other_type.body["message"].startswith("idempotencyKey:")
    other_data = await api.call("POST", "/v1/events", key=key, json_body=body(data={"x": 2}))
    assert other_data.status == 422
    # true == 1 in Python; not in JSON.
    bool_data = await api.call("POST", "/v1/events", key=key, json_body=body(data={"x": True}))
    assert bool_data.status == 422
    mismatch = await api.call(
        "POST", "/v1/events", key=key, json_body=body(), headers={"Idempotency-Key": "order-2"}
    )
    assert mismatch.status == 400 and mismatch.body["message"].startswith("idempotencyKey:")
    # Another workspace may use the same key for its own event.
    other_ws = await api.call("POST", "/v1/events", key=await api.key("ws_b"), json_body=body())
    assert other_ws.body["data"]["_id"] != first.body["data"]["_id"]
    assert other_ws.body["data"]["duplicate"] is False
    api.clock.advance(24 * 3600 + 1)
    later = await api.call("POST", "/v1/events", key=key, json_body=body())
    assert later.body["data"]["duplicate"] is False
    assert later.body["data"]["_id"] != first.body["data"]["_id"]
    assert len((await api.call("GET", "/v1/deliveries", key=key)).body["data"]) == 2


# -- lists and updates ----------------------------------------------------------------


async def collect(api: Api, key: str, path: str, **params: str) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        reply = await api.call("GET", path, key=key, params=query)
        assert reply.status == 200, reply.body
        assert set(reply.body) == {"success", "data", "nextCursor"}
        pages.append([item["_id"] for item in reply.body["data"]])
        cursor = reply.body["nextCursor"]
        if cursor is None:
            return pages


async def test_webhook_pages_oldest_first(api: Api) -> None:
    key = await api.key("ws_a")
    ids = []
    for _ in range(5):
        ids.append((await api.webhook(key))["_id"])
        api.clock.advance(1)
    pages = await collect(api, key, "/v1/webhooks", limit="2")
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    assert await collect(api, key, "/v1/webhooks") == [ids]


async def test_delivery_pages_newest_first_and_filters(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    ok = await api.webhook(key, url=receiver.status("/ok", 200), events=["a.*"])
    bad = await api.webhook(key, url=receiver.status("/bad", 500), events=["a.x"], retryAttempts=0)
    created: list[tuple[str, str, str, int]] = []  # (delivery, webhook, type, created)
    for type_ in ("a.x", "a.y", "a.x"):
        now = api.clock.now_ms()
        for delivery_id in (await ingest(api, key, type_))["deliveryIds"]:
            d = await api.store.get_delivery(None, delivery_id)
            assert d is not None
            created.append((delivery_id, d.webhook_id, type_, now))
        api.clock.advance(10)
    newest_first = [c[0] for c in sorted(created, key=lambda c: (c[3], c[0]), reverse=True)]
    pages = await collect(api, key, "/v1/deliveries", limit="2")
    assert [i for p in pages for i in p] == newest_first
    assert [len(p) for p in pages] == [2, 2, 1]

    for delivery_id, webhook_id, _, _ in created:
        await wait_status(
            api, delivery_id, Status.DELIVERED if webhook_id == ok["_id"] else Status.DEAD_LETTER
        )

    async def ids(**params: str) -> set[str]:
        return {i for p in await collect(api, key, "/v1/deliveries", **params) for i in p}

    assert await ids(webhookId=bad["_id"]) == {c[0] for c in created if c[1] == bad["_id"]}
    assert await ids(status="dead_letter") == {c[0] for c in created if c[1] == bad["_id"]}
    assert await ids(eventType="a.y") == {c[0] for c in created if c[2] == "a.y"}
    t1 = created[-1][3]
    assert await ids(since=iso_ms(t1)) == {c[0] for c in created if c[3] >= t1}
    t0 = created[0][3]
    assert await ids(until=iso_ms(t0)) == {c[0] for c in created if c[3] <= t0}
    assert await ids(status="delivered", eventType="a.x", webhookId=bad["_id"]) == set()


async def test_patch_changes_only_the_given_fields(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    hook = await api.webhook(key, url=receiver.status("/p", 200), secret="old-secret-000001")
    api.clock.advance(5)
    reply = await api.call(
        "PATCH", f"/v1/webhooks/{hook['_id']}", key=key, json_body={"retryAttempts": 7}
    )
    changed = reply.body["data"]
    assert changed["retryAttempts"] == 7
    assert changed["updatedAt"] != hook["updatedAt"]
    for field in ("name", "url", "events", "timeoutMs", "status", "createdAt", "createdBy"):
        assert changed[field] == hook[field], field

    off = await api.call(
        "PATCH", f"/v1/webhooks/{hook['_id']}", key=key, json_body={"status": "inactive"}
    )
    assert off.body["data"]["disabledReason"] == "disabled by API"
    on = await api.call(
        "PATCH", f"/v1/webhooks/{hook['_id']}", key=key, json_body={"status": "active"}
    )
    assert "disabledReason" not in on.body["data"]

    rotated = await api.call(
        "PATCH", f"/v1/webhooks/{hook['_id']}", key=key, json_body={"secret": "new-secret-000002"}
    )
    assert rotated.body["data"]["secret"] == "new-s..."  # a third of a short secret at most
    await api.call("POST", f"/v1/webhooks/{hook['_id']}/test", key=key)
    (sent,) = receiver.received("/p")
    # Both secrets sign during the grace period.
    assert sent.headers["X-Webhook-Signature"] == ",".join(
        hmac.new(s.encode(), sent.body, hashlib.sha256).hexdigest()
        for s in ("new-secret-000002", "old-secret-000001")
    )


async def test_ingest_is_counted_once_in_metrics(api: Api) -> None:
    key = await api.key("ws_a")
    await api.webhook(key)
    await api.webhook(key)
    body = {"type": "a.b", "data": {}, "idempotencyKey": "once"}
    for _ in range(2):
        assert (await api.call("POST", "/v1/events", key=key, json_body=body)).status == 202
    text = (await api.call("GET", "/metrics")).body
    assert "hookd_events_ingested_total 1.0" in text
    assert "hookd_deliveries_created_total 2.0" in text
