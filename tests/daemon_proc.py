"""Run ``hookd serve`` as a real subprocess for crash and shutdown tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path

FAST_ENV = {
    "HOOKD_SERVER_LISTEN": "127.0.0.1:0",
    "HOOKD_DELIVERY_ALLOW_NETWORKS": "127.0.0.0/8",
    # Short leases so a crash is recovered within seconds: the largest timeout
    # is lowered to match, which the lease check requires.
    "HOOKD_DELIVERY_MAX_TIMEOUT_MS": "2000",
    "HOOKD_DELIVERY_LEASE_SECONDS": "4",
    "HOOKD_DELIVERY_LEASE_MARGIN_SECONDS": "1",
    "HOOKD_DELIVERY_BACKOFF_BASE_SECONDS": "0.05",
    "HOOKD_DELIVERY_BACKOFF_CAP_SECONDS": "0.2",
    "HOOKD_DELIVERY_POLL_INTERVAL_SECONDS": "0.1",
    "HOOKD_LOGGING_FORMAT": "json",
    # Successful attempts are logged at debug; these tests read them.
    "HOOKD_LOGGING_LEVEL": "debug",
}


@dataclass
class DaemonProcess:
    db_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    log_lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    listen: str | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_")}
        env.update(FAST_ENV)
        env["HOOKD_DATABASE_PATH"] = str(self.db_path)
        env.update(self.extra_env)
        self.started = asyncio.Event()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hookd.cli",
            "serve",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read(self.proc))
        await asyncio.wait_for(self.started.wait(), 30)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.log_lines.append(text)
            if '"hookd.started"' in text:
                with contextlib.suppress(ValueError, KeyError, IndexError):
                    self.listen = json.loads(text)["listen"][0]
                self.started.set()

    def events(self, name: str) -> list[dict[str, object]]:
        out = []
        for line in self.log_lines:
            if f'"{name}"' in line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        if self._reader is not None:
            await self._reader

    async def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def ensure_dead(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the daemon's database from the test process, as an operator would."""
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql).fetchall()
