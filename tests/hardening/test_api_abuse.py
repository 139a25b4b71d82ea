"""API abuse against the real Daemon: slow clients, oversized bodies, where it listens.

Slow clients are raw sockets.  ``server.client_timeout_seconds`` is short here
(2 s) so "eventually dropped" fits in a test; deliveries and well-behaved
API calls must go on meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from hookd.clock import ManualClock
from hookd.config import ServerConfig, load_config
from hookd.models import Status
from tests.conftest import Receiver
from tests.hardening.conftest import RunningDaemon, running_daemon

PATIENCE = 2.0
# Scheduling slack on a busy 2-core box on top of the client timeout.
SLACK = 3.0


def _port(d: RunningDaemon) -> int:
    return int(d.daemon.bound[0][1])


async def _open(
    d: RunningDaemon, first_bytes: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(d))
    if first_bytes:
        writer.write(first_bytes)
        await writer.drain()
    return reader, writer


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sent before it closed the connection (fails if it did not)."""
    data = b""
    async with asyncio.timeout(within):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def test_half_open_clients_do_not_stall_deliveries_and_are_dropped(
    tmp_path: Path, receiver: Receiver
) -> None:
    clock = ManualClock()
    async with running_daemon(
        tmp_path,
        clock=clock,
        server={"client_timeout_seconds": PATIENCE},
        delivery={"allow_networks": ("127.0.0.0/8",)},
    ) as d:
        key_header = f"X-Api-Key: {d.key}\r\n".encode()
        partial_head = b"POST /v1/events HTTP/1.1\r\nHost: hookd\r\n" + key_header
        partial_body = (
            b"POST /v1/events HTTP/1.1\r\nHost: hookd\r\n"
            + key_header
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"type": "t", "data": {"pad": "'
        )
        opened = time.monotonic()
        hung = [await _open(d, partial_head) for _ in range(200)]
        hung += [await _open(d, partial_body) for _ in range(20)]
        hung += [await _open(d, b"") for _ in range(20)]  # connect and say nothing

        # Meanwhile a well-behaved client and the scheduler carry on.
        hook_url = receiver.status("/during", 200)
        headers = {"X-Api-Key": d.key}
        async with aiohttp.ClientSession(base_url=d.base_url, headers=headers) as http:
            body = {"name": "n", "url": hook_url, "events": ["*"]}
            async with http.post("/v1/webhooks", json=body) as r:
                assert r.status == 201
            started = time.monotonic()
            async with http.post("/v1/events", json={"type": "t", "data": {}}) as r:
                assert r.status == 202
                (delivery_id,) = (await r.json())["data"]["deliveryIds"]
            await receiver.wait_for("/during", 1, timeout=PATIENCE)
            delivered_in = time.monotonic() - started
        assert delivered_in < 1.0, delivered_in
        assert time.monotonic() - opened < PATIENCE, "measured while the clients still hung"
        print(
            f"delivery completed in {delivered_in * 1000:.0f} ms beside {len(hung)} stalled sockets"
        )

        # Every stalled socket is then closed by the server: heads at the deadline,
        # stalled bodies after their 408 and the lingering time.
        results = await asyncio.gather(
            *(_closed_by_server(reader, 2 * PATIENCE + SLACK) for reader, _ in hung)
        )
        dropped_after = time.monotonic() - opened
        print(f"all {len(hung)} stalled sockets dropped after {dropped_after:.2f} s")
        assert dropped_after >= PATIENCE - 0.2
        # Stalled bodies get a 408 in the usual envelope before the close.
        for data in results[200:220]:
            assert data.startswith(b"HTTP/1.1 408"), data[:80]
            assert b'"code": 408' in data or b'"code":408' in data
        for _, writer in hung:
            writer.close()
        await wait_status_delivered(d, delivery_id)


async def wait_status_delivered(d: RunningDaemon, delivery_id: str) -> None:
    from tests.conftest import eventually

    async def done() -> bool:
        delivery = await d.daemon.store.get_delivery(None, delivery_id)
        return delivery is not None and delivery.status is Status.DELIVERED

    await eventually(done)


async def test_a_client_trickling_its_headers_is_cut_at_the_deadline(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, server={"client_timeout_seconds": PATIENCE}) as d:
        reader, writer = await _open(d, b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()

        async def trickle() -> None:
            for _ in range(100):
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(trickle())
        try:
            await _closed_by_server(reader, PATIENCE + SLACK)
        finally:
            dripping.cancel()
            writer.close()
        elapsed = time.monotonic() - started
        # Sending a byte every 100 ms does not buy more time.
        assert PATIENCE - 0.2 <= elapsed < PATIENCE + SLACK, elapsed


async def test_request_bodies_are_size_limited(tmp_path: Path) -> None:
    limit = 2048
    async with running_daemon(tmp_path, server={"max_body_bytes": limit}) as d:
        headers = {"X-Api-Key": d.key, "Content-Type": "application/json"}
        big = json.dumps({"type": "t", "data": {"pad": "x" * (limit * 2)}}).encode()
        fits = json.dumps({"type": "t", "data": {"pad": "x" * (limit - 100)}}).encode()
        assert len(fits) <= limit < len(big)

        async def chunks(data: bytes):  # type: ignore[no-untyped-def]
            for i in range(0, len(data), 512):
                yield data[i : i + 512]

        async with aiohttp.ClientSession(base_url=d.base_url, headers=headers) as http:
            async with http.post("/v1/events", data=big) as r:
                assert r.status == 413
                body = await r.json()
            assert body == {
                "error": "Request Entity Too Large",
                "message": f"body: larger than the {limit} bytes allowed",
                "code": 413,
            }
            # Without a Content-Length (chunked), the limit holds while reading.
            async with http.post("/v1/events", data=chunks(big)) as r:
                assert r.status == 413
            async with http.patch("/v1/webhooks/" + "0" * 24, data=big) as r:
                assert r.status == 413
            async with http.post("/v1/events", data=fits) as r:
                assert r.status == 202


async def test_api_listens_on_loopback_unless_configured(tmp_path: Path) -> None:
    assert ServerConfig().listen == "127.0.0.1:8080"
    assert load_config(None, env={}).server.listen == "127.0.0.1:8080"
    default_host = ServerConfig().listen.rpartition(":")[0]
    async with running_daemon(tmp_path, server={"listen": f"{default_host}:0"}) as d:
        assert {host for host, _ in d.daemon.bound} == {"127.0.0.1"}
        port = _port(d)
        other = _non_loopback_address()
        if other is None:
            pytest.skip("no non-loopback address to try")
        with socket.socket() as s:
            s.settimeout(2)
            with pytest.raises(ConnectionRefusedError):
                s.connect((other, port))


def _non_loopback_address() -> str | None:
    """This host's address on its default route, without sending anything."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: never reached, UDP connect sends nothing
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else str(address)


async def test_slow_clients_do_not_delay_a_scheduler_only_delivery(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Ingest straight into the store while 200 sockets hang: the attempt is prompt."""
    async with running_daemon(
        tmp_path,
        server={"client_timeout_seconds": 30.0},
        delivery={"allow_networks": ("127.0.0.0/8",)},
    ) as d:
        hung = [await _open(d, b"GET /v1/deliveries HTTP/1.1\r\nHost: x\r\n") for _ in range(200)]
        try:
            from hookd.models import NewWebhook

            await d.daemon.store.create_webhook(
                NewWebhook(
                    workspace_id=d.workspace,
                    name="n",
                    url=receiver.status("/store", 200),
                    events=("*",),
                    secret="secret-0123456789",
                    retry_attempts=0,
                    timeout_ms=2000,
                    created_by="t",
                )
            )
            started = time.monotonic()
            (delivery_id,) = (await d.daemon.store.ingest_event(d.workspace, "t", {})).delivery_ids
            d.daemon.scheduler.wake()
            await receiver.wait_for("/store", 1, timeout=5)
            assert time.monotonic() - started < 1.0
            await wait_status_delivered(d, delivery_id)
        finally:
            for _, writer in hung:
                writer.close()
