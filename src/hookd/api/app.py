"""Assemble the aiohttp application."""

from __future__ import annotations

from aiohttp import web

from hookd.api import health
from hookd.api.context import CONTEXT, AppContext


def build_app(ctx: AppContext) -> web.Application:
    app = web.Application(client_max_size=ctx.config.server.max_body_bytes)
    app[CONTEXT] = ctx
    health.add_routes(app)
    return app


def build_metrics_app(ctx: AppContext) -> web.Application:
    app = web.Application()
    app[CONTEXT] = ctx
    app.router.add_get("/metrics", health.metrics)
    return app
