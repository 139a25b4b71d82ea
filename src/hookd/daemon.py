"""``hookd serve``: store, sender, scheduler and HTTP listeners in one process.

Besides the scheduler, the daemon runs three small background tasks, none of
which ever blocks the event loop (the store's calls are asynchronous):

- stats: reads queue depth, scheduling lag and database size into the gauges
  every ``server.stats_interval_seconds``, so a scrape never queries the database;
- retention (``maintenance.sweep``): old delivered deliveries and dead letters,
  orphan events, deleted webhooks, and the 429 lane's bound per endpoint, in
  short batches; on a cluster only the leader sweeps;
- the systemd watchdog, pinging from the loop itself (see ``systemd.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from hookd.api.inputs import read_raw
from hookd.api.listener import Listener
from hookd.clock import Clock, SystemClock
from hookd.components import build_delivery, describe_store
from hookd.config import Config
from hookd.maintenance import Sweep, sweep
from hookd.metrics import Metrics
from hookd.storage import StoreError
from hookd.systemd import Notifier
from hookd.workers import MergedRegistry, WorkerPool

log = structlog.get_logger("hookd.daemon")


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


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
        self.delivery = build_delivery(config, self.clock, self.metrics, self.rng)
        self.store = self.delivery.store
        self.scheduler = self.delivery.scheduler
        self.context = AppContext(
            config, self.store, self.scheduler, self.delivery.attempts, self.metrics, self.clock
        )
        self.workers: WorkerPool | None = None
        if config.delivery.workers > 1:
            self.workers = WorkerPool(config.delivery.workers - 1, config_path)
            self.metrics.exposed = MergedRegistry(self.metrics.registry, self.workers)
        self._listeners: list[Listener] = []
        self._background: list[asyncio.Task[None]] = []
        self.bound: list[tuple[str, int]] = []
        # Bumped after every stats refresh and every retention sweep; tests wait on it.
        self.stats_refreshes = 0
        self.retention_sweeps = 0

    async def start(self) -> None:
        await self.delivery.start()
        await self._listen(build_app(self.context), self.config.server.listen)
        if self.config.server.metrics_listen:
            await self._listen(build_metrics_app(self.context), self.config.server.metrics_listen)
        await self.refresh_stats()
        self.scheduler.start()
        if self.workers is not None:
            await self.workers.start()
        self._background.append(asyncio.create_task(self._stats_loop(), name="hookd-stats"))
        # (Even when nothing ages out, the sweep also ends what waits behind an
        # endpoint that has answered 429 for longer than the lane allows.)
        self._background.append(asyncio.create_task(self._retention_loop(), name="hookd-retention"))
        listen = [f"{h}:{p}" for h, p in self.bound]
        log.info(
            "hookd.started",
            listen=listen,
            database=describe_store(self.config),
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
        listener = Listener(
            app,
            shutdown_timeout=5.0,
            # aiohttp arms this timer when a connection opens and only disarms it
            # once a complete request head has arrived, so it is also the deadline
            # for the headers: a client that opens a socket and stalls, or dribbles
            # a header a byte at a time, is dropped after client_timeout_seconds.
            keepalive_timeout=patience,
            # How long unread body bytes are drained after an early answer (401, 408).
            lingering_time=patience,
        )
        self._listeners.append(listener)
        await listener.start(host, port)
        self.bound.extend(listener.addresses)

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
        try:
            await self.scheduler.stop()
            if self.workers is not None:
                await stopping_workers
            for listener in reversed(self._listeners):
                await listener.stop()
        finally:
            # Whatever failed above, the store's threads end: a process left
            # with one running would never exit.
            await self.delivery.close()
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

    async def sweep_retention(self) -> Sweep:
        """One retention sweep (``maintenance.sweep``); what it removed or ended.

        One process of a cluster sweeps (the store's leader); the others skip.
        """
        if not await self.store.is_leader():
            return Sweep()
        return await sweep(
            self.store,
            self.config.retention,
            self.config.delivery.rate_limit_max_age_seconds,
            self.clock.now_ms(),
            on_batch=lambda status, deleted: self.metrics.retention_deleted_by_status[status].inc(
                deleted
            ),
        )

    async def _retention_loop(self) -> None:
        r = self.config.retention
        while True:
            started = time.monotonic()
            try:
                done = await self.sweep_retention()
            except Exception as exc:
                # Retried at the next interval: nothing is lost by deleting later.
                log.warning(
                    "retention.sweep_failed",
                    error=str(exc),
                    exc_info=not isinstance(exc, StoreError),
                )
            else:
                if done != Sweep():
                    log.info(
                        "retention.swept",
                        **dataclasses.asdict(done),
                        duration_ms=round((time.monotonic() - started) * 1000),
                    )
            self.retention_sweeps += 1
            await asyncio.sleep(r.interval_seconds)


def _body_deadline(seconds: float) -> Middleware:
    """Bound the time a client may take to send its request body.

    aiohttp has no body-read timeout: a client that sends its headers and then
    trickles (or withholds) the body would hold its handler and connection
    forever.  Bodies are small (``server.max_body_bytes``), so they are read
    here, under the deadline, and cached for the handler; one declared over
    the limit is refused without reading it.
    """

    @web.middleware
    async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.can_read_body
            # A body that arrived with its headers (an API call's usually
            # does) is read without waiting: no timer to arm (~4 us a request).
            and not request.content.is_eof()
        ):
            try:
                async with asyncio.timeout(seconds):
                    await read_raw(request)
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
