"""Fixtures for the hardening suites: socket-level listeners, a policy spy, harnesses.

Everything listens on loopback.  Listeners count *accepted TCP connections*
(``connection_made``), not HTTP requests, so "the internal listener saw
nothing" means not even a handshake reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from hookd.attempts import Attempts
from hookd.clock import ManualClock
from hookd.metrics import Metrics
from hookd.models import Status
from hookd.scheduler import Scheduler
from hookd.sender import AddressPolicy, BlockedAddressError, Sender
from hookd.storage.sqlite import SqliteStore
from tests.conftest import Harness, delivery_config, eventually

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class _Counting(asyncio.Protocol):
    def __init__(self, owner: CountingServer) -> None:
        self.owner = owner
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner.connections += 1
        self.owner.peers.append(transport.get_extra_info("peername"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and self.transport is not None:
            self.owner.requests += 1
            self.transport.write(self.owner.response)
            self.transport.close()


@dataclass
class CountingServer:
    """A TCP listener that counts accepted connections and answers each request once."""

    response: bytes = OK_RESPONSE
    connections: int = 0
    requests: int = 0
    peers: list[Any] = field(default_factory=list)
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    port: int = 0
    hosts: tuple[str, ...] = ()

    async def listen(self, host: str, port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Counting(self), host, port)
        self.servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        self.hosts = (*self.hosts, host)
        return self.port

    async def close(self) -> None:
        for server in self.servers:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()


async def listen_on_same_port(server: CountingServer, hosts: Iterable[str]) -> int:
    """Bind ``hosts`` (first one picks the port) on one port number; retry on a clash."""
    first, *rest = list(hosts)
    for _ in range(20):
        port = await server.listen(first)
        try:
            for host in rest:
                await server.listen(host, port)
        except OSError:
            await server.close()
            server.servers.clear()
            server.hosts = ()
            continue
        return port
    raise RuntimeError("could not bind the same port on every host")


@pytest.fixture
async def internal() -> AsyncIterator[CountingServer]:
    """The "internal service": 127.0.0.1 and, where possible, ::1, on one port."""
    server = CountingServer()
    hosts = ["127.0.0.1"] + (["::1"] if ipv6_loopback_available() else [])
    await listen_on_same_port(server, hosts)
    yield server
    await server.close()


class SpyPolicy(AddressPolicy):
    """The real policy, recording every address the socket factory judged."""

    def __init__(self, allow_networks: Iterable[str] = ()) -> None:
        super().__init__(allow_networks)
        self.opened: list[str] = []
        self.refused: list[str] = []

    def socket_factory(self, addr_info: Any) -> socket.socket:
        host = str(addr_info[4][0])
        try:
            sock = super().socket_factory(addr_info)
        except BlockedAddressError:
            self.refused.append(host)
            raise
        self.opened.append(host)
        return sock


class ScriptedResolver(AbstractResolver):
    """DNS under the test's control: ``answers[name]`` is what the next lookup returns."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        return None


@dataclass
class PolicyHarness(Harness):
    policy: SpyPolicy = field(default_factory=SpyPolicy)


@pytest.fixture
async def policy_harness(
    store: SqliteStore, clock: ManualClock, sender_client: str
) -> AsyncIterator[Callable[..., Awaitable[PolicyHarness]]]:
    """Like ``harness_factory``, with a spying policy and an optional resolver."""
    created: list[PolicyHarness] = []

    async def make(*, resolver: AbstractResolver | None = None, **overrides: Any) -> PolicyHarness:
        cfg = delivery_config(**overrides)
        policy = SpyPolicy(cfg.allow_networks)
        sender = Sender(
            policy,
            max_response_bytes=cfg.max_response_bytes,
            resolver=resolver,
            client=sender_client,
        )
        await sender.start()
        metrics = Metrics()
        attempts = Attempts(store, sender, cfg, clock, metrics, random.Random(3))
        scheduler = Scheduler(store, attempts, cfg, clock)
        h = PolicyHarness(store, scheduler, sender, clock, metrics, policy)
        created.append(h)
        return h

    yield make
    for h in created:
        await h.scheduler.stop(drain_timeout=0.5)
        await h.sender.close()


async def wait_terminal(h: Harness, delivery_ids: Iterable[str], timeout: float = 10.0) -> None:
    ids = list(delivery_ids)

    async def done() -> bool:
        for delivery_id in ids:
            d = await h.store.get_delivery(None, delivery_id)
            assert d is not None
            if d.status not in (Status.DELIVERED, Status.DEAD_LETTER):
                return False
        return True

    await eventually(done, timeout=timeout)


async def wait_status(h: Harness, delivery_id: str, *statuses: Status) -> None:
    async def reached() -> bool:
        d = await h.store.get_delivery(None, delivery_id)
        return d is not None and d.status in statuses

    await eventually(reached)


@dataclass
class RunningDaemon:
    daemon: Any
    base_url: str
    key: str
    workspace: str = "ws_hardening"


@contextlib.asynccontextmanager
async def running_daemon(
    tmp_path: Any, clock: Any = None, **sections: Any
) -> AsyncIterator[RunningDaemon]:
    """A real ``Daemon`` (API, scheduler, sender) on 127.0.0.1 with a workspace key.

    ``sections`` are config sections as dicts, e.g. ``server={"max_body_bytes": 1024}``.
    """
    from hookd.config import Config, DatabaseConfig, DeliveryConfig, ServerConfig
    from hookd.daemon import Daemon
    from hookd.keys import generate_key

    server = {"listen": "127.0.0.1:0", **sections.pop("server", {})}
    delivery = {"poll_interval_seconds": 0.05, **sections.pop("delivery", {})}
    config = Config(
        server=ServerConfig(**server),
        database=DatabaseConfig(path=str(tmp_path / "daemon.db")),
        delivery=DeliveryConfig(**delivery),
        **sections,
    )
    daemon = Daemon(config, clock=clock)
    await daemon.start()
    try:
        workspace = "ws_hardening"
        await daemon.store.ensure_workspace(workspace)
        new = generate_key(platform=False)
        await daemon.store.create_api_key(workspace, new.digest, new.prefix, "user_hardening")
        host, port = daemon.bound[0]
        yield RunningDaemon(daemon, f"http://{host}:{port}", new.plaintext, workspace)
    finally:
        await daemon.stop()
