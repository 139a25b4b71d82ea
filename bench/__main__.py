"""``python -m bench run [--quick]``: the hookd benchmark suite.

    .venv/bin/python -m bench run                 # all scenarios, 3 runs each (backlog 1)
    .venv/bin/python -m bench run --quick         # smaller sizes, 1 run: for development
    .venv/bin/python -m bench run -s throughput -s isolation --runs 5
    .venv/bin/python -m bench run --postgres -s throughput -s nodes   # on PostgreSQL
    .venv/bin/python -m bench profile             # py-spy on the daemon during throughput

Prints a table of medians against hookd's targets and writes every run's
figures to ``bench/results/latest.json``.  To measure another tree of hookd
(say a snapshot taken with ``git archive``), put its ``src`` first on
``PYTHONPATH`` (every child process inherits it) and name its commit in
``BENCH_HOOKD_COMMIT`` for the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench import common, pg, profile, soak, tenants
from bench import db as backend
from bench.common import git_state, install_cleanup, median
from bench.scenarios import FULL, QUICK, SCENARIOS, Sizes
from hookd.storage.postgres.connection import redacted

# Run only when named (-s), once unless --runs says otherwise: the
# multi-tenant scenarios and the soak.
EXTRA = {**tenants.SCENARIOS, **soak.SCENARIOS}

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

# (scenario, key, label, unit, target, higher is better)
ROWS: list[tuple[str, str, str, str, float | None, bool]] = [
    ("throughput", "deliveries_per_s", "deliveries/s (one process)", "/s", 6000, True),
    ("throughput", "deliveries_per_s", "deliveries/s (whole machine)", "/s", 10000, True),
    ("throughput", "cpu_us_per_delivery", "daemon CPU per delivery", "µs", 150, False),
    ("throughput", "cpu_utilisation", "daemon CPU utilisation", "cores", None, True),
    (
        "throughput",
        "main_thread_cpu_share",
        "share of CPU on the event loop thread",
        "",
        None,
        True,
    ),
    ("throughput", "peak_rss_mb", "daemon peak RSS", "MB", 100, False),
    ("ingest", "events_per_s", "events/s accepted (64 clients)", "/s", 5000, True),
    ("ingest", "ack_ms_p99", "202 latency p99", "ms", None, False),
    ("ingest", "daemon_cpu_us_per_event", "daemon CPU per event (+delivery)", "µs", None, False),
    ("ingest", "delivered_meanwhile", "events delivered during the run", "", None, True),
    ("ingest", "parked_events_per_s", "events/s, delivery parked by a 429", "/s", 5000, True),
    ("ingest", "parked_ack_ms_p99", "parked: 202 latency p99", "ms", None, False),
    ("ingest", "parked_daemon_cpu_us_per_event", "parked: daemon CPU per event", "µs", None, False),
    ("ingest", "batch_events_per_s", "events/s via /v1/events/batch (of 100)", "/s", None, True),
    ("ingest", "batch_ack_ms_p99", "batch 202 latency p99", "ms", None, False),
    ("ingest", "batch_daemon_cpu_us_per_event", "daemon CPU per batched event", "µs", None, False),
    ("latency", "first_attempt_ms_p50", "ingest→first attempt p50 @1000/s", "ms", None, False),
    ("latency", "first_attempt_ms_p99", "ingest→first attempt p99 @1000/s", "ms", 50, False),
    ("latency", "ack_ms_p99", "202 latency p99 @1000/s", "ms", None, False),
    ("latency", "missing_attempts", "events without an attempt", "", 0, False),
    ("backlog", "claim_ms_no_stats", "claim_due(256), full, no sqlite_stat1", "ms", None, False),
    (
        "backlog",
        "claim_ms_webhook_stats_only",
        "claim_due(256), full, webhooks stats",
        "ms",
        None,
        False,
    ),
    ("backlog", "claim_ms_start", "claim_due(256) at start", "ms", None, False),
    ("backlog", "claim_ms_middle", "claim_due(256) at middle", "ms", None, False),
    ("backlog", "claim_ms_end", "claim_due(256) at end", "ms", None, False),
    ("backlog", "claim_ms_max_over_min", "claim time max/min (flat)", "x", 2.0, False),
    ("backlog", "worker_rss_mb_start", "store RSS at start", "MB", 100, False),
    ("backlog", "worker_rss_mb_middle", "store RSS at middle", "MB", 100, False),
    ("backlog", "worker_rss_mb_end", "store RSS at end", "MB", 100, False),
    ("backlog", "store_drain_jobs_per_s", "store claim+record jobs/s", "/s", None, True),
    (
        "backlog",
        "daemon_deliveries_per_s_full",
        "daemon deliveries/s, full backlog",
        "/s",
        None,
        True,
    ),
    ("backlog", "daemon_rss_mb_full", "daemon peak RSS, full backlog", "MB", 100, False),
    ("backlog", "daemon_rss_mb_small", "daemon peak RSS, 1,000 queued", "MB", 100, False),
    ("isolation", "deliveries_per_s", "healthy deliveries/s", "/s", None, True),
    ("isolation", "ratio_same_webhooks", "healthy vs the same webhooks, clean run", "", 0.90, True),
    ("isolation", "ratio", "healthy vs the whole clean run (stricter)", "", 0.90, True),
    (
        "dribble",
        "deliveries_per_s",
        "healthy deliveries/s beside 8 head-dribblers",
        "/s",
        None,
        True,
    ),
    ("dribble", "ratio_same_webhooks", "healthy vs the same webhooks, clean run", "", 0.90, True),
    ("dribble", "cpu_us_per_delivery", "daemon CPU per healthy delivery", "µs", None, False),
    # --analyze: the same two with full planner statistics (what a pinned claim plan gets)
    ("throughput_analyzed", "deliveries_per_s", "deliveries/s (one process)", "/s", 6000, True),
    ("throughput_analyzed", "cpu_us_per_delivery", "daemon CPU per delivery", "µs", 150, False),
    ("throughput_analyzed", "cpu_utilisation", "daemon CPU utilisation", "cores", None, True),
    ("throughput_analyzed", "peak_rss_mb", "daemon peak RSS", "MB", 100, False),
    ("isolation_analyzed", "deliveries_per_s", "healthy deliveries/s", "/s", None, True),
    (
        "isolation_analyzed",
        "ratio_same_webhooks",
        "healthy vs the same webhooks, clean run",
        "",
        0.90,
        True,
    ),
    ("isolation_analyzed", "ratio", "healthy vs the whole clean run (stricter)", "", 0.90, True),
    # PostgreSQL (--postgres): the server's CPU, beside the daemon's
    (
        "throughput",
        "postgres_cpu_us_per_delivery",
        "PostgreSQL CPU per delivery",
        "µs",
        None,
        False,
    ),
    ("throughput", "postgres_cores", "PostgreSQL CPU utilisation", "cores", None, True),
    ("ingest", "postgres_cpu_us_per_event", "PostgreSQL CPU per event", "µs", None, False),
    (
        "ingest",
        "parked_postgres_cpu_us_per_event",
        "parked: PostgreSQL CPU per event",
        "µs",
        None,
        False,
    ),
    ("latency", "postgres_cpu_us_per_event", "PostgreSQL CPU per event @1000/s", "µs", None, False),
    ("backlog", "claim_ms_analyzed", "claim_due(256), full, ANALYZEd", "ms", None, False),
    ("backlog", "claim_ms_end_vacuumed", "claim_due(256) at end, after VACUUM", "ms", None, False),
    ("nodes", "one_deliveries_per_s", "deliveries/s, one node", "/s", 5000, True),
    ("nodes", "two_deliveries_per_s", "deliveries/s, two nodes", "/s", None, True),
    ("nodes", "two_over_one", "two nodes against one", "x", None, True),
    ("nodes", "one_hookd_cores", "one node: hookd cores", "cores", None, True),
    ("nodes", "one_postgres_all_cores", "one node: PostgreSQL cores", "cores", None, True),
    ("nodes", "two_hookd_cores", "two nodes: hookd cores", "cores", None, True),
    ("nodes", "two_postgres_all_cores", "two nodes: PostgreSQL cores", "cores", None, True),
    ("nodes", "two_receiver_cores", "two nodes: receiver cores", "cores", None, True),
    ("nodes", "two_rest_cores", "two nodes: rest of the machine", "cores", None, True),
    ("nodes", "two_machine_steal_cores", "two nodes: steal", "cores", None, True),
]
ROWS += tenants.ROWS + soak.ROWS
# The targets for one node on PostgreSQL, where they differ from SQLite's.
POSTGRES_TARGETS: dict[tuple[str, str], float | None] = {
    ("throughput", "deliveries/s (one process)"): 5000,
    ("throughput", "deliveries/s (whole machine)"): None,
    ("throughput", "daemon CPU per delivery"): None,
    ("ingest", "events/s accepted (64 clients)"): 3000,
    ("ingest", "events/s, delivery parked by a 429"): 3000,
}
WHAT_IF = ("throughput", "isolation")
# Scenarios measured against the clean throughput run, each run paired with one.
RELATIVE = ("isolation", "dribble")


def _median_tree(runs: list[Any]) -> Any:
    """Median of every numeric leaf across runs (first run's value for the rest)."""
    first = runs[0]
    if isinstance(first, dict):
        return {
            k: _median_tree([r[k] for r in runs if k in r])
            for k, v in first.items()
            if not isinstance(v, list)  # per-run series stay in "runs" only
        }
    if isinstance(first, bool) or not isinstance(first, int | float):
        return first
    return median([float(r) for r in runs])


def _fmt(value: float, unit: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if unit in ("", "x", "cores") or abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) < 1000:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def table(summary: dict[str, Any]) -> str:
    lines = [f"{'scenario':<19} {'metric':<40} {'median':>11}  {'target':>10}  ok", "-" * 88]
    for scenario, key, label, unit, target, higher in ROWS:
        med = summary.get(scenario, {}).get("median", {})
        if key not in med:
            continue
        if med.get("backend") == "postgresql":
            target = POSTGRES_TARGETS.get((scenario, label), target)
        value = med[key]
        shown = _fmt(value, unit) + (f" {unit}" if unit not in ("", "x", "cores") else "")
        verdict = ""
        tgt = ""
        if target is not None:
            ok = value >= target if higher else value <= target
            verdict = "yes" if ok else "NO"
            tgt = ("≥ " if higher else "≤ ") + _fmt(target, unit)
        runs = len(summary[scenario]["runs"])
        lines.append(
            f"{scenario:<19} {label:<40} {shown:>11}  {tgt:>10}  {verdict:<3}"
            + (f" (n={runs})" if key == "deliveries_per_s" else "")
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    sizes: Sizes = QUICK if args.quick else FULL
    if args.deliveries:
        sizes = replace(sizes, deliveries=args.deliveries)
    if args.backlog:
        sizes = replace(sizes, backlog=args.backlog)
    if args.ingest_clients:
        sizes = replace(sizes, ingest_concurrency=args.ingest_clients)
    if args.analyze:
        sizes = replace(sizes, analyze=True)
    runs = args.runs or (1 if args.quick else 3)
    for item in args.daemon_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("HOOKD_"):
            raise SystemExit(f"--daemon-env: expected HOOKD_KEY=VALUE, got {item!r}")
        common.EXTRA_DAEMON_ENV[name] = value
    tenants.configure(args)
    soak.configure(args)
    if args.postgres is not None:
        backend.POSTGRES = args.postgres or os.environ.get("BENCH_POSTGRES") or pg.SERVER
    # nodes: PostgreSQL only
    chosen = args.scenario or [s for s in SCENARIOS if s != "nodes" or backend.POSTGRES]
    clean_from: dict[str, Any] | None = None
    if args.clean_from:
        clean_from = json.loads(Path(args.clean_from).read_text())["scenarios"]["throughput"]
    elif any(r in chosen for r in RELATIVE) and "throughput" not in chosen:
        chosen = ["throughput", *chosen]  # relative to the clean run
    order = [s for s in {**SCENARIOS, **EXTRA} if s in chosen]
    started = time.time()
    summary: dict[str, Any] = {}
    out_path = Path(args.out) if args.out else RESULTS / "latest.json"

    def write() -> None:
        # After every run, so an interrupted benchmark keeps what it measured.
        _isolation_ratio(summary, clean_from)
        doc = {
            "meta": {
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "seconds": round(time.time() - started, 1),
                "quick": bool(args.quick),
                "runs": runs,
                "sizes": asdict(sizes),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "pythonpath": os.environ.get("PYTHONPATH", ""),
                "git": git_state(REPO),
                # the hookd measured: set BENCH_HOOKD_COMMIT when PYTHONPATH is a snapshot
                "hookd_commit": os.environ.get("BENCH_HOOKD_COMMIT") or git_state(REPO)["commit"],
                "hookd_path": _hookd_path(),
                "daemon_env": dict(common.EXTRA_DAEMON_ENV),
                "backend": backend.backend(),
                "postgres": redacted(backend.POSTGRES) if backend.POSTGRES else None,
            },
            "scenarios": summary,
        }
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(doc, indent=2) + "\n")

    # Each isolation (or dribble) run is paired with a clean run and compared
    # with it: this machine's speed drifts by a third within the hour, so a
    # ratio of two medians taken minutes apart measured the drift as much as
    # hookd.  Pairs alternate which goes first, so a drift within a pair
    # cancels out.
    relative = [r for r in RELATIVE if r in order]
    paired = "throughput" in order and bool(relative)
    schedule: list[tuple[str, int, int]] = []  # scenario, run, its runs
    for name in order:
        if name in relative and paired:
            continue
        n = args.backlog_runs if name == "backlog" else runs
        n = (args.runs or 1) if name in EXTRA else n
        for i in range(n):
            if name == "throughput" and paired:
                pair = [("throughput", i, n), *((r, i, n) for r in relative)]
                schedule += pair if i % 2 == 0 else pair[::-1]
            else:
                schedule.append((name, i, n))
    results_of: dict[str, list[dict[str, Any]]] = {}
    for name, i, n in schedule:
        key = name + ("_analyzed" if sizes.analyze and name in WHAT_IF else "")
        results = results_of.setdefault(key, [])
        print(f"[bench] {name} run {i + 1}/{n} ...", file=sys.stderr, flush=True)
        t = time.monotonic()
        result = {**SCENARIOS, **EXTRA}[name](sizes, args.keep)
        result["wall_s"] = time.monotonic() - t
        if paired and name in ("throughput", *relative):
            result["pair"] = i
        results.append(result)
        print(f"[bench] {name}: {_brief(name, result)}", file=sys.stderr, flush=True)
        summary[key] = {"runs": results, "median": _median_tree(results)}
        write()
    print(table(summary))
    print(f"\nwritten: {out_path}")
    return 0


def _hookd_path() -> str:
    import hookd

    return str(Path(hookd.__file__).parent)


def _isolation_ratio(summary: dict[str, Any], clean_from: dict[str, Any] | None = None) -> None:
    for name, suffix in [(r, s) for r in RELATIVE for s in ("", "_analyzed")]:
        iso = summary.get(name + suffix)
        clean_runs = summary.get("throughput" + suffix) or clean_from
        if not iso or not clean_runs:
            continue
        median_clean = clean_runs["median"]["deliveries_per_s"]
        pairs = {c["pair"]: c["deliveries_per_s"] for c in clean_runs["runs"] if "pair" in c}
        for r in iso["runs"]:
            # The clean run of its pair when the two were run in pairs.
            clean = pairs.get(r.get("pair", -1)) or median_clean
            r["ratio"] = r["deliveries_per_s"] / clean if clean else 0.0
            # The target's own measure: the healthy webhooks against their own
            # throughput in the clean run, where they took this share of the
            # deliveries (every webhook gets as many) over the same span.
            share = r["healthy_deliveries"] / r["deliveries"] if r["deliveries"] else 1.0
            r["ratio_same_webhooks"] = r["ratio"] / share
        iso["median"] = _median_tree(iso["runs"])


def merge(args: argparse.Namespace) -> int:
    """Combine the scenarios of several result files (later files win) into one."""
    docs = [json.loads(Path(p).read_text()) for p in args.files]
    summary: dict[str, Any] = {}
    for doc in docs:
        summary.update(doc["scenarios"])
    _isolation_ratio(summary)
    meta = dict(docs[-1]["meta"])
    meta["merged_from"] = [
        {"file": str(p), **d["meta"]} for p, d in zip(args.files, docs, strict=True)
    ]
    out_path = Path(args.out) if args.out else RESULTS / "latest.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"meta": meta, "scenarios": summary}, indent=2) + "\n")
    print(table(summary))
    print(f"\nwritten: {out_path}")
    return 0


def _brief(name: str, r: dict[str, Any]) -> str:
    keys = {
        "throughput": ("deliveries_per_s", "cpu_us_per_delivery", "peak_rss_mb", "complete"),
        "isolation": ("deliveries_per_s", "cpu_us_per_attempt", "received_429", "complete"),
        "dribble": ("deliveries_per_s", "cpu_us_per_delivery", "received_dribble", "complete"),
        "ingest": (
            "events_per_s",
            "ack_ms_p99",
            "errors",
            "batch_events_per_s",
            "batch_ack_ms_p99",
            "batch_errors",
            "parked_events_per_s",
            "parked_errors",
        ),
        "latency": ("first_attempt_ms_p50", "first_attempt_ms_p99", "missing_attempts"),
        "backlog": ("claim_ms_start", "claim_ms_middle", "claim_ms_end", "daemon_rss_mb_full"),
        **tenants.BRIEF,
        **soak.BRIEF,
        "nodes": (
            "one_deliveries_per_s",
            "two_deliveries_per_s",
            "one_hookd_cores",
            "one_postgres_all_cores",
            "two_hookd_cores",
            "two_postgres_all_cores",
            "two_machine_steal_cores",
        ),
    }[name]
    return ", ".join(f"{k}={r[k]:.1f}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in keys)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the scenarios, print a table, write JSON")
    r.add_argument("--quick", action="store_true", help="small sizes and 1 run")
    r.add_argument("--runs", type=int, help="runs per scenario (default 3, quick 1)")
    r.add_argument("--backlog-runs", type=int, default=1, help="runs of the backlog scenario")
    r.add_argument(
        "-s", "--scenario", action="append", choices=[*SCENARIOS, *EXTRA], help="repeatable"
    )
    tenants.add_arguments(r)
    soak.add_arguments(r)
    r.add_argument("--deliveries", type=int, help="throughput/isolation queue size")
    r.add_argument("--backlog", type=int, help="backlog size")
    r.add_argument(
        "--ingest-clients", type=int, help="concurrent clients of the ingest scenario (default 64)"
    )
    r.add_argument(
        "--postgres",
        nargs="?",
        const="",
        metavar="URL",
        help="run hookd on PostgreSQL: a database of each run's own on this server"
        f" (default $BENCH_POSTGRES or {pg.SERVER}), dropped after the run",
    )
    r.add_argument("--out", help="JSON output (default bench/results/latest.json)")
    r.add_argument("--keep", action="store_true", help="keep each run's directory")
    r.add_argument(
        "--clean-from",
        help="result JSON whose throughput median is the isolation baseline (else it is run)",
    )
    r.add_argument(
        "--daemon-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every daemon, e.g. HOOKD_DELIVERY_WORKERS=2",
    )
    r.add_argument(
        "--analyze",
        action="store_true",
        help="what-if: ANALYZE the throughput/isolation databases first (full planner stats)",
    )
    m = sub.add_parser("merge", help="merge result files (e.g. scenarios run separately)")
    m.add_argument("files", nargs="+")
    m.add_argument("--out", help="default bench/results/latest.json")
    pr = sub.add_parser("profile", help="py-spy the daemon during the throughput scenario")
    profile.add_arguments(pr)
    args = p.parse_args(argv)
    install_cleanup()
    if args.command == "run":
        return run(args)
    if args.command == "merge":
        return merge(args)
    return profile.main(args)


if __name__ == "__main__":
    sys.exit(main())
