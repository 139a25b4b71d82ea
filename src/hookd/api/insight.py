"""Read-only views for operators (what the dashboard shows).

``GET /v1/stats``: the workspace's queue (deliveries by status, in flight, the
oldest due delivery); ``GET /v1/webhooks/{id}/stats``: one webhook's last 24
hours (success rate, last error, queued and in flight, its 429 pause);
``GET /v1/events/{id}``: one event with its data, which a delivery names.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from hookd.api.auth import principal
from hookd.api.context import CONTEXT
from hookd.api.errors import not_found
from hookd.api.inputs import path_id, query
from hookd.api.serialize import success
from hookd.ids import iso_ms
from hookd.models import WebhookStatus
from hookd.storage.base import QueueStats, WebhookStats

# The window of a webhook's figures.
STATS_WINDOW_MS = 24 * 3_600_000


def queue_json(workspace_id: str, stats: QueueStats, now_ms: int) -> dict[str, Any]:
    oldest = stats.oldest_due_ms
    return {
        "workspaceId": workspace_id,
        "deliveries": dict(stats.by_status),
        "inFlight": stats.in_flight,
        "oldestDueAt": iso_ms(oldest) if oldest is not None else None,
        "oldestDueAgeSeconds": max(0, now_ms - oldest) / 1000 if oldest is not None else 0,
        "at": iso_ms(now_ms),
    }


def webhook_stats_json(
    webhook_id: str,
    status: WebhookStatus,
    paused_until: int | None,
    stats: WebhookStats,
    now_ms: int,
) -> dict[str, Any]:
    last_error = None
    if stats.last_error_at is not None:
        last_error = {
            "at": iso_ms(stats.last_error_at),
            "statusCode": stats.last_error_status_code,
            "error": stats.last_error,
            "deliveryId": stats.last_error_delivery_id,
        }
    paused = paused_until if paused_until is not None and paused_until > now_ms else None
    rate = stats.success_rate
    return {
        "webhookId": webhook_id,
        "status": status.value,
        "pausedUntil": iso_ms(paused) if paused is not None else None,
        "since": iso_ms(stats.since_ms),
        "delivered": stats.delivered,
        "deadLettered": stats.dead_lettered,
        "successRate": round(rate, 4) if rate is not None else None,
        "queued": stats.queued,
        "inFlight": stats.in_flight,
        "lastError": last_error,
    }


async def workspace_stats(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    query(request)
    workspace = principal(request).workspace_id
    stats = await ctx.store.workspace_queue_stats(workspace)
    return success(queue_json(workspace, stats, ctx.clock.now_ms()))


async def webhook_stats(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    webhook_id = path_id(request)
    query(request)
    workspace = principal(request).workspace_id
    webhook = await ctx.store.get_webhook(workspace, webhook_id)
    if webhook is None:
        raise not_found()
    now = ctx.clock.now_ms()
    stats = await ctx.store.webhook_stats(workspace, webhook_id, now - STATS_WINDOW_MS)
    if stats is None:  # deleted in between
        raise not_found()
    return success(webhook_stats_json(webhook_id, webhook.status, webhook.paused_until, stats, now))


async def get_event(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    event_id = path_id(request)
    query(request)
    event = await ctx.store.get_event(principal(request).workspace_id, event_id)
    if event is None:
        raise not_found()
    # The stored body is the envelope every attempt sends; its data is the event's.
    envelope = json.loads(event.body)
    return success(
        {
            "_id": event.id,
            "workspaceId": event.workspace_id,
            "type": event.type,
            "idempotencyKey": event.idempotency_key,
            "createdAt": iso_ms(event.created_at),
            "data": envelope.get("data"),
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/stats", workspace_stats)
    app.router.add_get("/v1/webhooks/{id}/stats", webhook_stats)
    app.router.add_get("/v1/events/{id}", get_event)
