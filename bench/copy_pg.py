"""``hookd copy`` on a large installation: rows/s from a SQLite file into PostgreSQL.

    .venv/bin/python -m bench.copy_pg [--deliveries 1000000] [--server postgresql://...]

A SQLite file with 50 webhooks and ``--deliveries`` due deliveries (one event
per 50) is made as the backlog scenario makes it, then copied by the real
``hookd copy`` into a database created for the run on the server (the
machine's, trust auth) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.setup_db import Hook, create_hooks, prequeue_bulk

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> int:
    p = argparse.ArgumentParser(prog="bench.copy_pg")
    p.add_argument("--deliveries", type=int, default=1_000_000)
    p.add_argument("--server", default=SERVER)
    args = p.parse_args()
    name = f"hookd_copy_bench_{secrets.token_hex(4)}"
    target = urlunsplit(urlsplit(args.server)._replace(path=f"/{name}"))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "hookd.db"
        made = time.monotonic()
        hooks = create_hooks(db, [Hook(f"http://127.0.0.1:9/{i}") for i in range(50)])
        prequeue_bulk(db, hooks, args.deliveries)
        print(f"source: {args.deliveries:,} deliveries in {time.monotonic() - made:.1f} s")
        asyncio.run(_admin(args.server, f'CREATE DATABASE "{name}"'))
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_")}
            started = time.monotonic()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "hookd.cli",
                    "copy",
                    "--from",
                    f"sqlite://{db}",
                    "--to",
                    target,
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            elapsed = time.monotonic() - started
        finally:
            asyncio.run(_admin(args.server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(done.stdout.strip() or done.stderr.strip())
    rows = args.deliveries + -(-args.deliveries // 50) + 51
    print(f"copy: {elapsed:.1f} s, {rows / elapsed:,.0f} rows/s (exit {done.returncode})")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
