"""What request handlers need, stored on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from hookd.attempts import Attempts
from hookd.clock import Clock
from hookd.config import Config
from hookd.metrics import Metrics
from hookd.scheduler import Scheduler
from hookd.storage import Store


@dataclass(frozen=True)
class AppContext:
    config: Config
    store: Store
    # Woken when work may be due (ingest, replay, a webhook switched back on);
    # its liveness is part of readiness.
    scheduler: Scheduler
    # Replay's first attempt and test sends go through the one attempt path.
    attempts: Attempts
    metrics: Metrics
    clock: Clock


CONTEXT: web.AppKey[AppContext] = web.AppKey("hookd_context", AppContext)
