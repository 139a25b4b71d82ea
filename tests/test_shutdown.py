"""SIGTERM drains in-flight attempts, releases the rest, exits 0; a second signal exits now."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from aiohttp import web

from hookd.clock import SystemClock
from hookd.models import NewWebhook
from hookd.storage.sqlite import SqliteStore
from tests.conftest import Receiver
from tests.daemon_proc import DaemonProcess, query

pytestmark = pytest.mark.slow


async def _seed(db: Path, url: str, events: int) -> list[str]:
    store = SqliteStore(db, SystemClock())
    await store.open()
    await store.create_webhook(
        NewWebhook("ws_s", "slow", url, ("*",), "shutdown-secret", 3, 2000, "t")
    )
    ids = []
    for i in range(events):
        ids += (await store.ingest_event("ws_s", "t", {"i": i})).delivery_ids
    await store.close()
    return ids


async def test_sigterm_lets_in_flight_attempts_finish(
    daemon: DaemonProcess, receiver: Receiver
) -> None:
    async def slowish(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.Response(status=200)

    await _seed(daemon.db_path, receiver.on("/slowish", slowish), 4)
    daemon.extra_env["HOOKD_DELIVERY_DRAIN_TIMEOUT_SECONDS"] = "10"
    await daemon.start()
    await receiver.wait_for("/slowish", 4)
    assert await daemon.terminate() == 0
    assert [
        s
        for s, _, _ in query(
            daemon.db_path, "SELECT status, lease_token, next_attempt_at FROM deliveries"
        )
    ] == ["delivered"] * 4
    assert daemon.events("scheduler.stopped")[0]["released_leases"] == 0


async def test_sigterm_releases_what_the_drain_timeout_cuts_off(
    daemon: DaemonProcess, receiver: Receiver
) -> None:
    async def hang(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response(status=200)

    await _seed(daemon.db_path, receiver.on("/hang", hang), 3)
    daemon.extra_env["HOOKD_DELIVERY_DRAIN_TIMEOUT_SECONDS"] = "0.5"
    daemon.extra_env["HOOKD_DELIVERY_LEASE_SECONDS"] = "60"
    await daemon.start()
    await receiver.wait_for("/hang", 3)
    before = time.time() * 1000
    started = time.monotonic()
    assert await daemon.terminate() == 0
    # Drained for 0.5 s, well before the 2 s request timeout or the 60 s lease.
    assert time.monotonic() - started < 10
    for status, lease, next_at in query(
        daemon.db_path, "SELECT status, lease_token, next_attempt_at FROM deliveries"
    ):
        assert status == "pending"
        assert lease is None
        assert next_at is not None and next_at <= time.time() * 1000
        assert next_at >= before - 1000
    assert daemon.events("scheduler.stopped")[0]["released_leases"] == 3


async def test_second_signal_exits_at_once(daemon: DaemonProcess, receiver: Receiver) -> None:
    async def hang(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response(status=200)

    await _seed(daemon.db_path, receiver.on("/hang2", hang), 2)
    daemon.extra_env["HOOKD_DELIVERY_DRAIN_TIMEOUT_SECONDS"] = "20"
    await daemon.start()
    await receiver.wait_for("/hang2", 2)
    assert daemon.proc is not None
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    daemon.proc.send_signal(signal.SIGINT)
    code = await asyncio.wait_for(daemon.proc.wait(), 15)
    assert code == 1
    assert time.monotonic() - started < 15  # not the 20 s drain
