"""What a client may send: every request body, declared once.

Each body is a :class:`msgspec.Struct`; the constraints in its ``Meta``
(lengths, patterns, bounds, defaults, descriptions) are what the decoder
enforces and what the OpenAPI document shows, so the two cannot drift.
A constraint's ``extra`` may name the message a client sees when it fails
(see :func:`hookd.validation.invalid`); without one the message is generic.

What JSON Schema cannot say is checked after decoding, in
:mod:`hookd.validation`: a name's trimming, a URL's parts and destination,
a ``whsec_`` secret's base64, an exact event type's length, duplicates in a
subscription list.

Docstrings and descriptions here are shown to API users.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Annotated, Any, cast

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from hookd.config import MAX_BATCH_EVENTS, MAX_RETRY_ATTEMPTS, MAX_TIMEOUT_MS, MIN_TIMEOUT_MS
from hookd.models import WebhookStatus
from hookd.sender.signing import MIN_KEY_BYTES

DEFAULT_RETRY_ATTEMPTS = 3
DEFAULT_TIMEOUT_MS = 10_000
MAX_NAME_CHARS = 200
MAX_URL_CHARS = 2048
MAX_EVENTS = 100
MAX_SECRET_CHARS = 512
MAX_EVENT_TYPE_CHARS = 200
MAX_IDEMPOTENCY_KEY_CHARS = 255
# Receivers get an event as {"id", "type", ..., "data": data}: that body nests at most
# MAX_EVENT_DEPTH levels, so an event's data at most one level less, on every route.
MAX_EVENT_DEPTH = 32
MAX_DATA_DEPTH = MAX_EVENT_DEPTH - 1
# Any request body: room for a batch (its object, the list, an event) around the data;
# deeper is a 400, not a RecursionError.
MAX_DEPTH = MAX_DATA_DEPTH + 3
TIMESTAMP_EXAMPLE = "2024-06-01T10:00:00.000Z"
WILDCARD = ".*"


def whole(regex: str) -> str:
    """``regex`` matching a whole string, in Python and in JSON Schema alike.

    JSON Schema's ``$`` is the end of the text; Python's (the decoder's) also
    matches before a final newline, which the lookahead rules out.
    """
    return f"^(?:{regex})$(?!\\n)"


def problems(**messages: str) -> dict[str, Any]:
    """A constraint's own messages, by the ``Meta`` keyword that failed (or ``type``)."""
    return {"messages": messages}


WORD = "[A-Za-z0-9_-]+"
DOTTED = rf"{WORD}(?:\.{WORD})*"
NOT_DOTTED = "must be dotted words of letters, digits, '_' or '-'"

EventType = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_EVENT_TYPE_CHARS,
        pattern=whole(DOTTED),
        examples=["email.replied"],
        extra=problems(pattern=NOT_DOTTED),
    ),
]
# A subscription: an exact type, "prefix.*" (every type under prefix) or "*".
# At most MAX_EVENT_TYPE_CHARS before the wildcard; the length of an exact
# type is checked after decoding (validation.subscriptions).
EventPattern = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_EVENT_TYPE_CHARS + len(WILDCARD),
        pattern=whole(rf"\*|{DOTTED}(?:\.\*)?"),
        extra=problems(
            pattern=NOT_DOTTED, max_length=f"must be at most {MAX_EVENT_TYPE_CHARS} characters"
        ),
    ),
]


def sized(low: int, high: int, chars: str, problem: str) -> Meta:
    """A string of ``low`` to ``high`` characters, each in the class ``chars``."""
    length = f"must be {low} to {high} characters"
    return Meta(
        min_length=low,
        max_length=high,
        pattern=whole(f"{chars}+"),
        extra=problems(min_length=length, max_length=length, pattern=problem),
    )


# Printable ASCII only: the key also travels as an HTTP header.
IdempotencyKey = Annotated[
    str,
    sized(1, MAX_IDEMPOTENCY_KEY_CHARS, r"[\x21-\x7e]", "must be printable ASCII without spaces"),
]
Name = Annotated[
    str,
    Meta(
        min_length=1,
        description=f"trimmed; at least 1 and at most {MAX_NAME_CHARS} characters after"
        " trimming, no control characters",
    ),
]
Url = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_URL_CHARS,
        pattern="^[Hh][Tt][Tt][Pp][Ss]?://",
        description="absolute http:// or https:// URL with a host; no whitespace or"
        " control characters (CR/LF), no user:password@, no #fragment",
        examples=["https://crm.example.com/webhooks/sendkit"],
        extra=problems(pattern="must be an absolute http:// or https:// URL"),
    ),
]
EventPatterns = Annotated[
    list[EventPattern],
    Meta(
        min_length=1,
        max_length=MAX_EVENTS,
        description="event types to receive: exact types (`email.replied`), `prefix.*`"
        " (every type under prefix, at any depth) or `*`; duplicates are dropped",
        extra=problems(type="must be a list of event types"),
    ),
]
_SECRET = (
    "HMAC signing secret; the UTF-8 bytes are the key, except `whsec_<base64>` whose"
    f" decoded bytes are (the base64 must be valid). The key must be at least"
    f" {MIN_KEY_BYTES} bytes; 24 to 64 random bytes are recommended"
)
# The key's length is checked after decoding (validation.secret): it depends on
# the whsec_ prefix, which JSON Schema cannot say.
Secret = Annotated[
    str,
    sized(
        1,
        MAX_SECRET_CHARS,
        r"[^\x00-\x20\x7f]",
        "must not contain whitespace or control characters",
    ),
]
RetryAttempts = Annotated[int, Meta(ge=0, le=MAX_RETRY_ATTEMPTS)]


def _timeout_ms(most: int) -> Meta:
    return Meta(ge=MIN_TIMEOUT_MS, le=most)


class Body(Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    """A request body: camelCase on the wire, unknown fields refused.

    Defaults are omitted when encoding: the check for repeated keys
    (api.inputs) counts the members of what was decoded, encoded again.
    """


class WebhookCreate(Body):
    """A new webhook."""

    name: Name
    url: Url
    events: EventPatterns
    secret: Annotated[
        Secret | None, Meta(description=f"omitted or null: 32 random bytes as hex. {_SECRET}")
    ] = None
    retry_attempts: RetryAttempts = DEFAULT_RETRY_ATTEMPTS
    timeout_ms: Annotated[int, _timeout_ms(MAX_TIMEOUT_MS)] = DEFAULT_TIMEOUT_MS


class WebhookUpdate(Body):
    """Only the fields given change, at least one; null is not accepted for any."""

    name: Name | UnsetType = UNSET
    url: Url | UnsetType = UNSET
    events: EventPatterns | UnsetType = UNSET
    secret: (
        Annotated[
            Secret,
            Meta(
                description="the previous secret keeps signing alongside for"
                f" delivery.secret_grace_seconds. {_SECRET}"
            ),
        ]
        | UnsetType
    ) = UNSET
    retry_attempts: RetryAttempts | UnsetType = UNSET
    timeout_ms: Annotated[int, _timeout_ms(MAX_TIMEOUT_MS)] | UnsetType = UNSET
    status: (
        Annotated[
            WebhookStatus,
            Meta(
                description="inactive webhooks get no new deliveries; their pending ones"
                " wait until re-activated"
            ),
        ]
        | UnsetType
    ) = UNSET


@functools.cache
def webhook_bodies(max_timeout_ms: int) -> tuple[type[WebhookCreate], type[WebhookUpdate]]:
    """The webhook bodies with ``timeoutMs`` bounded by the configured maximum.

    ``delivery.max_timeout_ms`` may be lower than the hard limit above; it
    replaces that bound (and caps the default) in the decoder and the document.
    """
    bounded: Any = Annotated[int, _timeout_ms(max_timeout_ms)]
    create = msgspec.defstruct(
        "WebhookCreate",
        [("timeout_ms", bounded, min(DEFAULT_TIMEOUT_MS, max_timeout_ms))],
        bases=(WebhookCreate,),
        namespace={"__doc__": WebhookCreate.__doc__},
        module=__name__,
    )
    update = msgspec.defstruct(
        "WebhookUpdate",
        [("timeout_ms", bounded | UnsetType, UNSET)],
        bases=(WebhookUpdate,),
        namespace={"__doc__": WebhookUpdate.__doc__},
        module=__name__,
    )
    return cast(type[WebhookCreate], create), cast(type[WebhookUpdate], update)


class EventCreate(Body):
    """An event to deliver to every active webhook subscribed to its type."""

    type: EventType
    data: Annotated[
        Any,
        Meta(
            description="any JSON value: no NaN/Infinity or numbers that overflow a double,"
            f" no lone surrogates, no duplicate keys, nested at most {MAX_DATA_DEPTH} levels"
            f" (the body receivers get, with its envelope, at most {MAX_EVENT_DEPTH})"
        ),
    ]
    idempotency_key: (
        Annotated[
            IdempotencyKey, Meta(description="same as the Idempotency-Key header (they must agree)")
        ]
        | None
    ) = None


class EventBatchCreate(Body):
    """Events stored in one transaction, all or none."""

    events: Annotated[
        list[EventCreate],
        Meta(
            min_length=1,
            max_length=MAX_BATCH_EVENTS,
            description="stored in one transaction, all or none; each event's data nests at"
            f" most {MAX_DATA_DEPTH} levels, as on the single route; the whole body stays"
            " under the configured server.max_body_bytes",
            extra=problems(type="must be a list of events"),
        ),
    ]


def free_json(body: object) -> Iterator[tuple[str, Any]]:
    """Where ``body`` holds free-form JSON (an event's data), by field path.

    What the declarations cannot bound: ``api.inputs`` checks its depth.
    """
    if isinstance(body, EventCreate):
        yield "data", body.data
    elif isinstance(body, EventBatchCreate):
        for i, event in enumerate(body.events):
            yield f"events[{i}].data", event.data


class BulkReplayRequest(Body):
    """Which dead letters to replay; the body may also be omitted (all of them)."""

    since: (
        Annotated[
            str,
            Meta(
                description="only deliveries created at or after this ISO 8601 timestamp"
                " (with a zone)",
                examples=[TIMESTAMP_EXAMPLE],
                extra=problems(type="must be an ISO 8601 timestamp string"),
            ),
        ]
        | UnsetType
    ) = UNSET


class EmptyRequest(Body):
    """No fields; the body may also be omitted."""


# Replaying one delivery has always answered an unknown field this way.
EmptyReplayRequest = Annotated[
    EmptyRequest, Meta(extra=problems(unknown="unknown field; this action takes no fields"))
]
