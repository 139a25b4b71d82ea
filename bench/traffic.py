"""The API scenarios: ingest (64 closed-loop clients) and latency (1,000 events/s, open loop)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import db as backend
from bench import setup_db
from bench.common import (
    Daemon,
    cpu_seconds,
    create_key,
    spawn,
    stop,
    thread_cpu_seconds,
    tree_hwm_mb,
)
from bench.harness import ReceiverProc, Sizes, Workdir, host_port
from bench.setup_db import Hook


def _api_setup(db: backend.Database, hooks: list[Hook]) -> str:
    """The webhooks, in the database the daemon will use, and an API key."""
    setup_db.create_hooks(db.source, hooks)
    db.ready()
    return create_key(db.source, setup_db.WORKSPACE, db.env())


def _per_event(result: dict[str, Any], events: float) -> None:
    for what in ("daemon", "postgres"):
        if f"{what}_cpu_s" in result:
            result[f"{what}_cpu_us_per_event"] = (
                result[f"{what}_cpu_s"] / events * 1e6 if events else 0.0
            )


def _loadgen(args: list[str]) -> subprocess.Popen[Any]:
    return spawn(
        [sys.executable, "-m", "bench.loadgen", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def _drive(
    gen: subprocess.Popen[Any], daemon: Daemon, key: str, db: backend.Database
) -> dict[str, Any]:
    """Point the load generator at the daemon; measure the daemon over its window."""
    assert gen.stdin is not None
    assert gen.stdout is not None
    host, port = host_port(daemon.listen)
    gen.stdin.write(json.dumps({"host": host, "port": port, "key": key}).encode() + b"\n")
    gen.stdin.flush()
    cpu0 = t0 = cpu1 = t1 = 0.0
    usage0 = usage1 = db.usage()
    while line := gen.stdout.readline():
        msg = json.loads(line)
        if msg.get("phase") == "measure":
            cpu0, t0, usage0 = daemon.cpu(), time.monotonic(), db.usage()
        elif msg.get("phase") == "done":
            cpu1, t1, usage1 = daemon.cpu(), time.monotonic(), db.usage()
        elif "result" in msg:
            result = dict(msg["result"])
            result.update(db.report(usage0, usage1))
            result["daemon_cpu_s"] = cpu1 - cpu0
            result["daemon_cpu_utilisation"] = (cpu1 - cpu0) / (t1 - t0) if t1 > t0 else 0.0
            return result
    raise RuntimeError(f"load generator ended without a result: {daemon.log_tail()}")


def _drive_ingest(
    gen: subprocess.Popen[Any],
    daemon: Daemon,
    receiver: ReceiverProc,
    key: str,
    db: backend.Database,
    on_start: Callable[[Daemon], None] | None = None,
) -> dict[str, Any]:
    """:func:`_drive`, plus the CPU of the load generator and receiver and per daemon thread.

    All of them share the machine's two cores with the daemon, so their cost is
    part of the figure.
    """
    assert gen.stdin is not None
    assert gen.stdout is not None
    host, port = host_port(daemon.listen)
    gen.stdin.write(json.dumps({"host": host, "port": port, "key": key}).encode() + b"\n")
    gen.stdin.flush()
    if on_start is not None:
        on_start(daemon)

    def sample() -> tuple[float, float, float, float, dict[int, float], backend.Usage]:
        return (
            time.monotonic(),
            daemon.cpu(),
            cpu_seconds(gen.pid),
            cpu_seconds(receiver.proc.pid),
            thread_cpu_seconds(daemon.pid),
            db.usage(),
        )

    first = last = None
    while line := gen.stdout.readline():
        msg = json.loads(line)
        if msg.get("phase") == "measure":
            first = sample()
        elif msg.get("phase") == "done":
            last = sample()
        elif "result" in msg:
            if first is None or last is None:
                raise RuntimeError("load generator reported no measured window")
            result = dict(msg["result"])
            result.update(db.report(first[5], last[5]))
            seconds = last[0] - first[0]
            result["daemon_cpu_s"] = last[1] - first[1]
            result["daemon_cpu_utilisation"] = result["daemon_cpu_s"] / seconds
            result["loadgen_cpu_utilisation"] = (last[2] - first[2]) / seconds
            result["receiver_cpu_utilisation"] = (last[3] - first[3]) / seconds
            main = daemon.pid
            result["daemon_main_thread_cpu_utilisation"] = (
                last[4].get(main, 0.0) - first[4].get(main, 0.0)
            ) / seconds
            return result
    raise RuntimeError(f"load generator ended without a result: {daemon.log_tail()}")


def ingest_run(
    sizes: Sizes,
    *,
    batch: int = 0,
    keep: bool = False,
    on_ready: Callable[[Daemon], None] | None = None,
    deliver: bool = True,
    parked: bool = False,
) -> dict[str, Any]:
    """``sizes.ingest_concurrency`` closed-loop clients (64 unless ``--ingest-clients``) on
    ``POST /v1/events`` (or ``/v1/events/batch``, ``batch`` each).

    ``deliver=False`` subscribes the one webhook to a type the clients never
    send: ingest alone, for telling its cost from delivery's.  ``parked=True``
    points it at an endpoint that answers 429 with ``Retry-After: 3600``: the
    first attempts park the webhook, so every event is still fanned out and
    stored, but its delivery waits (as it does for a rate-limited customer).
    """
    with Workdir(keep) as wd, backend.database(wd) as db:
        receiver = ReceiverProc()
        daemon = Daemon(db.source, wd / "hookd.log", db.env())
        gen = None
        try:
            path = "/p/ingest" if parked else "/o/ingest"
            hook = Hook(receiver.url(path), events=("*",) if deliver else ("unsent.*",))
            key = _api_setup(db, [hook])
            daemon.start()
            gen = _loadgen(
                [
                    "ingest",
                    "--concurrency",
                    str(sizes.ingest_concurrency),
                    "--duration",
                    str(sizes.ingest_seconds),
                    "--batch",
                    str(batch),
                ]
            )
            assert gen.stdout is not None
            json.loads(gen.stdout.readline())  # ready
            result = _drive_ingest(gen, daemon, receiver, key, db, on_ready)
            result["peak_rss_mb"] = tree_hwm_mb(daemon.pid)[0]
            result["delivered_meanwhile"] = int(receiver.stats()["ok"])
            result["events_in_db"] = db.count("SELECT count(*) FROM events")
            _per_event(result, result["accepted_in_window"])
        finally:
            if gen is not None:
                stop(gen, 5)
            daemon.stop()
            receiver.close()
    return result


# Events per request in the batch half of the ingest scenario.
INGEST_BATCH = 100


def ingest(sizes: Sizes, keep: bool = False) -> dict[str, Any]:
    """Single-event ingest while every event is delivered on the same cores, the same
    clients on the batch route (``batch_*`` keys), and single-event ingest while a
    429 parks the delivery (``parked_*``: the ingest path's own capacity)."""
    result = ingest_run(sizes, keep=keep)
    for prefix, run in (
        ("batch", ingest_run(sizes, batch=INGEST_BATCH, keep=keep)),
        ("parked", ingest_run(sizes, parked=True, keep=keep)),
    ):
        for name, value in run.items():
            result[f"{prefix}_{name}"] = value
    return result


def latency(sizes: Sizes, keep: bool = False) -> dict[str, Any]:
    with Workdir(keep) as wd, backend.database(wd) as db:
        daemon = Daemon(db.source, wd / "hookd.log", db.env())
        gen = _loadgen(
            [
                "latency",
                "--rate",
                str(sizes.latency_rate),
                "--duration",
                str(sizes.latency_seconds),
            ]
        )
        try:
            assert gen.stdout is not None
            port = int(json.loads(gen.stdout.readline())["port"])
            key = _api_setup(db, [Hook(f"http://127.0.0.1:{port}/o/latency")])
            daemon.start()
            result = _drive(gen, daemon, key, db)
            result["peak_rss_mb"] = tree_hwm_mb(daemon.pid)[0]
            _per_event(result, sizes.latency_rate * sizes.latency_seconds)
        finally:
            stop(gen, 5)
            daemon.stop()
    return result
