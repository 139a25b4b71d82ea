"""The PostgreSQL server the benchmark runs hookd on: databases, filling, CPU.

- Each run gets a database of its own (``hookd_bench_<pid>_<n>``), created on
  the server and dropped after the run (``WITH (FORCE)``, so a daemon killed
  mid-run cannot keep it).
- Queues are written by the same code as on SQLite (the store API into a
  SQLite file, then the real ``hookd copy``), except the 1,000,000-delivery
  backlog, which the server writes itself from ``generate_series``.
- CPU: the server runs on the same cores as hookd, so its processes' CPU is
  read from /proc beside the daemon's, split by what they work for (the run's
  database, the server's own background processes, anything else).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.common import CLK_TCK, child_env, cpu_seconds, tree_cpu_seconds

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


class Sql:
    """A plain connection of the harness's own, used from synchronous code."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.run(asyncpg.connect(url, timeout=10))
        self.backend_pid = int(self.value("SELECT pg_backend_pid()"))

    def run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def value(self, sql: str, *args: Any) -> Any:
        return self.run(self.conn.fetchval(sql, *args))

    def execute(self, sql: str, *args: Any) -> str:
        return str(self.run(self.conn.execute(sql, *args)))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.conn.close())
        self._loop.close()


_made = 0


def create_database(server: str) -> tuple[str, int]:
    """A new empty database on ``server``: (its name, the server's postmaster pid or 0)."""
    global _made
    _made += 1
    name = f"hookd_bench_{os.getpid()}_{_made}"
    admin = Sql(server)
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        return name, _postmaster(admin.backend_pid)
    finally:
        admin.close()


def drop_database(server: str, name: str) -> None:
    admin = Sql(server)
    try:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def _postmaster(backend_pid: int) -> int:
    """The parent of one of the server's backends, if the server runs on this machine."""
    try:
        with open(f"/proc/{backend_pid}/stat", encoding="ascii") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0  # another machine (or container): its CPU is not ours to read


def copy_from_sqlite(source: Path, url: str) -> None:
    """``hookd copy`` of the SQLite file the harness filled (it also ANALYZEs)."""
    done = subprocess.run(
        [sys.executable, "-m", "hookd.cli", "copy", "--from", f"sqlite://{source}", "--to", url],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"hookd copy failed: {done.stderr.strip() or done.stdout.strip()}")


# The events and due deliveries of the backlog scenario, as setup_db.prequeue_bulk
# writes them into SQLite: one event per len(webhooks) deliveries, the body as
# hookd.storage.events.event_body makes it.
_FILL_EVENTS = """
INSERT INTO events (id, workspace_id, type, body, created_at)
SELECT lpad(to_hex($2::bigint), 8, '0') || lpad(to_hex(i), 16, '0'), $1::text, 'bench.event',
       convert_to(format('{"id":"%s","type":"bench.event","createdAt":"%s","workspaceId":"%s",'
                         '"data":{"seq":%s}}',
                         lpad(to_hex($2::bigint), 8, '0') || lpad(to_hex(i), 16, '0'),
                         $4::text, $1::text, i), 'UTF8'),
       $3::bigint
FROM generate_series(0, $5::bigint - 1) AS i
"""
_FILL_DELIVERIES = """
INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status,
                        next_attempt_at, created_at, updated_at)
SELECT lpad(to_hex($2::bigint), 8, '0') || lpad(to_hex((1::bigint << 62) + k), 16, '0'), $1::text,
       lpad(to_hex($2::bigint), 8, '0') || lpad(to_hex(k / cardinality($4::text[])), 16, '0'),
       ($4::text[])[k % cardinality($4::text[]) + 1], 'bench.event', 'pending',
       $3::bigint - 1000, $3::bigint, $3::bigint
FROM generate_series(0, $5::bigint - 1) AS k
"""


def fill_backlog(url: str, workspace: str, hook_ids: list[str], deliveries: int) -> None:
    """``deliveries`` due deliveries over ``hook_ids``, written by the server itself.

    Nothing ANALYZEs the tables afterwards: the planner statistics are what a
    database filled by ingest has until autovacuum (or hookd copy) analyzes it.
    """
    from hookd.ids import iso_ms

    now = int(time.time() * 1000)
    secs = (now // 1000) & 0xFFFFFFFF
    events = -(-deliveries // len(hook_ids))
    sql = Sql(url)
    try:
        sql.execute("SET synchronous_commit = off")
        sql.execute(_FILL_EVENTS, workspace, secs, now, iso_ms(now), events)
        sql.execute(_FILL_DELIVERIES, workspace, secs, now, hook_ids, deliveries)
        sql.execute("CHECKPOINT")  # not during the measurement
    finally:
        sql.close()


# -- CPU ----------------------------------------------------------------------------------


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _database_of(title: str) -> str | None:
    """The database of a backend from its process title, ``postgres: [cluster: ]user db host ...``;
    None for the server's own processes (checkpointer, walwriter, ...)."""
    words = title.split(": ")[-1].split()
    if len(words) >= 3 and ("(" in words[2] or words[2] in ("[local]", "local")):
        return words[1]
    return None


@dataclass
class PgSample:
    total: float  # postmaster + live children + children already reaped
    by_pid: dict[int, tuple[str | None, float]] = field(default_factory=dict)


def sample_postgres(postmaster: int) -> PgSample | None:
    if not postmaster:
        return None
    try:
        total = tree_cpu_seconds(postmaster)
        with open(f"/proc/{postmaster}/task/{postmaster}/children", encoding="ascii") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return None
    by_pid: dict[int, tuple[str | None, float]] = {}
    for pid in kids:
        with contextlib.suppress(OSError):
            by_pid[pid] = (_database_of(_title(pid)), cpu_seconds(pid))
    return PgSample(total, by_pid)


def postgres_cpu(
    first: PgSample | None, last: PgSample | None, database: str, exclude: set[int]
) -> dict[str, float]:
    """CPU seconds between two samples: the run's database's backends (but
    ``exclude``, the harness's own), the server's background processes, and
    the rest (other databases' backends, backends that ended meanwhile)."""
    if first is None or last is None:
        return {}
    mine = background = harness = 0.0
    for pid, (db, cpu) in last.by_pid.items():
        before = first.by_pid.get(pid, (db, 0.0))[1]
        spent = cpu - before
        if pid in exclude:
            harness += spent
        elif db == database:
            mine += spent
        elif db is None:
            background += spent
    total = last.total - first.total
    return {
        "postgres_all_cpu_s": total,
        "postgres_cpu_s": mine + background,
        "postgres_backends_cpu_s": mine,
        "postgres_background_cpu_s": background,
        "postgres_harness_cpu_s": harness,
        "postgres_other_cpu_s": max(0.0, total - mine - background - harness),
    }


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, all) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    busy = user + nice + system + irq + softirq
    return busy / CLK_TCK, steal / CLK_TCK, sum(fields[:8]) / CLK_TCK
