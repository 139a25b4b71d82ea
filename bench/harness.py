"""What every scenario's run is made of: its sizes, its directory, the receiver."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import spawn, stop


@dataclass(frozen=True)
class Sizes:
    deliveries: int = 100_000
    webhooks: int = 50
    ingest_seconds: float = 10.0
    ingest_concurrency: int = 64
    latency_rate: float = 1000.0
    latency_seconds: float = 15.0
    backlog: int = 1_000_000
    backlog_probe_seconds: float = 15.0
    hang_timeout_ms: int = 2000
    # ANALYZE the throughput/isolation databases before the daemon starts (what-if).
    analyze: bool = False


FULL = Sizes()
QUICK = Sizes(
    deliveries=20_000,
    ingest_seconds=5.0,
    latency_seconds=5.0,
    backlog=100_000,
    backlog_probe_seconds=5.0,
)


class Workdir:
    def __init__(self, keep: bool) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="hookd-bench-"))
        self.keep = keep

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


class ReceiverProc:
    """``python -m bench.receiver`` in its own process; stats over its stdin/stdout."""

    def __init__(self) -> None:
        self.proc = spawn(
            [sys.executable, "-m", "bench.receiver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.port = int(json.loads(self.proc.stdout.readline())["port"])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self) -> dict[str, float]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"stats\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        stop(self.proc, 5)


def host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host, int(port)
