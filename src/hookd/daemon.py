"""``hookd serve``: store, sender, scheduler and HTTP listeners in one process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal

import structlog
from aiohttp import web

from hookd.api.app import build_app, build_metrics_app
from hookd.api.context import AppContext
from hookd.clock import Clock, SystemClock
from hookd.config import Config
from hookd.metrics import Metrics
from hookd.scheduler import Scheduler
from hookd.sender import AddressPolicy, Sender
from hookd.storage.sqlite import SqliteStore

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
        self, config: Config, *, clock: Clock | None = None, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.metrics = Metrics()
        self.store = open_store(config, self.clock)
        self.sender = Sender(
            AddressPolicy(config.delivery.allow_networks),
            max_response_bytes=config.delivery.max_response_bytes,
        )
        self.scheduler = Scheduler(
            self.store, self.sender, config.delivery, self.clock, metrics=self.metrics, rng=self.rng
        )
        self.context = AppContext(
            config, self.store, self.scheduler, self.metrics, self.clock, self.rng
        )
        self._runners: list[web.AppRunner] = []
        self.bound: list[tuple[str, int]] = []

    async def start(self) -> None:
        await self.store.open()
        await self.sender.start()
        await self._listen(build_app(self.context), self.config.server.listen)
        if self.config.server.metrics_listen:
            await self._listen(build_metrics_app(self.context), self.config.server.metrics_listen)
        self.scheduler.start()
        log.info(
            "hookd.started",
            listen=[f"{h}:{p}" for h, p in self.bound],
            database=self.config.database.path,
            pid=os.getpid(),
        )
        if await self.store.count_api_keys() == 0:
            log.warning(
                "hookd.no_api_keys",
                hint="no API keys yet: create the first with `hookd keys create`",
            )

    async def _listen(self, app: web.Application, listen: str) -> None:
        host, port = split_listen(listen)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        self._runners.append(runner)
        for sock_addr in runner.addresses:
            self.bound.append((str(sock_addr[0]), int(sock_addr[1])))

    async def stop(self) -> None:
        log.info("hookd.stopping")
        await self.scheduler.stop()
        for runner in reversed(self._runners):
            await runner.cleanup()
        await self.sender.close()
        await self.store.close()
        log.info("hookd.stopped")


async def serve(config: Config) -> int:
    daemon = Daemon(config)
    await daemon.start()
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

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await stop.wait()
    finally:
        await daemon.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return 0
