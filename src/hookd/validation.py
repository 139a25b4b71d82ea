"""Validation of webhook and event input, shared by the API and the CLI.

Every rejection is a :class:`ValidationError` naming the offending field in
the API's camelCase, so the 400 body can say exactly what to fix.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hookd.config import MAX_RETRY_ATTEMPTS, MAX_TIMEOUT_MS, MIN_TIMEOUT_MS
from hookd.models import NewWebhook, WebhookStatus
from hookd.sender.addresses import AddressPolicy, destination_problem
from hookd.sender.signing import is_valid_whsec
from hookd.storage.base import WebhookChanges

DEFAULT_RETRY_ATTEMPTS = 3
DEFAULT_TIMEOUT_MS = 10_000
MAX_NAME_CHARS = 200
MAX_URL_CHARS = 2048
MAX_EVENTS = 100
MAX_SECRET_CHARS = 512
MIN_SECRET_CHARS = 8
# Event types: dotted words, e.g. "email.replied"; a pattern may end in ".*" or be "*".
EVENT_TYPE_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
MAX_EVENT_TYPE_CHARS = 200

WEBHOOK_CREATE_FIELDS = frozenset({"name", "url", "events", "secret", "retryAttempts", "timeoutMs"})
WEBHOOK_UPDATE_FIELDS = WEBHOOK_CREATE_FIELDS | {"status"}


class ValidationError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class WebhookFields:
    name: str
    url: str
    events: tuple[str, ...]
    secret: str | None
    retry_attempts: int
    timeout_ms: int

    def new_webhook(self, workspace_id: str, created_by: str) -> NewWebhook:
        """The webhook to create; a secret not given is 32 random bytes as hex."""
        return NewWebhook(
            workspace_id=workspace_id,
            name=self.name,
            url=self.url,
            events=self.events,
            secret=self.secret or secrets.token_hex(32),
            retry_attempts=self.retry_attempts,
            timeout_ms=self.timeout_ms,
            created_by=created_by,
        )


def _reject_unknown(body: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in body:
        if key not in allowed:
            raise ValidationError(key, f"unknown field; allowed: {', '.join(sorted(allowed))}")


def validate_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError("name", "must be a string")
    name = value.strip()
    if not name:
        raise ValidationError("name", "must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise ValidationError("name", f"must be at most {MAX_NAME_CHARS} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ValidationError("name", "must not contain control characters")
    return name


def validate_url(value: Any, field: str = "url") -> str:
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > MAX_URL_CHARS:
        raise ValidationError(field, f"must be at most {MAX_URL_CHARS} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        raise ValidationError(field, "must not contain whitespace or control characters (CR/LF)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(field, f"is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationError(field, "must be an absolute http:// or https:// URL")
    if not parts.hostname:
        raise ValidationError(field, "must be an absolute URL with a host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValidationError(field, "must not contain credentials (user:password@)")
    if port == 0:
        raise ValidationError(field, "port must be between 1 and 65535")
    if parts.fragment:
        raise ValidationError(field, "must not contain a fragment (#...)")
    return value


def validate_destination(url: str, allow_networks: Iterable[str], field: str = "url") -> str:
    """Refuse a URL that obviously leads to internal space (no DNS; see sender.addresses).

    A courtesy to the user: the check that counts runs at connect time.
    """
    problem = destination_problem(url, AddressPolicy(allow_networks))
    if problem is not None:
        raise ValidationError(field, problem)
    return url


def validate_event_type(value: Any, field: str = "type") -> str:
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > MAX_EVENT_TYPE_CHARS:
        raise ValidationError(field, f"must be at most {MAX_EVENT_TYPE_CHARS} characters")
    # fullmatch: "$" in a pattern also matches before a trailing newline.
    if not EVENT_TYPE_RE.fullmatch(value):
        raise ValidationError(field, "must be dotted words of letters, digits, '_' or '-'")
    return value


def validate_events(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValidationError("events", "must be a list of event types")
    if not value:
        raise ValidationError("events", "must not be empty")
    if len(value) > MAX_EVENTS:
        raise ValidationError("events", f"must have at most {MAX_EVENTS} entries")
    out: list[str] = []
    for i, item in enumerate(value):
        field = f"events[{i}]"
        if not isinstance(item, str):
            raise ValidationError(field, "must be a string")
        if item == "*":
            pattern = item
        elif item.endswith(".*"):
            validate_event_type(item[:-2], field)
            pattern = item
        else:
            pattern = validate_event_type(item, field)
        if pattern not in out:
            out.append(pattern)
    return tuple(out)


def validate_secret(value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError("secret", "must be a string")
    if not MIN_SECRET_CHARS <= len(value) <= MAX_SECRET_CHARS:
        raise ValidationError(
            "secret", f"must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters"
        )
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise ValidationError("secret", "must not contain whitespace or control characters")
    if not is_valid_whsec(value):
        raise ValidationError("secret", "whsec_ secrets must be followed by valid base64")
    return value


def validate_int(value: Any, field: str, low: int, high: int) -> int:
    # bool is an int in Python; true/false for a count is a client bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, "must be an integer")
    if not low <= value <= high:
        raise ValidationError(field, f"must be between {low} and {high}")
    return value


def validate_new_webhook(
    body: Any, max_timeout_ms: int = MAX_TIMEOUT_MS, allow_networks: Iterable[str] = ()
) -> WebhookFields:
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    _reject_unknown(body, WEBHOOK_CREATE_FIELDS)
    for required in ("name", "url", "events"):
        if required not in body:
            raise ValidationError(required, "is required")
    return WebhookFields(
        name=validate_name(body["name"]),
        url=validate_destination(validate_url(body["url"]), allow_networks),
        events=validate_events(body["events"]),
        secret=validate_secret(body["secret"]) if body.get("secret") is not None else None,
        retry_attempts=validate_int(
            body.get("retryAttempts", DEFAULT_RETRY_ATTEMPTS),
            "retryAttempts",
            0,
            MAX_RETRY_ATTEMPTS,
        ),
        timeout_ms=validate_int(
            body.get("timeoutMs", min(DEFAULT_TIMEOUT_MS, max_timeout_ms)),
            "timeoutMs",
            MIN_TIMEOUT_MS,
            max_timeout_ms,
        ),
    )


def validate_status(value: Any) -> WebhookStatus:
    if not isinstance(value, str):
        raise ValidationError("status", "must be a string")
    try:
        return WebhookStatus(value)
    except ValueError:
        raise ValidationError("status", "must be 'active' or 'inactive'") from None


def validate_webhook_update(
    body: Any, max_timeout_ms: int = MAX_TIMEOUT_MS, allow_networks: Iterable[str] = ()
) -> WebhookChanges:
    """A PATCH body: only the fields given change; ``null`` is never "unset"."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    _reject_unknown(body, WEBHOOK_UPDATE_FIELDS)
    if not body:
        # An empty PATCH is almost always a client bug (wrong body sent); say so
        # rather than bumping updatedAt for nothing.
        raise ValidationError("body", "must name at least one field to change")
    return WebhookChanges(
        name=validate_name(body["name"]) if "name" in body else None,
        url=(
            validate_destination(validate_url(body["url"]), allow_networks)
            if "url" in body
            else None
        ),
        events=validate_events(body["events"]) if "events" in body else None,
        secret=validate_secret(body["secret"]) if "secret" in body else None,
        retry_attempts=(
            validate_int(body["retryAttempts"], "retryAttempts", 0, MAX_RETRY_ATTEMPTS)
            if "retryAttempts" in body
            else None
        ),
        timeout_ms=(
            validate_int(body["timeoutMs"], "timeoutMs", MIN_TIMEOUT_MS, max_timeout_ms)
            if "timeoutMs" in body
            else None
        ),
        status=validate_status(body["status"]) if "status" in body else None,
    )


EVENT_FIELDS = frozenset({"type", "data", "idempotencyKey"})
MAX_IDEMPOTENCY_KEY_CHARS = 255


@dataclass(frozen=True, slots=True)
class EventFields:
    type: str
    data: Any
    idempotency_key: str | None


def validate_idempotency_key(value: Any, field: str = "idempotencyKey") -> str:
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise ValidationError(field, f"must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    # Printable ASCII only: the key also travels as an HTTP header.
    if any(not 0x21 <= ord(c) <= 0x7E for c in value):
        raise ValidationError(field, "must be printable ASCII without spaces")
    return value


def validate_event_body(body: Any, where: str = "") -> EventFields:
    """``POST /v1/events``: ``type`` (no wildcards), any JSON ``data``, optional key.

    ``where`` names the event inside a larger body (``events[3]``), so that
    every field in a rejection is named by its full path (``events[3].type``).
    """
    prefix = f"{where}." if where else ""
    if not isinstance(body, dict):
        raise ValidationError(where or "body", "must be a JSON object")
    for name in body:
        if name not in EVENT_FIELDS:
            raise ValidationError(
                prefix + name, f"unknown field; allowed: {', '.join(sorted(EVENT_FIELDS))}"
            )
    for required in ("type", "data"):
        if required not in body:
            raise ValidationError(prefix + required, "is required")
    key = body.get("idempotencyKey")
    return EventFields(
        type=validate_event_type(body["type"], prefix + "type"),
        data=body["data"],
        idempotency_key=(
            validate_idempotency_key(key, prefix + "idempotencyKey") if key is not None else None
        ),
    )


BATCH_FIELDS = frozenset({"events"})
MAX_BATCH_EVENTS = 500


def validate_event_batch(body: Any, max_events: int = MAX_BATCH_EVENTS) -> list[EventFields]:
    """``POST /v1/events/batch``: ``{"events": [event, ...]}``, 1 to ``max_events`` of them.

    Every event is checked before anything is stored; the first problem found
    names its event by index.
    """
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    _reject_unknown(body, BATCH_FIELDS)
    if "events" not in body:
        raise ValidationError("events", "is required")
    events = body["events"]
    if not isinstance(events, list):
        raise ValidationError("events", "must be a list of events")
    if not events:
        raise ValidationError("events", "must not be empty")
    if len(events) > max_events:
        raise ValidationError("events", f"must have at most {max_events} entries")
    return [validate_event_body(event, f"events[{i}]") for i, event in enumerate(events)]
