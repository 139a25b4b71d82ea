"""Shared plumbing: child processes, /proc readings, the daemon under test, statistics.

Every child process (daemon, receiver, load generator, backlog worker) is
started through :func:`spawn`: it gets ``PR_SET_PDEATHSIG`` so it dies with the
benchmark even if the benchmark is SIGKILLed, and it is registered so that
:func:`kill_all` (run at exit and on SIGTERM/SIGINT) can end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1

_children: list[subprocess.Popen[Any]] = []


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: the kernel kills the child
    # when the benchmark (its parent) goes away, whatever way it goes.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: ours without any HOOKD_* (hookd rejects unknown ones)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_")}
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def spawn(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    stderr: int | IO[Any] | None = None,
    cwd: str | None = None,
) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(
        list(args),
        env=env if env is not None else child_env(),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        preexec_fn=_die_with_parent,
    )
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
    with contextlib.suppress(ValueError):
        _children.remove(proc)


def kill_all() -> None:
    for proc in list(_children):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(5)
    _children.clear()


def install_cleanup() -> None:
    import atexit

    atexit.register(kill_all)

    def on_signal(signum: int, _frame: object) -> None:
        kill_all()
        sys.exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """Run a harness process's coroutine on uvloop (hookd's own dependency).

    The receiver and the load generators share the machine's cores with the
    daemon; libuv's loop costs them about a third less CPU per request than
    asyncio's, which is left to the daemon being measured.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is one of hookd's dependencies
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


# -- /proc --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3): utime/stime are fields 14/15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (``hookd serve`` may start delivery workers)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/task/{current}/children", encoding="ascii") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid``, its live descendants and the children it has already reaped."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
    for kid in children(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(kid)
    return total


def tree_hwm_mb(pid: int) -> tuple[float, float]:
    """(largest peak RSS of one process, sum of current RSS) over ``pid`` and descendants."""
    peak = hwm_mb(pid)
    total = rss_mb(pid)
    for kid in children(pid):
        with contextlib.suppress(OSError, KeyError):
            peak = max(peak, hwm_mb(kid))
            total += rss_mb(kid)
    return peak, total


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds per thread id (the main thread's id is the pid)."""
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def proc_status_kb(pid: int, key: str) -> int:
    """A ``VmRSS``/``VmHWM`` style figure from /proc/<pid>/status, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_mb(pid: int) -> float:
    return proc_status_kb(pid, "VmRSS") / 1024


def hwm_mb(pid: int) -> float:
    return proc_status_kb(pid, "VmHWM") / 1024


# -- the daemon under test -------------------------------------------------------------

DAEMON_ENV = {
    "HOOKD_SERVER_LISTEN": "127.0.0.1:0",
    "HOOKD_DELIVERY_ALLOW_NETWORKS": "127.0.0.0/8",
    "HOOKD_LOGGING_FORMAT": "json",
    "HOOKD_LOGGING_LEVEL": "info",
}


# Set by ``--daemon-env KEY=VALUE`` (e.g. HOOKD_DELIVERY_WORKERS=2): applies to every daemon.
EXTRA_DAEMON_ENV: dict[str, str] = {}


def hookd_env(db_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = child_env(DAEMON_ENV)
    env.update(EXTRA_DAEMON_ENV)
    env["HOOKD_DATABASE_PATH"] = str(db_path)
    if extra:
        env.update(extra)
    return env


def create_key(db_path: Path, workspace: str, extra: dict[str, str] | None = None) -> str:
    """``hookd keys create --workspace ...``: the first output line is the key."""
    out = subprocess.run(
        [sys.executable, "-m", "hookd.cli", "keys", "create", "--workspace", workspace],
        env=hookd_env(db_path, extra),
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.splitlines()[0].strip()


class Daemon:
    """``hookd serve`` as a subprocess, logging (JSON, fully formatted) to a file."""

    def __init__(self, db_path: Path, log_path: Path, extra_env: dict[str, str] | None = None):
        self.db_path = db_path
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[Any] | None = None
        self.listen = ""
        self.ready_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> None:
        self.launch()
        self.wait_started(timeout)

    def launch(self) -> None:
        """Start the process; :meth:`wait_started` waits for it to listen."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        # BENCH_DAEMON_WRAPPER: a script run instead of ``-m hookd.cli`` (for
        # ad-hoc instrumentation); it gets the same arguments.
        wrapper = os.environ.get("BENCH_DAEMON_WRAPPER")
        entry = [wrapper] if wrapper else ["-m", "hookd.cli"]
        self.proc = spawn(
            [sys.executable, *entry, "serve"],
            env=hookd_env(self.db_path, self.extra_env),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def wait_started(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hookd exited with {self.proc.returncode}: {self.log_tail()}")
            with open(self.log_path, "rb") as f:
                for line in f:
                    if b'"hookd.started"' in line:
                        self.ready_at = time.monotonic()
                        self.listen = json.loads(line)["listen"][0]
                        return
            time.sleep(0.02)
        raise RuntimeError(f"hookd did not start within {timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
            data = f.read()
            return data[-n:].decode(errors="replace")
        return ""

    def url(self, path: str) -> str:
        return f"http://{self.listen}{path}"

    def cpu(self) -> float:
        """CPU seconds of the daemon and any worker processes it started."""
        return tree_cpu_seconds(self.pid)

    def processes(self) -> int:
        return 1 + len(children(self.pid))

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None:
            kids = children(self.proc.pid) if self.proc.poll() is None else []
            stop(self.proc, timeout)
            for kid in kids:  # delivery workers that outlived serve
                with contextlib.suppress(OSError):
                    os.kill(kid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self._log.close()

    def log_counts(self, names: Iterable[str]) -> dict[str, int]:
        counts = dict.fromkeys(names, 0)
        keys = {f'"{n}"'.encode(): n for n in counts}
        with open(self.log_path, "rb") as f:
            for line in f:
                for k, n in keys.items():
                    if k in line:
                        counts[n] += 1
        return counts


def readonly_db(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    conn.execute("PRAGMA query_only = 1")
    return conn


def count_status(conn: sqlite3.Connection, status: str) -> int:
    return int(
        conn.execute("SELECT count(*) FROM deliveries WHERE status = ?", (status,)).fetchone()[0]
    )


# -- statistics ----------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


def git_state(repo: Path) -> dict[str, Any]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": run("rev-parse", "HEAD"), "dirty_src": bool(run("status", "-s", "src"))}
