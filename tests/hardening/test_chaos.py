"""Hostile receivers: a raw asyncio server on loopback that misbehaves on purpose.

Each case runs through the real scheduler, sender and SQLite store, next to a
healthy endpoint that must keep delivering while the hostile one misbehaves.
Every case must end in the status the README's table prescribes, within the
webhook's timeoutMs (plus scheduling slack), and the response-reading cases
must keep memory bounded (tracemalloc peak over the whole attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate

import pytest

from hookd.models import Status
from hookd.sender import CLIENTS, TIMEOUT_MESSAGE, AddressPolicy, Sender
from tests.conftest import Harness, eventually
from tests.hardening.conftest import CountingServer, wait_status

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=CLIENTS)
def sender_client(request: pytest.FixtureRequest) -> str:
    """This suite runs on every transport: hookd's own client and aiohttp's."""
    return str(request.param)


TIMEOUT_MS = 1500
# Scheduling slack on a busy 2-core CI box, on top of timeoutMs.
SLACK_MS = 1500
# Upper bound for the tracemalloc peak of one attempt that reads a hostile body.
MEMORY_BOUND = 3 * 1024 * 1024


def head(status: str, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def _never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


async def _trickle_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for byte in head("200 OK", "Content-Length: 2") + b"ok":
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(1)


async def _trickle_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(head("200 OK", "Content-Length: 100"))
    for _ in range(100):
        writer.write(b"a")
        await writer.drain()
        await asyncio.sleep(1)


async def _endless_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(head("200 OK", "Transfer-Encoding: chunked", "Content-Type: text/plain"))
    chunk = b"x" * 65536
    while True:
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        await asyncio.sleep(0)


async def _endless_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(head("200 OK", f"Content-Length: {10**15}"))
    chunk = b"y" * 65536
    while True:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0)


def _gzip_bomb_parts() -> tuple[bytes, bytes]:
    """The start of a gzip stream of zeros, and a block that repeats it by 1 MiB forever."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    start = b"".join(
        compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH) for _ in range(2)
    )
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return start, block


_GZIP_START, _GZIP_BLOCK = _gzip_bomb_parts()


async def _gzip_bomb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An endless gzip stream of zeros: ~1 KiB on the wire per MiB inflated, forever."""
    writer.write(head("200 OK", "Content-Encoding: gzip", "Transfer-Encoding: chunked"))
    writer.write(b"%x\r\n%s\r\n" % (len(_GZIP_START), _GZIP_START))
    frame = b"%x\r\n%s\r\n" % (len(_GZIP_BLOCK) * 64, _GZIP_BLOCK * 64)  # 64 MiB a frame
    while True:
        writer.write(frame)
        await writer.drain()
        await asyncio.sleep(0)  # drain() does not yield below the high-water mark


_DEFLATE_BOMB = zlib.compress(bytes(64 * 1024 * 1024), 9)  # 64 MiB inflated, ~64 KiB sent


async def _deflate_bomb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(
        head("200 OK", "Content-Encoding: deflate", f"Content-Length: {len(_DEFLATE_BOMB)}")
        + _DEFLATE_BOMB
    )
    await writer.drain()


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    # Linger 0: close() sends RST instead of FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _close_silently(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _malformed_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 2OO Fine\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(3600)


async def _not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
    await writer.drain()
    await asyncio.sleep(3600)


# Built once, so the receiver's own copy is not counted against the sender's memory.
_HUGE_HEADER = b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * (1024 * 1024) + b"\r\n\r\n"


async def _huge_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_HUGE_HEADER)
    await writer.drain()
    await asyncio.sleep(3600)


async def _endless_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n")
    n = 0
    while True:
        writer.write(b"X-H-%d: %s\r\n" % (n, b"v" * 100))
        n += 1
        await writer.drain()
        await asyncio.sleep(0)


async def _interim_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """1xx responses but never a final one."""
    while True:
        writer.write(b"HTTP/1.1 102 Processing\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)


async def _status_999(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(head("999 Whatever", "Content-Length: 0"))
    await writer.drain()


async def _truncated_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(head("200 OK", "Content-Length: 1000") + b"only this much")
    await writer.drain()
    writer.close()


def _fixed(data: bytes) -> Behaviour:
    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    return behave


@dataclass
class ChaosReceiver:
    """Raw HTTP/1.1 on 127.0.0.1: reads the request, then runs the behaviour of its path."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request_head = await reader.readuntil(b"\r\n\r\n")
            path = request_head.split(b" ", 2)[1].decode()
            length = 0
            for line in request_head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            self.hits[path] = self.hits.get(path, 0) + 1
            await self.behaviours[path](reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def chaos() -> AsyncIterator[ChaosReceiver]:
    receiver = ChaosReceiver()
    await receiver.start()
    yield receiver
    await receiver.close()


@dataclass(frozen=True)
class Case:
    behaviour: Behaviour
    status: Status  # with retryAttempts=1: failed (retry scheduled) or delivered
    outcome: str  # the attempt's metric class
    status_code: int | None = None
    error: str | None = None  # substring of the recorded error
    slow: bool = False  # expected to run into the timeout
    body: str | None = None  # stored body prefix


CASES: dict[str, Case] = {
    "never-answers": Case(_never, Status.FAILED, "timeout", error=TIMEOUT_MESSAGE, slow=True),
    "trickles-status-line": Case(
        _trickle_status, Status.FAILED, "timeout", error=TIMEOUT_MESSAGE, slow=True
    ),
    # A body that has not arrived by the deadline is a timeout; what did arrive
    # is recorded, with the status of its head.
    "trickles-body": Case(
        _trickle_body, Status.FAILED, "timeout", 200, error=TIMEOUT_MESSAGE, slow=True, body="a"
    ),
    # Bodies we stop reading at max_response_bytes: the receiver answered.
    "endless-chunked-body": Case(_endless_chunked, Status.DELIVERED, "2xx", 200, body="xxxx"),
    "endless-content-length": Case(_endless_length, Status.DELIVERED, "2xx", 200, body="yyyy"),
    # (The bombs decompress to NULs, stored as U+FFFD like any NUL a receiver sends.)
    "endless-gzip-bomb": Case(_gzip_bomb, Status.DELIVERED, "2xx", 200, body="\ufffd\ufffd"),
    "deflate-bomb": Case(_deflate_bomb, Status.DELIVERED, "2xx", 200, body="\ufffd\ufffd"),
    # The receiver closed before the body it announced: an incomplete response.
    "truncated-body": Case(
        _truncated_body,
        Status.FAILED,
        "connect_error",
        200,
        error="incomplete response",
        body="only this",
    ),
    "connection-reset": Case(_reset, Status.FAILED, "connect_error", error="reset"),
    "closes-without-answer": Case(
        _close_silently, Status.FAILED, "connect_error", error="disconnected"
    ),
    "malformed-status-line": Case(
        _malformed_status, Status.FAILED, "connect_error", error="invalid response"
    ),
    "not-http-at-all": Case(_not_http, Status.FAILED, "connect_error", error="invalid response"),
    "one-huge-header": Case(_huge_header, Status.FAILED, "connect_error", error="invalid response"),
    "endless-headers": Case(
        _endless_headers, Status.FAILED, "connect_error", error="invalid response"
    ),
    "interim-responses-forever": Case(
        _interim_forever, Status.FAILED, "timeout", error=TIMEOUT_MESSAGE, slow=True
    ),
    "status-999": Case(_status_999, Status.FAILED, "connect_error", 999),
}


async def _healthy_server() -> CountingServer:
    server = CountingServer()
    await server.listen("127.0.0.1")
    return server


async def _attempt_of(h: Harness, delivery_id: str) -> tuple[int, str | None, int | None, str]:
    (attempt,) = await h.store.list_attempts(delivery_id)
    return attempt.duration_ms, attempt.error, attempt.status_code, attempt.outcome


@pytest.mark.parametrize("name", list(CASES))
async def test_hostile_receiver_ends_as_prescribed_while_others_deliver(
    harness_factory: Callable[..., Awaitable[Harness]], chaos: ChaosReceiver, name: str
) -> None:
    case = CASES[name]
    chaos.behaviours["/hostile"] = case.behaviour
    healthy = await _healthy_server()
    try:
        h = await harness_factory()
        await h.webhook(
            chaos.url("/hostile"), events=("hostile",), timeout_ms=TIMEOUT_MS, retry_attempts=1
        )
        await h.webhook(f"http://127.0.0.1:{healthy.port}/ok", events=("healthy",))
        (hostile_id,) = (await h.store.ingest_event("ws_test", "hostile", {})).delivery_ids
        started = time.monotonic()
        h.scheduler.start()
        await eventually(lambda: _hit(chaos, "/hostile"))
        # The hostile attempt is in flight now; healthy work flows past it.
        healthy_ids = []
        for i in range(10):
            healthy_ids += (await h.store.ingest_event("ws_test", "healthy", {"i": i})).delivery_ids
        h.scheduler.wake()
        for delivery_id in healthy_ids:
            await wait_status(h, delivery_id, Status.DELIVERED)
        healthy_done = time.monotonic() - started

        await wait_status(h, hostile_id, case.status)
        hostile_done = time.monotonic() - started
        duration_ms, error, status_code, outcome = await _attempt_of(h, hostile_id)
        assert (status_code, outcome) == (case.status_code, case.outcome), (name, error)
        if case.error is None:
            assert error is None
        else:
            assert error is not None and case.error.lower() in error.lower(), error
        if case.body is not None:
            d = await h.store.get_delivery(None, hostile_id)
            assert d is not None and d.last_response_body is not None
            assert d.last_response_body.startswith(case.body)
            assert len(d.last_response_body) <= 256
        assert duration_ms <= TIMEOUT_MS + SLACK_MS, duration_ms
        if case.slow:
            assert duration_ms >= TIMEOUT_MS - 100
            # Everything healthy was done while the hostile attempt still hung.
            assert healthy_done < hostile_done
        else:
            assert duration_ms < TIMEOUT_MS, "answered cases end before the timeout"
        assert healthy.requests == 10
        if case.status is Status.FAILED:
            d = await h.store.get_delivery(None, hostile_id)
            assert d is not None and d.next_attempt_at is not None, "a retry is scheduled"
    finally:
        await healthy.close()


async def _hit(chaos: ChaosReceiver, path: str) -> bool:
    return chaos.hits.get(path, 0) >= 1


MEMORY_CASES = [
    "endless-chunked-body",
    "endless-content-length",
    "endless-gzip-bomb",
    "deflate-bomb",
    "one-huge-header",
    "endless-headers",
]


@pytest.mark.parametrize("name", MEMORY_CASES)
async def test_hostile_bodies_and_headers_keep_memory_bounded(
    harness_factory: Callable[..., Awaitable[Harness]], chaos: ChaosReceiver, name: str
) -> None:
    case = CASES[name]
    chaos.behaviours["/m"] = case.behaviour
    h = await harness_factory()
    await h.webhook(chaos.url("/m"), timeout_ms=5000, retry_attempts=0)
    (delivery_id,) = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        h.scheduler.start()
        await wait_status(h, delivery_id, Status.DELIVERED, Status.DEAD_LETTER)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = peak - base
    print(f"{name}: tracemalloc peak growth {growth / 1024:.0f} KiB")
    assert growth < MEMORY_BOUND, f"{name}: {growth} bytes"
    d = await h.store.get_delivery(None, delivery_id)
    assert d is not None and d.status is (
        Status.DELIVERED if case.status is Status.DELIVERED else Status.DEAD_LETTER
    )


# -- 429 and every kind of Retry-After --------------------------------------------------

NOW_S = 1_717_236_000  # ManualClock's start, in seconds
TEN_YEARS = 10 * 365 * 86400


def _retry_after_cases() -> list[tuple[str, str, float | None]]:
    # (label, header value, expected delay in seconds; None = the lane's own backoff)
    return [
        ("seconds", "120", 120.0),
        ("zero", "0", None),
        ("http-date", formatdate(NOW_S + 30, usegmt=True), 30.0),
        ("past-date", formatdate(NOW_S - 3600, usegmt=True), None),
        ("epoch-date", "Thu, 01 Jan 1970 00:00:00 GMT", None),
        ("ten-years-seconds", str(TEN_YEARS), 3600.0),
        ("ten-years-date", formatdate(NOW_S + TEN_YEARS, usegmt=True), 3600.0),
        ("huge-number", "9" * 400, 3600.0),
        ("negative", "-5", None),
        ("fractional", "1.5", None),
        ("garbage", "soon, please", None),
        ("empty", "", None),
        ("date-without-zone", "Sat, 01 Jun 2024 10:00:00", None),
    ]


def _then_ok(first: bytes) -> Behaviour:
    """``first`` for the first request, 200 for every later one."""
    seen = 0

    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        seen += 1
        writer.write(first if seen == 1 else head("200 OK", "Content-Length: 2") + b"ok")
        await writer.drain()

    return behave


@pytest.mark.parametrize(
    ("label", "value", "delay"), _retry_after_cases(), ids=[c[0] for c in _retry_after_cases()]
)
async def test_429_retry_after_every_kind(
    harness_factory: Callable[..., Awaitable[Harness]],
    chaos: ChaosReceiver,
    label: str,
    value: str,
    delay: float | None,
) -> None:
    chaos.behaviours["/429"] = _then_ok(
        head("429 Too Many Requests", f"Retry-After: {value}", "Content-Length: 4") + b"slow"
    )
    h = await harness_factory()
    hook = await h.webhook(chaos.url("/429"), retry_attempts=0, timeout_ms=TIMEOUT_MS)
    (delivery_id,) = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
    now = h.clock.now_ms()
    assert now // 1000 == NOW_S
    h.scheduler.start()
    if delay == 0:
        # "Now": the retry runs at once, without the clock moving.
        await wait_status(h, delivery_id, Status.DELIVERED)
        first, second = await h.store.list_attempts(delivery_id)
        assert (first.status_code, second.status_code) == (429, 200)
        assert second.started_at == first.started_at == now
        d = await h.store.get_delivery(None, delivery_id)
        assert d is not None and (d.budget_used, d.rate_limited_count) == (1, 1)
        return
    await wait_status(h, delivery_id, Status.RATE_LIMITED)
    d = await h.store.get_delivery(None, delivery_id)
    assert d is not None and d.next_attempt_at is not None
    # The 429 lane: no retryAttempts used (it is 0 here, so a failure would dead-letter).
    assert (d.budget_used, d.rate_limited_count) == (0, 1)
    wait_s = (d.next_attempt_at - now) / 1000
    if delay is None:
        # Unusable, zero or past: the lane's own first backoff, over [5 s, 10 s].
        assert 5.0 <= wait_s <= 10.0, wait_s
    else:
        assert wait_s == delay, (label, wait_s)
    webhook = await h.store.get_webhook(None, hook.id)
    assert webhook is not None and webhook.paused_until == d.next_attempt_at
    (attempt,) = await h.store.list_attempts(delivery_id)
    assert (attempt.status_code, attempt.outcome, attempt.response_body) == (429, "429", "slow")
    # Nothing is sent before the Retry-After; then the delivery goes through.
    h.clock.advance(wait_s)
    h.scheduler.wake()
    await wait_status(h, delivery_id, Status.DELIVERED)
    assert chaos.hits["/429"] == 2


async def test_retry_after_zero_forever_is_not_a_hammer(
    harness_factory: Callable[..., Awaitable[Harness]], chaos: ChaosReceiver
) -> None:
    chaos.behaviours["/zero"] = _fixed(
        head("429 Too Many Requests", "Retry-After: 0", "Content-Length: 0")
    )
    h = await harness_factory()
    await h.webhook(chaos.url("/zero"), retry_attempts=0)
    (delivery_id,) = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
    h.scheduler.start()
    await asyncio.sleep(1.0)
    d = await h.store.get_delivery(None, delivery_id)
    assert d is not None
    # At most a handful of requests in one second of a clock that does not move.
    assert chaos.hits.get("/zero", 0) <= 3, chaos.hits
    assert d.status is Status.RATE_LIMITED


async def test_everything_hostile_at_once_leaves_the_healthy_endpoint_alone(
    harness_factory: Callable[..., Awaitable[Harness]], chaos: ChaosReceiver
) -> None:
    """All cases concurrently (twice each), plus 50 healthy deliveries that must not wait."""
    healthy = await _healthy_server()
    try:
        h = await harness_factory(concurrency=64, per_webhook_concurrency=4)
        for name, case in CASES.items():
            chaos.behaviours[f"/{name}"] = case.behaviour
            await h.webhook(
                chaos.url(f"/{name}"), events=(f"x.{name}",), timeout_ms=2000, retry_attempts=0
            )
        await h.webhook(f"http://127.0.0.1:{healthy.port}/ok", events=("healthy",))
        hostile_ids: dict[str, str] = {}
        for name in CASES:
            for _ in range(2):
                (delivery_id,) = (
                    await h.store.ingest_event("ws_test", f"x.{name}", {})
                ).delivery_ids
                hostile_ids[delivery_id] = name
        healthy_ids = []
        for i in range(50):
            healthy_ids += (await h.store.ingest_event("ws_test", "healthy", {"i": i})).delivery_ids
        started = time.monotonic()
        h.scheduler.start()
        for delivery_id in healthy_ids:
            await wait_status(h, delivery_id, Status.DELIVERED)
        healthy_elapsed = time.monotonic() - started
        for delivery_id, name in hostile_ids.items():
            want = CASES[name].status
            await wait_status(h, delivery_id, Status.DEAD_LETTER if want is Status.FAILED else want)
        all_elapsed = time.monotonic() - started
        print(f"healthy done in {healthy_elapsed:.2f}s, everything in {all_elapsed:.2f}s")
        assert healthy.requests == 50
        # Healthy work is not queued behind 2 s timeouts.
        assert healthy_elapsed < 2.0
        assert all_elapsed < 2.0 + SLACK_MS / 1000 + 2.0
    finally:
        await healthy.close()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE"))


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
async def test_rss_stays_flat_over_repeated_hostile_responses(
    chaos: ChaosReceiver, sender_client: str
) -> None:
    """Five attempts at each body/header case: resident memory does not creep up."""
    sender = Sender(AddressPolicy(["127.0.0.0/8"]), client=sender_client)
    await sender.start()
    try:
        chaos.behaviours["/warm"] = _fixed(head("200 OK", "Content-Length: 0"))
        await sender.send(chaos.url("/warm"), b"{}", {}, 2000)
        before = _rss_bytes()
        for name in MEMORY_CASES:
            chaos.behaviours[f"/{name}"] = CASES[name].behaviour
            for _ in range(5):
                result = await sender.send(chaos.url(f"/{name}"), b"{}", {}, 5000)
                assert result.duration_ms < 5000
        growth = _rss_bytes() - before
    finally:
        await sender.close()
    print(f"RSS growth over {5 * len(MEMORY_CASES)} hostile attempts: {growth / 1024:.0f} KiB")
    assert growth < 8 * 1024 * 1024
