"""The operators' read-only views over real HTTP: queue figures, a webhook's day, one event."""

from __future__ import annotations

from hookd.ids import iso_ms
from hookd.models import Status
from tests.api.conftest import Api
from tests.api.helpers import dead_letter, ingest, wait_status
from tests.conftest import Receiver


async def test_webhook_stats_show_the_day_and_the_last_error(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    flaky = receiver.status("/flaky", 200, 500)
    hook = await api.webhook(key, url=flaky, retryAttempts=0)
    first, second = [(await ingest(api, key))["deliveryIds"][0] for _ in range(2)]
    await wait_status(api, first, Status.DELIVERED)
    await wait_status(api, second, Status.DEAD_LETTER)
    # A test send is neither a success nor a failure of the webhook.
    assert (await api.call("POST", f"/v1/webhooks/{hook['_id']}/test", key=key)).status == 200

    reply = await api.call("GET", f"/v1/webhooks/{hook['_id']}/stats", key=key)
    assert reply.status == 200, reply.body
    stats = reply.body["data"]
    assert stats["webhookId"] == hook["_id"] and stats["status"] == "active"
    assert (stats["delivered"], stats["deadLettered"], stats["successRate"]) == (1, 1, 0.5)
    assert (stats["queued"], stats["inFlight"], stats["pausedUntil"]) == (0, 0, None)
    assert stats["since"] == iso_ms(api.clock.now_ms() - 24 * 3_600_000)
    last = stats["lastError"]
    assert (last["statusCode"], last["deliveryId"], last["error"]) == (500, second, None)

    other = await api.key("ws_b")
    assert (await api.call("GET", f"/v1/webhooks/{hook['_id']}/stats", key=other)).status == 404
    reply = await api.call("GET", f"/v1/webhooks/{hook['_id']}/stats?window=1h", key=key)
    assert reply.status == 400 and reply.body["message"].startswith("window:")


async def test_webhook_stats_show_a_429_pause(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    url = receiver.status("/busy", 429, headers={"Retry-After": "120"})
    hook = await api.webhook(key, url=url)
    (delivery_id,) = (await ingest(api, key))["deliveryIds"]
    await wait_status(api, delivery_id, Status.RATE_LIMITED)
    stats = (await api.call("GET", f"/v1/webhooks/{hook['_id']}/stats", key=key)).body["data"]
    assert stats["pausedUntil"] == iso_ms(api.clock.now_ms() + 120_000)
    assert stats["queued"] == 1 and stats["successRate"] is None
    assert stats["lastError"]["statusCode"] == 429
    api.clock.advance(121)
    stats = (await api.call("GET", f"/v1/webhooks/{hook['_id']}/stats", key=key)).body["data"]
    assert stats["pausedUntil"] is None


async def test_queue_stats_are_the_workspaces_own(api: Api, receiver: Receiver) -> None:
    key = await api.key("ws_a")
    await dead_letter(api, key, receiver.status("/down", 500), events=["email.*"])
    parked = await api.webhook(
        key, url=receiver.status("/parked", 500), events=["parked"], retryAttempts=3
    )
    ids = [(await ingest(api, key, "parked"))["deliveryIds"][0] for _ in range(3)]
    for delivery_id in ids:
        await wait_status(api, delivery_id, Status.FAILED)
    await api.call(
        "PATCH", f"/v1/webhooks/{parked['_id']}", key=key, json_body={"status": "inactive"}
    )
    api.clock.advance(7200)
    reply = await api.call("GET", "/v1/stats", key=key)
    assert reply.status == 200, reply.body
    data = reply.body["data"]
    assert data["workspaceId"] == "ws_a"
    assert data["deliveries"] == {
        "pending": 0,
        "delivered": 0,
        "failed": 3,
        "rate_limited": 0,
        "dead_letter": 1,
    }
    # The inactive webhook's retries wait on purpose: they are not late.
    assert (data["oldestDueAt"], data["oldestDueAgeSeconds"], data["inFlight"]) == (None, 0, 0)
    # Re-activated with no scheduler to take them, they are due and late.
    await api.scheduler.stop(drain_timeout=0.5)
    await api.call(
        "PATCH", f"/v1/webhooks/{parked['_id']}", key=key, json_body={"status": "active"}
    )
    data = (await api.call("GET", "/v1/stats", key=key)).body["data"]
    assert 3600 < data["oldestDueAgeSeconds"] <= 7200 and data["oldestDueAt"] is not None

    platform = await api.key(None)
    other = await api.call("GET", "/v1/stats", key=platform, headers={"X-Workspace-Id": "ws_b"})
    assert other.status == 200 and sum(other.body["data"]["deliveries"].values()) == 0


async def test_an_event_is_shown_with_its_data_to_its_workspace_only(api: Api) -> None:
    key = await api.key("ws_a")
    data = {"html": "<img src=x onerror=alert(1)>", "n": [1, 2.5, None], "ü": True}
    reply = await api.call(
        "POST",
        "/v1/events",
        key=key,
        json_body={"type": "email.replied", "data": data, "idempotencyKey": "k1"},
    )
    event_id = reply.body["data"]["_id"]
    got = await api.call("GET", f"/v1/events/{event_id}", key=key)
    assert got.status == 200
    assert got.body["data"] == {
        "_id": event_id,
        "workspaceId": "ws_a",
        "type": "email.replied",
        "idempotencyKey": "k1",
        "createdAt": reply.body["data"]["createdAt"],
        "data": data,
    }
    other = await api.key("ws_b")
    assert (await api.call("GET", f"/v1/events/{event_id}", key=other)).status == 404
    assert (await api.call("GET", "/v1/events/" + "0" * 24, key=key)).status == 404
