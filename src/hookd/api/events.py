"""``POST /v1/events`` and ``POST /v1/events/batch``: ingest events and fan them out, atomically."""

from __future__ import annotations

from aiohttp import web

from hookd.api.auth import expect_continue, principal
from hookd.api.context import CONTEXT
from hookd.api.errors import ApiError, bad_request
from hookd.api.inputs import query, read_body
from hookd.api.serialize import show_event, success
from hookd.bodies import EventBatchCreate, EventCreate, IdempotencyKey
from hookd.storage import IdempotencyConflict, NewEvent, QuotaExceeded
from hookd.validation import read

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


def _idempotency_key(request: web.Request, from_body: str | None) -> str | None:
    values = request.headers.getall(IDEMPOTENCY_HEADER, [])
    if len(values) > 1:
        raise bad_request(IDEMPOTENCY_HEADER, "send the header only once")
    if not values:
        return from_body
    from_header: str = read(IdempotencyKey, values[0], IDEMPOTENCY_HEADER)
    if from_body is not None and from_body != from_header:
        raise bad_request("idempotencyKey", f"differs from the {IDEMPOTENCY_HEADER} header")
    return from_header


async def ingest_event(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    query(request)
    fields = await read_body(request, EventCreate)
    key = _idempotency_key(request, fields.idempotency_key)
    try:
        result = await ctx.store.ingest_event(
            principal(request).workspace_id, fields.type, fields.data, key
        )
    except IdempotencyConflict as exc:
        # 422 as the IETF Idempotency-Key draft asks for a key reused with another
        # payload; the message names the key and what differs.
        raise ApiError(422, str(exc)) from None
    except (ValueError, TypeError) as exc:  # pragma: no cover - the strict parser prevents it
        raise bad_request("data", f"cannot be stored: {exc}") from None
    # Counts only what was committed for the first time (repeats are skipped inside).
    ctx.metrics.observe_ingest(result)
    headers: dict[str, str] = {}
    if result.duplicate:
        headers[REPLAYED_HEADER] = "true"
    elif result.delivery_ids:
        ctx.scheduler.wake()
    return success(
        show_event(result.event, result.delivery_ids, result.duplicate),
        status=202,
        headers=headers,
    )


async def ingest_batch(request: web.Request) -> web.Response:
    """Every event of the body, each with its fan-out, in one durable commit, or none.

    Per-event idempotency keys only: a batch-wide ``Idempotency-Key`` header
    would have to mean something for each event, so it is refused rather than
    silently ignored.
    """
    ctx = request.app[CONTEXT]
    query(request)
    if IDEMPOTENCY_HEADER in request.headers:
        raise bad_request(
            IDEMPOTENCY_HEADER, "not accepted on a batch; give each event its idempotencyKey"
        )
    batch = await read_body(request, EventBatchCreate)
    quota = ctx.config.quotas.events_per_batch
    if len(batch.events) > quota:
        raise QuotaExceeded(
            "events_per_batch",
            f"the batch has {len(batch.events)} events; the quota is {quota}",
            status=413,
        )
    events = [NewEvent(e.type, e.data, e.idempotency_key) for e in batch.events]
    try:
        results = await ctx.store.ingest_events(principal(request).workspace_id, events)
    except IdempotencyConflict as exc:
        # The message names the event: "events[3].idempotencyKey: already used ...".
        raise ApiError(422, str(exc)) from None
    except (ValueError, TypeError) as exc:  # pragma: no cover - the strict parser prevents it
        raise ApiError(400, str(exc)) from None  # "events[3].data: ..."
    created = False
    replayed = True
    for result in results:
        ctx.metrics.observe_ingest(result)
        if not result.duplicate:
            replayed = False
            created = created or bool(result.delivery_ids)
    if created:
        ctx.scheduler.wake()
    return success(
        [show_event(r.event, r.delivery_ids, r.duplicate) for r in results],
        status=202,
        # As on the single route: the whole answer is a replay of earlier ones.
        headers={REPLAYED_HEADER: "true"} if replayed else {},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/events", ingest_event, expect_handler=expect_continue)
    app.router.add_post("/v1/events/batch", ingest_batch, expect_handler=expect_continue)
