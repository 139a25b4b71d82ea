"""What a receiver on an allowed internal network answered stays out of tenants' reach.

``[delivery] allow_networks`` opens those networks to every workspace's
webhooks.  By default (``record_internal_response_bodies = false``) the body
of an answer from such an address is neither stored nor shown: not in a test
send's answer, not in a replay's, not in a delivery's attempts, not in the
database file at all.  Status codes still show.  With the switch on, bodies
are kept as for any receiver.  Both HTTP clients, through the real daemon.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Receiver, eventually
from tests.hardening.conftest import RunningDaemon, running_daemon

ANSWER = "INTERNAL-SERVICE-ANSWER-7f3a"


def _answering(status: int) -> Any:
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=status, text=ANSWER)

    return handler


async def _call(d: RunningDaemon, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession(headers={"X-Api-Key": d.key}) as http,
        http.request(method, d.base_url + path, json=body) as resp,
    ):
        payload = await resp.json()
        assert resp.status < 300, payload
        return payload["data"]


async def _exercise(d: RunningDaemon, receiver: Receiver) -> tuple[Any, Any, Any]:
    """A test send, a dead letter's attempt and its replay, to the internal receiver."""
    ok_url = receiver.on("/ok", _answering(200))
    fail_url = receiver.on("/fail", _answering(503))
    ok = await _call(d, "POST", "/v1/webhooks", {"name": "ok", "url": ok_url, "events": ["x"]})
    test = await _call(d, "POST", f"/v1/webhooks/{ok['_id']}/test")
    body = {"name": "fail", "url": fail_url, "events": ["y"], "retryAttempts": 0}
    await _call(d, "POST", "/v1/webhooks", body)
    (delivery_id,) = (await _call(d, "POST", "/v1/events", {"type": "y", "data": {}}))[
        "deliveryIds"
    ]

    async def dead() -> bool:
        return (await _call(d, "GET", f"/v1/deliveries/{delivery_id}"))["status"] == "dead_letter"

    await eventually(dead)
    replay = await _call(d, "POST", f"/v1/deliveries/{delivery_id}/replay")
    # The replay's attempt was sent and written before its answer came back.
    assert len(receiver.received("/fail")) == 2
    delivery = await _call(d, "GET", f"/v1/deliveries/{delivery_id}")
    return test, replay, delivery


def _database_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("daemon.db*"))


@pytest.mark.parametrize("client", ["hookd", "aiohttp"])
async def test_internal_answers_are_withheld_by_default(
    tmp_path: Path, receiver: Receiver, client: str
) -> None:
    delivery = {"allow_networks": ("127.0.0.0/8",), "client": client}
    async with running_daemon(tmp_path, delivery=delivery) as d:
        test, replay, delivery_shown = await _exercise(d, receiver)
    assert (test["statusCode"], test["delivered"], test["responseBody"]) == (200, True, None)
    assert (replay["httpStatusCode"], replay["responseBody"]) == (503, None)
    assert delivery_shown["lastStatusCode"] == 503
    assert delivery_shown["lastResponseBody"] is None
    attempts = delivery_shown["attempts"]
    assert [(a["statusCode"], a["responseBody"]) for a in attempts] == [(503, None)] * 2
    # Received, answered, and recorded nowhere.
    assert len(receiver.received("/ok")) == 1
    assert ANSWER.encode() not in _database_bytes(tmp_path)


async def test_the_switch_keeps_internal_answers(tmp_path: Path, receiver: Receiver) -> None:
    delivery = {"allow_networks": ("127.0.0.0/8",), "record_internal_response_bodies": True}
    async with running_daemon(tmp_path, delivery=delivery) as d:
        test, replay, delivery_shown = await _exercise(d, receiver)
    assert (test["statusCode"], test["responseBody"]) == (200, ANSWER)
    assert (replay["httpStatusCode"], replay["responseBody"]) == (503, ANSWER)
    assert [a["responseBody"] for a in delivery_shown["attempts"]] == [ANSWER] * 2
