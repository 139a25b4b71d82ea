"""``python -m bench profile``: where the daemon's CPU goes during a scenario.

``--scenario throughput`` (the default) profiles the delivery drain;
``--scenario ingest`` profiles the ingest scenario (``--batch N`` for the batch
route), where the daemon also delivers what it accepts: the component split
then tells ingest (aiohttp server, API handlers, the store's ingest) from
delivery (scheduler, sender).

Attaches py-spy (a dev tool: ``.venv/bin/pip install py-spy``; not a
dependency of hookd or of the benchmark's measurements) to the daemon once it
is ready, records ``--duration`` seconds in speedscope format
(``bench/results/profile.speedscope.json``, open it at speedscope.app), then
summarises the samples: per thread, self time per function, inclusive time
per function, and a split by component in which each sample goes to the first
non-standard-library frame from the leaf up (so ``json.dumps`` called by
structlog counts as logging, a socket write made by hookd's HTTP client as
the sender).  The figures are written to ``bench/results/profile.json`` and
printed, with µs per delivery computed from the same run's CPU per delivery.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import Daemon, spawn
from bench.scenarios import FULL, QUICK, delivery_run, ingest_run, isolation_kinds

RESULTS = Path(__file__).resolve().parent / "results"

# First match wins, tested against the frame's file path.
COMPONENTS: list[tuple[str, str]] = [
    ("hookd/storage/", "store: SQL statements and row mapping"),
    ("hookd/sender/signing", "signing (HMAC, headers)"),
    ("hookd/sender/", "sender (hookd's HTTP client)"),
    ("hookd/scheduler", "scheduler (claim loop, tasks, attempt)"),
    ("hookd/lifecycle", "lifecycle/policy decisions"),
    ("hookd/policy", "lifecycle/policy decisions"),
    ("hookd/logs", "logging (structlog)"),
    ("hookd/metrics", "metrics (prometheus_client)"),
    ("hookd/ids", "ids"),
    ("hookd/daemon", "daemon background tasks"),
    ("hookd/api/", "API handlers"),
    ("hookd/", "other hookd code"),
    ("aiosqlite", "aiosqlite thread hand-off"),
    ("aiohttp/web", "aiohttp server"),
    ("aiohttp", "aiohttp client"),
    ("yarl", "aiohttp client"),
    ("multidict", "aiohttp client"),
    ("aiohappyeyeballs", "aiohttp client"),
    ("structlog", "logging (structlog)"),
    ("prometheus_client", "metrics (prometheus_client)"),
]
STDLIB_ONLY = "asyncio event loop / stdlib only"

# Which side of the daemon a sample works for, from any frame of its stack
# (first match from the leaf up; a needle is looked for in "name file").  In the ingest scenario the same process
# accepts events and delivers them; this tells the two apart.
SIDES: list[tuple[str, str]] = [
    ("_ingest_batch", "ingest"),
    ("claim_due", "delivery"),
    ("settle_and_claim", "delivery"),
    ("record_attempts", "delivery"),
    ("next_due_at", "delivery"),
    ("RequestHandler.", "ingest"),
    ("hookd/api/", "ingest"),
    ("aiohttp/web_", "ingest"),
    ("Scheduler.", "delivery"),
    ("hookd/sender/", "delivery"),
    ("aiohttp/client", "delivery"),
    ("ResponseHandler.", "delivery"),
]
SHARED = "shared: event loop, COMMIT/fsync and BEGIN, thread hand-off, background tasks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--scenario", choices=("throughput", "isolation", "ingest"), default="throughput"
    )
    p.add_argument("--batch", type=int, default=0, help="ingest: events per batch request")
    p.add_argument(
        "--no-delivery", action="store_true", help="ingest: no webhook subscribed (ingest alone)"
    )
    p.add_argument(
        "--parked", action="store_true", help="ingest: the webhook parked by a 429 (fan-out only)"
    )
    p.add_argument("--duration", type=int, default=20, help="seconds of sampling")
    p.add_argument("--rate", type=int, default=200, help="samples per second")
    p.add_argument("--deliveries", type=int, help="queue size (default 200,000)")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--analyze", action="store_true", help="what-if: ANALYZE the database first")
    p.add_argument("--out", default="profile", help="file stem under bench/results/")


# Root frames every main-thread stack has: not where the time goes.
NEUTRAL = ("hookd/cli.py", "<frozen runpy>")


def _component(path: str) -> str | None:
    if path.endswith(NEUTRAL):
        return None
    for needle, name in COMPONENTS:
        if needle in path:
            return name
    return None


def analyse(speedscope: dict[str, Any], top: int = 30) -> dict[str, Any]:
    frames = speedscope["shared"]["frames"]
    labels = [
        f"{f['name']} ({_short(f.get('file', ''))}{':' + str(f['line']) if f.get('line') else ''})"
        for f in frames
    ]
    funcs = [f"{f['name']} ({_short(f.get('file', ''))})" for f in frames]
    comps = [_component(f.get("file", "")) for f in frames]
    self_line: Counter[str] = Counter()
    self_func: Counter[str] = Counter()
    incl_func: Counter[str] = Counter()
    by_comp: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    by_side: Counter[str] = Counter()
    names = [f"{f['name']} {f.get('file', '')}" for f in frames]
    total = 0.0
    for prof in speedscope["profiles"]:
        weights = prof.get("weights") or [1] * len(prof["samples"])
        for stack, w in zip(prof["samples"], weights, strict=True):
            if not stack:
                continue
            total += w
            by_thread[prof.get("name", "?")] += w
            leaf = stack[-1]
            self_line[labels[leaf]] += w
            self_func[funcs[leaf]] += w
            for fn in {funcs[i] for i in stack}:
                incl_func[fn] += w
            comp = next((comps[i] for i in reversed(stack) if comps[i]), STDLIB_ONLY)
            by_comp[comp] += w
            side = next(
                (label for i in reversed(stack) for needle, label in SIDES if needle in names[i]),
                SHARED,
            )
            by_side[side] += w

    def pct(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 2)) for k, v in counter.most_common(n)]

    return {
        "sampled_seconds": round(total, 2),
        "threads": pct(by_thread, 10),
        "components": pct(by_comp, 40),
        "sides": pct(by_side, 3),
        "self_functions": pct(self_func, top),
        "self_lines": pct(self_line, top),
        "inclusive_functions": pct(incl_func, top * 2),
    }


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main(args: argparse.Namespace) -> int:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    sizes = replace(sizes, deliveries=args.deliveries or (50_000 if args.quick else 200_000))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.out}.speedscope.json"
    holder: dict[str, subprocess.Popen[Any]] = {}

    def attach(daemon: Daemon) -> None:
        time.sleep(1.0)  # past start-up, into the steady state
        cmd = [
            pyspy,
            "record",
            "--pid",
            str(daemon.pid),
            "--duration",
            str(args.duration),
            "--rate",
            str(args.rate),
            "--nonblocking",
            "--subprocesses",  # delivery workers, when HOOKD_DELIVERY_WORKERS > 1
            "--format",
            "speedscope",
            "--output",
            str(out),
        ]
        if args.native:
            cmd.append("--native")
        holder["spy"] = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    if args.scenario == "ingest":
        # The load runs a little longer than the sampling, so the profile only
        # sees the steady state.
        sizes = replace(sizes, ingest_seconds=args.duration + 1.5)
        result = ingest_run(
            sizes,
            batch=args.batch,
            on_ready=attach,
            deliver=not args.no_delivery,
            parked=args.parked,
        )
        unit, per = "event", result["daemon_cpu_us_per_event"]
    else:
        result = delivery_run(
            sizes,
            isolation_kinds(sizes.webhooks)
            if args.scenario == "isolation"
            else ["o"] * sizes.webhooks,
            on_ready=attach,
            analyze=args.analyze,
            max_seconds=args.duration + 3.0,  # the figures cover the sampled window
        )
        unit, per = "delivery", result["cpu_us_per_delivery"]
    spy = holder["spy"]
    spy.wait(60)
    if not out.exists():
        print("py-spy wrote no profile (did the run end before --duration?)", file=sys.stderr)
        return 1
    summary = analyse(json.loads(out.read_text()), args.top)
    summary["run"] = result
    summary[f"components_us_per_{unit}"] = [
        (name, round(p * per / 100, 1)) for name, p in summary["components"]
    ]
    (RESULTS / f"{args.out}.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.scenario == "ingest":
        print(
            f"profiled: {result['events_per_s']:.0f} events/s accepted,"
            f" {per:.0f} µs daemon CPU per event (py-spy attached),"
            f" {summary['sampled_seconds']} s sampled"
        )
    else:
        print(
            f"profiled: {result['delivered']} delivered, {result['deliveries_per_s']:.0f}/s,"
            f" {per:.0f} µs CPU per delivery (py-spy attached),"
            f" {summary['sampled_seconds']} s sampled"
        )
    print("\nthreads:")
    for name, p in summary["threads"]:
        print(f"  {p:6.2f}%  {name}")
    print("\nsides (ingest vs delivery, from any frame of the stack):")
    for name, p in summary["sides"]:
        print(f"  {p:6.2f}%  {p * per / 100:7.1f} µs  {name}")
    print("\ncomponents (first non-stdlib frame from the leaf):")
    for (name, p), (_, u) in zip(
        summary["components"], summary[f"components_us_per_{unit}"], strict=True
    ):
        print(f"  {p:6.2f}%  {u:7.1f} µs  {name}")
    print("\nself time by function:")
    for name, p in summary["self_functions"]:
        print(f"  {p:6.2f}%  {name}")
    print("\ninclusive time by function:")
    for name, p in summary["inclusive_functions"][: args.top]:
        print(f"  {p:6.2f}%  {name}")
    print(f"\nwritten: {out} and {RESULTS / (args.out + '.json')}")
    return 0
