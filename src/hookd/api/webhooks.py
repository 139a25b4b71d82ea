"""``/v1/webhooks``: create, list, get, update, delete, test send, bulk replay."""

from __future__ import annotations

from aiohttp import web
from msgspec import UNSET

from hookd.api.auth import expect_continue, principal
from hookd.api.context import CONTEXT, AppContext
from hookd.api.errors import bad_request, not_found
from hookd.api.inputs import (
    parse_cursor,
    parse_limit,
    parse_timestamp,
    path_id,
    query,
    read_body,
)
from hookd.api.serialize import BulkReplay, TestResult, WebhookDeleted, page, show_webhook, success
from hookd.api.tasks import finish_even_if_cancelled
from hookd.bodies import BulkReplayRequest, EmptyRequest, webhook_bodies
from hookd.models import Status, Webhook
from hookd.validation import webhook_changes, webhook_fields

TEST_EVENT_TYPE = "test"


async def create_webhook(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    who = principal(request)
    query(request)
    create, _ = webhook_bodies(ctx.config.delivery.max_timeout_ms)
    fields = webhook_fields(await read_body(request, create), ctx.config.delivery.allow_networks)
    webhook = await ctx.store.create_webhook(fields.new_webhook(who.workspace_id, who.owner))
    # The only answer that ever shows the whole secret.
    return success(
        show_webhook(webhook, reveal_secret=True),
        status=201,
        headers={"Location": f"/v1/webhooks/{webhook.id}"},
    )


async def list_webhooks(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    params = query(request, ("limit", "cursor"))
    limit, cursor = parse_limit(params), parse_cursor(params)
    try:
        result = await ctx.store.list_webhooks(principal(request).workspace_id, limit, cursor)
    except ValueError:
        raise bad_request("cursor", "is not a cursor returned by this list") from None
    return page([show_webhook(w) for w in result.items], result.next_cursor)


async def _own_webhook(request: web.Request, ctx: AppContext, webhook_id: str) -> Webhook:
    webhook = await ctx.store.get_webhook(principal(request).workspace_id, webhook_id)
    if webhook is None:
        raise not_found()
    return webhook


async def get_webhook(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    webhook_id = path_id(request)
    query(request)
    return success(show_webhook(await _own_webhook(request, ctx, webhook_id)))


async def update_webhook(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    webhook_id = path_id(request)
    query(request)
    _, update = webhook_bodies(ctx.config.delivery.max_timeout_ms)
    changes = webhook_changes(await read_body(request, update), ctx.config.delivery.allow_networks)
    webhook = await ctx.store.update_webhook(
        principal(request).workspace_id,
        webhook_id,
        changes,
        round(ctx.config.delivery.secret_grace_seconds * 1000),
    )
    if webhook is None:
        raise not_found()
    # Re-activation (or a new URL) can make waiting deliveries claimable now.
    ctx.scheduler.wake()
    return success(show_webhook(webhook))


async def delete_webhook(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    webhook_id = path_id(request)
    query(request)
    if not await ctx.store.delete_webhook(principal(request).workspace_id, webhook_id):
        raise not_found()
    return success(WebhookDeleted(id=webhook_id, deleted=True))


async def _send_test(ctx: AppContext, webhook: Webhook) -> TestResult:
    claim = await ctx.store.create_test_delivery(
        webhook,
        TEST_EVENT_TYPE,
        {"message": "This is a test webhook from hookd", "webhookId": webhook.id},
    )
    report = await ctx.attempts.attempt(claim, test=True)
    result = report.result
    # A deletion of the webhook during the send ends the delivery first: the
    # status says so.
    return TestResult(
        status_code=result.status_code,
        delivered=report.finished.transition.status is Status.DELIVERED,
        error=result.error_text if result.error_text is not None else UNSET,
        delivery_id=claim.delivery_id,
        status=report.status.value,
        response_body=result.body,
    )


async def test_webhook(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    webhook_id = path_id(request)
    query(request)
    await read_body(request, EmptyRequest | None)
    # Inactive webhooks can be tested too: that is how one checks an endpoint
    # before switching it back on.
    webhook = await _own_webhook(request, ctx, webhook_id)
    return success(await finish_even_if_cancelled(_send_test(ctx, webhook)))


async def replay_webhook(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    webhook_id = path_id(request)
    query(request)
    body = await read_body(request, BulkReplayRequest | None) or BulkReplayRequest()
    since_ms = parse_timestamp(body.since, "since") if isinstance(body.since, str) else None
    count = await ctx.store.replay_webhook(principal(request).workspace_id, webhook_id, since_ms)
    if count is None:
        raise not_found()
    if count:
        ctx.scheduler.wake()
    return success(BulkReplay(webhook_id=webhook_id, count=count))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/webhooks", create_webhook, expect_handler=expect_continue)
    app.router.add_get("/v1/webhooks", list_webhooks, expect_handler=expect_continue)
    app.router.add_get("/v1/webhooks/{id}", get_webhook, expect_handler=expect_continue)
    app.router.add_patch("/v1/webhooks/{id}", update_webhook, expect_handler=expect_continue)
    app.router.add_delete("/v1/webhooks/{id}", delete_webhook, expect_handler=expect_continue)
    app.router.add_post("/v1/webhooks/{id}/test", test_webhook, expect_handler=expect_continue)
    app.router.add_post("/v1/webhooks/{id}/replay", replay_webhook, expect_handler=expect_continue)
