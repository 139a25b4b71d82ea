"""Read-only views for operators (what the dashboard shows).

``GET /v1/stats``: the workspace's queue (deliveries by status, in flight, the
oldest due delivery); ``GET /v1/webhooks/{id}/stats``: one webhook's last 24
hours (success rate, last error, queued and in flight, its 429 pause);
``GET /v1/events/{id}``: one event with its data, which a delivery names.
Each answer is declared here once; the OpenAPI document is generated from it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from aiohttp import web
from msgspec import Meta, field

from hookd.api.auth import expect_continue, principal
from hookd.api.context import CONTEXT
from hookd.api.errors import not_found
from hookd.api.inputs import path_id, query
from hookd.api.serialize import Id, Shown, Timestamp, one_of, success
from hookd.ids import iso_ms
from hookd.models import Status, WebhookStatus
from hookd.storage.base import QueueStats, WebhookStats

# The window of a webhook's figures.
STATS_WINDOW_MS = 24 * 3_600_000

Count = Annotated[int, Meta(ge=0)]
MaybeTimestamp = Annotated[str | None, Meta(description="ISO 8601 UTC with milliseconds")]


class Queue(Shown):
    """The workspace's queue, read now."""

    workspace_id: str
    deliveries: Annotated[
        dict[Annotated[str, one_of(Status)], Count],
        Meta(description="the workspace's deliveries by status"),
    ]
    in_flight: Annotated[Count, Meta(description="deliveries claimed under a lease right now")]
    oldest_due_at: Annotated[
        MaybeTimestamp,
        Meta(
            description="when the oldest due delivery whose webhook may send became due; null"
            " when nothing is due (inactive and 429-paused webhooks' work waits on purpose and"
            " is left out)"
        ),
    ]
    oldest_due_age_seconds: Annotated[
        float, Meta(ge=0, description="how long it has waited (scheduling lag); 0 when none is due")
    ]
    at: Timestamp


class LastError(Shown):
    """The latest attempt in the window without a 2xx answer."""

    at: Timestamp
    status_code: int | None
    error: str | None
    delivery_id: Id


class WebhookFigures(Shown):
    """The last 24 hours of one webhook; test sends are not counted."""

    webhook_id: Id
    status: Annotated[str, one_of(WebhookStatus)]
    paused_until: Annotated[
        MaybeTimestamp, Meta(description="end of a 429 pause in force (Retry-After); else null")
    ]
    since: Annotated[Timestamp, Meta(description="start of the window")]
    delivered: Count
    dead_lettered: Count
    success_rate: Annotated[
        Annotated[float, Meta(ge=0, le=1)] | None,
        Meta(
            description="delivered / (delivered + deadLettered) of the deliveries that ended in"
            " the window; null when none did"
        ),
    ]
    queued: Annotated[Count, Meta(description="deliveries pending, failed or rate_limited")]
    in_flight: Count
    last_error: LastError | None


class StoredEvent(Shown):
    """An event with its data, as every attempt sends it."""

    id: Id = field(name="_id")
    workspace_id: str
    type: str
    idempotency_key: str | None
    created_at: Timestamp
    data: Annotated[Any, Meta(description="the event's data")]


def show_queue(workspace_id: str, stats: QueueStats, now_ms: int) -> Queue:
    oldest = stats.oldest_due_ms
    return Queue(
        workspace_id=workspace_id,
        deliveries=dict(stats.by_status),
        in_flight=stats.in_flight,
        oldest_due_at=iso_ms(oldest) if oldest is not None else None,
        oldest_due_age_seconds=max(0, now_ms - oldest) / 1000 if oldest is not None else 0,
        at=iso_ms(now_ms),
    )


def show_webhook_figures(
    webhook_id: str,
    status: WebhookStatus,
    paused_until: int | None,
    stats: WebhookStats,
    now_ms: int,
) -> WebhookFigures:
    last_error = None
    if stats.last_error_at is not None and stats.last_error_delivery_id is not None:
        last_error = LastError(
            at=iso_ms(stats.last_error_at),
            status_code=stats.last_error_status_code,
            error=stats.last_error,
            delivery_id=stats.last_error_delivery_id,
        )
    paused = paused_until if paused_until is not None and paused_until > now_ms else None
    rate = stats.success_rate
    return WebhookFigures(
        webhook_id=webhook_id,
        status=status.value,
        paused_until=iso_ms(paused) if paused is not None else None,
        since=iso_ms(stats.since_ms),
        delivered=stats.delivered,
        dead_lettered=stats.dead_lettered,
        success_rate=round(rate, 4) if rate is not None else None,
        queued=stats.queued,
        in_flight=stats.in_flight,
        last_error=last_error,
    )


async def workspace_stats(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    query(request)
    workspace = principal(request).workspace_id
    stats = await ctx.store.workspace_queue_stats(workspace)
    return success(show_queue(workspace, stats, ctx.clock.now_ms()))


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
    return success(
        show_webhook_figures(webhook_id, webhook.status, webhook.paused_until, stats, now)
    )


async def get_event(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    event_id = path_id(request)
    query(request)
    event = await ctx.store.get_event(principal(request).workspace_id, event_id)
    if event is None:
        raise not_found()
    # The stored body is the envelope every attempt sends; its data is the event's.
    return success(
        StoredEvent(
            id=event.id,
            workspace_id=event.workspace_id,
            type=event.type,
            idempotency_key=event.idempotency_key,
            created_at=iso_ms(event.created_at),
            data=json.loads(event.body).get("data"),
        )
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/stats", workspace_stats, expect_handler=expect_continue)
    app.router.add_get("/v1/webhooks/{id}/stats", webhook_stats, expect_handler=expect_continue)
    app.router.add_get("/v1/events/{id}", get_event, expect_handler=expect_continue)
