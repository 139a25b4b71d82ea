"""Assemble the aiohttp application."""

from __future__ import annotations

from aiohttp import web

from hookd.api import deliveries, events, health, insight, openapi, ui, webhooks
from hookd.api.auth import KEY_CACHE, KeyCache, auth_middleware
from hookd.api.context import CONTEXT, AppContext
from hookd.api.errors import error_middleware


def build_app(ctx: AppContext) -> web.Application:
    # error_middleware is outermost so that auth failures, unknown routes and
    # wrong methods all answer in the same envelope.
    app = web.Application(
        client_max_size=ctx.config.server.max_body_bytes,
        middlewares=[error_middleware, auth_middleware],
    )
    app[CONTEXT] = ctx
    app[KEY_CACHE] = KeyCache()
    health.add_routes(app)
    openapi.add_routes(app)
    webhooks.add_routes(app)
    events.add_routes(app)
    deliveries.add_routes(app)
    insight.add_routes(app)
    ui.add_routes(app)
    return app


def build_metrics_app(ctx: AppContext) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[CONTEXT] = ctx
    app.router.add_get("/metrics", health.metrics)
    return app
