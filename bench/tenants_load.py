"""The tenants scenario's load, run as its own process: a heavy workspace and a light one.

Workspace A posts ``POST /v1/events/batch`` with ``--a-batch`` events per request
on ``--a-clients`` keep-alive connections, each sending its next batch as soon
as the previous one was answered (closed loop): every request creates as many
deliveries as the quota allows.  Workspace B meanwhile posts single events on
``POST /v1/events`` at ``--b-rate`` a second (open loop): each event's 202 is
timed from its slot in the schedule, so a stalled daemon cannot hide latency by
slowing B down.  B's one webhook points at a receiver embedded here, so the
first attempt of each of B's events is timed on the same clock.

Protocol with the benchmark: ``{"port": N}`` (the embedded receiver) when
ready, then one JSON line on stdin (``{"host", "port", "key_a", "key_b"}``),
``{"phase": "measure"}`` and ``{"phase": "done"}`` around the measured window,
and a JSON line with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque
from typing import Any

from bench.common import percentile, run_fast
from bench.loadgen import (
    HttpConn,
    _emit,
    _post,
    _read_target,
    connect,
    event_request,
)
from bench.receiver import Receiver


def _a_body(batch: int) -> bytes:
    event = b'{"type":"a.event","data":{"n":%d,"pad":"0123456789abcdef0123456789abcdef"}}'
    return b'{"events":[%s]}' % b",".join(event % i for i in range(batch))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    arrivals: dict[int, float] = {}

    def on_body(body: bytes) -> None:
        pos = body.find(b'"seq":')
        if pos >= 0:
            seq = int(body[pos + 6 : body.find(b",", pos)])
            arrivals.setdefault(seq, time.monotonic())

    receiver = Receiver(on_body)
    _emit({"port": await receiver.start()})
    target = await _read_target()
    host, port = target["host"], int(target["port"])
    a_raw = _post(b"/v1/events/batch", host, port, target["key_a"], _a_body(args.a_batch))
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    measure_from = t_start + args.warmup
    measure_to = measure_from + args.duration
    a_done: list[tuple[float, float, int]] = []  # (sent, answered, status)

    async def a_client() -> None:
        conn = await connect(host, port)
        while (now := loop.time()) < measure_to:
            try:
                status = await conn.request(a_raw)
            except ConnectionError:
                status = 0
                conn = await connect(host, port)
            a_done.append((now, loop.time(), status))

    b_pool: deque[HttpConn] = deque([await connect(host, port) for _ in range(args.b_clients)])
    slot: dict[int, float] = {}
    acked: dict[int, float] = {}
    b_errors = 0
    tasks: set[asyncio.Task[None]] = set()
    waiting: deque[int] = deque()

    async def b_send(conn: HttpConn, seq: int) -> None:
        nonlocal b_errors
        try:
            status = await conn.request(event_request(host, port, target["key_b"], seq))
            if status == 202:
                acked[seq] = time.monotonic()
            else:
                b_errors += 1
        except ConnectionError:
            b_errors += 1
            conn = await connect(host, port)
        b_pool.append(conn)
        if waiting:
            _b_start(waiting.popleft())

    def _b_start(seq: int) -> None:
        task = loop.create_task(b_send(b_pool.popleft(), seq))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    a_tasks = [loop.create_task(a_client()) for _ in range(args.a_clients)]
    total = round((args.warmup + args.duration) * args.b_rate)
    first_measured = round(args.warmup * args.b_rate)
    t0 = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * args.b_rate) + 1)
        while sent < due:
            slot[sent] = t0 + sent / args.b_rate
            if sent == first_measured:
                _emit({"phase": "measure"})
            if b_pool and not waiting:
                _b_start(sent)
            else:
                waiting.append(sent)
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*a_tasks)
    _emit({"phase": "done"})
    measured = range(first_measured, total)
    for _ in range(round(args.grace / 0.05)):
        if not tasks and all(s in arrivals for s in measured):
            break
        await asyncio.sleep(0.05)
    ack = sorted(acked[s] - slot[s] for s in measured if s in acked)
    first = sorted(arrivals[s] - slot[s] for s in measured if s in arrivals)
    a_window = [d for d in a_done if measure_from <= d[0] and d[1] <= measure_to]
    a_ok = [d for d in a_window if d[2] == 202]
    a_latency = sorted(d[1] - d[0] for d in a_ok)

    def ms(values: list[float], q: float) -> float:
        return percentile(values, q) * 1000

    return {
        "a_clients": args.a_clients,
        "a_batch": args.a_batch,
        "a_requests_per_s": len(a_ok) / args.duration,
        "a_events_per_s": len(a_ok) * args.a_batch / args.duration,
        "a_statuses": {str(s): sum(1 for d in a_done if d[2] == s) for s in {d[2] for d in a_done}},
        "a_ack_ms_p50": ms(a_latency, 50),
        "a_ack_ms_p99": ms(a_latency, 99),
        "b_rate": args.b_rate,
        "b_events": len(measured),
        "b_errors": b_errors,
        "b_ack_ms_p50": ms(ack, 50),
        "b_ack_ms_p99": ms(ack, 99),
        "b_ack_ms_max": ms(ack, 100),
        "b_first_attempt_ms_p50": ms(first, 50),
        "b_first_attempt_ms_p99": ms(first, 99),
        "b_first_attempt_ms_max": ms(first, 100),
        "b_missing_attempts": sum(1 for s in measured if s not in arrivals),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.tenants_load")
    p.add_argument("--a-clients", type=int, default=4)
    p.add_argument("--a-batch", type=int, default=100)
    p.add_argument("--b-rate", type=float, default=50.0)
    p.add_argument("--b-clients", type=int, default=64)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--grace", type=float, default=10.0)
    _emit({"result": run_fast(run(p.parse_args()))})


if __name__ == "__main__":
    main()
