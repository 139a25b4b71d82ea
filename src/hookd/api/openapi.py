"""``GET /v1/openapi.json``: the OpenAPI 3.1 description of every route.

The document is built from the same constants the validators use, and
``tests/api/test_fuzz.py`` fuzzes the running API from it (schemathesis), so
it stays true: every response must match it, and everything it forbids the
API must refuse.  Request schemas are therefore never *stricter* than the
validators (a value the schema rejects must be a 4xx); where the validators
check more than JSON Schema can say (a URL's credentials, a ``whsec_``
secret's base64), the description says so.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hookd import __version__
from hookd.api.auth import API_KEY_HEADER, WORKSPACE_HEADER
from hookd.api.context import CONTEXT
from hookd.api.inputs import DEFAULT_LIMIT, MAX_CURSOR_CHARS, MAX_DEPTH, MAX_LIMIT, MIN_LIMIT
from hookd.config import MAX_RETRY_ATTEMPTS, MIN_TIMEOUT_MS, Config
from hookd.models import Status
from hookd.validation import (
    DEFAULT_RETRY_ATTEMPTS,
    DEFAULT_TIMEOUT_MS,
    MAX_BATCH_EVENTS,
    MAX_EVENT_TYPE_CHARS,
    MAX_EVENTS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_SECRET_CHARS,
    MAX_URL_CHARS,
    MIN_SECRET_CHARS,
)

JSON = "application/json"
ID_PATTERN = "^[0-9a-f]{24}$"
WORD = "[A-Za-z0-9_-]+"
EVENT_TYPE_PATTERN = f"^{WORD}(\\.{WORD})*$"
EVENT_PATTERN_PATTERN = f"^(\\*|{WORD}(\\.{WORD})*(\\.\\*)?)$"
TIMESTAMP_EXAMPLE = "2024-06-01T10:00:00.000Z"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema["type"]
    return {**schema, "type": [kind, "null"]}


def _timestamp(description: str = "ISO 8601 UTC with milliseconds") -> dict[str, Any]:
    return {"type": "string", "description": description, "examples": [TIMESTAMP_EXAMPLE]}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _success(data: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["success", "data"],
                    "additionalProperties": False,
                    "properties": {"success": {"const": True}, "data": data},
                }
            }
        },
    }


def _list(item: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["success", "data", "nextCursor"],
                    "additionalProperties": False,
                    "properties": {
                        "success": {"const": True},
                        "data": {"type": "array", "items": _ref(item)},
                        "nextCursor": {
                            "type": ["string", "null"],
                            "description": "pass as `cursor` for the next page; null on the last",
                        },
                    },
                }
            }
        },
    }


def _schemas(config: Config) -> dict[str, Any]:
    max_timeout = config.delivery.max_timeout_ms
    name: dict[str, Any] = {
        "type": "string",
        "minLength": 1,
        "description": "trimmed; at least 1 and at most 200 characters after trimming,"
        " no control characters",
    }
    url: dict[str, Any] = {
        "type": "string",
        "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
        "maxLength": MAX_URL_CHARS,
        "description": "absolute http:// or https:// URL with a host; no whitespace or"
        " control characters (CR/LF), no user:password@, no #fragment",
        "examples": ["https://crm.example.com/webhooks/sendkit"],
    }
    events: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_EVENTS,
        "items": {
            "type": "string",
            "pattern": EVENT_PATTERN_PATTERN,
            "maxLength": MAX_EVENT_TYPE_CHARS + 2,
        },
        "description": "event types to receive: exact types (`email.replied`), `prefix.*`"
        " (every type under prefix, at any depth) or `*`; duplicates are dropped",
    }
    secret: dict[str, Any] = {
        "type": "string",
        "minLength": MIN_SECRET_CHARS,
        "maxLength": MAX_SECRET_CHARS,
        "pattern": "^[^\\x00-\\x20\\x7f]+$",
        "description": "HMAC signing secret; the UTF-8 bytes are the key, except"
        " `whsec_<base64>` whose decoded bytes are (the base64 must be valid)",
    }
    retry_attempts: dict[str, Any] = {
        "type": "integer",
        "minimum": 0,
        "maximum": MAX_RETRY_ATTEMPTS,
    }
    timeout_ms: dict[str, Any] = {
        "type": "integer",
        "minimum": MIN_TIMEOUT_MS,
        "maximum": max_timeout,
    }
    webhook_status: dict[str, Any] = {"type": "string", "enum": ["active", "inactive"]}
    delivery_status: dict[str, Any] = {"type": "string", "enum": [s.value for s in Status]}
    delivery: dict[str, Any] = {
        "type": "object",
        "required": [
            "_id",
            "workspaceId",
            "eventId",
            "webhookId",
            "eventType",
            "status",
            "attemptCount",
            "nextAttemptAt",
            "lastStatusCode",
            "lastError",
            "lastResponseBody",
            "isTest",
            "createdAt",
            "updatedAt",
        ],
        "additionalProperties": False,
        "properties": {
            "_id": {"type": "string", "pattern": ID_PATTERN},
            "workspaceId": {"type": "string"},
            "eventId": {"type": "string", "pattern": ID_PATTERN},
            "webhookId": {"type": "string", "pattern": ID_PATTERN},
            "eventType": {"type": "string"},
            "status": delivery_status,
            "attemptCount": {
                "type": "integer",
                "minimum": 0,
                "description": "every attempt made, 429s included",
            },
            "nextAttemptAt": {
                **_timestamp("when the next attempt is due; null when terminal"),
                "type": ["string", "null"],
            },
            "lastStatusCode": {"type": ["integer", "null"]},
            "lastError": {"type": ["string", "null"]},
            "lastResponseBody": {"type": ["string", "null"], "maxLength": 256},
            "isTest": {"type": "boolean", "description": "made by POST .../test"},
            "createdAt": _timestamp(),
            "updatedAt": _timestamp(),
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error", "message", "code"],
            "additionalProperties": False,
            "properties": {
                "error": {"type": "string", "description": "the status code's reason phrase"},
                "message": {
                    "type": "string",
                    "description": "what is wrong, starting with the field, parameter or"
                    " header to blame",
                },
                "code": {"type": "integer", "description": "the HTTP status code"},
            },
            "examples": [
                {
                    "error": "Not Found",
                    "message": "The requested resource was not found",
                    "code": 404,
                }
            ],
        },
        "Webhook": {
            "type": "object",
            "required": [
                "_id",
                "workspaceId",
                "name",
                "url",
                "events",
                "secret",
                "retryAttempts",
                "timeoutMs",
                "status",
                "createdBy",
                "createdAt",
                "updatedAt",
            ],
            "additionalProperties": False,
            "properties": {
                "_id": {"type": "string", "pattern": ID_PATTERN},
                "workspaceId": {"type": "string"},
                "name": {"type": "string"},
                "url": {"type": "string"},
                "events": {"type": "array", "items": {"type": "string"}},
                "secret": {
                    "type": "string",
                    "description": "in full only in the create response; elsewhere the first"
                    " 12 characters (at most a third of the secret) then `...`",
                },
                "retryAttempts": {"type": "integer"},
                "timeoutMs": {"type": "integer"},
                "status": webhook_status,
                "disabledReason": {
                    "type": ["string", "null"],
                    "description": "present only while inactive: why (e.g. `endpoint answered"
                    " 410 Gone`, `disabled by API`)",
                },
                "createdBy": {"type": "string", "description": "owner of the creating key"},
                "createdAt": _timestamp(),
                "updatedAt": _timestamp(),
            },
        },
        "WebhookCreate": {
            "type": "object",
            "required": ["name", "url", "events"],
            "additionalProperties": False,
            "properties": {
                "name": name,
                "url": url,
                "events": events,
                "secret": {
                    **_nullable(secret),
                    "description": "omitted or null: 32 random bytes as hex. "
                    + secret["description"],
                },
                "retryAttempts": {**retry_attempts, "default": DEFAULT_RETRY_ATTEMPTS},
                "timeoutMs": {**timeout_ms, "default": min(DEFAULT_TIMEOUT_MS, max_timeout)},
            },
        },
        "WebhookUpdate": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "description": "only the fields given change; null is not accepted for any",
            "properties": {
                "name": name,
                "url": url,
                "events": events,
                "secret": {
                    **secret,
                    "description": "the previous secret keeps signing alongside for"
                    f" {config.delivery.secret_grace_seconds:g} s. " + secret["description"],
                },
                "retryAttempts": retry_attempts,
                "timeoutMs": timeout_ms,
                "status": {
                    **webhook_status,
                    "description": "inactive webhooks get no new deliveries; their pending"
                    " ones wait until re-activated",
                },
            },
        },
        "WebhookDeleted": {
            "type": "object",
            "required": ["_id", "deleted"],
            "additionalProperties": False,
            "properties": {
                "_id": {"type": "string", "pattern": ID_PATTERN},
                "deleted": {"const": True},
            },
        },
        "TestResult": {
            "type": "object",
            "required": ["statusCode", "delivered", "deliveryId", "status", "responseBody"],
            "additionalProperties": False,
            "properties": {
                "statusCode": {
                    "type": ["integer", "null"],
                    "description": "null on timeout or connection failure",
                },
                "delivered": {"type": "boolean"},
                "error": {
                    "type": "string",
                    "description": "present only when the request failed without a status,"
                    " e.g. `The operation was aborted due to timeout`",
                },
                "deliveryId": {"type": "string", "pattern": ID_PATTERN},
                "status": {**delivery_status, "enum": ["delivered", "dead_letter"]},
                "responseBody": {
                    "type": ["string", "null"],
                    "maxLength": 256,
                    "description": "first 256 characters of the response body",
                },
            },
        },
        "ReplayResult": {
            "type": "object",
            "required": ["deliveryId", "status", "httpStatusCode", "responseBody"],
            "additionalProperties": False,
            "properties": {
                "deliveryId": {"type": "string", "pattern": ID_PATTERN},
                "status": delivery_status,
                "httpStatusCode": {
                    "type": ["integer", "null"],
                    "description": "null when no response was received, or when the"
                    " webhook is inactive and the replay was only queued",
                },
                "responseBody": {"type": ["string", "null"], "maxLength": 256},
                "error": {
                    "type": "string",
                    "description": "present only when the attempt failed without a status",
                },
            },
        },
        "BulkReplay": {
            "type": "object",
            "required": ["webhookId", "count"],
            "additionalProperties": False,
            "properties": {
                "webhookId": {"type": "string", "pattern": ID_PATTERN},
                "count": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "dead_letter deliveries put back to pending",
                },
            },
        },
        "BulkReplayRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "since": {
                    "type": "string",
                    "description": "only deliveries created at or after this ISO 8601"
                    " timestamp (with a zone)",
                    "examples": [TIMESTAMP_EXAMPLE],
                }
            },
        },
        "EmptyRequest": {
            "type": "object",
            "additionalProperties": False,
            "maxProperties": 0,
            "description": "no fields; the body may also be omitted",
        },
        "EventCreate": {
            "type": "object",
            "required": ["type", "data"],
            "additionalProperties": False,
            "properties": {
                "type": {
                    "type": "string",
                    "pattern": EVENT_TYPE_PATTERN,
                    "maxLength": MAX_EVENT_TYPE_CHARS,
                    "examples": ["email.replied"],
                },
                "data": {
                    "description": "any JSON value (no NaN/Infinity, no lone surrogates,"
                    f" no duplicate keys, nested at most {MAX_DEPTH} levels with the envelope)",
                },
                "idempotencyKey": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
                    "pattern": "^[\\x21-\\x7e]+$",
                    "description": "same as the Idempotency-Key header (they must agree)",
                },
            },
        },
        "EventBatchCreate": {
            "type": "object",
            "required": ["events"],
            "additionalProperties": False,
            "properties": {
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH_EVENTS,
                    "items": _ref("EventCreate"),
                    "description": "stored in one transaction, all or none; each event's"
                    " data nests at most"
                    f" {MAX_DEPTH - 2} levels (the batch envelope takes two of the"
                    f" {MAX_DEPTH}); the whole body stays under the configured"
                    " server.max_body_bytes",
                }
            },
        },
        "EventAccepted": {
            "type": "object",
            "required": [
                "_id",
                "workspaceId",
                "type",
                "idempotencyKey",
                "createdAt",
                "deliveryIds",
                "duplicate",
            ],
            "additionalProperties": False,
            "properties": {
                "_id": {"type": "string", "pattern": ID_PATTERN, "description": "event id"},
                "workspaceId": {"type": "string"},
                "type": {"type": "string"},
                "idempotencyKey": {"type": ["string", "null"]},
                "createdAt": _timestamp(),
                "deliveryIds": {
                    "type": "array",
                    "items": {"type": "string", "pattern": ID_PATTERN},
                    "description": "one delivery per matching active webhook",
                },
                "duplicate": {
                    "type": "boolean",
                    "description": "true when the idempotency key was seen before: the first"
                    " event is returned and nothing new was created",
                },
            },
        },
        "Attempt": {
            "type": "object",
            "required": [
                "_id",
                "number",
                "startedAt",
                "durationMs",
                "statusCode",
                "error",
                "responseBody",
                "outcome",
            ],
            "additionalProperties": False,
            "properties": {
                "_id": {"type": "string", "pattern": ID_PATTERN},
                "number": {"type": "integer", "minimum": 1},
                "startedAt": _timestamp(),
                "durationMs": {"type": "integer", "minimum": 0},
                "statusCode": {"type": ["integer", "null"]},
                "error": {"type": ["string", "null"]},
                "responseBody": {"type": ["string", "null"], "maxLength": 256},
                "outcome": {
                    "type": "string",
                    "enum": [
                        "2xx",
                        "3xx",
                        "4xx",
                        "429",
                        "5xx",
                        "timeout",
                        "connect_error",
                        "blocked",
                    ],
                },
            },
        },
        "Delivery": delivery,
        "DeliveryWithAttempts": {
            **delivery,
            "required": [*delivery["required"], "attempts"],
            "properties": {
                **delivery["properties"],
                "attempts": {"type": "array", "items": _ref("Attempt")},
            },
        },
    }


def _params() -> dict[str, Any]:
    def q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, **_d(description)}

    return {
        "WorkspaceId": {
            "name": WORKSPACE_HEADER,
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": "^ws_[A-Za-z0-9_-]{1,61}$"},
            "description": "required with a platform key (sk_user_...); with a workspace"
            " key (sk_...) it may only name the key's own workspace (else 403)",
        },
        "Id": {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "Resource ID (24 lowercase hex characters; anything else is 404)",
        },
        "Limit": q(
            "limit",
            {
                "type": "integer",
                "minimum": MIN_LIMIT,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
            },
            "page size",
        ),
        "Cursor": q(
            "cursor",
            {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR_CHARS},
            "`nextCursor` of the previous page",
        ),
    }


def _d(description: str) -> dict[str, str]:
    return {"description": description}


_AUTH_ERRORS = {
    "400": _error(f"bad request: a field, parameter or the {WORKSPACE_HEADER} header"),
    "401": {
        **_error("missing, unknown or revoked API key, or two different keys"),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "403": _error(f"a workspace key naming another workspace in {WORKSPACE_HEADER}"),
    "503": _error("the database is unavailable"),
}
_BODY_ERRORS = {
    "413": _error("body larger than the configured limit"),
    "415": _error("Content-Type is not application/json (utf-8)"),
}
_NOT_FOUND = {"404": _error("no such object in this workspace")}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    tag: str,
    op_id: str,
    path_id: bool = False,
    query: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    extra_headers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"$ref": "#/components/parameters/WorkspaceId"}]
    if path_id:
        params.append({"$ref": "#/components/parameters/Id"})
    params += query or []
    params += extra_headers or []
    out: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "parameters": params,
        "responses": {**responses, **_AUTH_ERRORS, **(_NOT_FOUND if path_id else {})},
    }
    if body is not None:
        out["requestBody"] = {"required": body_required, "content": {JSON: {"schema": body}}}
        out["responses"].update(_BODY_ERRORS)
    return out


def build_document(config: Config) -> dict[str, Any]:
    conflict = _error(
        "the delivery is not dead_letter (or is a test delivery, or its webhook was deleted)"
    )
    delivery_filters: list[dict[str, Any]] = [
        {"$ref": "#/components/parameters/Limit"},
        {"$ref": "#/components/parameters/Cursor"},
        {
            "name": "status",
            "in": "query",
            "schema": {"type": "string", "enum": [s.value for s in Status]},
        },
        {"name": "webhookId", "in": "query", "schema": {"type": "string", "pattern": ID_PATTERN}},
        {
            "name": "eventType",
            "in": "query",
            "schema": {
                "type": "string",
                "pattern": EVENT_TYPE_PATTERN,
                "maxLength": MAX_EVENT_TYPE_CHARS,
            },
            "description": "exact event type",
        },
        {
            "name": "since",
            "in": "query",
            "schema": {"type": "string"},
            "description": "created at or after (ISO 8601 with a zone)",
        },
        {
            "name": "until",
            "in": "query",
            "schema": {"type": "string"},
            "description": "created at or before (ISO 8601 with a zone; not before since)",
        },
    ]
    paths: dict[str, Any] = {
        "/v1/webhooks": {
            "post": _op(
                "Create a webhook",
                {
                    "201": {
                        **_success(
                            _ref("Webhook"), "created; the only answer with the full secret"
                        ),
                        "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
                    }
                },
                tag="webhooks",
                op_id="createWebhook",
                body=_ref("WebhookCreate"),
            ),
            "get": _op(
                "List webhooks (oldest first)",
                {"200": _list("Webhook", "a page of webhooks, secrets masked")},
                tag="webhooks",
                op_id="listWebhooks",
                query=[
                    {"$ref": "#/components/parameters/Limit"},
                    {"$ref": "#/components/parameters/Cursor"},
                ],
            ),
        },
        "/v1/webhooks/{id}": {
            "get": _op(
                "Get a webhook",
                {"200": _success(_ref("Webhook"), "the webhook, secret masked")},
                tag="webhooks",
                op_id="getWebhook",
                path_id=True,
            ),
            "patch": _op(
                "Update a webhook (only the fields given)",
                {"200": _success(_ref("Webhook"), "the updated webhook, secret masked")},
                tag="webhooks",
                op_id="updateWebhook",
                path_id=True,
                body=_ref("WebhookUpdate"),
            ),
            "delete": _op(
                "Delete a webhook; its unfinished deliveries end as dead_letter",
                {"200": _success(_ref("WebhookDeleted"), "deleted")},
                tag="webhooks",
                op_id="deleteWebhook",
                path_id=True,
            ),
        },
        "/v1/webhooks/{id}/test": {
            "post": _op(
                "Send a signed test payload synchronously (X-Webhook-Event: test)",
                {"200": _success(_ref("TestResult"), "the outcome of the single attempt")},
                tag="webhooks",
                op_id="testWebhook",
                path_id=True,
                body=_ref("EmptyRequest"),
                body_required=False,
            ),
        },
        "/v1/webhooks/{id}/replay": {
            "post": _op(
                "Put every dead_letter delivery of the webhook back to pending",
                {"200": _success(_ref("BulkReplay"), "how many were queued")},
                tag="webhooks",
                op_id="replayWebhook",
                path_id=True,
                body=_ref("BulkReplayRequest"),
                body_required=False,
            ),
        },
        "/v1/events": {
            "post": _op(
                "Ingest an event: one delivery per subscribed active webhook, atomically",
                {
                    "202": {
                        **_success(
                            _ref("EventAccepted"),
                            "accepted (or the first event for a repeated idempotency key)",
                        ),
                        "headers": {
                            "Idempotent-Replayed": {
                                "schema": {"type": "string", "enum": ["true"]},
                                "description": "present when an earlier event was returned",
                            }
                        },
                    },
                    "422": _error("idempotency key reused for another event type or data"),
                },
                tag="events",
                op_id="ingestEvent",
                body=_ref("EventCreate"),
                extra_headers=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
                            "pattern": "^[\\x21-\\x7e]+$",
                        },
                        "description": "a repeat within the idempotency window returns the"
                        " first event and creates nothing",
                    }
                ],
            )
        },
        "/v1/events/batch": {
            "post": _op(
                f"Ingest 1 to {MAX_BATCH_EVENTS} events in one durable commit, all or none",
                {
                    "202": {
                        **_success(
                            {"type": "array", "items": _ref("EventAccepted")},
                            "accepted: one entry per event, in request order (an event whose"
                            " idempotency key was seen before, earlier in the batch included,"
                            " gets the first event, duplicate: true)",
                        ),
                        "headers": {
                            "Idempotent-Replayed": {
                                "schema": {"type": "string", "enum": ["true"]},
                                "description": "present when every event of the batch was a"
                                " repeat, so nothing was created",
                            }
                        },
                    },
                    "422": _error(
                        "an event's idempotency key was reused for another event type or data"
                        " (the message names it: events[i].idempotencyKey); nothing was stored"
                    ),
                },
                tag="events",
                op_id="ingestEventBatch",
                body=_ref("EventBatchCreate"),
            )
        },
        "/v1/deliveries": {
            "get": _op(
                "List deliveries, newest first",
                {"200": _list("Delivery", "a page of deliveries")},
                tag="deliveries",
                op_id="listDeliveries",
                query=delivery_filters,
            )
        },
        "/v1/deliveries/{id}": {
            "get": _op(
                "Get a delivery with all its attempts",
                {"200": _success(_ref("DeliveryWithAttempts"), "the delivery")},
                tag="deliveries",
                op_id="getDelivery",
                path_id=True,
            )
        },
        "/v1/deliveries/{id}/replay": {
            "post": _op(
                "Replay a dead_letter delivery: fresh budget, first attempt before answering",
                {
                    "200": _success(_ref("ReplayResult"), "the first new attempt's outcome"),
                    "409": conflict,
                },
                tag="deliveries",
                op_id="replayDelivery",
                path_id=True,
                body=_ref("EmptyRequest"),
                body_required=False,
            )
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "alive",
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["status"],
                                    "properties": {"status": {"const": "ok"}},
                                }
                            }
                        },
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: database reachable and scheduler loop alive",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "ready",
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["status"],
                                    "properties": {"status": {"const": "ready"}},
                                }
                            }
                        },
                    },
                    "503": {
                        "description": "not ready",
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["status", "problems"],
                                    "properties": {
                                        "status": {"const": "unavailable"},
                                        "problems": {"type": "array", "items": {"type": "string"}},
                                    },
                                }
                            }
                        },
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text exposition",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "the OpenAPI 3.1 document",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hookd management API",
            "version": __version__,
            "description": "Webhooks, events, deliveries and replay. Success answers"
            ' `{"success": true, "data": ...}`; lists add `nextCursor`; errors answer'
            ' `{"error": <reason phrase>, "message": <field: problem>, "code": <status>}`.'
            " Unknown routes are 404 and wrong methods 405 in the same envelope; unknown"
            " query parameters and body fields are 400.",
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "webhooks"},
            {"name": "events"},
            {"name": "deliveries"},
            {"name": "operations"},
        ],
        "paths": {**paths, **_operator_paths()},
        "components": {
            "securitySchemes": {
                "ApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": API_KEY_HEADER,
                    "description": "Platform API key (sk_user_...) or Workspace API key (sk_...)",
                },
                "Bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the same API key as a Bearer token; if both headers are"
                    " sent they must carry the same key",
                },
            },
            "parameters": _params(),
            "schemas": {**_schemas(config), **_operator_schemas()},
        },
    }


def _operator_schemas() -> dict[str, Any]:
    """The read-only views of ``api/insight.py`` (what the dashboard shows)."""
    counts = {
        "type": "object",
        "required": [s.value for s in Status],
        "additionalProperties": False,
        "properties": {s.value: {"type": "integer", "minimum": 0} for s in Status},
    }
    return {
        "QueueStats": {
            "type": "object",
            "required": [
                "workspaceId",
                "deliveries",
                "inFlight",
                "oldestDueAt",
                "oldestDueAgeSeconds",
                "at",
            ],
            "additionalProperties": False,
            "properties": {
                "workspaceId": {"type": "string"},
                "deliveries": {**counts, "description": "the workspace's deliveries by status"},
                "inFlight": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "deliveries claimed under a lease right now",
                },
                "oldestDueAt": {
                    **_timestamp(
                        "when the oldest due delivery whose webhook may send became due;"
                        " null when nothing is due (inactive and 429-paused webhooks' work"
                        " waits on purpose and is left out)"
                    ),
                    "type": ["string", "null"],
                },
                "oldestDueAgeSeconds": {
                    "type": "number",
                    "minimum": 0,
                    "description": "how long it has waited (scheduling lag); 0 when nothing is due",
                },
                "at": _timestamp("when the figures were read"),
            },
        },
        "WebhookStats": {
            "type": "object",
            "required": [
                "webhookId",
                "status",
                "pausedUntil",
                "since",
                "delivered",
                "deadLettered",
                "successRate",
                "queued",
                "inFlight",
                "lastError",
            ],
            "additionalProperties": False,
            "description": "the last 24 hours of one webhook; test sends are not counted",
            "properties": {
                "webhookId": {"type": "string", "pattern": ID_PATTERN},
                "status": {"type": "string", "enum": ["active", "inactive"]},
                "pausedUntil": {
                    **_timestamp("end of a 429 pause in force (Retry-After); else null"),
                    "type": ["string", "null"],
                },
                "since": _timestamp("start of the window"),
                "delivered": {"type": "integer", "minimum": 0},
                "deadLettered": {"type": "integer", "minimum": 0},
                "successRate": {
                    "type": ["number", "null"],
                    "minimum": 0,
                    "maximum": 1,
                    "description": "delivered / (delivered + deadLettered) of the deliveries"
                    " that ended in the window; null when none did",
                },
                "queued": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "deliveries pending, failed or rate_limited",
                },
                "inFlight": {"type": "integer", "minimum": 0},
                "lastError": {
                    "type": ["object", "null"],
                    "description": "the latest attempt in the window without a 2xx answer",
                    "required": ["at", "statusCode", "error", "deliveryId"],
                    "additionalProperties": False,
                    "properties": {
                        "at": _timestamp(),
                        "statusCode": {"type": ["integer", "null"]},
                        "error": {"type": ["string", "null"]},
                        "deliveryId": {"type": "string", "pattern": ID_PATTERN},
                    },
                },
            },
        },
        "Event": {
            "type": "object",
            "required": ["_id", "workspaceId", "type", "idempotencyKey", "createdAt", "data"],
            "additionalProperties": False,
            "properties": {
                "_id": {"type": "string", "pattern": ID_PATTERN},
                "workspaceId": {"type": "string"},
                "type": {"type": "string"},
                "idempotencyKey": {"type": ["string", "null"]},
                "createdAt": _timestamp(),
                "data": {"description": "the event's data, as every attempt sends it"},
            },
        },
    }


def _operator_paths() -> dict[str, Any]:
    return {
        "/v1/stats": {
            "get": _op(
                "The workspace's queue: deliveries by status, in flight, oldest due",
                {"200": _success(_ref("QueueStats"), "the figures, read now")},
                tag="deliveries",
                op_id="getQueueStats",
            )
        },
        "/v1/webhooks/{id}/stats": {
            "get": _op(
                "One webhook's last 24 hours: success rate, last error, queued, in flight",
                {"200": _success(_ref("WebhookStats"), "the figures, read now")},
                tag="webhooks",
                op_id="getWebhookStats",
                path_id=True,
            )
        },
        "/v1/events/{id}": {
            "get": _op(
                "Get an event with its data",
                {"200": _success(_ref("Event"), "the event")},
                tag="events",
                op_id="getEvent",
                path_id=True,
            )
        },
    }


DOCUMENT: web.AppKey[dict[str, Any]] = web.AppKey("hookd_openapi", dict)


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT])


def add_routes(app: web.Application) -> None:
    app[DOCUMENT] = build_document(app[CONTEXT].config)
    app.router.add_get("/v1/openapi.json", openapi_json)
