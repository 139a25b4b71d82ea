"""Drain a large backlog through the store API with a fake, instant "send".

Run as its own process (``python -m bench.backlog_worker DB``, a SQLite file or a
``postgresql://`` URL) so that its RSS
is that of a store and a claim loop, not of the benchmark's bookkeeping.  Each
round claims up to ``--batch`` due deliveries with ``SqliteStore.claim_due``
(timed) and records every one of them as delivered with one
``record_attempts`` call (timed; one group-committed transaction, on
PostgreSQL one turn), exactly the calls the scheduler makes.  Prints one JSON line: a sample per round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.common import hwm_mb, rss_mb
from hookd.lifecycle import Transition
from hookd.models import Status
from hookd.storage.base import AttemptRecord
from hookd.storage.postgres import PostgresStore
from hookd.storage.sqlite import SqliteStore


def _store(db: str, batch: int) -> SqliteStore | PostgresStore:
    if db.startswith("postgresql://"):
        # Not a node (no LISTEN, not counted among the nodes), with the
        # daemon's default per_webhook_concurrency (32): the claim locks each
        # webhook's candidates, so its cost follows this limit, as the daemon's does.
        return PostgresStore(db, listen=False)
    return SqliteStore(Path(db))


async def drain(
    db: str, total: int, batch: int, stop_at: int, close: bool = True
) -> dict[str, Any]:
    store = _store(db, batch)
    await store.open()
    pid = os.getpid()
    samples: list[tuple[int, int, float, float, float]] = []
    done = 0
    started = time.perf_counter()
    try:
        while total - done > stop_at:
            want = min(batch, total - done - stop_at)
            t0 = time.perf_counter()
            claims = await store.claim_due(want, 90_000, {}, batch)
            t1 = time.perf_counter()
            if not claims:
                break
            now = store.clock.now_ms()
            records = [
                AttemptRecord(
                    delivery_id=c.delivery_id,
                    lease_token=c.lease_token,
                    webhook_id=c.webhook_id,
                    number=c.attempt_count + 1,
                    started_at=now,
                    duration_ms=1,
                    status_code=200,
                    error=None,
                    response_body="",
                    outcome="success",
                    transition=Transition(
                        Status.DELIVERED,
                        None,
                        c.budget_used + 1,
                        c.rate_limited_count,
                        c.rate_limited_since,
                    ),
                )
                for c in claims
            ]
            t2 = time.perf_counter()
            results = await store.record_attempts(records)
            t3 = time.perf_counter()
            if not all(r.applied for r in results):
                raise RuntimeError("a record was fenced: nobody else should hold leases here")
            queued_before = total - done
            done += len(claims)
            samples.append(
                (queued_before, len(claims), (t1 - t0) * 1000, (t3 - t2) * 1000, rss_mb(pid))
            )
    finally:
        if close:
            await store.close()
    elapsed = time.perf_counter() - started
    return {
        "drained": done,
        "seconds": elapsed,
        "jobs_per_s": done / elapsed if elapsed else 0.0,
        "hwm_mb": hwm_mb(pid),
        # queued before the claim, claimed, claim ms, record ms, RSS MB
        "samples": samples,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.backlog_worker")
    p.add_argument("db", help="a SQLite file or a postgresql:// URL")
    p.add_argument("--total", type=int, required=True, help="deliveries queued now")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--stop-at", type=int, default=0, help="leave this many queued")
    p.add_argument(
        "--no-close",
        action="store_true",
        help="exit without SqliteStore.close(), whose PRAGMA optimize may ANALYZE",
    )
    args = p.parse_args()
    result = asyncio.run(
        drain(args.db, args.total, args.batch, args.stop_at, close=not args.no_close)
    )
    print(json.dumps(result), flush=True)
    if args.no_close:
        os._exit(0)  # committed work is in the WAL; skip the close-time optimize


if __name__ == "__main__":
    main()
