"""delivery.workers > 1: extra processes deliver beside serve, and /metrics adds them up."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request

import pytest
from aiohttp import web

from hookd.clock import SystemClock
from hookd.models import NewWebhook
from hookd.storage.sqlite import SqliteStore
from tests.conftest import Receiver
from tests.daemon_proc import DaemonProcess

pytestmark = pytest.mark.slow

WORKERS = "HOOKD_DELIVERY_WORKERS"


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


async def test_workers_share_the_queue_and_the_metrics(
    daemon: DaemonProcess, receiver: Receiver
) -> None:
    daemon.extra_env[WORKERS] = "3"

    async def slow_ok(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.02)
        return web.Response(status=200)

    store = SqliteStore(daemon.db_path, SystemClock())
    await store.open()
    url = receiver.on("/w", slow_ok)
    for i in range(4):
        await store.create_webhook(
            NewWebhook("ws_w", f"h{i}", url, (f"t{i}",), "workers-secret", 3, 1500, "t")
        )
    total = 1200
    await daemon.start()
    # Work arrives once every process can claim it: serve alone drains 1200
    # deliveries faster than a worker process starts, which would prove nothing.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while len(daemon.events("worker.ready")) < 2:
        assert loop.time() < deadline, "workers did not become ready"
        await asyncio.sleep(0.05)
    await asyncio.gather(*(store.ingest_event("ws_w", f"t{i % 4}", {"i": i}) for i in range(total)))
    await store.close()
    await receiver.wait_for("/w", total, timeout=90)
    await asyncio.sleep(1.5)  # one more snapshot from every worker

    def scrape() -> str:
        with urllib.request.urlopen(f"http://{daemon.listen}/metrics", timeout=5) as resp:
            return resp.read().decode()

    text = await asyncio.to_thread(scrape)
    assert _metric(text, 'hookd_attempts_total{outcome="2xx"}') == total
    assert _metric(text, 'hookd_delivery_transitions_total{status="delivered"}') == total
    assert _metric(text, "hookd_attempt_duration_seconds_count") == total

    attempts_by_process: dict[object, int] = {}
    for line in daemon.log_lines:
        if '"delivery.attempt"' in line:
            worker = json.loads(line).get("worker", 0)
            attempts_by_process[worker] = attempts_by_process.get(worker, 0) + 1
    assert sum(attempts_by_process.values()) == total
    assert len(attempts_by_process) >= 2, f"only one process delivered: {attempts_by_process}"
    # Every request went out once: the leases kept the processes apart.
    ids = [r.headers["X-Webhook-Id"] for r in receiver.received("/w")]
    assert len(ids) == len(set(ids)) == total

    pids = {int(json.loads(line)["pid"]) for line in daemon.log_lines if '"worker.started"' in line}
    assert len(pids) == 2
    assert await daemon.terminate() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_killed_worker_is_restarted(daemon: DaemonProcess) -> None:
    daemon.extra_env[WORKERS] = "3"
    await daemon.start()

    def started() -> list[int]:
        return [
            int(json.loads(line)["pid"]) for line in daemon.log_lines if '"worker.started"' in line
        ]

    for _ in range(100):
        if len(started()) == 2:
            break
        await asyncio.sleep(0.1)
    victim = started()[0]
    os.kill(victim, signal.SIGKILL)
    for _ in range(100):
        if len(started()) == 3:
            break
        await asyncio.sleep(0.1)
    assert len(started()) == 3 and victim not in started()[2:]
    assert any('"worker.exited"' in line for line in daemon.log_lines)
    assert await daemon.terminate() == 0


async def test_workers_exit_when_serve_is_killed(daemon: DaemonProcess) -> None:
    daemon.extra_env[WORKERS] = "3"
    await daemon.start()
    for _ in range(100):
        pids = [
            int(json.loads(line)["pid"]) for line in daemon.log_lines if '"worker.ready"' in line
        ]
        if len(pids) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(pids) == 2
    await asyncio.wait_for(daemon.kill(), 30)  # returns once the workers closed stderr too

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    for _ in range(100):
        if all(gone(p) for p in pids):
            break
        await asyncio.sleep(0.1)
    assert all(gone(p) for p in pids)
    assert any('"worker.orphaned"' in line for line in daemon.log_lines)
