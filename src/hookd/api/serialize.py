"""What the API answers: every response body, declared once.

Each answer is a :class:`msgspec.Struct` in the API's vocabulary (camelCase,
``_id``, ISO 8601 timestamps); msgspec encodes it, and the OpenAPI document's
response schemas are generated from the same classes.  A field that is only
sometimes present defaults to ``UNSET`` and is then left out.

Docstrings and descriptions here are shown to API users.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, Struct, UnsetType, field

from hookd import models
from hookd.bodies import TIMESTAMP_EXAMPLE, whole
from hookd.ids import ID_REGEX, iso_ms
from hookd.models import Status, WebhookStatus
from hookd.policy import METRIC_CLASSES
from hookd.sender.body import STORED_BODY_CHARS

# As in the update-webhook reference: "a1b2c3d4e5f6...".
MASK_SHOWN_CHARS = 12
MASK_SUFFIX = "..."

T = TypeVar("T")


def one_of(values: Iterable[str]) -> Meta:
    """A string from ``values`` (for a schema only: answers are not validated)."""
    return Meta(extra_json_schema={"enum": [str(value) for value in values]})


Id = Annotated[str, Meta(pattern=whole(ID_REGEX))]
Timestamp = Annotated[
    str, Meta(description="ISO 8601 UTC with milliseconds", examples=[TIMESTAMP_EXAMPLE])
]
ResponseText = Annotated[
    Annotated[str, Meta(max_length=STORED_BODY_CHARS)] | None,
    Meta(
        description=f"first {STORED_BODY_CHARS} characters of the response body; null when"
        " there was none, or the receiver's address is one only [delivery] allow_networks"
        " permits (unless record_internal_response_bodies)"
    ),
]
DeliveryStatus = Annotated[str, one_of(Status)]


class Answer(Struct, forbid_unknown_fields=True):
    """An object in an answer: exactly the fields declared.

    (Answers are only encoded; refusing unknown fields makes their schemas say
    ``additionalProperties: false``, which holds.)
    """


class Shown(Answer, rename="camel", omit_defaults=True):
    """An answer's object: camelCase on the wire, ``UNSET`` fields left out."""


class Webhook(Shown):
    """A webhook."""

    id: Id = field(name="_id")
    workspace_id: str
    name: str
    url: str
    events: list[str]
    secret: Annotated[
        str,
        Meta(
            description=f"in full only in the create response; elsewhere the first"
            f" {MASK_SHOWN_CHARS} characters (at most a third of the secret) then"
            f" `{MASK_SUFFIX}`"
        ),
    ]
    retry_attempts: int
    timeout_ms: int
    status: Annotated[str, one_of(WebhookStatus)]
    created_by: Annotated[str, Meta(description="owner of the creating key")]
    created_at: Timestamp
    updated_at: Timestamp
    disabled_reason: (
        Annotated[
            str | None,
            Meta(
                description="present only while inactive: why (e.g. `endpoint answered 410"
                " Gone`, `disabled by API`)"
            ),
        ]
        | UnsetType
    ) = UNSET


class WebhookDeleted(Shown):
    id: Id = field(name="_id")
    deleted: Literal[True]


class Attempt(Shown):
    """One HTTP request of a delivery."""

    id: Id = field(name="_id")
    number: Annotated[int, Meta(ge=1)]
    started_at: Timestamp
    duration_ms: Annotated[int, Meta(ge=0)]
    status_code: int | None
    error: str | None
    response_body: ResponseText
    outcome: Annotated[str, one_of(METRIC_CLASSES)]


class Delivery(Shown):
    """One event on its way to one webhook."""

    id: Id = field(name="_id")
    workspace_id: str
    event_id: Id
    webhook_id: Id
    event_type: str
    status: DeliveryStatus
    attempt_count: Annotated[int, Meta(ge=0, description="every attempt made, 429s included")]
    next_attempt_at: Annotated[
        str | None,
        Meta(
            description="when the next attempt is due; null when terminal",
            examples=[TIMESTAMP_EXAMPLE],
        ),
    ]
    last_status_code: int | None
    last_error: str | None
    last_response_body: ResponseText
    is_test: Annotated[bool, Meta(description="made by POST .../test")]
    created_at: Timestamp
    updated_at: Timestamp


class DeliveryWithAttempts(Delivery):
    """A delivery with every attempt made, oldest first."""

    attempts: list[Attempt]


class EventAccepted(Shown):
    """An accepted event and the deliveries it made."""

    id: Annotated[str, Meta(pattern=whole(ID_REGEX), description="event id")] = field(name="_id")
    workspace_id: str
    type: str
    idempotency_key: str | None
    created_at: Timestamp
    delivery_ids: Annotated[list[Id], Meta(description="one delivery per matching active webhook")]
    duplicate: Annotated[
        bool,
        Meta(
            description="true when the idempotency key was seen before: the first event is"
            " returned and nothing new was created"
        ),
    ]


class TestResult(Shown, kw_only=True):
    """The outcome of a test send's single attempt."""

    status_code: Annotated[int | None, Meta(description="null on timeout or connection failure")]
    delivered: bool
    error: (
        Annotated[
            str,
            Meta(
                description="present only when the request failed without a status, e.g."
                " `The operation was aborted due to timeout`"
            ),
        ]
        | UnsetType
    ) = UNSET
    delivery_id: Id
    status: Annotated[str, one_of([Status.DELIVERED, Status.DEAD_LETTER])]
    response_body: ResponseText


class ReplayResult(Shown):
    """The outcome of a replay's first new attempt."""

    delivery_id: Id
    status: DeliveryStatus
    http_status_code: Annotated[
        int | None,
        Meta(
            description="null when no response was received, or when the webhook is inactive"
            " and the replay was only queued"
        ),
    ]
    response_body: ResponseText
    error: (
        Annotated[str, Meta(description="present only when the attempt failed without a status")]
        | UnsetType
    ) = UNSET


class BulkReplay(Shown):
    webhook_id: Id
    count: Annotated[int, Meta(ge=0, description="dead_letter deliveries put back to pending")]


class Error(Answer):
    """Every error answer."""

    error: Annotated[str, Meta(description="the status code's reason phrase")]
    message: Annotated[
        str,
        Meta(description="what is wrong, starting with the field, parameter or header to blame"),
    ]
    code: Annotated[int, Meta(description="the HTTP status code")]


class Success(Answer, Generic[T]):
    """Every successful answer but a list's."""

    success: Literal[True]
    data: T


class Page(Answer, Generic[T], rename="camel"):
    """A page of a list, oldest or newest first as the list says."""

    success: Literal[True]
    data: list[T]
    next_cursor: Annotated[
        str | None, Meta(description="pass as `cursor` for the next page; null on the last")
    ]


class Alive(Answer):
    status: Literal["ok"]


class Ready(Answer):
    status: Literal["ready"]


class NotReady(Answer):
    status: Literal["unavailable"]
    problems: list[str]


def mask_secret(secret: str) -> str:
    # Never show more than a third of a secret: for a short one (8 characters
    # are allowed) the reference's 12 characters would be all of it.
    shown = min(MASK_SHOWN_CHARS, len(secret) // 3)
    return secret[:shown] + MASK_SUFFIX


def show_webhook(w: models.Webhook, *, reveal_secret: bool = False) -> Webhook:
    return Webhook(
        id=w.id,
        workspace_id=w.workspace_id,
        name=w.name,
        url=w.url,
        events=list(w.events),
        secret=w.secret if reveal_secret else mask_secret(w.secret),
        retry_attempts=w.retry_attempts,
        timeout_ms=w.timeout_ms,
        status=w.status.value,
        created_by=w.created_by,
        created_at=iso_ms(w.created_at),
        updated_at=iso_ms(w.updated_at),
        # Only present when inactive, so an active webhook has exactly the
        # reference's fields; says who or what disabled it (e.g. a 410 Gone).
        disabled_reason=w.disabled_reason if w.status is WebhookStatus.INACTIVE else UNSET,
    )


def show_attempt(a: models.Attempt) -> Attempt:
    return Attempt(
        id=a.id,
        number=a.number,
        started_at=iso_ms(a.started_at),
        duration_ms=a.duration_ms,
        status_code=a.status_code,
        error=a.error,
        response_body=a.response_body,
        outcome=a.outcome,
    )


def show_delivery(d: models.Delivery) -> Delivery:
    return Delivery(
        id=d.id,
        workspace_id=d.workspace_id,
        event_id=d.event_id,
        webhook_id=d.webhook_id,
        event_type=d.event_type,
        status=d.status.value,
        attempt_count=d.attempt_count,
        next_attempt_at=iso_ms(d.next_attempt_at) if d.next_attempt_at is not None else None,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        last_response_body=d.last_response_body,
        is_test=d.is_test,
        created_at=iso_ms(d.created_at),
        updated_at=iso_ms(d.updated_at),
    )


def show_delivery_with_attempts(
    d: models.Delivery, attempts: Sequence[models.Attempt]
) -> DeliveryWithAttempts:
    return DeliveryWithAttempts(
        **msgspec.structs.asdict(show_delivery(d)),
        attempts=[show_attempt(a) for a in attempts],
    )


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


def show_event(e: models.Event, delivery_ids: Sequence[str], duplicate: bool) -> EventAccepted:
    # Positional, in the declared order: the ingest route's answer, built for every event.
    created_at = _event_time(e.created_at)
    return EventAccepted(
        e.id, e.workspace_id, e.type, e.idempotency_key, created_at, list(delivery_ids), duplicate
    )


_ENCODER = msgspec.json.Encoder()


def json_response(
    body: Struct, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_ENCODER.encode(body),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


def success(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(Success(True, data), status=status, headers=headers)


def page(items: Sequence[Struct], next_cursor: str | None) -> web.Response:
    return json_response(Page(True, list(items), next_cursor))
