"""Load generators for ``POST /v1/events``: raw asyncio protocols, run as their own process.

``python -m bench.loadgen ingest``: closed loop.  ``--concurrency`` keep-alive
connections each send the next event as soon as the previous one was
acknowledged (202 is only sent after the COMMIT that holds the event).  With
``--batch N`` each request is ``POST /v1/events/batch`` carrying N events, and
one 202 acknowledges all N.

``python -m bench.loadgen latency``: open loop at a fixed rate, with an
embedded :class:`bench.receiver.Receiver`; every event carries a sequence
number in its data, so the arrival of its first attempt is matched to the time
the event was due to be sent (its slot in the schedule, so a slow daemon cannot
hide latency by slowing the sender down) and to the time it was acknowledged,
all on this process's monotonic clock.

Protocol with the benchmark: one JSON line on stdout when ready
(``{"port": N}`` for latency), then the process waits for one JSON line on
stdin (``{"host", "port", "key"}``), prints ``{"phase": "measure"}`` when the
measured window opens and ``{"phase": "done"}`` when it closes, and finally a
JSON line with its results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import deque
from typing import Any

from bench.common import percentile, run_fast
from bench.receiver import Receiver


def next_response(buf: bytes) -> tuple[bytes | None, bytes]:
    """Split one whole response (head + Content-Length body) off ``buf``.

    Returns its head and what follows it, or ``(None, buf)`` while the response
    is incomplete.  Enough HTTP/1.1 for hookd's answers, nothing more.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None, buf
    head = buf[:end]
    pos = head.lower().find(b"\r\ncontent-length:")
    length = 0
    if pos >= 0:
        eol = head.find(b"\r\n", pos + 2)
        length = int(head[pos + 17 : eol if eol >= 0 else None])
    if len(buf) < end + 4 + length:
        return None, buf
    return head, buf[end + 4 + length :]


class HttpConn(asyncio.Protocol):
    """One keep-alive connection; one request at a time (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[int] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        head, self.buf = next_response(self.buf + data if self.buf else data)
        if head is None:
            return
        status = int(head[9:12])
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    async def request(self, raw: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(raw)
        return await self.waiter


_EVENT = b'{"type":"bench.event","data":{"seq":%d,"pad":"0123456789abcdef0123456789abcdef"}}'


def _post(path: bytes, host: str, port: int, key: str, body: bytes) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nX-Api-Key: %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (path, host.encode(), port, key.encode(), len(body), body)
    )


def event_request(host: str, port: int, key: str, seq: int) -> bytes:
    return _post(b"/v1/events", host, port, key, _EVENT % seq)


def batch_request(host: str, port: int, key: str, first_seq: int, n: int) -> bytes:
    events = b",".join(_EVENT % seq for seq in range(first_seq, first_seq + n))
    return _post(b"/v1/events/batch", host, port, key, b'{"events":[%s]}' % events)


async def connect(host: str, port: int) -> HttpConn:
    loop = asyncio.get_running_loop()
    _t, proto = await loop.create_connection(HttpConn, host, port)
    return proto


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def _read_target() -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    return dict(json.loads(line))


# -- closed loop: events/s ---------------------------------------------------------------


class _ClosedLoop:
    """The shared state of the closed loop; each connection calls back into it."""

    def __init__(self, args: argparse.Namespace, host: str, port: int, key: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port, self.key = host, port, key
        self.batch = args.batch
        self.warmup, self.duration = args.warmup, args.duration
        self.measure_from = self.measure_to = 0.0
        self.counted = 0
        self.errors = 0
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []
        self.seq = 0
        self.marked = False
        self.running = 0
        self.finished: asyncio.Future[None] = self.loop.create_future()

    def begin(self) -> None:
        self.measure_from = self.loop.time() + self.warmup
        self.measure_to = self.measure_from + self.duration

    def next_request(self, now: float) -> bytes | None:
        if now >= self.measure_to:
            return None
        if not self.marked and now >= self.measure_from:
            self.marked = True
            _emit({"phase": "measure"})
        if self.batch:
            raw = batch_request(self.host, self.port, self.key, self.seq + 1, self.batch)
            self.seq += self.batch
            return raw
        self.seq += 1
        return event_request(self.host, self.port, self.key, self.seq)

    def answered(self, status: int, started: float, done: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status != 202:
            self.errors += 1
        elif self.measure_from <= started and done <= self.measure_to:
            self.counted += self.batch or 1
            self.latencies.append(done - started)

    def stopped(self, error: bool) -> None:
        self.errors += error
        self.running -= 1
        if self.running == 0 and not self.finished.done():
            self.finished.set_result(None)


class ClosedLoopConn(asyncio.Protocol):
    """One keep-alive connection that sends its next request from the callback that
    parsed the previous answer: no future, no task switch per request, so the load
    generator takes as little of the cores it shares with the daemon as it can."""

    def __init__(self, run: _ClosedLoop) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.started = 0.0
        self.active = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self) -> None:
        self.active = True
        self.run.running += 1
        self._send(self.run.loop.time())

    def _send(self, now: float) -> None:
        raw = self.run.next_request(now)
        if raw is None:
            self._stop(False)
            return
        self.started = now
        assert self.transport is not None
        self.transport.write(raw)

    def _stop(self, error: bool) -> None:
        if self.active:
            self.active = False
            self.run.stopped(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop(True)

    def data_received(self, data: bytes) -> None:
        head, self.buf = next_response(self.buf + data if self.buf else data)
        if head is None:
            return
        if not self.active:
            return
        done = self.run.loop.time()
        self.run.answered(int(head[9:12]), self.started, done)
        self._send(done)


async def ingest(args: argparse.Namespace) -> dict[str, Any]:
    _emit({"ready": True})
    target = await _read_target()
    host, port, key = target["host"], int(target["port"]), target["key"]
    loop = asyncio.get_running_loop()
    run = _ClosedLoop(args, host, port, key)
    conns: list[ClosedLoopConn] = []
    for _ in range(args.concurrency):
        _t, proto = await loop.create_connection(lambda: ClosedLoopConn(run), host, port)
        conns.append(proto)
    # The clock starts once every connection is open.
    run.begin()
    for conn in conns:
        conn.start()
    await run.finished
    _emit({"phase": "done"})
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    latencies = sorted(run.latencies)
    return {
        "events_per_s": run.counted / args.duration,
        "accepted_in_window": run.counted,
        "sent_total": run.seq,
        "errors": run.errors,
        "statuses": {str(k): v for k, v in run.statuses.items()},
        "concurrency": args.concurrency,
        "batch": run.batch,
        "duration_s": args.duration,
        "ack_ms_p50": percentile(latencies, 50) * 1000,
        "ack_ms_p99": percentile(latencies, 99) * 1000,
    }


# -- open loop at a fixed rate: ingest-to-first-attempt latency -----------------------------


async def latency(args: argparse.Namespace) -> dict[str, Any]:
    arrivals: dict[int, float] = {}

    def on_body(body: bytes) -> None:
        pos = body.find(b'"seq":')
        if pos < 0:
            return
        end = body.find(b",", pos)
        seq = int(body[pos + 6 : end])
        if seq not in arrivals:  # the first attempt counts
            arrivals[seq] = time.monotonic()

    receiver = Receiver(on_body)
    _emit({"port": await receiver.start()})
    target = await _read_target()
    host, port, key = target["host"], int(target["port"]), target["key"]
    pool: deque[HttpConn] = deque([await connect(host, port) for _ in range(args.concurrency)])
    waiting: deque[int] = deque()
    slot: dict[int, float] = {}
    acked: dict[int, float] = {}
    errors = 0
    max_backlog = 0
    total = round((args.warmup + args.duration) * args.rate)
    first_measured = round(args.warmup * args.rate)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def send(conn: HttpConn, seq: int) -> None:
        nonlocal errors
        try:
            status = await conn.request(event_request(host, port, key, seq))
            if status == 202:
                acked[seq] = time.monotonic()
            else:
                errors += 1
        except ConnectionError:
            errors += 1
            conn = await connect(host, port)
        pool.append(conn)
        if waiting:
            _start(waiting.popleft())

    def _start(seq: int) -> None:
        task = loop.create_task(send(pool.popleft(), seq))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    t0 = time.monotonic() + 0.05
    sent = 0
    while sent < total:
        now = time.monotonic()
        due = min(total, int((now - t0) * args.rate) + 1)
        while sent < due:
            slot[sent] = t0 + sent / args.rate
            if sent == first_measured:
                _emit({"phase": "measure"})
            if pool and not waiting:
                _start(sent)
            else:
                waiting.append(sent)
                max_backlog = max(max_backlog, len(waiting))
            sent += 1
        await asyncio.sleep(0.0005)
    _emit({"phase": "done"})
    for _ in range(round(args.grace / 0.05)):
        if not tasks and all(s in arrivals for s in range(first_measured, total)):
            break
        await asyncio.sleep(0.05)
    measured = range(first_measured, total)
    to_first = sorted(arrivals[s] - slot[s] for s in measured if s in arrivals)
    to_ack = sorted(acked[s] - slot[s] for s in measured if s in acked)
    ack_to_first = sorted(arrivals[s] - acked[s] for s in measured if s in arrivals and s in acked)
    missing = sum(1 for s in measured if s not in arrivals)

    def ms(values: list[float], q: float) -> float:
        return percentile(values, q) * 1000

    return {
        "rate": args.rate,
        "events": len(measured),
        "missing_attempts": missing,
        "errors": errors,
        "max_send_backlog": max_backlog,
        "first_attempt_ms_p50": ms(to_first, 50),
        "first_attempt_ms_p90": ms(to_first, 90),
        "first_attempt_ms_p99": ms(to_first, 99),
        "first_attempt_ms_max": ms(to_first, 100),
        "ack_ms_p50": ms(to_ack, 50),
        "ack_ms_p99": ms(to_ack, 99),
        "ack_to_first_attempt_ms_p50": ms(ack_to_first, 50),
        "ack_to_first_attempt_ms_p99": ms(ack_to_first, 99),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    sub = p.add_subparsers(dest="mode", required=True)
    i = sub.add_parser("ingest")
    i.add_argument("--concurrency", type=int, default=64)
    i.add_argument("--warmup", type=float, default=1.0)
    i.add_argument("--duration", type=float, default=10.0)
    i.add_argument("--batch", type=int, default=0, help="events per /v1/events/batch request")
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=float, default=1000.0)
    lat.add_argument("--concurrency", type=int, default=32)
    lat.add_argument("--warmup", type=float, default=2.0)
    lat.add_argument("--duration", type=float, default=10.0)
    lat.add_argument("--grace", type=float, default=5.0)
    args = p.parse_args()
    result = run_fast(ingest(args) if args.mode == "ingest" else latency(args))
    _emit({"result": result})


if __name__ == "__main__":
    main()
