"""What request handlers need, stored on the aiohttp application."""

from __future__ import annotations

import random
from dataclasses import dataclass

from aiohttp import web

from hookd.clock import Clock
from hookd.config import Config
from hookd.metrics import Metrics
from hookd.scheduler import Scheduler
from hookd.storage import Store


@dataclass(frozen=True)
class AppContext:
    config: Config
    store: Store
    scheduler: Scheduler
    metrics: Metrics
    clock: Clock
    rng: random.Random


CONTEXT: web.AppKey[AppContext] = web.AppKey("hookd_context", AppContext)
