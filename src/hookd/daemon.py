"""``hookd serve``: store, sender, scheduler and HTTP listeners in one process.

Besides the scheduler, the daemon runs three small background tasks, none of
which ever blocks the event loop (database work runs on the store's thread):

- stats: reads queue depth, scheduling lag and database size into the gauges
  every ``server.stats_interval_seconds``, so a scrape never queries the database;
- retention: deletes old delivered deliveries in small batches with pauses;
- the systemd watchdog, pinging from the loop itself (see ``systemd.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from hookd import __version__
from hookd.api.app import build_app, build_metrics_app
from hookd.api.context import AppContext
from hookd.api.health import readiness_problems
from hookd.clock import Clock, SystemClock
from hookd.config import Config
from hookd.maintenance import purge_delivered
from hookd.metrics import Metrics
from hookd.scheduler import Scheduler
from hookd.sender import Sender
from hookd.storage import StoreError
from hookd.storage.sqlite import SqliteStore
from hookd.systemd import Notifier
from hookd.workers import MergedRegistry, WorkerPool

log = structlog.get_logger("hookd.daemon")


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def open_store(config: Config, clock: Clock | None = None) -> SqliteStore:
    return SqliteStore(
        config.database.path,
        clock or SystemClock(),
        busy_timeout_ms=config.database.busy_timeout_ms,
        idempotency_window_ms=round(config.delivery.idempotency_window_seconds * 1000),
    )


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        notifier: Notifier | None = None,
        config_path: str | None = None,
    ) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.metrics = Metrics()
        self.store = open_store(config, self.clock)
        self.sender = Sender.for_delivery(
            config.delivery, on_resend=self.metrics.requests_resent.inc
        )
        self.scheduler = Scheduler(
            self.store, self.sender, config.delivery, self.clock, metrics=self.metrics, rng=self.rng
        )
        self.context = AppContext(
            config, self.store, self.scheduler, self.metrics, self.clock, self.rng
        )
        self.workers: WorkerPool | None = None
        if config.delivery.workers > 1:
            self.workers = WorkerPool(config.delivery.workers - 1, config_path)
            self.metrics.exposed = MergedRegistry(self.metrics.registry, self.workers)
        self._runners: list[web.AppRunner] = []
        self._background: list[asyncio.Task[None]] = []
        self.bound: list[tuple[str, int]] = []
        # Bumped after every stats refresh and every retention sweep; tests wait on it.
        self.stats_refreshes = 0
        self.retention_sweeps = 0

    async def start(self) -> None:
        await self.store.open()
        await self.sender.start()
        await self._listen(build_app(self.context), self.config.server.listen)
        if self.config.server.metrics_listen:
            await self._listen(build_metrics_app(self.context), self.config.server.metrics_listen)
        await self.refresh_stats()
        self.scheduler.start()
        if self.workers is not None:
            await self.workers.start()
        self._background.append(asyncio.create_task(self._stats_loop(), name="hookd-stats"))
        if self.config.retention.delivered_max_age_seconds > 0:
            self._background.append(
                asyncio.create_task(self._retention_loop(), name="hookd-retention")
            )
        listen = [f"{h}:{p}" for h, p in self.bound]
        log.info(
            "hookd.started",
            listen=listen,
            database=self.config.database.path,
            pid=os.getpid(),
            version=__version__,
        )
        # The database is open and every listener bound: only now may systemd
        # start what depends on us.
        self.notifier.ready(status=f"serving on {', '.join(listen)}")
        self.notifier.start_watchdog()
        if await self.store.count_api_keys() == 0:
            log.warning(
                "hookd.no_api_keys",
                hint="no API keys yet: create the first with `hookd keys create`",
            )

    async def _listen(self, app: web.Application, listen: str) -> None:
        host, port = split_listen(listen)
        patience = self.config.server.client_timeout_seconds
        app.middlewares.append(_body_deadline(patience))
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=5.0,
            # aiohttp arms this timer when a connection opens and only disarms it
            # once a complete request head has arrived, so it is also the deadline
            # for the headers: a client that opens a socket and stalls, or dribbles
            # a header a byte at a time, is dropped after client_timeout_seconds.
            keepalive_timeout=patience,
            # How long unread body bytes are drained after an early answer (401, 408).
            lingering_time=patience,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        self._runners.append(runner)
        for sock_addr in runner.addresses:
            self.bound.append((str(sock_addr[0]), int(sock_addr[1])))

    async def stop(self) -> None:
        log.info("hookd.stopping")
        self.notifier.stopping(status="draining in-flight attempts")
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        if self.workers is not None:
            # Workers drain in parallel with this process's own scheduler.
            stopping_workers = asyncio.create_task(
                self.workers.stop(self.config.delivery.drain_timeout_seconds + 10)
            )
        await self.scheduler.stop()
        if self.workers is not None:
            await stopping_workers
        for runner in reversed(self._runners):
            await runner.cleanup()
        await self.sender.close()
        await self.store.close()
        # The watchdog keeps pinging through the drain, which may take up to
        # drain_timeout_seconds; only now is there nothing left to watch.
        await self.notifier.close()
        log.info("hookd.stopped")

    # -- background tasks ---------------------------------------------------------

    async def refresh_stats(self) -> None:
        # Readiness first: a database that fails the reads below is not ready.
        self.metrics.ready.set(0 if await readiness_problems(self.context) else 1)
        stats = await self.store.queue_stats()
        size = await self.store.database_size_bytes()
        self.metrics.observe_queue(stats, self.clock.now_ms(), size)
        self.metrics.observe_rate_limits(await self.store.rate_limit_stats(), self.clock.now_ms())
        self.stats_refreshes += 1

    async def _stats_loop(self) -> None:
        interval = self.config.server.stats_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_stats()
            except Exception as exc:
                # Stale gauges for one interval beat a dead stats task.
                log.warning(
                    "metrics.refresh_failed",
                    error=str(exc),
                    exc_info=not isinstance(exc, StoreError),
                )

    async def sweep_retention(self) -> int:
        """Delete delivered deliveries older than the configured age; return how many."""
        r = self.config.retention
        cutoff = self.clock.now_ms() - round(r.delivered_max_age_seconds * 1000)
        total = 0
        async for deleted in purge_delivered(
            self.store, cutoff, r.batch_size, r.batch_pause_seconds
        ):
            total += deleted
            self.metrics.retention_deleted.inc(deleted)
        return total

    async def _retention_loop(self) -> None:
        r = self.config.retention
        while True:
            started = time.monotonic()
            try:
                deleted = await self.sweep_retention()
            except Exception as exc:
                # Retried at the next interval: nothing is lost by deleting later.
                log.warning(
                    "retention.sweep_failed",
                    error=str(exc),
                    exc_info=not isinstance(exc, StoreError),
                )
            else:
                if deleted:
                    log.info(
                        "retention.swept",
                        deleted=deleted,
                        max_age_seconds=r.delivered_max_age_seconds,
                        duration_ms=round((time.monotonic() - started) * 1000),
                    )
            self.retention_sweeps += 1
            await asyncio.sleep(r.interval_seconds)


def _body_deadline(seconds: float) -> Middleware:
    """Bound the time a client may take to send its request body.

    aiohttp has no body-read timeout: a client that sends its headers and then
    trickles (or withholds) the body would hold its handler and connection
    forever.  Bodies are small (``server.max_body_bytes``), so they are read
    here, under the deadline, and cached for the handler.  Oversized bodies
    are left to the handler, which refuses them on Content-Length at once.
    """

    @web.middleware
    async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        declared = request.content_length
        if (
            request.can_read_body
            and (declared is None or declared <= request.client_max_size)
            # A body that arrived with its headers (an API call's usually
            # does) is read without waiting: no timer to arm (~4 us a request).
            and not request.content.is_eof()
        ):
            try:
                async with asyncio.timeout(seconds):
                    await request.read()
            except TimeoutError:
                raise web.HTTPRequestTimeout(
                    text=f"request body not received within {seconds:g} s"
                ) from None
        return await handler(request)

    return body_deadline


async def serve(config: Config, config_path: str | None = None) -> int:
    daemon = Daemon(config, config_path=config_path)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            # Second signal: the operator wants out now.  Leases make this safe;
            # unfinished deliveries are taken again once they expire.
            log.warning("hookd.forced_exit", signal=signame)
            os._exit(1)
        log.info("hookd.signal", signal=signame)
        stop.set()

    # Handlers go in before anything starts: a SIGTERM that arrives while the
    # listeners come up must still mean "drain and exit 0", not death by signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        try:
            await daemon.start()
        except OSError as exc:
            # Typically the listen address is taken: one line, and systemd's
            # Restart=on-failure gets a non-zero status to act on.
            log.error("hookd.start_failed", error=str(exc))
            await daemon.notifier.close()
            return 1
        try:
            await stop.wait()
        finally:
            await daemon.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return 0
