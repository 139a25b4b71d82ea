"""Shared fixtures: real SQLite files, real loopback receivers, an injected clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hookd.attempts import Attempts
from hookd.clock import ManualClock
from hookd.config import DeliveryConfig
from hookd.metrics import Metrics
from hookd.models import NewWebhook, Webhook
from hookd.scheduler import Scheduler
from hookd.sender import AddressPolicy, Sender
from hookd.storage.sqlite import SqliteStore
from hookd.storage.sqlite.connection import AdminConnection
from tests.daemon_proc import DaemonProcess
from tests.support.postgres import postgres_database  # noqa: F401 - a session fixture
from tests.support.services import in_ci, is_service_skip

LOOPBACK_ALLOWED = ("127.0.0.0/8", "::1/128")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "hookd.db", clock)
    await s.open()
    yield s
    await s.close()


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    path: str


Handler = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


@dataclass
class Receiver:
    """A real aiohttp server on loopback whose answers a test scripts per path."""

    base_url: str = ""
    requests: list[Received] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def on(self, path: str, handler: Handler) -> str:
        self.handlers[path] = handler
        return self.url(path)

    def status(self, path: str, *codes: int, headers: dict[str, str] | None = None) -> str:
        """Answer with ``codes`` in turn (the last repeats)."""

        async def handler(request: web.Request, n: int) -> web.StreamResponse:
            code = codes[min(n, len(codes) - 1)]
            return web.Response(status=code, text=f"answer {code}", headers=headers or {})

        return self.on(path, handler)

    def received(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 10.0) -> list[Received]:
        async def enough() -> None:
            async with self.arrived:
                await self.arrived.wait_for(lambda: len(self.received(path)) >= count)

        await asyncio.wait_for(enough(), timeout)
        return self.received(path)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def dispatch(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        n = len(rec.received(request.path))
        rec.requests.append(Received(body, dict(request.headers), request.path))
        async with rec.arrived:
            rec.arrived.notify_all()
        handler = rec.handlers.get(request.path)
        if handler is None:
            return web.Response(status=200, text="ok")
        return await handler(request, n)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.base_url = f"http://127.0.0.1:{port}"
    yield rec
    await runner.cleanup()


def delivery_config(**overrides: Any) -> DeliveryConfig:
    base = DeliveryConfig(
        allow_networks=LOOPBACK_ALLOWED,
        # Loopback receivers stand in for public endpoints here: keep what they answer.
        record_internal_response_bodies=True,
        poll_interval_seconds=0.05,
        drain_timeout_seconds=2.0,
    )
    return replace(base, **overrides)


@dataclass
class Harness:
    store: SqliteStore
    scheduler: Scheduler
    sender: Sender
    clock: ManualClock
    metrics: Metrics

    async def webhook(self, url: str, **overrides: Any) -> Webhook:
        fields: dict[str, Any] = {
            "workspace_id": "ws_test",
            "name": "test hook",
            "url": url,
            "events": ("*",),
            "secret": "test-secret-0123456789",
            "retry_attempts": 3,
            "timeout_ms": 2000,
            "created_by": "user_test",
        }
        fields.update(overrides)
        return await self.store.create_webhook(NewWebhook(**fields))


@pytest.fixture
def sender_client() -> str:
    """The transport the harnesses' senders use; the sender suites (chaos, SSRF)
    override this fixture to run on every transport."""
    return "hookd"


@pytest.fixture
async def harness_factory(
    store: SqliteStore, clock: ManualClock, sender_client: str
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    created: list[Harness] = []

    async def make(**config_overrides: Any) -> Harness:
        cfg = delivery_config(**config_overrides)
        sender = Sender(
            AddressPolicy(cfg.allow_networks),
            max_response_bytes=cfg.max_response_bytes,
            client=sender_client,
        )
        await sender.start()
        metrics = Metrics()
        attempts = Attempts(store, sender, cfg, clock, metrics, random.Random(7))
        scheduler = Scheduler(store, attempts, cfg, clock)
        h = Harness(store, scheduler, sender, clock, metrics)
        created.append(h)
        return h

    yield make
    for h in created:
        await h.scheduler.stop(drain_timeout=0.5)
        await h.sender.close()


@pytest.fixture
async def harness(harness_factory: Callable[..., Awaitable[Harness]]) -> Harness:
    return await harness_factory()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``check`` until true; generous bounds so a slow CI box never flakes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await check():
            return
        if loop.time() > deadline:
            raise AssertionError("condition not reached within the time limit")
        await asyncio.sleep(interval)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[DaemonProcess]:
    """A ``hookd serve`` subprocess on a fresh database; killed if a test leaves it running."""
    d = DaemonProcess(tmp_path / "daemon.db")
    yield d
    await d.ensure_dead()


# -- CI: no test that needs a service may be skipped (see tests/support/services.py) --

_service_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        if is_service_skip(reason):
            _service_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A failed test may leave a store open; its aiosqlite thread would keep
    # the interpreter from exiting.
    AdminConnection.stop_all()
    if in_ci() and _service_skips:
        lines = "\n  ".join(_service_skips)
        print(f"\nHOOKD_CI=1 but these tests were skipped for a missing service:\n  {lines}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
