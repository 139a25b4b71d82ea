"""Two workspaces on one daemon: a heavy one must not stall a light one.

``tenants``: workspace A (100 webhooks on ``*``, the most ``[quotas]
webhooks_per_workspace`` allows) posts batches of 100 events, each creating
10,000 deliveries (``deliveries_per_request``), on 4 connections without
pause, while workspace B posts one event at a time at 50/s: B's 202 latency,
A's accepted deliveries/s and the deliveries/s the scheduler keeps sending.
``tenants_raised`` is the same with the quota raised and batches of 500 (50,000
deliveries a request): whether ingest's bound on one commit still holds.

``fairness``: A has 400,000 due deliveries queued before the daemon starts and
B posts fresh events at 50/s while A drains: B's time from send slot to first
attempt, against the same run without A's backlog.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import setup_db
from bench.common import Daemon, count_status, create_key, readonly_db, spawn, stop, tree_hwm_mb
from bench.scenarios import ReceiverProc, Sizes, Workdir
from bench.setup_db import Hook

WS_A = "ws_heavy"
WS_B = "ws_light"


@dataclass(frozen=True)
class TenantSizes:
    seconds: float = 20.0  # B's measured window (after a 2 s warm-up)
    a_clients: int = 4
    a_batch: int = 100  # events per request: 10,000 deliveries over 100 webhooks
    a_webhooks: int = 100
    b_rate: float = 50.0
    fairness_backlog: int = 400_000


SETTINGS = TenantSizes()
QUICK_SETTINGS = TenantSizes(seconds=8.0, fairness_backlog=100_000)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenants-seconds", type=float, help="tenants/fairness window (default 20)")
    p.add_argument("--tenants-a-clients", type=int, help="A's connections (default 4)")
    p.add_argument("--tenants-a-batch", type=int, help="A's events per request (default 100)")
    p.add_argument("--tenants-b-rate", type=float, help="B's events/s (default 50)")
    p.add_argument("--fairness-backlog", type=int, help="A's due deliveries (default 400,000)")


def configure(args: argparse.Namespace) -> None:
    global SETTINGS
    s = QUICK_SETTINGS if args.quick else SETTINGS
    for field, value in (
        ("seconds", args.tenants_seconds),
        ("a_clients", args.tenants_a_clients),
        ("a_batch", args.tenants_a_batch),
        ("b_rate", args.tenants_b_rate),
        ("fairness_backlog", args.fairness_backlog),
    ):
        if value:
            s = replace(s, **{field: value})
    SETTINGS = s


def _start_gen(module: str, args: list[str]) -> tuple[subprocess.Popen[Any], int]:
    gen = spawn(
        [sys.executable, "-m", module, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert gen.stdout is not None
    return gen, int(json.loads(gen.stdout.readline())["port"])


def _drive(
    gen: subprocess.Popen[Any], daemon: Daemon, receiver: ReceiverProc, target: dict[str, Any]
) -> dict[str, Any]:
    """Start the load; sample the daemon's CPU and the receiver over the measured window."""
    assert gen.stdin is not None
    assert gen.stdout is not None
    host, _, port = daemon.listen.rpartition(":")
    gen.stdin.write(json.dumps({"host": host, "port": int(port), **target}).encode() + b"\n")
    gen.stdin.flush()
    first = last = (0.0, 0.0, 0.0)
    while line := gen.stdout.readline():
        msg = json.loads(line)
        if msg.get("phase") in ("measure", "done"):
            sample = (time.monotonic(), daemon.cpu(), receiver.stats()["ok"])
            first, last = (sample, sample) if msg["phase"] == "measure" else (first, sample)
        elif "result" in msg:
            result = dict(msg["result"])
            seconds = last[0] - first[0]
            result["window_s"] = seconds
            result["daemon_cpu_utilisation"] = (last[1] - first[1]) / seconds
            result["delivered_per_s"] = (last[2] - first[2]) / seconds
            result["peak_rss_mb"] = tree_hwm_mb(daemon.pid)[0]
            return result
    raise RuntimeError(f"load generator ended without a result: {daemon.log_tail()}")


def _two_workspaces(
    wd: Path, receiver: ReceiverProc, b_url: str, a_hooks: int
) -> tuple[list[str], dict[str, str]]:
    db = wd / "hookd.db"
    hook_ids = setup_db.create_hooks(
        db, [Hook(receiver.url(f"/o/a{i}")) for i in range(a_hooks)], WS_A
    )
    setup_db.create_hooks(db, [Hook(b_url)], WS_B)
    return hook_ids, {"key_a": create_key(db, WS_A), "key_b": create_key(db, WS_B)}


def tenants_run(keep: bool, a_batch: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    s = SETTINGS
    with Workdir(keep) as wd:
        receiver = ReceiverProc()
        daemon = Daemon(wd / "hookd.db", wd / "hookd.log", env)
        gen, port = _start_gen(
            "bench.tenants_load",
            [
                *("--a-clients", str(s.a_clients), "--a-batch", str(a_batch)),
                *("--b-rate", str(s.b_rate), "--duration", str(s.seconds)),
            ],
        )
        try:
            _, keys = _two_workspaces(wd, receiver, f"http://127.0.0.1:{port}/o/b", s.a_webhooks)
            daemon.start()
            result = _drive(gen, daemon, receiver, keys)
            db = readonly_db(wd / "hookd.db")
            result["queued_at_end"] = count_status(db, "pending")
            db.close()
        finally:
            stop(gen, 5)
            daemon.stop()
            receiver.close()
        result["loop_errors"] = daemon.log_counts(["scheduler.loop_error"])["scheduler.loop_error"]
    result["a_webhooks"] = s.a_webhooks
    result["a_deliveries_per_request"] = a_batch * s.a_webhooks
    result["a_deliveries_per_s"] = result["a_events_per_s"] * s.a_webhooks
    return result


def tenants(sizes: Sizes, keep: bool = False) -> dict[str, Any]:
    return tenants_run(keep, a_batch=SETTINGS.a_batch)


def tenants_raised(sizes: Sizes, keep: bool = False) -> dict[str, Any]:
    env = {"HOOKD_QUOTAS_DELIVERIES_PER_REQUEST": "1000000"}
    return tenants_run(keep, a_batch=500, env=env)


def fairness_run(keep: bool, backlog: int) -> dict[str, Any]:
    s = SETTINGS
    with Workdir(keep) as wd:
        db = wd / "hookd.db"
        receiver = ReceiverProc()
        daemon = Daemon(db, wd / "hookd.log")
        gen, port = _start_gen(
            "bench.loadgen",
            ["latency", "--rate", str(s.b_rate), "--duration", str(s.seconds), "--grace", "30"],
        )
        try:
            hook_ids, keys = _two_workspaces(
                wd, receiver, f"http://127.0.0.1:{port}/o/b", s.a_webhooks
            )
            t = time.monotonic()
            if backlog:
                setup_db.prequeue_bulk(db, hook_ids, backlog, WS_A)
            prequeue_s = time.monotonic() - t
            daemon.start()
            result = _drive(gen, daemon, receiver, {"key": keys["key_b"]})
            conn = readonly_db(db)
            result["a_left_at_end"] = count_status(conn, "pending")
            conn.close()
        finally:
            stop(gen, 5)
            daemon.stop()
            receiver.close()
    result["backlog"] = backlog
    result["prequeue_s"] = prequeue_s
    return result


def fairness(sizes: Sizes, keep: bool = False) -> dict[str, Any]:
    """B's first attempts beside A's backlog, then the same without it (``reference_*``)."""
    result = fairness_run(keep, SETTINGS.fairness_backlog)
    for name, value in fairness_run(keep, 0).items():
        result[f"reference_{name}"] = value
    return result


SCENARIOS = {"tenants": tenants, "tenants_raised": tenants_raised, "fairness": fairness}

_B = "B (50/s): 202 latency"
ROWS: list[tuple[str, str, str, str, float | None, bool]] = [
    ("tenants", "b_ack_ms_p50", f"{_B} p50", "ms", None, False),
    ("tenants", "b_ack_ms_p99", f"{_B} p99", "ms", 100, False),
    ("tenants", "b_ack_ms_max", f"{_B} max", "ms", None, False),
    ("tenants", "a_deliveries_per_s", "A: deliveries accepted/s", "/s", None, True),
    ("tenants", "delivered_per_s", "deliveries sent/s meanwhile", "/s", None, True),
    ("tenants", "b_first_attempt_ms_p99", "B: ingest→first attempt p99", "ms", None, False),
    ("tenants_raised", "b_ack_ms_p50", f"{_B} p50", "ms", None, False),
    ("tenants_raised", "b_ack_ms_p99", f"{_B} p99", "ms", 100, False),
    ("tenants_raised", "b_ack_ms_max", f"{_B} max", "ms", None, False),
    ("tenants_raised", "a_deliveries_per_s", "A: deliveries accepted/s", "/s", None, True),
    ("tenants_raised", "delivered_per_s", "deliveries sent/s meanwhile", "/s", None, True),
    *(
        (
            "fairness",
            f"{pre}first_attempt_ms_{q}",
            f"B: first attempt {q}, {what}",
            "ms",
            None,
            False,
        )
        for pre, what in (("", "A's backlog"), ("reference_", "alone"))
        for q in ("p50", "p99", "max")
    ),
    ("fairness", "delivered_per_s", "A's backlog drained/s meanwhile", "/s", None, True),
]
BRIEF = {
    "tenants": (
        "b_ack_ms_p50",
        "b_ack_ms_p99",
        "b_ack_ms_max",
        "a_deliveries_per_s",
        "delivered_per_s",
    ),
    "tenants_raised": ("b_ack_ms_p99", "b_ack_ms_max", "a_deliveries_per_s", "delivered_per_s"),
    "fairness": (
        "first_attempt_ms_p99",
        "first_attempt_ms_max",
        "reference_first_attempt_ms_p99",
        "a_left_at_end",
    ),
}
