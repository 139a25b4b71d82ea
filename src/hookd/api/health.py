"""Liveness, readiness and the Prometheus endpoint. No key needed."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hookd.api.context import CONTEXT, AppContext
from hookd.api.serialize import Alive, NotReady, Ready, json_response
from hookd.storage import StoreError

# The scheduler loop iterates at least every poll interval; allow a wide margin
# before calling it stuck, so a busy database does not flap readiness.
READY_LAG_FACTOR = 10
READY_LAG_FLOOR_SECONDS = 15.0
# A database that takes longer than this to answer a ping is not ready.
READY_PING_TIMEOUT_SECONDS = 5.0


async def healthz(request: web.Request) -> web.Response:
    return json_response(Alive("ok"))


async def readiness_problems(ctx: AppContext) -> list[str]:
    """Why the daemon is not ready (database unreachable, scheduler stuck); empty if it is."""
    problems: list[str] = []
    # Waited for, not cancelled at the deadline: cancelling a query on a
    # server that stopped answering waits on that server too (PostgreSQL's
    # cancel request), and the answer would come late anyway.
    ping = asyncio.ensure_future(ctx.store.ping())
    done, _ = await asyncio.wait({ping}, timeout=READY_PING_TIMEOUT_SECONDS)
    if not done:
        ping.add_done_callback(_ignore_outcome)
        problems.append(f"database: no answer within {READY_PING_TIMEOUT_SECONDS:g}s")
    elif isinstance(error := ping.exception(), StoreError):
        problems.append(f"database: {error}")
    elif error is not None:
        raise error
    poll = ctx.config.delivery.poll_interval_seconds
    limit = max(READY_LAG_FLOOR_SECONDS, poll * READY_LAG_FACTOR)
    lag = time.monotonic() - ctx.scheduler.last_progress
    # With every slot busy the loop rightly waits for an attempt to finish
    # instead of claiming; that is saturation, not a stuck scheduler.
    saturated = ctx.scheduler.in_flight >= ctx.config.delivery.concurrency
    if lag > limit and not saturated:
        problems.append(f"scheduler: no progress for {lag:.0f}s")
    return problems


def _ignore_outcome(ping: asyncio.Future[None]) -> None:
    # A late ping's outcome: the probe already said "not ready".
    if not ping.cancelled():
        ping.exception()


async def readyz(request: web.Request) -> web.Response:
    problems = await readiness_problems(request.app[CONTEXT])
    if problems:
        return json_response(NotReady("unavailable", problems), status=503)
    return json_response(Ready("ready"))


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = generate_latest(ctx.metrics.exposed)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
