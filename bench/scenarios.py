"""The benchmark scenarios.  Each one returns a JSON-able dict for one run.

Every run gets a fresh directory (database, daemon log); the daemon runs with
its default configuration (signing, attempt records, metrics, JSON logs to a
file) plus ``HOOKD_DELIVERY_ALLOW_NETWORKS=127.0.0.0/8`` and an ephemeral
listen port.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import setup_db
from bench.common import (
    Daemon,
    count_status,
    cpu_seconds,
    create_key,
    median,
    readonly_db,
    rss_mb,
    spawn,
    stop,
    thread_cpu_seconds,
    tree_hwm_mb,
)
from bench.setup_db import Hook


@dataclass(frozen=True)
class Sizes:
    deliveries: int = 100_000
    webhooks: int = 50
    ingest_seconds: float = 10.0
    ingest_concurrency: int = 64
    latency_rate: float = 1000.0
    latency_seconds: float = 15.0
    backlog: int = 1_000_000
    backlog_probe_seconds: float = 15.0
    hang_timeout_ms: int = 2000
    # ANALYZE the throughput/isolation databases before the daemon starts (what-if).
    analyze: bool = False


FULL = Sizes()
QUICK = Sizes(
    deliveries=20_000,
    ingest_seconds=5.0,
    latency_seconds=5.0,
    backlog=100_000,
    backlog_probe_seconds=5.0,
)


class Workdir:
    def __init__(self, keep: bool) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="hookd-bench-"))
        self.keep = keep

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


class ReceiverProc:
    """``python -m bench.receiver`` in its own process; stats over its stdin/stdout."""

    def __init__(self) -> None:
        self.proc = spawn(
            [sys.executable, "-m", "bench.receiver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.port = int(json.loads(self.proc.stdout.readline())["port"])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self) -> dict[str, float]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"stats\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        stop(self.proc, 5)


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host, int(port)


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
    with Workdir(keep) as wd:
        receiver = ReceiverProc()
        daemon = Daemon(wd / "hookd.db", wd / "hookd.log")
        try:
            hooks = [
                Hook(
                    receiver.url(f"/{kind}/{i}"),
                    timeout_ms=sizes.hang_timeout_ms if kind in "hd" else 10_000,
                )
                for i, kind in enumerate(kinds)
            ]
            t = time.monotonic()
            setup_db.prequeue_fanout(wd / "hookd.db", hooks, events)
            if analyze:
                # What-if: full planner statistics, i.e. the claim plan a pinned
                # query would always get (not the default state; see backlog).
                conn = sqlite3.connect(wd / "hookd.db")
                conn.execute("ANALYZE")
                conn.close()
            prequeue_s = time.monotonic() - t
            daemon.start()
            pid = daemon.pid
            cpu0 = daemon.cpu()
            receiver_cpu0 = cpu_seconds(receiver.proc.pid)
            threads0 = thread_cpu_seconds(pid)
            if on_ready is not None:
                on_ready(daemon)
            db = readonly_db(wd / "hookd.db")
            limit = max_seconds or max(120.0, sizes.deliveries / 200)
            rss_samples: list[float] = []
            timeline: list[tuple[float, int, float]] = []
            delivered = 0
            complete = False
            while time.monotonic() - daemon.ready_at < limit:
                time.sleep(0.5)
                rss_samples.append(rss_mb(pid))
                delivered = count_status(db, "delivered")
                timeline.append(
                    (round(time.monotonic() - daemon.ready_at, 2), delivered, daemon.cpu() - cpu0)
                )
                if delivered >= healthy:
                    complete = True
                    break
            done_at = time.monotonic()
            cpu1 = daemon.cpu()
            receiver_cpu = cpu_seconds(receiver.proc.pid) - receiver_cpu0
            threads1 = thread_cpu_seconds(pid)
            peak, rss_total = tree_hwm_mb(pid)
            processes = daemon.processes()
            stats = receiver.stats()
            attempts = int(db.execute("SELECT count(*) FROM attempts").fetchone()[0])
            db.close()
        finally:
            daemon.stop()
            receiver.close()
        logs = daemon.log_counts(["delivery.attempt", "scheduler.loop_error"])
        log_bytes = (wd / "hookd.log").stat().st_size
    span = stats["last_ok"] - stats["first_ok"]
    main_cpu = threads1.get(pid, 0.0) - threads0.get(pid, 0.0)
    cpu = cpu1 - cpu0
    return {
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


# -- ingest and latency ------------------------------------------------------------------


def _api_setup(wd: Path, url: str) -> str:
    setup_db.create_hooks(wd / "hookd.db", [Hook(url)])
    return create_key(wd / "hookd.db", setup_db.WORKSPACE)


def _loadgen(args: list[str]) -> subprocess.Popen[Any]:
    return spawn(
        [sys.executable, "-m", "bench.loadgen", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def _drive(gen: subprocess.Popen[Any], daemon: Daemon, key: str) -> dict[str, Any]:
    """Point the load generator at the daemon; measure the daemon over its window."""
    assert gen.stdin is not None
    assert gen.stdout is not None
    host, port = _host_port(daemon.listen)
    gen.stdin.write(json.dumps({"host": host, "port": port, "key": key}).encode() + b"\n")
    gen.stdin.flush()
    cpu0 = t0 = cpu1 = t1 = 0.0
    while line := gen.stdout.readline():
        msg = json.loads(line)
        if msg.get("phase") == "measure":
            cpu0, t0 = daemon.cpu(), time.monotonic()
        elif msg.get("phase") == "done":
            cpu1, t1 = daemon.cpu(), time.monotonic()
        elif "result" in msg:
            result = dict(msg["result"])
            result["daemon_cpu_s"] = cpu1 - cpu0
            result["daemon_cpu_utilisation"] = (cpu1 - cpu0) / (t1 - t0) if t1 > t0 else 0.0
            return result
    raise RuntimeError(f"load generator ended without a result: {daemon.log_tail()}")


def _drive_ingest(
    gen: subprocess.Popen[Any],
    daemon: Daemon,
    receiver: ReceiverProc,
    key: str,
    on_start: Callable[[Daemon], None] | None = None,
) -> dict[str, Any]:
    """:func:`_drive`, plus the CPU of the load generator and receiver and per daemon thread.

    All of them share the machine's two cores with the daemon, so their cost is
    part of the figure.
    """
    assert gen.stdin is not None
    assert gen.stdout is not None
    host, port = _host_port(daemon.listen)
    gen.stdin.write(json.dumps({"host": host, "port": port, "key": key}).encode() + b"\n")
    gen.stdin.flush()
    if on_start is not None:
        on_start(daemon)

    def sample() -> tuple[float, float, float, float, dict[int, float]]:
        return (
            time.monotonic(),
            daemon.cpu(),
            cpu_seconds(gen.pid),
            cpu_seconds(receiver.proc.pid),
            thread_cpu_seconds(daemon.pid),
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
    with Workdir(keep) as wd:
        receiver = ReceiverProc()
        daemon = Daemon(wd / "hookd.db", wd / "hookd.log")
        gen = None
        try:
            path = "/p/ingest" if parked else "/o/ingest"
            hook = Hook(receiver.url(path), events=("*",) if deliver else ("unsent.*",))
            setup_db.create_hooks(wd / "hookd.db", [hook])
            key = create_key(wd / "hookd.db", setup_db.WORKSPACE)
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
            result = _drive_ingest(gen, daemon, receiver, key, on_ready)
            result["peak_rss_mb"] = tree_hwm_mb(daemon.pid)[0]
            result["delivered_meanwhile"] = int(receiver.stats()["ok"])
            db = readonly_db(wd / "hookd.db")
            result["events_in_db"] = int(db.execute("SELECT count(*) FROM events").fetchone()[0])
            db.close()
            accepted = result["accepted_in_window"]
            result["daemon_cpu_us_per_event"] = (
                result["daemon_cpu_s"] / accepted * 1e6 if accepted else 0.0
            )
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
    with Workdir(keep) as wd:
        daemon = Daemon(wd / "hookd.db", wd / "hookd.log")
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
            key = _api_setup(wd, f"http://127.0.0.1:{port}/o/latency")
            daemon.start()
            result = _drive(gen, daemon, key)
            result["peak_rss_mb"] = tree_hwm_mb(daemon.pid)[0]
            result["daemon_cpu_us_per_event"] = (
                result["daemon_cpu_s"] / (sizes.latency_rate * sizes.latency_seconds) * 1e6
            )
        finally:
            stop(gen, 5)
            daemon.stop()
    return result


# -- backlog -----------------------------------------------------------------------------


def _probe(
    daemon: Daemon, receiver: ReceiverProc, seconds: float, until_ok: int | None = None
) -> dict[str, Any]:
    """Run the daemon for ``seconds`` (or until ``until_ok`` arrivals): rate, CPU, RSS."""
    base = receiver.stats()["ok"]
    daemon.start()
    pid = daemon.pid
    rss_ready = rss_mb(pid)
    cpu0 = daemon.cpu()
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(0.25)
        if until_ok is not None and receiver.stats()["ok"] - base >= until_ok:
            break
    elapsed = time.monotonic() - t0
    stats = receiver.stats()
    out = {
        "seconds": elapsed,
        "delivered": int(stats["ok"] - base),
        "deliveries_per_s": (stats["ok"] - base) / elapsed,
        "cpu_us_per_delivery": (daemon.cpu() - cpu0) / max(stats["ok"] - base, 1) * 1e6,
        "rss_mb_ready": rss_ready,
        "rss_mb_end": rss_mb(pid),
        "peak_rss_mb": tree_hwm_mb(pid)[0],
    }
    daemon.stop(30)
    return out


def _window(samples: list[list[float]], centre: int, width: int = 20) -> dict[str, float]:
    lo = max(0, min(len(samples) - width, centre - width // 2))
    part = samples[lo : lo + width]
    return {
        "queued": part[0][0],
        "claim_ms": median([s[2] for s in part]),
        "record_ms": median([s[3] for s in part]),
        "rss_mb": median([s[4] for s in part]),
    }


def _drain(db_path: Path, queued: int, stop_at: int, close: bool = True) -> dict[str, Any]:
    worker = spawn(
        [
            sys.executable,
            "-m",
            "bench.backlog_worker",
            str(db_path),
            "--total",
            str(queued),
            "--stop-at",
            str(stop_at),
            *([] if close else ["--no-close"]),
        ],
        stdout=subprocess.PIPE,
    )
    out, _ = worker.communicate(timeout=3600)
    stop(worker)
    return dict(json.loads(out))


def _has_stat1(db: Any) -> bool:
    return bool(
        db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()[0]
    )


def backlog(sizes: Sizes, keep: bool = False) -> dict[str, Any]:
    total = sizes.backlog
    left = 1000
    with Workdir(keep) as wd:
        db_path = wd / "hookd.db"
        receiver = ReceiverProc()
        try:
            hook_ids = setup_db.create_hooks(
                db_path, [Hook(receiver.url(f"/o/{i}")) for i in range(sizes.webhooks)]
            )
            t = time.monotonic()
            setup_db.prequeue_bulk(db_path, hook_ids, total)
            prequeue_s = time.monotonic() - t
            # SQLite's plan for the claim depends on planner statistics
            # (sqlite_stat1), so a few claims are timed in two states first.
            # None: the database as written (hookd never ANALYZEs explicitly).
            fresh = _drain(db_path, total, total - 3 * 256, close=False)
            # Webhooks only: what PRAGMA optimize leaves when a store that ran
            # webhook lookups (ingest, `hookd webhooks create`) closes; the
            # throughput scenario's database, set up through the store API, is
            # in this state.
            conn = sqlite3.connect(db_path)
            conn.execute("ANALYZE webhooks")
            conn.close()
            partial = _drain(db_path, total - 3 * 256, total - 6 * 256, close=False)
            # The daemon facing the whole backlog.
            probe_full = _probe(
                Daemon(db_path, wd / "hookd.log"), receiver, sizes.backlog_probe_seconds
            )
            db = readonly_db(db_path)
            queued = total - count_status(db, "delivered")
            # hookd's clean shutdown runs PRAGMA optimize, which may ANALYZE.
            stat1 = _has_stat1(db)
            db.close()
            # The store API draining it, claim by claim, down to ``left`` queued.
            drain = _drain(db_path, queued, left)
            # The daemon facing the last ``left``.
            probe_small = _probe(Daemon(db_path, wd / "hookd.log"), receiver, 20.0, until_ok=left)
        finally:
            receiver.close()
    samples = [s for s in drain["samples"] if s[1] == 256] or drain["samples"]
    windows = {
        "start": _window(samples, 0),
        "middle": next(
            (_window(samples, i) for i, s in enumerate(samples) if s[0] <= queued / 2),
            _window(samples, len(samples) // 2),
        ),
        "end": _window(samples, len(samples)),
    }
    claims = [w["claim_ms"] for w in windows.values()]
    rss = [w["rss_mb"] for w in windows.values()]
    return {
        "backlog": total,
        "prequeue_s": prequeue_s,
        "windows": windows,
        "claim_ms_no_stats": median([x[2] for x in fresh["samples"]]),
        "claim_ms_webhook_stats_only": median([x[2] for x in partial["samples"]]),
        "stat1_after_daemon_stop": stat1,
        "claim_ms_start": windows["start"]["claim_ms"],
        "claim_ms_middle": windows["middle"]["claim_ms"],
        "claim_ms_end": windows["end"]["claim_ms"],
        "claim_ms_max_over_min": max(claims) / min(claims) if min(claims) > 0 else 0.0,
        "worker_rss_mb_start": rss[0],
        "worker_rss_mb_middle": rss[1],
        "worker_rss_mb_end": rss[2],
        "worker_peak_rss_mb": drain["hwm_mb"],
        "store_drain_jobs_per_s": drain["jobs_per_s"],
        "store_drained": drain["drained"],
        "daemon_full_backlog": probe_full,
        "daemon_small_backlog": probe_small,
        "daemon_rss_mb_full": probe_full["peak_rss_mb"],
        "daemon_rss_mb_small": probe_small["peak_rss_mb"],
        "daemon_deliveries_per_s_full": probe_full["deliveries_per_s"],
    }


SCENARIOS: dict[str, Callable[[Sizes, bool], dict[str, Any]]] = {
    "throughput": throughput,
    "ingest": ingest,
    "latency": latency,
    "backlog": backlog,
    "isolation": isolation,
    "dribble": dribble,
}
