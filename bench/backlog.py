"""The backlog scenario: 1,000,000 due deliveries, the claim's cost as they drain."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from typing import Any

from bench import db as backend
from bench import pg, setup_db
from bench.common import Daemon, median, rss_mb, spawn, stop, tree_hwm_mb
from bench.harness import ReceiverProc, Sizes, Workdir
from bench.setup_db import Hook


def _probe(
    daemon: Daemon,
    receiver: ReceiverProc,
    db: backend.Database,
    seconds: float,
    until_ok: int | None = None,
) -> dict[str, Any]:
    """Run the daemon for ``seconds`` (or until ``until_ok`` arrivals): rate, CPU, RSS."""
    base = receiver.stats()["ok"]
    daemon.start()
    pid = daemon.pid
    rss_ready = rss_mb(pid)
    cpu0 = daemon.cpu()
    usage0 = db.usage()
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(0.25)
        if until_ok is not None and receiver.stats()["ok"] - base >= until_ok:
            break
    elapsed = time.monotonic() - t0
    stats = receiver.stats()
    delivered = int(stats["ok"] - base)
    out = {
        **db.report(usage0, db.usage(), delivered, "delivery"),
        "seconds": elapsed,
        "delivered": delivered,
        "deliveries_per_s": delivered / elapsed,
        "cpu_us_per_delivery": (daemon.cpu() - cpu0) / max(delivered, 1) * 1e6,
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


def _drain(db: str, queued: int, stop_at: int, close: bool = True) -> dict[str, Any]:
    worker = spawn(
        [
            sys.executable,
            "-m",
            "bench.backlog_worker",
            db,
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


DELIVERED = "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
STAT1 = "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"


def backlog(sizes: Sizes, keep: bool = False) -> dict[str, Any]:
    total = sizes.backlog
    left = 1000
    with Workdir(keep) as wd, backend.database(wd) as db:
        receiver = ReceiverProc()
        postgres = isinstance(db, backend.PostgresDatabase)
        # What the worker opens: the SQLite file or the run's PostgreSQL database.
        target = db.url if isinstance(db, backend.PostgresDatabase) else str(db.source)
        extra: dict[str, Any] = {}
        try:
            hook_ids = setup_db.create_hooks(
                db.source, [Hook(receiver.url(f"/o/{i}")) for i in range(sizes.webhooks)]
            )
            t = time.monotonic()
            if isinstance(db, backend.PostgresDatabase):
                db.ready()  # the webhooks (hookd copy ANALYZEs the still empty tables)
                pg.fill_backlog(db.url, setup_db.WORKSPACE, hook_ids, total)
            else:
                setup_db.prequeue_bulk(db.source, hook_ids, total)
            prequeue_s = time.monotonic() - t
            # The claim's plan may depend on planner statistics, so a few claims
            # are timed in two states first.  First the database as written:
            # SQLite: hookd never ANALYZEs explicitly; PostgreSQL: the
            # statistics of the empty tables, as long as autovacuum has not
            # analyzed them (it is off on the benchmark's server).
            fresh = _drain(target, total, total - 3 * 256, close=False)
            if postgres:
                # Then fully analyzed (what autovacuum, or hookd copy, leaves).
                db.analyze()
            else:
                # Webhooks only: what PRAGMA optimize leaves when a store that
                # ran webhook lookups (ingest, `hookd webhooks create`) closes;
                # the throughput scenario's database, set up through the store
                # API, is in this state.
                conn = sqlite3.connect(db.source)
                conn.execute("ANALYZE webhooks")
                conn.close()
            partial = _drain(target, total - 3 * 256, total - 6 * 256, close=False)
            # The daemon facing the whole backlog.
            daemon = Daemon(db.source, wd / "hookd.log", db.env())
            probe_full = _probe(daemon, receiver, db, sizes.backlog_probe_seconds)
            queued = total - db.count(DELIVERED)
            if not postgres:
                # hookd's clean shutdown runs PRAGMA optimize, which may ANALYZE.
                extra["stat1_after_daemon_stop"] = bool(db.count(STAT1))
                db.close()  # no reader held open through the drain
            # The store API draining it, claim by claim, down to ``left`` queued.
            drain = _drain(target, queued, left + 3 * 256 if postgres else left)
            if postgres:
                # Nothing vacuumed the drained rows (autovacuum is off on the
                # benchmark's server): the end's claims, and after a VACUUM.
                db.vacuum()
                vacuumed = _drain(target, left + 3 * 256, left)
                extra["claim_ms_end_vacuumed"] = median([x[2] for x in vacuumed["samples"]])
            # The daemon facing the last ``left``.
            daemon = Daemon(db.source, wd / "hookd.log", db.env())
            probe_small = _probe(daemon, receiver, db, 20.0, until_ok=left)
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
        "backend": db.kind,
        "backlog": total,
        "prequeue_s": prequeue_s,
        "windows": windows,
        "claim_ms_no_stats": median([x[2] for x in fresh["samples"]]),
        ("claim_ms_analyzed" if postgres else "claim_ms_webhook_stats_only"): median(
            [x[2] for x in partial["samples"]]
        ),
        **extra,
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
        "daemon_postgres_cpu_us_per_delivery_full": probe_full.get(
            "postgres_cpu_us_per_delivery", 0.0
        ),
    }
