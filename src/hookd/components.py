"""The parts every hookd process assembles from its configuration.

``hookd serve`` (daemon.py) and ``hookd worker`` (workers.py) both deliver;
both build their store, sender, attempt path and scheduler here, so neither
imports the other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hookd.attempts import Attempts
from hookd.clock import Clock, SystemClock
from hookd.config import Config
from hookd.metrics import Metrics
from hookd.scheduler import Scheduler
from hookd.sender import Sender
from hookd.storage import Store
from hookd.storage.composed import Quotas
from hookd.storage.sqlite import SqliteStore


def build_store(
    config: Config, clock: Clock | None = None, *, listen: bool = False, lead: bool = False
) -> Store:
    """The configured store, not yet open: PostgreSQL when ``[database] url`` is set.

    ``listen``: be woken when other nodes make work due (processes that
    deliver); ``lead``: take part in the cluster's leadership for retention
    and statistics (``hookd serve``).  A CLI command does neither.
    """
    db = config.database
    window_ms = round(config.delivery.idempotency_window_seconds * 1000)
    quotas = Quotas(
        webhooks_per_workspace=config.quotas.webhooks_per_workspace,
        deliveries_per_request=config.quotas.deliveries_per_request,
    )
    if db.url:
        # Loaded only here, so that a daemon on SQLite never loads the driver.
        from hookd.storage.postgres import PostgresStore
        from hookd.storage.postgres.connection import read_password

        return PostgresStore(
            db.url,
            clock or SystemClock(),
            password=read_password(db.password_file),
            pool_size=db.pool_size,
            idempotency_window_ms=window_ms,
            per_webhook_limit=config.delivery.per_webhook_concurrency,
            listen=listen,
            lead=lead,
            quotas=quotas,
        )
    return SqliteStore(
        db.path,
        clock or SystemClock(),
        busy_timeout_ms=db.busy_timeout_ms,
        idempotency_window_ms=window_ms,
        quotas=quotas,
    )


def describe_store(config: Config) -> str:
    """Where the data is, for logs (a PostgreSQL URL without its password)."""
    if not config.database.url:
        return config.database.path
    from hookd.storage.postgres.connection import redacted

    return redacted(config.database.url)


@dataclass(frozen=True)
class Delivery:
    """What delivers: the store, the sender, the attempt path and the scheduler."""

    store: Store
    sender: Sender
    attempts: Attempts
    scheduler: Scheduler

    async def start(self) -> None:
        await self.store.open()
        await self.sender.start()

    async def close(self) -> None:
        """Close the sender and the store (the scheduler is stopped first)."""
        try:
            await self.sender.close()
        finally:
            await self.store.close()


def build_delivery(
    config: Config,
    clock: Clock,
    metrics: Metrics,
    rng: random.Random | None = None,
    *,
    lead: bool = True,
) -> Delivery:
    """What a delivering process runs; ``lead``: it may run the cluster's housekeeping."""
    store = build_store(config, clock, listen=True, lead=lead)
    sender = Sender.for_delivery(config.delivery, on_resend=metrics.requests_resent.inc)
    attempts = Attempts(store, sender, config.delivery, clock, metrics, rng or random.Random())
    scheduler = Scheduler(store, attempts, config.delivery, clock)
    # Work made due by another node (or process) wakes this scheduler too.
    store.watch_due(scheduler.wake)
    return Delivery(store, sender, attempts, scheduler)
