"""``soak``: mixed traffic for minutes, with retention short enough to catch up in the run.

About 200 webhooks in two workspaces, created through the API: most answer
200, some answer 429 for ever (``/r``), some 410 (``/g``: hookd sets them
inactive), some hang until their 1 s timeout (``/h``: retries, then dead
letters).  Meanwhile events arrive at ``--soak-rate`` a second (one request in
twenty is a batch of 20), one webhook is deleted and another created every two
seconds, and every ten seconds a hanging webhook's dead letters are replayed.
Retention keeps delivered deliveries 30 s and dead letters 60 s, and sweeps
every 10 s; events go once unreferenced and older than a 30 s idempotency
window; the 429 lane ends after 60 s.

Every few seconds the run samples the database's size (file + WAL), the
daemon's RSS, file descriptors and threads, and from ``/metrics`` the queue
depth and the oldest-due gauge (scheduling lag).  It reports each one's slope
over the second half of the traffic (flat once retention caught up), the log
bytes per delivery at the default level (info), and whether the counts match:
what the API accepted against what hookd counted, what is left in the database
plus what retention deleted against what was created, nothing due left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import Daemon, create_key, proc_status_kb, readonly_db
from bench.scenarios import ReceiverProc, Sizes, Workdir

WORKSPACES = ("ws_soak_a", "ws_soak_b")
TYPES = 10
# Short enough for retention to catch up within the run.
ENV = {
    "HOOKD_RETENTION_DELIVERED_MAX_AGE_SECONDS": "30",
    "HOOKD_RETENTION_DEAD_LETTER_MAX_AGE_SECONDS": "60",
    "HOOKD_RETENTION_INTERVAL_SECONDS": "10",
    "HOOKD_DELIVERY_IDEMPOTENCY_WINDOW_SECONDS": "30",
    "HOOKD_DELIVERY_RATE_LIMIT_MAX_AGE_SECONDS": "60",
    "HOOKD_DELIVERY_RETRY_SCHEDULE_SECONDS": "1,2,4",
    "HOOKD_SERVER_STATS_INTERVAL_SECONDS": "2",
}


@dataclass(frozen=True)
class SoakSizes:
    seconds: float = 300.0
    webhooks_per_workspace: int = 98  # the quota is 100: room for churn
    rate: float = 20.0  # event requests a second
    sample_every: float = 3.0
    drain_seconds: float = 30.0


SETTINGS = SoakSizes()
QUICK_SETTINGS = SoakSizes(seconds=60.0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--soak-seconds", type=float, help="soak traffic duration (default 300)")
    p.add_argument("--soak-rate", type=float, help="soak event requests/s (default 20)")


def configure(args: argparse.Namespace) -> None:
    global SETTINGS
    s = QUICK_SETTINGS if args.quick else SETTINGS
    if args.soak_seconds:
        s = replace(s, seconds=args.soak_seconds)
    if args.soak_rate:
        s = replace(s, rate=args.soak_rate)
    SETTINGS = s


def kind_of(rng: random.Random) -> str:
    """o: 200 (90 %), r: 429 for ever, g: 410, h: hangs (about 3 % each)."""
    x = rng.random()
    return "r" if x < 0.035 else "g" if x < 0.065 else "h" if x < 0.095 else "o"


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var * 60 if var else 0.0


class Traffic:
    """The API side of the soak: webhooks, events, churn and replays, with their counts."""

    def __init__(self, base: str, keys: dict[str, str], receiver: ReceiverProc) -> None:
        self.base = base
        self.keys = keys
        self.receiver = receiver
        self.rng = random.Random(7)
        self.hooks: dict[str, dict[str, str]] = {ws: {} for ws in WORKSPACES}  # id -> kind
        self.counts = dict.fromkeys(
            (
                "requests",
                "events_accepted",
                "deliveries_accepted",
                "errors",
                "created",
                "deleted",
                "replays",
                "replayed",
            ),
            0,
        )
        self.statuses: dict[str, int] = {}
        self.serial = 0
        self.session: aiohttp.ClientSession | None = None

    async def call(self, ws: str, method: str, path: str, body: Any = None) -> Any:
        assert self.session is not None
        async with self.session.request(
            method, self.base + path, json=body, headers={"X-Api-Key": self.keys[ws]}
        ) as resp:
            payload = await resp.json(content_type=None)
            self.statuses[str(resp.status)] = self.statuses.get(str(resp.status), 0) + 1
            if resp.status >= 400:
                self.counts["errors"] += 1
                return None
            return payload["data"]

    async def create(self, ws: str) -> None:
        kind = kind_of(self.rng)
        self.serial += 1
        # A hanging endpoint takes about 10 deliveries/s (32 connections, 1 s
        # timeouts, three attempts each): never on "*", so its queue stays bounded.
        on_all = kind in "or" and self.rng.random() < 0.1
        events = ["*"] if on_all else [f"t{self.rng.randrange(TYPES)}.*"]
        body = {
            "name": f"soak-{self.serial}",
            "url": self.receiver.url(f"/{kind}/{self.serial}"),
            "events": events,
            "retryAttempts": 2,
            "timeoutMs": 1000,
        }
        data = await self.call(ws, "POST", "/v1/webhooks", body)
        if data is not None:
            self.hooks[ws][data["_id"]] = kind
            self.counts["created"] += 1

    async def send(self, ws: str) -> None:
        self.counts["requests"] += 1
        event = {"type": f"t{self.rng.randrange(TYPES)}.e", "data": {"n": self.counts["requests"]}}
        if self.rng.random() < 0.05:
            data = await self.call(ws, "POST", "/v1/events/batch", {"events": [event] * 20})
            accepted = data or []
        else:
            data = await self.call(ws, "POST", "/v1/events", event)
            accepted = [data] if data is not None else []
        self.counts["events_accepted"] += len(accepted)
        self.counts["deliveries_accepted"] += sum(len(e["deliveryIds"]) for e in accepted)

    async def churn(self) -> None:
        ws = self.rng.choice(WORKSPACES)
        victim = self.rng.choice(sorted(self.hooks[ws]))
        if await self.call(ws, "DELETE", f"/v1/webhooks/{victim}") is not None:
            del self.hooks[ws][victim]
            self.counts["deleted"] += 1
        await self.create(ws)

    async def replay(self) -> None:
        choices = [(ws, h) for ws in WORKSPACES for h, k in self.hooks[ws].items() if k == "h"]
        if choices:
            ws, hook = self.rng.choice(choices)
            data = await self.call(ws, "POST", f"/v1/webhooks/{hook}/replay", {})
            self.counts["replays"] += 1
            self.counts["replayed"] += int(data["count"]) if data else 0

    async def run(self, seconds: float, rate: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        sent = 0
        next_churn, next_replay = t0 + 2.0, t0 + 10.0
        while (now := loop.time()) < t0 + seconds:
            while sent < (now - t0) * rate:
                task = loop.create_task(self.send(WORKSPACES[sent % 2]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            if now >= next_churn:
                next_churn += 2.0
                await self.churn()
            if now >= next_replay:
                next_replay += 10.0
                await self.replay()
            await asyncio.sleep(0.005)
        if tasks:
            await asyncio.gather(*tasks)


class Sampler:
    def __init__(self, daemon: Daemon, db: Path, metrics_url: str) -> None:
        self.daemon = daemon
        self.db = db
        self.metrics_url = metrics_url
        self.samples: list[dict[str, float]] = []
        self.t0 = time.monotonic()

    async def metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        async with session.get(self.metrics_url) as resp:
            return parse_metrics(await resp.text())

    async def sample(self, session: aiohttp.ClientSession, phase: str) -> dict[str, float]:
        pid = self.daemon.pid
        m = await self.metrics(session)
        wal = self.db.with_name(self.db.name + "-wal")
        s = {
            "t": time.monotonic() - self.t0,
            "phase": phase,
            "db_mb": (self.db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / 2**20,
            "rss_mb": proc_status_kb(pid, "VmRSS") / 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": proc_status_kb(pid, "Threads"),
            "queue": sum(
                m.get(f'hookd_queue_deliveries{{status="{st}"}}', 0.0)
                for st in ("pending", "failed", "rate_limited")
            ),
            "oldest_due_s": m.get("hookd_queue_oldest_due_age_seconds", 0.0),
        }
        self.samples.append(s)  # type: ignore[arg-type]
        return s


def soak(sizes: Sizes, keep: bool = False) -> dict[str, Any]:
    s = SETTINGS
    with Workdir(keep) as wd:
        db = wd / "hookd.db"
        receiver = ReceiverProc()
        daemon = Daemon(db, wd / "hookd.log", ENV)
        try:
            keys = {ws: create_key(db, ws) for ws in WORKSPACES}
            daemon.start()
            result = asyncio.run(_drive(daemon, db, keys, receiver, s))
            result["received"] = receiver.stats()
        finally:
            daemon.stop(30)
            receiver.close()
        result.update(_after(daemon, db, result))
    return result


async def _drive(
    daemon: Daemon, db: Path, keys: dict[str, str], receiver: ReceiverProc, s: SoakSizes
) -> dict[str, Any]:
    traffic = Traffic(daemon.url(""), keys, receiver)
    sampler = Sampler(daemon, db, daemon.url("/metrics"))
    conn = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=conn) as session:
        traffic.session = session
        for ws in WORKSPACES:
            for _ in range(s.webhooks_per_workspace):
                await traffic.create(ws)
        stopping = asyncio.Event()

        async def sample_loop() -> None:
            while not stopping.is_set():
                await sampler.sample(session, "traffic")
                await asyncio.sleep(s.sample_every)

        sampling = asyncio.create_task(sample_loop())
        started = time.monotonic()
        await traffic.run(s.seconds, s.rate)
        traffic_s = time.monotonic() - started
        stopping.set()
        await sampling
        # Drain: what is due and may go should go; only backoffs and the 429 lane stay.
        drain_started = time.monotonic()
        while time.monotonic() - drain_started < s.drain_seconds:
            await asyncio.sleep(2.0)
            last = await sampler.sample(session, "drain")
            if last["oldest_due_s"] == 0:
                break
        final = await sampler.metrics(session)
    return {
        "traffic_s": traffic_s,
        "drain_s": time.monotonic() - drain_started,
        "traffic": dict(traffic.counts),
        "api_statuses": traffic.statuses,
        "webhooks_at_end": sum(len(h) for h in traffic.hooks.values()),
        "metrics": {k: v for k, v in final.items() if k.startswith("hookd_")},
        "samples": sampler.samples,
    }


def _after(daemon: Daemon, db: Path, r: dict[str, Any]) -> dict[str, Any]:
    """Figures once the daemon has stopped: slopes, log bytes, and the counts checked."""
    traffic = [x for x in r["samples"] if x["phase"] == "traffic"]
    half = traffic[len(traffic) // 2 :]
    out: dict[str, Any] = {}
    for key in ("db_mb", "rss_mb", "fds", "threads", "queue", "oldest_due_s"):
        out[f"{key}_slope_per_min"] = slope_per_min([(x["t"], x[key]) for x in half])
        out[f"{key}_max"] = max(x[key] for x in traffic)
        out[f"{key}_second_half_mean"] = sum(x[key] for x in half) / len(half)
    out["second_half_s"] = half[-1]["t"] - half[0]["t"]
    m = r["metrics"]
    swept = {"delivered": 0, "dead_letters": 0, "orphan_events": 0, "lane_ended": 0}
    log_bytes = daemon.log_path.stat().st_size
    with open(daemon.log_path, "rb") as f:
        for line in f:
            if b'"retention.swept"' in line:
                entry = json.loads(line)
                for k in swept:
                    swept[k] += int(entry.get(k, 0))
    conn = readonly_db(db)
    left = dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall())
    # Due, not leased, of an active webhook not paused: stuck once the drain is over.
    stuck = conn.execute(
        "SELECT count(*) FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id"
        " WHERE d.status IN ('pending', 'failed') AND d.next_attempt_at <= ?"
        " AND w.status = 'active' AND w.deleted_at IS NULL"
        " AND coalesce(w.paused_until, 0) <= ?",
        (int(time.time() * 1000) - 10_000,) * 2,
    ).fetchone()[0]
    conn.close()
    created = m.get("hookd_deliveries_created_total", 0.0)
    t = r["traffic"]
    out.update(
        {
            "deliveries_created": created,
            "events_ingested": m.get("hookd_events_ingested_total", 0.0),
            "deliveries_per_s": created / r["traffic_s"],
            "deleted_by_retention": swept,
            "left_in_db": left,
            "stuck_due": stuck,
            "log_bytes": log_bytes,
            "log_bytes_per_delivery": log_bytes / max(created, 1),
            "log_bytes_per_attempt": log_bytes
            / max(sum(v for k, v in m.items() if k.startswith("hookd_attempts_total{")), 1),
            "counts_match": (
                t["events_accepted"] == m.get("hookd_events_ingested_total")
                and t["deliveries_accepted"] == created
                and sum(left.values()) + swept["delivered"] + swept["dead_letters"] == created
                and stuck == 0
            ),
            # 200s whose record was fenced (the webhook was deleted meanwhile)
            # arrived but moved nothing: the two differences should be equal.
            "received_ok_minus_delivered": r["received"]["ok"]
            - m.get('hookd_delivery_transitions_total{status="delivered"}', 0.0),
            "fenced": m.get("hookd_attempt_results_fenced_total", 0.0),
        }
    )
    return out


SCENARIOS = {"soak": soak}
ROWS: list[tuple[str, str, str, str, float | None, bool]] = [
    ("soak", "deliveries_per_s", "deliveries created/s", "/s", None, True),
    ("soak", "db_mb_slope_per_min", "database (+WAL) slope, 2nd half", "MB/min", None, False),
    ("soak", "db_mb_max", "database (+WAL) max", "MB", None, False),
    ("soak", "rss_mb_slope_per_min", "daemon RSS slope, 2nd half", "MB/min", None, False),
    ("soak", "rss_mb_max", "daemon RSS max", "MB", 100, False),
    ("soak", "fds_slope_per_min", "open fds slope, 2nd half", "/min", None, False),
    ("soak", "threads_slope_per_min", "threads slope, 2nd half", "/min", None, False),
    ("soak", "queue_slope_per_min", "queue depth slope, 2nd half", "/min", None, False),
    ("soak", "oldest_due_s_max", "oldest-due gauge max", "s", None, False),
    ("soak", "log_bytes_per_delivery", "log bytes per delivery (info)", "B", None, False),
    ("soak", "stuck_due", "due deliveries left behind", "", 0, False),
]
BRIEF = {
    "soak": (
        "db_mb_slope_per_min",
        "rss_mb_slope_per_min",
        "fds_slope_per_min",
        "oldest_due_s_max",
        "log_bytes_per_delivery",
        "counts_match",
    )
}
