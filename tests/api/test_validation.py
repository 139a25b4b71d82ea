"""Bad input, one row each: the status, a message naming the field, and nothing stored."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from hookd.storage import DeliveryFilter
from tests.api.conftest import MAX_BODY_BYTES, Api

HOOK = {"name": "CRM Sync", "url": "https://crm.example.com/hook", "events": ["email.replied"]}
EVENT = {"type": "email.replied", "data": {"a": 1}}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@dataclass
class Case:
    method: str
    path: str
    field: str
    status: int = 400
    body: Any = None  # JSON-encoded unless raw is given
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""

    @property
    def id(self) -> str:
        shown = self.raw[:30] if self.raw is not None else json.dumps(self.body)[:40]
        return f"{self.method} {self.path}{self.query} {shown!r} -> {self.field}"


def hook(**changes: Any) -> dict[str, Any]:
    return {**HOOK, **changes}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in HOOK.items() if k != key}


CREATE = "/v1/webhooks"
ONE = "/v1/webhooks/{hook}"
CASES: list[Case] = [
    # -- body framing ----------------------------------------------------------------
    Case("POST", CREATE, "body"),  # no body at all
    Case("POST", CREATE, "body", raw=b"{", headers={"Content-Type": "application/json"}),
    Case("POST", CREATE, "body", body=[HOOK]),
    Case("POST", CREATE, "body", body="CRM"),
    Case("POST", CREATE, "body", raw=b"null", headers={"Content-Type": "application/json"}),
    Case(
        "POST", CREATE, "body", raw=b'{"name": NaN}', headers={"Content-Type": "application/json"}
    ),
    Case("POST", "/v1/events", "body", raw=b'{"type":"a","data":Infinity}'),
    Case("POST", "/v1/events", "body", raw=b'{"type":"a","data":-Infinity}'),
    Case("POST", "/v1/events", "body", raw=b'{"type":"a","data":1e999}'),
    Case("POST", "/v1/events", "body", raw=b'{"type":"a","data":"\\ud800"}'),
    Case("POST", "/v1/events", "body", raw=b'{"type":"a","data":{"\\udfff":1}}'),
    Case("POST", "/v1/events", "body", raw=b'{"type":"a","type":"b","data":1}'),
    Case("POST", "/v1/events", "body", raw=b'{"type":"a","data":"\xff\xfe"}'),
    Case("POST", "/v1/events", "body", raw=b'{"type":"a","data":' + b"9" * 5000 + b"}"),
    Case("POST", "/v1/events", "data", body={**EVENT, "data": nested(40)}),
    Case("POST", "/v1/events", "body", raw=b'{"type":"a","data":' + b"9" * 4300 + b"}"),
    Case("POST", "/v1/events", "body", raw=b'{"type":"a","data":-' + b"9" * 309 + b"}"),
    Case("POST", "/v1/events", "body", raw=b"[" * 60_000),
    Case(
        "POST", "/v1/events", "body", raw=b'{"type":"a","data":' + b"[" * 5000 + b"]" * 5000 + b"}"
    ),
    # -- content type and size -------------------------------------------------------
    Case("POST", CREATE, "Content-Type", 415, raw=json.dumps(HOOK).encode()),
    Case(
        "POST",
        CREATE,
        "Content-Type",
        415,
        raw=b"name=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Case(
        "POST",
        CREATE,
        "Content-Type",
        415,
        raw=json.dumps(HOOK).encode(),
        headers={"Content-Type": "text/plain"},
    ),
    Case(
        "POST",
        CREATE,
        "Content-Type",
        415,
        raw=json.dumps(HOOK).encode(),
        headers={"Content-Type": "application/json; charset=latin-1"},
    ),
    Case("POST", "/v1/events", "body", 413, body={**EVENT, "data": "x" * MAX_BODY_BYTES}),
    Case("PATCH", ONE, "body", 413, body={"name": "y" * (MAX_BODY_BYTES + 10)}),
    # -- create ----------------------------------------------------------------------
    Case("POST", CREATE, "name", body=without("name")),
    Case("POST", CREATE, "url", body=without("url")),
    Case("POST", CREATE, "events", body=without("events")),
    Case("POST", CREATE, "name", body=hook(name="")),
    Case("POST", CREATE, "name", body=hook(name="   \t ")),
    Case("POST", CREATE, "name", body=hook(name=42)),
    Case("POST", CREATE, "name", body=hook(name=None)),
    Case("POST", CREATE, "name", body=hook(name="a\nb")),
    Case("POST", CREATE, "name", body=hook(name="n" * 201)),
    Case("POST", CREATE, "url", body=hook(url="ftp://crm.example.com/x")),
    Case("POST", CREATE, "url", body=hook(url="/relative/path")),
    Case("POST", CREATE, "url", body=hook(url="crm.example.com/hook")),
    Case("POST", CREATE, "url", body=hook(url="https://")),
    Case("POST", CREATE, "url", body=hook(url="https://crm.example.com/x\r\nX-Evil: 1")),
    Case("POST", CREATE, "url", body=hook(url="https://crm.example.com/x\n")),
    Case("POST", CREATE, "url", body=hook(url="https://user:pw@crm.example.com/x")),
    Case("POST", CREATE, "url", body=hook(url="https://user@crm.example.com/x")),
    Case("POST", CREATE, "url", body=hook(url="https://crm.example.com:99999/x")),
    Case("POST", CREATE, "url", body=hook(url="https://crm.example.com/" + "x" * 2100)),
    Case("POST", CREATE, "url", body=hook(url=["https://crm.example.com"])),
    Case("POST", CREATE, "events", body=hook(events=[])),
    Case("POST", CREATE, "events", body=hook(events="email.replied")),
    Case("POST", CREATE, "events", body=hook(events={"a": 1})),
    Case("POST", CREATE, "events", body=hook(events=["e"] * 101)),
    Case("POST", CREATE, "events[0]", body=hook(events=[1])),
    Case("POST", CREATE, "events[1]", body=hook(events=["ok", "not ok"])),
    Case("POST", CREATE, "events[0]", body=hook(events=["*.a"])),
    Case("POST", CREATE, "events[0]", body=hook(events=["email..replied"])),
    Case("POST", CREATE, "events[0]", body=hook(events=["email.replied\n"])),
    Case("POST", CREATE, "events[0]", body=hook(events=[""])),
    Case("POST", CREATE, "retryAttempts", body=hook(retryAttempts=-1)),
    Case("POST", CREATE, "retryAttempts", body=hook(retryAttempts=21)),
    Case("POST", CREATE, "retryAttempts", body=hook(retryAttempts="3")),
    Case("POST", CREATE, "retryAttempts", body=hook(retryAttempts=True)),
    Case("POST", CREATE, "retryAttempts", body=hook(retryAttempts=2.5)),
    Case("POST", CREATE, "retryAttempts", body=hook(retryAttempts=None)),
    Case("POST", CREATE, "timeoutMs", body=hook(timeoutMs=99)),
    Case("POST", CREATE, "timeoutMs", body=hook(timeoutMs=60_001)),
    Case("POST", CREATE, "timeoutMs", body=hook(timeoutMs="10000")),
    Case("POST", CREATE, "timeoutMs", body=hook(timeoutMs=10**30)),
    Case("POST", CREATE, "secret", body=hook(secret="short")),
    # Under 16 bytes of key material: plain, and whsec_ (one byte once decoded).
    Case("POST", CREATE, "secret", body=hook(secret="k" * 15)),
    Case("POST", CREATE, "secret", body=hook(secret="whsec_aw==")),
    Case("POST", CREATE, "secret", body=hook(secret="has a space in it")),
    Case("POST", CREATE, "secret", body=hook(secret="s" * 513)),
    Case("POST", CREATE, "secret", body=hook(secret="whsec_!!not-base64!!")),
    Case("POST", CREATE, "secret", body=hook(secret=12345678)),
    Case("POST", CREATE, "nmae", body=hook(nmae="typo")),
    Case("POST", CREATE, "status", body=hook(status="active")),
    Case("POST", CREATE, "_id", body=hook(_id="665af12003de9b775decc444")),
    Case("POST", CREATE, "name", body=hook(name="ok"), query="?name=x"),
    # -- update ----------------------------------------------------------------------
    Case("PATCH", ONE, "body", body={}),
    Case("PATCH", ONE, "body", body=[]),
    Case("PATCH", ONE, "body"),
    Case("PATCH", ONE, "status", body={"status": "paused"}),
    Case("PATCH", ONE, "status", body={"status": None}),
    Case("PATCH", ONE, "status", body={"status": True}),
    Case("PATCH", ONE, "name", body={"name": None}),
    Case("PATCH", ONE, "name", body={"name": " "}),
    Case("PATCH", ONE, "secret", body={"secret": None}),
    Case("PATCH", ONE, "secret", body={"secret": "eight-ch"}),
    Case("PATCH", ONE, "secret", body={"secret": "whsec_" + "QUJDREVGR0hJSktMTU5P"}),
    Case("PATCH", ONE, "url", body={"url": "javascript:alert(1)"}),
    Case("PATCH", ONE, "events", body={"events": []}),
    Case("PATCH", ONE, "timeoutMs", body={"timeoutMs": 0}),
    Case("PATCH", ONE, "retryAttempts", body={"retryAttempts": 100}),
    Case("PATCH", ONE, "createdBy", body={"createdBy": "someone"}),
    Case("PATCH", ONE, "workspaceId", body={"workspaceId": "ws_b"}),
    Case("PATCH", ONE, "Content-Type", 415, raw=b'{"name":"x"}'),
    # -- events ----------------------------------------------------------------------
    Case("POST", "/v1/events", "type", body={"data": 1}),
    Case("POST", "/v1/events", "data", body={"type": "a"}),
    Case("POST", "/v1/events", "type", body={**EVENT, "type": ""}),
    Case("POST", "/v1/events", "type", body={**EVENT, "type": "*"}),
    Case("POST", "/v1/events", "type", body={**EVENT, "type": "email.*"}),
    Case("POST", "/v1/events", "type", body={**EVENT, "type": "a b"}),
    Case("POST", "/v1/events", "type", body={**EVENT, "type": "a\r\n"}),
    Case("POST", "/v1/events", "type", body={**EVENT, "type": 7}),
    Case("POST", "/v1/events", "type", body={**EVENT, "type": "t" * 201}),
    Case("POST", "/v1/events", "idempotencyKey", body={**EVENT, "idempotencyKey": ""}),
    Case("POST", "/v1/events", "idempotencyKey", body={**EVENT, "idempotencyKey": "k" * 256}),
    Case("POST", "/v1/events", "idempotencyKey", body={**EVENT, "idempotencyKey": "a b"}),
    Case("POST", "/v1/events", "idempotencyKey", body={**EVENT, "idempotencyKey": "é"}),
    Case("POST", "/v1/events", "idempotencyKey", body={**EVENT, "idempotencyKey": 5}),
    Case("POST", "/v1/events", "Idempotency-Key", body=EVENT, headers={"Idempotency-Key": "a b"}),
    Case(
        "POST",
        "/v1/events",
        "idempotencyKey",
        body={**EVENT, "idempotencyKey": "x"},
        headers={"Idempotency-Key": "y"},
    ),
    Case("POST", "/v1/events", "workspaceId", body={**EVENT, "workspaceId": "ws_b"}),
    # -- lists -----------------------------------------------------------------------
    *[
        Case("GET", "/v1/webhooks", "limit", query=f"?limit={v}")
        for v in ("0", "201", "-1", "abc", "1.5", "", "%201", "1000000", "٣")
    ],
    Case("GET", "/v1/webhooks", "cursor", query="?cursor=garbage"),
    Case("GET", "/v1/webhooks", "cursor", query="?cursor=1.zzzzzzzzzzzzzzzzzzzzzzzz"),
    Case("GET", "/v1/webhooks", "cursor", query="?cursor=" + "9" * 100),
    Case("GET", "/v1/webhooks", "cursor", query="?cursor="),
    Case("GET", "/v1/webhooks", "limit", query="?limit=5&limit=6"),
    Case("GET", "/v1/webhooks", "foo", query="?foo=bar"),
    Case("GET", "/v1/deliveries", "status", query="?status=done"),
    Case("GET", "/v1/deliveries", "webhookId", query="?webhookId=xyz"),
    Case("GET", "/v1/deliveries", "eventType", query="?eventType=a%20b"),
    Case("GET", "/v1/deliveries", "since", query="?since=yesterday"),
    Case("GET", "/v1/deliveries", "since", query="?since=2024-06-01T10:00:00"),
    Case("GET", "/v1/deliveries", "until", query="?until=2024-13-01T00:00:00Z"),
    Case(
        "GET",
        "/v1/deliveries",
        "until",
        query="?since=2024-06-02T00:00:00Z&until=2024-06-01T00:00:00Z",
    ),
    Case("GET", "/v1/deliveries", "stauts", query="?stauts=failed"),
    Case("GET", "/v1/deliveries/{delivery}", "verbose", query="?verbose=1"),
    # -- actions ---------------------------------------------------------------------
    Case("POST", "/v1/webhooks/{hook}/replay", "since", body={"since": "last week"}),
    Case("POST", "/v1/webhooks/{hook}/replay", "since", body={"since": 1717236000}),
    Case("POST", "/v1/webhooks/{hook}/replay", "since", body={"since": None}),
    Case("POST", "/v1/webhooks/{hook}/replay", "status", body={"status": "failed"}),
    Case("POST", "/v1/webhooks/{hook}/replay", "body", body=["x"]),
    Case("POST", "/v1/webhooks/{hook}/test", "payload", body={"payload": {}}),
    Case(
        "POST",
        "/v1/webhooks/{hook}/test",
        "Content-Type",
        415,
        raw=b"{}",
        headers={"Content-Type": "text/plain"},
    ),
    Case("POST", "/v1/deliveries/{delivery}/replay", "force", body={"force": True}),
]


@pytest.fixture
async def world(api: Api) -> tuple[str, str, str]:
    key = await api.key("ws_a")
    created = await api.webhook(key, url="https://crm.example.com/hook")
    event = await api.call("POST", "/v1/events", key=key, json_body=EVENT)
    (delivery_id,) = event.body["data"]["deliveryIds"]
    return key, created["_id"], delivery_id


async def snapshot(api: Api) -> Any:
    hooks = await api.store.list_webhooks(None, 200)
    deliveries = await api.store.list_deliveries(None, DeliveryFilter(), 200)
    return list(hooks.items), [(d.id, d.status) for d in deliveries.items]


async def test_bad_input_is_rejected_naming_the_field(
    api: Api, world: tuple[str, str, str]
) -> None:
    key, hook_id, delivery_id = world
    # The example URL is refused at once: wait until that delivery has settled.
    await api.scheduler.stop(drain_timeout=1)
    before = await snapshot(api)
    problems = []
    for case in CASES:
        path = case.path.format(hook=hook_id, delivery=delivery_id) + case.query
        headers = {"X-Api-Key": key, **case.headers}
        data = case.raw
        if data is None and case.body is not None:
            data = json.dumps(case.body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif data is not None and "Content-Type" not in case.headers and case.status != 415:
            headers["Content-Type"] = "application/json"
        async with api.session.request(
            case.method, api.base_url + path, data=data, headers=headers
        ) as resp:
            body = await resp.json(content_type=None)
        ok = (
            resp.status == case.status
            and set(body) == {"error", "message", "code"}
            and body["code"] == case.status
            and body["error"] == resp.reason
            and body["message"].startswith(f"{case.field}:")
        )
        if not ok:
            problems.append(f"{case.id}: {resp.status} {body}")
    assert not problems, "\n".join(problems)
    assert await snapshot(api) == before


async def test_valid_edge_values_are_accepted(api: Api) -> None:
    key = await api.key("ws_a")
    edge = hook(
        name="n" * 200,
        url="HTTPS://CRM.example.com:8443/a?b=c",
        events=["*", "email.*", "a-b_c.D9", "email.*"],
        retryAttempts=20,
        timeoutMs=60_000,
        # Exactly the 16 bytes of key material a secret needs ("ABCDEFGHIJKLMNOP").
        secret="whsec_" + "QUJDREVGR0hJSktMTU5PUA==",
    )
    reply = await api.call("POST", "/v1/webhooks", key=key, json_body=edge)
    assert reply.status == 201, reply.body
    assert reply.body["data"]["events"] == ["*", "email.*", "a-b_c.D9"]
    minimal = hook(retryAttempts=0, timeoutMs=100, secret=None)
    reply = await api.call("POST", "/v1/webhooks", key=key, json_body=minimal)
    assert reply.status == 201 and len(reply.body["data"]["secret"]) == 64
    event = {"type": "a", "data": nested(31), "idempotencyKey": "~" * 255}
    reply = await api.call("POST", "/v1/events", key=key, json_body=event)
    assert reply.status == 202, reply.body
    for data in (None, [], "text", 0, -1.5e300, True, {"😀": "ü\u2028"}):
        reply = await api.call(
            "POST", "/v1/events", key=key, json_body={"type": "a.b", "data": data}
        )
        assert reply.status == 202, (data, reply.body)
    reply = await api.call("GET", "/v1/webhooks", key=key, params={"limit": "200"})
    assert reply.status == 200
    reply = await api.call(
        "GET",
        "/v1/deliveries",
        key=key,
        params={"since": "2024-06-01T12:00:00+02:00", "until": "2024-06-01T10:00:00.000Z"},
    )
    assert reply.status == 200
