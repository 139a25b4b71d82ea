"""Workspace A's keys never see or change workspace B's objects: 404, as if absent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from hookd.models import Status
from tests.api.conftest import Api
from tests.api.helpers import dead_letter, ingest, wait_status
from tests.conftest import Receiver

NOT_FOUND = {"error": "Not Found", "message": "The requested resource was not found", "code": 404}

# Every route that names an object, with a body that would be valid for it.
BY_ID: list[tuple[str, str, Any]] = [
    ("GET", "/v1/webhooks/{hook}", None),
    ("PATCH", "/v1/webhooks/{hook}", {"name": "taken over", "url": "https://evil.example/x"}),
    ("DELETE", "/v1/webhooks/{hook}", None),
    ("POST", "/v1/webhooks/{hook}/test", None),
    ("POST", "/v1/webhooks/{hook}/replay", {"since": "2020-01-01T00:00:00Z"}),
    ("GET", "/v1/deliveries/{delivery}", None),
    ("POST", "/v1/deliveries/{delivery}/replay", None),
    ("GET", "/v1/webhooks/{hook}/stats", None),
    ("GET", "/v1/events/{event}", None),
]
WORKSPACE_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/webhooks", None),
    ("POST", "/v1/webhooks", {"name": "n", "url": "https://a.example/x", "events": ["*"]}),
    ("GET", "/v1/deliveries", None),
    ("POST", "/v1/events", {"type": "email.replied", "data": {}}),
    ("POST", "/v1/events/batch", {"events": [{"type": "email.replied", "data": {}}]}),
    ("GET", "/v1/stats", None),
]


@dataclass
class World:
    a_key: str
    b_key: str
    platform_key: str
    b_hook: str
    b_dead: str
    b_test: str
    b_event: str


@pytest.fixture
async def world(api: Api, receiver: Receiver) -> World:
    a_key = await api.key("ws_a")
    b_key = await api.key("ws_b")
    platform_key = await api.key(None)
    await api.webhook(a_key, events=["email.*"])
    hook_id, dead = await dead_letter(api, b_key, receiver.status("/b", 500))
    test = await api.call("POST", f"/v1/webhooks/{hook_id}/test", key=b_key)
    receiver.requests.clear()
    event = (await api.call("GET", f"/v1/deliveries/{dead}", key=b_key)).body["data"]["eventId"]
    return World(a_key, b_key, platform_key, hook_id, dead, test.body["data"]["deliveryId"], event)


async def b_state(api: Api, w: World) -> Any:
    hook = await api.call("GET", f"/v1/webhooks/{w.b_hook}", key=w.b_key)
    deliveries = await api.call("GET", "/v1/deliveries", key=w.b_key)
    dead = await api.call("GET", f"/v1/deliveries/{w.b_dead}", key=w.b_key)
    return hook.body, deliveries.body, dead.body


def _path(template: str, w: World, delivery: str | None = None) -> str:
    return template.format(hook=w.b_hook, delivery=delivery or w.b_dead, event=w.b_event)


async def test_every_route_by_id_is_404_for_another_workspace(
    api: Api, receiver: Receiver, world: World
) -> None:
    before = await b_state(api, world)
    callers = [
        {"X-Api-Key": world.a_key},
        {"Authorization": f"Bearer {world.a_key}"},
        {"X-Api-Key": world.platform_key, "X-Workspace-Id": "ws_a"},
    ]
    for method, template, body in BY_ID:
        for delivery in (world.b_dead, world.b_test):
            for headers in callers:
                reply = await api.call(
                    method, _path(template, world, delivery), json_body=body, headers=headers
                )
                assert (reply.status, reply.body) == (404, NOT_FOUND), (method, template)
    assert await b_state(api, world) == before
    assert receiver.requests == []
    # Same answer as for an id that does not exist at all.
    missing = await api.call("GET", "/v1/webhooks/" + "0" * 24, key=world.a_key)
    assert (missing.status, missing.body) == (404, NOT_FOUND)


async def test_the_table_covers_every_route_that_names_an_object(api: Api) -> None:
    doc = (await api.call("GET", "/v1/openapi.json")).body
    documented = {
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method in ops
        if "{id}" in path
    }
    tested = {
        (m, t.replace("{hook}", "{id}").replace("{delivery}", "{id}").replace("{event}", "{id}"))
        for m, t, _ in BY_ID
    }
    assert tested == documented
    authenticated = {
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if op["security"] and "{id}" not in path
    }
    assert {(m, p) for m, p, _ in WORKSPACE_ROUTES} == authenticated


async def test_lists_never_include_another_workspaces_objects(api: Api, world: World) -> None:
    b_ids = {world.b_hook, world.b_dead, world.b_test}
    for headers in (
        {"X-Api-Key": world.a_key},
        {"X-Api-Key": world.platform_key, "X-Workspace-Id": "ws_a"},
    ):
        for path in ("/v1/webhooks", "/v1/deliveries"):
            reply = await api.call("GET", path, headers=headers)
            assert reply.status == 200
            assert not any(i in reply.raw.decode() for i in b_ids)
            assert all(item["workspaceId"] == "ws_a" for item in reply.body["data"])
        filtered = await api.call(
            "GET", "/v1/deliveries", headers=headers, params={"webhookId": world.b_hook}
        )
        assert filtered.body["data"] == []
    # ...while B's own key and the platform key acting for B do see them.
    for headers in (
        {"X-Api-Key": world.b_key},
        {"X-Api-Key": world.platform_key, "X-Workspace-Id": "ws_b"},
    ):
        listed = await api.call("GET", "/v1/deliveries", headers=headers)
        assert {world.b_dead, world.b_test} <= {d["_id"] for d in listed.body["data"]}


async def test_events_fan_out_only_within_the_workspace(api: Api, world: World) -> None:
    # B's webhook subscribes to every type; A's event must not reach it.
    event = await ingest(api, world.a_key)
    for delivery_id in event["deliveryIds"]:
        d = await api.store.get_delivery(None, delivery_id)
        assert d is not None and d.workspace_id == "ws_a"
    b_list = await api.call("GET", "/v1/deliveries", key=world.b_key)
    assert not {d["eventId"] for d in b_list.body["data"]} & {event["_id"]}


async def test_a_workspace_key_cannot_name_another_workspace(api: Api, world: World) -> None:
    for method, template, body in BY_ID + WORKSPACE_ROUTES:
        reply = await api.call(
            method,
            _path(template, world),
            json_body=body,
            headers={"X-Api-Key": world.a_key, "X-Workspace-Id": "ws_b"},
        )
        assert reply.status == 403, (method, template)
        assert reply.body == {
            "error": "Forbidden",
            "message": "X-Workspace-Id: this workspace key cannot act on another workspace",
            "code": 403,
        }
    # Naming its own workspace is fine.
    own = await api.call(
        "GET", "/v1/webhooks", headers={"X-Api-Key": world.a_key, "X-Workspace-Id": "ws_a"}
    )
    assert own.status == 200


async def test_b_can_still_use_its_objects_afterwards(api: Api, world: World) -> None:
    for method, template, body in BY_ID:
        await api.call(method, _path(template, world), json_body=body, key=world.a_key)
    replay = await api.call("POST", f"/v1/deliveries/{world.b_dead}/replay", key=world.b_key)
    assert replay.status == 200
    await wait_status(api, world.b_dead, Status.DEAD_LETTER)
