"""The benchmark scenarios (the registry) and the delivery ones: throughput,
isolation, dribble.  Each returns a JSON-able dict for one run; ingest and
latency live in ``traffic.py``, backlog in ``backlog.py``.

Every run gets a fresh directory (database, daemon log); the daemon runs with
its default configuration (signing, attempt records, metrics, JSON logs to a
file) plus ``HOOKD_DELIVERY_ALLOW_NETWORKS=127.0.0.0/8`` and an ephemeral
listen port.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench import db as backend
from bench import setup_db
from bench.backlog import backlog
from bench.common import (
    Daemon,
    cpu_seconds,
    rss_mb,
    thread_cpu_seconds,
    tree_hwm_mb,
)
from bench.harness import FULL, QUICK, ReceiverProc, Sizes, Workdir
from bench.nodes import nodes
from bench.setup_db import Hook
from bench.traffic import ingest, ingest_run, latency

DELIVERED = "SELECT count(*) FROM deliveries WHERE status = 'delivered'"

__all__ = ["FULL", "QUICK", "SCENARIOS", "Sizes", "delivery_run", "ingest_run", "isolation_kinds"]


# -- throughput and isolation ----------------------------------------------------------


def delivery_run(
    sizes: Sizes,
    kinds: list[str],
    *,
    keep: bool = False,
    on_ready: Callable[[Daemon], None] | None = None,
    max_seconds: float | None = None,
    analyze: bool = False,
) -> dict[str, Any]:
    """Pre-queue ``sizes.deliveries`` over webhooks of ``kinds`` and let the daemon drain.

    ``kinds`` has one letter per webhook: ``o`` answers 200, ``h`` hangs until
    the webhook's timeout, ``r`` answers 429 with Retry-After: 1, ``d`` sends a
    48 KB head and dribbles the rest of it a byte at a time until the
    webhook's timeout.  The run ends when every delivery of an ``o`` webhook
    is delivered.
    """
    events = sizes.deliveries // len(kinds)
    healthy = events * kinds.count("o")
    with Workdir(keep) as wd, backend.database(wd) as db:
        receiver = ReceiverProc()
        daemon = Daemon(db.source, wd / "hookd.log", db.env())
        try:
            hooks = [
                Hook(
                    receiver.url(f"/{kind}/{i}"),
                    timeout_ms=sizes.hang_timeout_ms if kind in "hd" else 10_000,
                )
                for i, kind in enumerate(kinds)
            ]
            t = time.monotonic()
            setup_db.prequeue_fanout(db.source, hooks, events)
            db.ready()
            if analyze:
                # What-if: full planner statistics, i.e. the claim plan a pinned
                # query would always get (not the default state; see backlog).
                db.analyze()
            prequeue_s = time.monotonic() - t
            daemon.start()
            pid = daemon.pid
            cpu0 = daemon.cpu()
            receiver_cpu0 = cpu_seconds(receiver.proc.pid)
            threads0 = thread_cpu_seconds(pid)
            usage0 = db.usage()
            if on_ready is not None:
                on_ready(daemon)

            def delivered_now() -> int:
                # On PostgreSQL, arrivals at the receiver until they are all
                # there: counting rows every 0.5 s would cost the server CPU
                # that is being measured.
                if db.kind != "sqlite":
                    arrived = int(receiver.stats()["ok"])
                    if arrived < healthy:
                        return arrived
                return db.count(DELIVERED)

            limit = max_seconds or max(120.0, sizes.deliveries / 200)
            rss_samples: list[float] = []
            timeline: list[tuple[float, int, float]] = []
            delivered = 0
            complete = False
            while time.monotonic() - daemon.ready_at < limit:
                time.sleep(0.5)
                rss_samples.append(rss_mb(pid))
                delivered = delivered_now()
                timeline.append(
                    (round(time.monotonic() - daemon.ready_at, 2), delivered, daemon.cpu() - cpu0)
                )
                if delivered >= healthy:
                    complete = True
                    break
            done_at = time.monotonic()
            cpu1 = daemon.cpu()
            usage1 = db.usage()
            receiver_cpu = cpu_seconds(receiver.proc.pid) - receiver_cpu0
            threads1 = thread_cpu_seconds(pid)
            peak, rss_total = tree_hwm_mb(pid)
            processes = daemon.processes()
            stats = receiver.stats()
            attempts = db.count("SELECT count(*) FROM attempts")
        finally:
            daemon.stop()
            receiver.close()
        logs = daemon.log_counts(["delivery.attempt", "scheduler.loop_error"])
        log_bytes = (wd / "hookd.log").stat().st_size
    span = stats["last_ok"] - stats["first_ok"]
    main_cpu = threads1.get(pid, 0.0) - threads0.get(pid, 0.0)
    cpu = cpu1 - cpu0
    usage = db.report(usage0, usage1, delivered, "delivery")
    seconds = done_at - daemon.ready_at
    # What else kept the machine busy: the harness, other engineers' work.
    usage["rest_cores"] = (
        usage["machine_busy_cores"]
        - (cpu + receiver_cpu + usage.get("postgres_all_cpu_s", 0.0)) / seconds
    )
    return {
        **usage,
        "complete": complete,
        "analyzed": analyze,
        "webhooks": len(kinds),
        "deliveries": events * len(kinds),
        "healthy_deliveries": healthy,
        "delivered": delivered,
        "received_ok": int(stats["ok"]),
        "received_429": int(stats["rate_limited"]),
        "received_hang": int(stats["hang"]),
        "received_dribble": int(stats["dribble"]),
        "connections": int(stats["connections"]),
        "attempts": attempts,
        # first to last healthy arrival at the receiver
        "deliveries_per_s": stats["ok"] / span if span > 0 else 0.0,
        # daemon ready to the poll that saw the last delivery committed
        "deliveries_per_s_db": delivered / (done_at - daemon.ready_at),
        "first_delivery_after_ready_s": stats["first_ok"] - daemon.ready_at,
        "cpu_s": cpu,
        "cpu_us_per_delivery": cpu / max(delivered, 1) * 1e6,
        "cpu_us_per_attempt": cpu / max(attempts, 1) * 1e6,
        # share of all daemon CPU spent on serve's event-loop thread
        "main_thread_cpu_share": main_cpu / cpu if cpu else 0.0,
        "cpu_utilisation": cpu / (done_at - daemon.ready_at),
        # the receiver shares the cores: its CPU is what the daemon could not use
        "receiver_cpu_utilisation": receiver_cpu / (done_at - daemon.ready_at),
        # the largest peak RSS of one daemon process (serve or a delivery worker)
        "peak_rss_mb": peak,
        "rss_mb_all_processes_end": rss_total,
        "daemon_processes": processes,
        "rss_mb_max_sampled": max(rss_samples, default=0.0),
        "log_lines_delivery_attempt": logs["delivery.attempt"],
        "log_bytes_per_attempt": log_bytes / max(attempts, 1),
        "loop_errors": logs["scheduler.loop_error"],
        "prequeue_s": prequeue_s,
        # (seconds since ready, delivered, daemon CPU seconds) every 0.5 s
        "timeline": timeline,
    }


def throughput(sizes: Sizes, keep: bool = False) -> dict[str, Any]:
    return delivery_run(sizes, ["o"] * sizes.webhooks, keep=keep, analyze=sizes.analyze)


def isolation_kinds(n: int) -> list[str]:
    """10% hanging, 10% answering 429, spread over the list."""
    return ["h" if i % 10 == 3 else "r" if i % 10 == 7 else "o" for i in range(n)]


def isolation(sizes: Sizes, keep: bool = False) -> dict[str, Any]:
    return delivery_run(sizes, isolation_kinds(sizes.webhooks), keep=keep, analyze=sizes.analyze)


def dribble_kinds(n: int) -> list[str]:
    """Eight head-dribbling webhooks spread over the list, the rest healthy."""
    dribblers = {round(i * n / 8) + n // 16 for i in range(8)}
    return ["d" if i in dribblers else "o" for i in range(n)]


def dribble(sizes: Sizes, keep: bool = False) -> dict[str, Any]:
    """Healthy webhooks beside eight whose receivers send a 48 KB head and then
    dribble it a byte at a time, holding every connection their webhook's
    per_webhook_concurrency allows."""
    return delivery_run(sizes, dribble_kinds(sizes.webhooks), keep=keep)


SCENARIOS: dict[str, Callable[[Sizes, bool], dict[str, Any]]] = {
    "throughput": throughput,
    "ingest": ingest,
    "latency": latency,
    "backlog": backlog,
    "isolation": isolation,
    "dribble": dribble,
    # PostgreSQL only (--postgres): two nodes on one database against one
    "nodes": nodes,
}
