"""Model objects as the API shows them: camelCase, ``_id``, ISO 8601 timestamps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from hookd.ids import iso_ms
from hookd.models import Attempt, Delivery, Event, Webhook, WebhookStatus

# As in the update-webhook reference: "a1b2c3d4e5f6...".
MASK_SHOWN_CHARS = 12
MASK_SUFFIX = "..."


def mask_secret(secret: str) -> str:
    # Never show more than a third of a secret: for a short one (8 characters
    # are allowed) the reference's 12 characters would be all of it.
    shown = min(MASK_SHOWN_CHARS, len(secret) // 3)
    return secret[:shown] + MASK_SUFFIX


def _ts(ms: int | None) -> str | None:
    return iso_ms(ms) if ms is not None else None


def webhook_json(w: Webhook, *, reveal_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "_id": w.id,
        "workspaceId": w.workspace_id,
        "name": w.name,
        "url": w.url,
        "events": list(w.events),
        "secret": w.secret if reveal_secret else mask_secret(w.secret),
        "retryAttempts": w.retry_attempts,
        "timeoutMs": w.timeout_ms,
        "status": w.status.value,
        "createdBy": w.created_by,
        "createdAt": iso_ms(w.created_at),
        "updatedAt": iso_ms(w.updated_at),
    }
    if w.status is WebhookStatus.INACTIVE:
        # Only present when inactive, so an active webhook has exactly the
        # reference's fields; says who or what disabled it (e.g. a 410 Gone).
        out["disabledReason"] = w.disabled_reason
    return out


def attempt_json(a: Attempt) -> dict[str, Any]:
    return {
        "_id": a.id,
        "number": a.number,
        "startedAt": iso_ms(a.started_at),
        "durationMs": a.duration_ms,
        "statusCode": a.status_code,
        "error": a.error,
        "responseBody": a.response_body,
        "outcome": a.outcome,
    }


def delivery_json(d: Delivery, attempts: Sequence[Attempt] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "_id": d.id,
        "workspaceId": d.workspace_id,
        "eventId": d.event_id,
        "webhookId": d.webhook_id,
        "eventType": d.event_type,
        "status": d.status.value,
        "attemptCount": d.attempt_count,
        "nextAttemptAt": _ts(d.next_attempt_at),
        "lastStatusCode": d.last_status_code,
        "lastError": d.last_error,
        "lastResponseBody": d.last_response_body,
        "isTest": d.is_test,
        "createdAt": iso_ms(d.created_at),
        "updatedAt": iso_ms(d.updated_at),
    }
    if attempts is not None:
        out["attempts"] = [attempt_json(a) for a in attempts]
    return out


# (ms, text) of the last timestamp formatted for an event: the events of one
# group commit share their creation time, and formatting costs more than the rest.
_last_event_time: tuple[int, str] = (-1, "")


def _event_time(ms: int) -> str:
    global _last_event_time
    last_ms, text = _last_event_time
    if ms != last_ms:
        text = iso_ms(ms)
        _last_event_time = (ms, text)
    return text


def event_json(e: Event, delivery_ids: Sequence[str], duplicate: bool) -> dict[str, Any]:
    return {
        "_id": e.id,
        "workspaceId": e.workspace_id,
        "type": e.type,
        "idempotencyKey": e.idempotency_key,
        "createdAt": _event_time(e.created_at),
        "deliveryIds": list(delivery_ids),
        "duplicate": duplicate,
    }


def success(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"success": True, "data": data}, status=status, headers=headers)


def page(items: list[dict[str, Any]], next_cursor: str | None) -> web.Response:
    return web.json_response({"success": True, "data": items, "nextCursor": next_cursor})
