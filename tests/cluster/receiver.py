"""A recording receiver on loopback for the cluster tests, on a thread of its own.

aiohttp on its own event loop in a background thread, so that a synchronous
test (driving ``hookd serve`` subprocesses) can block while it answers.  Each
path answers as scripted (status, headers, delay); every request is kept with
its arrival and end times (wall clock, to compare with the database's times),
so a test can find a delivery in flight twice at once, and the receiver counts
the requests in progress per path, keeping the highest count seen.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0


@dataclass
class Seen:
    path: str
    msg_id: str
    signature: str
    arrived: float
    ended: float = 0.0
    status: int = 0


@dataclass
class RecordingReceiver:
    requests: list[Seen] = field(default_factory=list)
    defaults: dict[str, Answer] = field(default_factory=dict)
    scripts: dict[str, list[Answer]] = field(default_factory=lambda: defaultdict(list))
    in_progress: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    most_in_progress: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    # -- scripting (from the test's thread) ---------------------------------------------

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, answer: Answer) -> str:
        """Answer ``path`` so from now on (after any scripted answers); its URL."""
        with self._lock:
            self.defaults[path] = answer
        return self.url(path)

    def script(self, path: str, *answers: Answer) -> str:
        """Answer the next requests to ``path`` with these, in turn; its URL."""
        with self._lock:
            self.scripts[path].extend(answers)
        return self.url(path)

    def seen(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    # -- serving ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        path = request.path
        seen = Seen(
            path,
            request.headers.get("webhook-id", ""),
            request.headers.get("webhook-signature", ""),
            time.time(),
        )
        with self._lock:
            self.requests.append(seen)
            self.in_progress[path] += 1
            self.most_in_progress[path] = max(self.most_in_progress[path], self.in_progress[path])
            queued = self.scripts.get(path)
            answer = queued.pop(0) if queued else self.defaults.get(path, Answer())
        try:
            if answer.delay:
                await asyncio.sleep(answer.delay)
        finally:
            with self._lock:
                self.in_progress[path] -= 1
                seen.ended = time.time()
                seen.status = answer.status
        return web.Response(status=answer.status, text="answer", headers=dict(answer.headers))

    def start(self) -> RecordingReceiver:
        started = threading.Event()

        async def serve() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            self.port = int(self._runner.addresses[0][1])

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(serve())
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="recording-receiver", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the receiver did not start")
        return self

    def close(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None:
            return
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)


def overlaps(requests: list[Seen]) -> list[tuple[Seen, Seen]]:
    """Pairs of requests of one delivery (message id) in progress at the same time."""
    by_id: dict[str, list[Seen]] = defaultdict(list)
    for r in requests:
        by_id[r.msg_id].append(r)
    found = []
    for same in by_id.values():
        same.sort(key=lambda r: r.arrived)
        latest = same[0]
        for later in same[1:]:
            # A request still in progress has not ended.
            if later.arrived < (latest.ended or float("inf")):
                found.append((latest, later))
            if (later.ended or float("inf")) > (latest.ended or float("inf")):
                latest = later
    return found
