"""Helpers shared by the API tests."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from hookd.models import Status
from tests.api.conftest import Api
from tests.conftest import Receiver, eventually


async def status_of(api: Api, delivery_id: str) -> Status:
    d = await api.store.get_delivery(None, delivery_id)
    assert d is not None
    return d.status


async def wait_status(api: Api, delivery_id: str, status: Status) -> None:
    async def reached() -> bool:
        api.scheduler.wake()
        return await status_of(api, delivery_id) is status

    await eventually(reached)


async def ingest(api: Api, key: str, type_: str = "email.replied", **extra: Any) -> dict[str, Any]:
    reply = await api.call(
        "POST", "/v1/events", key=key, json_body={"type": type_, "data": {}, **extra}
    )
    assert reply.status == 202, reply.body
    return reply.body["data"]  # type: ignore[no-any-return]


async def dead_letter(api: Api, key: str, url: str, **hook: Any) -> tuple[str, str]:
    """A webhook (no retries) and one of its deliveries, dead-lettered by a failing receiver."""
    created = await api.webhook(key, url=url, retryAttempts=0, **hook)
    (delivery_id,) = (await ingest(api, key))["deliveryIds"]
    await wait_status(api, delivery_id, Status.DEAD_LETTER)
    return created["_id"], delivery_id


async def quiet(api: Api, receiver: Receiver, path: str, expected: int) -> None:
    for _ in range(5):
        api.clock.advance(7200)
        api.scheduler.wake()
        await asyncio.sleep(0.05)
    assert len(receiver.received(path)) == expected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
