"""The ``nodes`` scenario: one PostgreSQL database, one node against two.

The throughput scenario's queue (``--deliveries`` over 50 webhooks answering
200) is filled and copied into the run's database, then drained twice over,
each time from a fresh copy: by one ``hookd serve`` and by two of them sharing
the database, the order swapped from run to run (alternating pairs).  Every
webhook is paused until a few seconds after the nodes are launched, so that
they all start on the queue together, each knowing the others (a node counts
the nodes every 5 s, and takes its share of every webhook's
``per_webhook_concurrency``).

Beside deliveries/s the machine's CPU is split by who spent it, in cores of
the two: the hookd nodes, the PostgreSQL server (the run's backends and the
server's background processes), the receiver, and the rest (the harness,
anything else); with steal time, it says what bounds two nodes on this machine.
"""

from __future__ import annotations

import time
from typing import Any

from bench import db as backend
from bench import setup_db
from bench.common import Daemon, cpu_seconds, tree_hwm_mb
from bench.harness import ReceiverProc, Sizes, Workdir
from bench.setup_db import Hook

# How long after the launch the webhooks may send: time to start and count each other.
PAUSE_SECONDS = 8.0
COUNTS = (1, 2)


def drain(sizes: Sizes, nodes: int, keep: bool = False) -> dict[str, Any]:
    """``nodes`` daemons on one database draining ``sizes.deliveries``."""
    if backend.POSTGRES is None:
        raise SystemExit("the nodes scenario needs PostgreSQL: python -m bench run --postgres")
    events = sizes.deliveries // sizes.webhooks
    with Workdir(keep) as wd, backend.database(wd) as db:
        assert isinstance(db, backend.PostgresDatabase)
        receiver = ReceiverProc()
        daemons = [Daemon(db.source, wd / f"hookd-{i}.log", db.env()) for i in range(nodes)]
        try:
            hooks = [Hook(receiver.url(f"/o/{i}")) for i in range(sizes.webhooks)]
            setup_db.prequeue_fanout(db.source, hooks, events)
            db.ready()
            opens = int(time.time() * 1000 + PAUSE_SECONDS * 1000)
            db.execute("UPDATE webhooks SET paused_until = $1", opens)
            launched = time.monotonic()
            for d in daemons:
                d.launch()
            for d in daemons:
                d.wait_started()
            started_s = max(d.ready_at for d in daemons) - launched
            if started_s > PAUSE_SECONDS - 1:
                raise RuntimeError(f"the nodes took {started_s:.1f} s to start: no fair start")
            cpu0 = [d.cpu() for d in daemons]
            receiver0 = cpu_seconds(receiver.proc.pid)
            usage0 = db.usage()
            limit = max(120.0, sizes.deliveries / 200)
            while time.monotonic() - launched < limit:
                time.sleep(0.5)
                if receiver.stats()["ok"] >= events * sizes.webhooks:
                    break
            usage1 = db.usage()
            cpu1 = [d.cpu() for d in daemons]
            receiver_cpu = cpu_seconds(receiver.proc.pid) - receiver0
            stats = receiver.stats()
            peak = max(tree_hwm_mb(d.pid)[0] for d in daemons)
            delivered = db.count("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
            attempts = db.count("SELECT count(*) FROM attempts")
        finally:
            for d in daemons:
                d.stop()
            receiver.close()
    seconds = usage1.at - usage0.at
    usage = db.report(usage0, usage1, delivered, "delivery")
    hookd = sum(b - a for a, b in zip(cpu0, cpu1, strict=True))
    span = stats["last_ok"] - stats["first_ok"]
    hookd_cores = hookd / seconds
    receiver_cores = receiver_cpu / seconds
    postgres_cores = usage["postgres_all_cpu_s"] / seconds
    return {
        **usage,
        "nodes": nodes,
        "deliveries": events * sizes.webhooks,
        "delivered": delivered,
        "received_ok": int(stats["ok"]),
        "attempts": attempts,
        "complete": delivered >= events * sizes.webhooks,
        "nodes_started_s": started_s,
        "deliveries_per_s": stats["ok"] / span if span > 0 else 0.0,
        "hookd_cpu_us_per_delivery": hookd / max(delivered, 1) * 1e6,
        "hookd_cores": hookd_cores,
        "hookd_cores_per_node": [(b - a) / seconds for a, b in zip(cpu0, cpu1, strict=True)],
        "receiver_cores": receiver_cores,
        "postgres_all_cores": postgres_cores,
        # the harness's own polling, and anything else on the machine
        "rest_cores": usage["machine_busy_cores"] - hookd_cores - receiver_cores - postgres_cores,
        "peak_rss_mb": peak,
        "window_s": seconds,
    }


_pairs = 0


def nodes(sizes: Sizes, keep: bool = False) -> dict[str, Any]:
    """One node and two nodes, back to back, the order swapped on every other run."""
    global _pairs
    order = COUNTS if _pairs % 2 == 0 else COUNTS[::-1]
    _pairs += 1
    runs = {n: drain(sizes, n, keep) for n in order}
    one, two = runs[1], runs[2]
    result: dict[str, Any] = {"backend": "postgresql", "order": list(order)}
    for prefix, run in (("one", one), ("two", two)):
        for key, value in run.items():
            result[f"{prefix}_{key}"] = value
    result["two_over_one"] = (
        two["deliveries_per_s"] / one["deliveries_per_s"] if one["deliveries_per_s"] else 0.0
    )
    return result
