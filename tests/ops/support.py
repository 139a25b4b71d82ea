"""Operations tests drive the real thing: ``hookd`` subprocesses on a real SQLite
file, talking over loopback to real receivers.  These helpers are synchronous
(threads, not the test's event loop) so a test can block while a daemon works.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from hookd.keys import generate_key
from hookd.models import Delivery, IngestResult, NewWebhook, Webhook
from hookd.storage.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
HOOKD = [sys.executable, "-m", "hookd.cli"]
T = TypeVar("T")

# Variables of the test runner's own environment that would change a daemon's
# behaviour: configuration overrides and a service manager's notify socket.
_FOREIGN = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_") and k not in _FOREIGN}
    env.update(overrides)
    return env


def run_hookd(
    *args: str, env: dict[str, str], timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HOOKD, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def wait_until(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll ``check``; generous bounds so a slow two-core CI box never flakes."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the time limit")
        time.sleep(interval)


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- the database, from the test's side -----------------------------------------------


def with_store(db: Path, fn: Callable[[SqliteStore], Awaitable[T]]) -> T:
    async def run() -> T:
        store = SqliteStore(db)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


WORKSPACE = "ws_ops"
# Plain hex like a generated secret: the log redaction net does not recognise this
# shape, so a test finding it absent from the logs shows it was never logged.
SECRET = hashlib.sha256(b"hookd ops test secret").hexdigest()


def create_key(db: Path, workspace: str = WORKSPACE) -> str:
    key = generate_key(platform=False)

    async def work(store: SqliteStore) -> None:
        await store.ensure_workspace(workspace)
        await store.create_api_key(workspace, key.digest, key.prefix, "user_ops")

    with_store(db, work)
    return key.plaintext


def create_webhook(db: Path, url: str, **overrides: Any) -> Webhook:
    fields: dict[str, Any] = {
        "workspace_id": WORKSPACE,
        "name": "ops hook",
        "url": url,
        "events": ("*",),
        "secret": SECRET,
        "retry_attempts": 0,
        "timeout_ms": 2000,
        "created_by": "user_ops",
    }
    fields.update(overrides)
    return with_store(db, lambda s: s.create_webhook(NewWebhook(**fields)))


def ingest(db: Path, event_type: str = "ops.test", data: Any = None) -> IngestResult:
    return with_store(db, lambda s: s.ingest_event(WORKSPACE, event_type, data or {}))


def get_delivery(db: Path, delivery_id: str) -> Delivery:
    found = with_store(db, lambda s: s.get_delivery(None, delivery_id))
    assert found is not None
    return found


# -- a receiver on loopback ------------------------------------------------------------


@dataclass
class Receiver:
    """A threaded HTTP server on 127.0.0.1 answering every POST with ``status`` and
    ``ok``, unless :meth:`answer` scripted other answers for the path, ``delay``
    seconds after the request arrived (and was recorded)."""

    status: int = 200
    delay: float = 0.0
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    script: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def answer(self, path: str, *answers: tuple[int, str]) -> str:
        """Answer the next POSTs to ``path`` with these (status, body) in turn; its URL."""
        with self._lock:
            self.script.setdefault(path, []).extend(answers)
        return self.url(path)

    def _next(self, path: str) -> tuple[int, str]:
        with self._lock:
            queue = self.script.get(path)
            return queue.pop(0) if queue else (self.status, "ok")

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append((self.path, dict(self.headers), body))
                time.sleep(receiver.delay)
                status, text = receiver._next(self.path)
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def url(self, path: str = "/hook") -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# -- hookd serve as a subprocess -------------------------------------------------------------


def serve_env(db: Path, **overrides: str) -> dict[str, str]:
    """A daemon on an ephemeral loopback port, quick to notice work and to stop."""
    base = {
        "HOOKD_DATABASE_PATH": str(db),
        "HOOKD_SERVER_LISTEN": "127.0.0.1:0",
        "HOOKD_DELIVERY_POLL_INTERVAL_SECONDS": "0.1",
        "HOOKD_DELIVERY_DRAIN_TIMEOUT_SECONDS": "2",
        "HOOKD_SERVER_STATS_INTERVAL_SECONDS": "0.2",
    }
    base.update(overrides)
    return clean_env(**base)


class Serve:
    """``hookd serve`` with its stderr collected line by line by a thread."""

    def __init__(self, env: dict[str, str], *args: str, ready: str = "hookd.started") -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [*HOOKD, *args, "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.started = self.wait_for(ready)
        self.listen: list[str] = self.started.get("listen", [])

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    @property
    def base_url(self) -> str:
        return f"http://{self.listen[0]}"

    def url(self, path: str, listener: int = 0) -> str:
        return f"http://{self.listen[listener]}{path}"

    def records(self) -> list[dict[str, Any]]:
        """Every stderr line, parsed (the default format off a terminal is JSON)."""
        with self._changed:
            return [json.loads(line) for line in self.lines if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [
                    r
                    for r in (json.loads(line) for line in self.lines if line.startswith("{"))
                    if r.get("event") == name
                ]
                if len(found) >= count:
                    return found[count - 1]
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"hookd exited ({self.proc.returncode}) before {name}:\n"
                        + "".join(self.lines)
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {name} within {timeout}s:\n" + "".join(self.lines))
                self._changed.wait(min(left, 0.2))

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        # The last lines are in the pipe until the reader has taken them.
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)
