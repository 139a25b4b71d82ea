"""Crash suite: SIGKILL the daemon at many random moments while it claims,
sends, records and ingests, across thousands of deliveries.

After every kill: nothing acknowledged is lost and the file passes
``PRAGMA integrity_check``.  After the last restart: every delivery ends in
the status the policy prescribes, nothing stays leased, and every duplicate
the receivers saw carries the same ``X-Webhook-Id`` as its original.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

import aiohttp
import pytest
from aiohttp import web

from hookd.clock import SystemClock
from hookd.keys import generate_key
from hookd.models import NewWebhook
from hookd.storage.sqlite import SqliteStore
from tests.conftest import Receiver
from tests.daemon_proc import DaemonProcess, query

pytestmark = pytest.mark.slow

ROUNDS = 8


async def _ingest_until_cancelled(base_url: str, key: str, acked: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        i = 0
        while True:
            i += 1
            try:
                async with session.post(
                    f"{base_url}/v1/events",
                    json={"type": "order.live", "data": {"i": i}},
                    headers={"X-Api-Key": key},
                ) as resp:
                    if resp.status == 202:
                        acked.append((await resp.json())["data"]["_id"])
            except (aiohttp.ClientError, ConnectionError):
                await asyncio.sleep(0.01)  # the daemon died under us


async def test_random_sigkills_lose_nothing(daemon: DaemonProcess, receiver: Receiver) -> None:
    rng = random.Random(2024)
    seen: Counter[tuple[str, str]] = Counter()
    mismatched: list[str] = []

    def handler_for(path: str, fail_first: int):  # type: ignore[no-untyped-def]
        async def handler(request: web.Request, n: int) -> web.StreamResponse:
            event_id = request.headers["X-Webhook-Id"]
            body = json.loads(await request.read())
            if body["id"] != event_id:
                mismatched.append(event_id)
            seen[(path, event_id)] += 1
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            if seen[(path, event_id)] > fail_first:
                return web.Response(status=200)
            return web.Response(status=500)

        return handler

    store = SqliteStore(daemon.db_path, SystemClock())
    await store.open()
    for path, events, retries, fail_first in (
        ("/ok", ("*",), 3, 0),
        ("/flaky", ("order.*",), 3, 1),
        ("/fail", ("fail.*",), 1, 10**6),
    ):
        url = receiver.on(path, handler_for(path, fail_first))
        await store.create_webhook(
            NewWebhook("ws_suite", path, url, events, "suite-secret-1", retries, 1500, "t")
        )
    key = generate_key(platform=False)
    await store.create_api_key("ws_suite", key.digest, key.prefix, "user_suite")
    batch = [store.ingest_event("ws_suite", "order.created", {"i": i}) for i in range(1500)]
    batch += [store.ingest_event("ws_suite", "fail.x", {"i": i}) for i in range(100)]
    await asyncio.gather(*batch)
    await store.close()

    acked: list[str] = []
    for _round in range(ROUNDS):
        await daemon.start()
        assert daemon.listen is not None
        client = asyncio.create_task(
            _ingest_until_cancelled(f"http://{daemon.listen}", key.plaintext, acked)
        )
        await asyncio.sleep(rng.uniform(0.2, 1.2))
        await daemon.kill()
        client.cancel()
        await asyncio.gather(client, return_exceptions=True)
        assert query(daemon.db_path, "PRAGMA integrity_check") == [("ok",)]
        stored = {
            r[0] for r in query(daemon.db_path, "SELECT id FROM events WHERE type = 'order.live'")
        }
        missing = set(acked) - stored
        assert not missing, f"acknowledged events lost: {sorted(missing)[:5]}"

    assert acked, "the API acknowledged events between kills"
    await daemon.start()
    deadline = asyncio.get_running_loop().time() + 120
    while query(
        daemon.db_path, "SELECT count(*) FROM deliveries WHERE next_attempt_at IS NOT NULL"
    )[0][0]:
        assert asyncio.get_running_loop().time() < deadline, "deliveries stuck after restarts"
        await asyncio.sleep(0.25)
    assert await daemon.terminate() == 0

    rows = query(
        daemon.db_path,
        "SELECT w.name, e.type, e.id, d.status, d.budget_used, d.attempt_count, d.lease_token"
        " FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id JOIN events e ON e.id = d.event_id",
    )
    per_event = Counter(str(r[2]) for r in rows)
    for event_id in acked:
        assert per_event[event_id] == 2, "an acknowledged event lost a delivery"
    assert len(rows) >= 3200 + 2 * len(acked)
    for name, _type, event_id, status, budget, attempts, lease in rows:
        assert lease is None, "a delivery stayed leased"
        if name == "/fail":
            assert (status, budget) == ("dead_letter", 2)
        else:
            assert status == "delivered"
        assert seen[(str(name), str(event_id))] >= int(str(attempts)) >= 1
    assert query(daemon.db_path, "PRAGMA integrity_check") == [("ok",)]
    assert mismatched == [], "a request's X-Webhook-Id did not match its body"
