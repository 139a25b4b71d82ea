"""A real hookd API on 127.0.0.1, on each backend: store, Scheduler, Sender, aiohttp server.

Requests go over real HTTP with an aiohttp ClientSession.  The only thing not
quite production is the sender's reach: :class:`LoopbackOnlySender` refuses
every destination that is not a loopback IP literal *before* resolving it, so
webhooks created with example URLs (the seeds', the fuzzer's) can never make
the test suite touch DNS or the network.  Loopback receivers get the real
``Sender`` code path, signing and all.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from hookd.api.app import build_app
from hookd.api.context import AppContext
from hookd.api.listener import Listener
from hookd.attempts import Attempts
from hookd.clock import ManualClock
from hookd.config import Config, QuotasConfig, ServerConfig
from hookd.keys import generate_key
from hookd.metrics import Metrics
from hookd.policy import ErrorKind
from hookd.scheduler import Scheduler
from hookd.sender import AddressPolicy, Sender, SendResult
from hookd.storage import Store
from hookd.storage.composed import Quotas
from tests.conftest import delivery_config
from tests.support.backends import BACKENDS, fresh_store

MAX_BODY_BYTES = 64 * 1024


class LoopbackOnlySender(Sender):
    async def send(
        self, url: str, body: bytes, headers: dict[str, str], timeout_ms: int
    ) -> SendResult:
        host = urlsplit(url).hostname or ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return SendResult(None, ErrorKind.BLOCKED, "blocked", None, None, 0)
        return await super().send(url, body, headers, timeout_ms)


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    raw: bytes = b""


@dataclass
class Api:
    base_url: str
    session: aiohttp.ClientSession
    store: Store
    scheduler: Scheduler
    clock: ManualClock
    config: Config
    app: web.Application

    async def key(self, workspace: str | None, owner: str = "user_123") -> str:
        """A new API key: a workspace key, or a platform key for ``None``."""
        if workspace is not None:
            await self.store.ensure_workspace(workspace)
        new = generate_key(platform=workspace is None)
        await self.store.create_api_key(workspace, new.digest, new.prefix, owner)
        return new.plaintext

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json_body: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        hdrs = dict(headers or {})
        if key is not None:
            hdrs.setdefault("X-Api-Key", key)
        payload: bytes | str | None = data
        if json_body is not None:
            payload = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        async with self.session.request(
            method, self.base_url + path, data=payload, headers=hdrs, params=params
        ) as resp:
            raw = await resp.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            return Reply(resp.status, body, dict(resp.headers), raw)

    async def webhook(self, key: str, **fields: Any) -> dict[str, Any]:
        body = {"name": "hook", "url": "https://crm.example.com/hook", "events": ["*"]}
        body.update(fields)
        reply = await self.call("POST", "/v1/webhooks", key=key, json_body=body)
        assert reply.status == 201, reply.body
        return reply.body["data"]  # type: ignore[no-any-return]


def api_config(quotas: QuotasConfig | None = None, **server: Any) -> Config:
    return Config(
        server=ServerConfig(max_body_bytes=MAX_BODY_BYTES, **server),
        delivery=delivery_config(),
        quotas=quotas or QuotasConfig(),
    )


@contextlib.asynccontextmanager
async def running_api(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    clock: ManualClock,
    config: Config | None = None,
) -> AsyncIterator[Api]:
    """The API served over loopback on a fresh store of ``backend``."""
    config = config or api_config()
    quotas = Quotas(
        webhooks_per_workspace=config.quotas.webhooks_per_workspace,
        deliveries_per_request=config.quotas.deliveries_per_request,
    )
    async with fresh_store(backend, request, tmp_path, clock, quotas) as store:
        sender = LoopbackOnlySender(
            AddressPolicy(config.delivery.allow_networks),
            max_response_bytes=config.delivery.max_response_bytes,
        )
        await sender.start()
        metrics = Metrics()
        rng = random.Random(11)
        attempts = Attempts(store, sender, config.delivery, clock, metrics, rng)
        scheduler = Scheduler(store, attempts, config.delivery, clock)
        app = build_app(AppContext(config, store, scheduler, attempts, metrics, clock))
        listener = Listener(app, shutdown_timeout=0.5)
        await listener.start("127.0.0.1", 0)
        port = listener.addresses[0][1]
        scheduler.start()
        session = aiohttp.ClientSession()
        try:
            yield Api(f"http://127.0.0.1:{port}", session, store, scheduler, clock, config, app)
        finally:
            await session.close()
            await scheduler.stop(drain_timeout=0.5)
            await listener.stop()
            await sender.close()


@pytest.fixture(params=BACKENDS)
async def api(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Api]:
    async with running_api(request.param, request, tmp_path, clock) as served:
        yield served
