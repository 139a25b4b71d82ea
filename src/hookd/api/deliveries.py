"""``/v1/deliveries``: list with filters, one with its attempts, replay of a dead letter."""

from __future__ import annotations

from aiohttp import web
from msgspec import UNSET

from hookd.api.auth import expect_continue, principal
from hookd.api.context import CONTEXT, AppContext
from hookd.api.errors import ApiError, bad_request, not_found
from hookd.api.inputs import (
    parse_cursor,
    parse_limit,
    parse_timestamp,
    path_id,
    query,
    read_body,
)
from hookd.api.serialize import (
    ReplayResult,
    page,
    show_delivery,
    show_delivery_with_attempts,
    success,
)
from hookd.api.tasks import finish_even_if_cancelled
from hookd.bodies import EmptyReplayRequest, EventType
from hookd.ids import is_id
from hookd.models import ClaimedDelivery, Status
from hookd.storage import DeliveryFilter
from hookd.validation import read

LIST_PARAMS = ("limit", "cursor", "status", "webhookId", "eventType", "since", "until")


def _filter(params: dict[str, str]) -> DeliveryFilter:
    status = None
    if "status" in params:
        try:
            status = Status(params["status"])
        except ValueError:
            raise bad_request(
                "status", f"must be one of {', '.join(s.value for s in Status)}"
            ) from None
    webhook_id = params.get("webhookId")
    if webhook_id is not None and not is_id(webhook_id):
        raise bad_request("webhookId", "must be a webhook id (24 lowercase hex characters)")
    event_type = params.get("eventType")
    if event_type is not None:
        read(EventType, event_type, "eventType")
    since = parse_timestamp(params["since"], "since") if "since" in params else None
    until = parse_timestamp(params["until"], "until") if "until" in params else None
    if since is not None and until is not None and until < since:
        raise bad_request("until", "must not be earlier than since")
    return DeliveryFilter(status, webhook_id, event_type, since, until)


async def list_deliveries(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    params = query(request, LIST_PARAMS)
    limit, cursor = parse_limit(params), parse_cursor(params)
    flt = _filter(params)
    try:
        result = await ctx.store.list_deliveries(
            principal(request).workspace_id, flt, limit, cursor
        )
    except ValueError:
        raise bad_request("cursor", "is not a cursor returned by this list") from None
    return page([show_delivery(d) for d in result.items], result.next_cursor)


async def get_delivery(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    delivery_id = path_id(request)
    query(request)
    delivery = await ctx.store.get_delivery(principal(request).workspace_id, delivery_id)
    if delivery is None:
        raise not_found()
    attempts = await ctx.store.list_attempts(delivery.id)
    return success(show_delivery_with_attempts(delivery, attempts))


async def _attempt(ctx: AppContext, claim: ClaimedDelivery) -> ReplayResult:
    report = await ctx.attempts.attempt(claim)
    # Later retries, if any, belong to the scheduler.
    ctx.scheduler.wake()
    error = report.result.error_text
    # (If someone else moved the delivery meanwhile, e.g. deleted its webhook,
    # the status is theirs.)
    return ReplayResult(
        delivery_id=claim.delivery_id,
        status=report.status.value,
        http_status_code=report.result.status_code,
        response_body=report.result.body,
        error=error if error is not None else UNSET,
    )


async def replay_delivery(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    delivery_id = path_id(request)
    query(request)
    await read_body(request, EmptyReplayRequest | None)
    workspace = principal(request).workspace_id
    delivery = await ctx.store.get_delivery(workspace, delivery_id)
    if delivery is None:
        raise not_found()
    if delivery.is_test:
        raise ApiError(
            409, "status: test deliveries are never retried or replayed; send a new test"
        )
    if delivery.status is not Status.DEAD_LETTER:
        raise _not_dead_letter(delivery.status)
    lease_ms = round(ctx.config.delivery.lease_seconds * 1000)
    replay = await ctx.store.claim_for_replay(workspace, delivery_id, lease_ms)
    if not replay.found:
        raise not_found()
    if replay.claim is not None:
        return success(await finish_even_if_cancelled(_attempt(ctx, replay.claim)))
    if replay.status is Status.DEAD_LETTER:
        raise ApiError(409, "webhookId: the delivery's webhook was deleted; it cannot be replayed")
    if not replay.replayed:
        # A concurrent replay got there first: it queued the delivery once.
        raise _not_dead_letter(replay.status)
    # Replayed without a claim: its webhook is inactive or paused by a 429, so
    # the delivery waits in the queue like the rest of that endpoint's work.
    return success(
        ReplayResult(
            delivery_id=delivery_id,
            status=Status.PENDING.value,
            http_status_code=None,
            response_body=None,
        )
    )


def _not_dead_letter(status: Status | None) -> ApiError:
    current = status.value if status is not None else "not dead_letter"
    return ApiError(
        409, f"status: the delivery is {current}; only dead_letter deliveries can be replayed"
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/deliveries", list_deliveries, expect_handler=expect_continue)
    app.router.add_get("/v1/deliveries/{id}", get_delivery, expect_handler=expect_continue)
    app.router.add_post(
        "/v1/deliveries/{id}/replay", replay_delivery, expect_handler=expect_continue
    )
