"""Plain data shared between storage, scheduler, sender and API."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


class Status(enum.StrEnum):
    """Delivery statuses, the vocabulary of the reference documents."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    RATE_LIMITED = "rate_limited"
    DEAD_LETTER = "dead_letter"


# A delivery in one of these waits for nothing; only a replay moves a dead letter.
TERMINAL = frozenset({Status.DELIVERED, Status.DEAD_LETTER})
# Statuses the scheduler claims from once they are due.
SCHEDULABLE = frozenset({Status.PENDING, Status.FAILED, Status.RATE_LIMITED})


class WebhookStatus(enum.StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    name: str
    created_at: int


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    workspace_id: str | None  # None for a platform key
    prefix: str  # first characters, for listing; never enough to authenticate
    owner: str
    created_at: int
    revoked_at: int | None

    @property
    def is_platform(self) -> bool:
        return self.workspace_id is None


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    workspace_id: str
    name: str
    url: str
    events: tuple[str, ...]
    secret: str
    previous_secret: str | None
    previous_secret_until: int | None
    retry_attempts: int
    timeout_ms: int
    status: WebhookStatus
    disabled_reason: str | None
    paused_until: int | None
    created_by: str
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class NewWebhook:
    workspace_id: str
    name: str
    url: str
    events: tuple[str, ...]
    secret: str
    retry_attempts: int
    timeout_ms: int
    created_by: str


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    workspace_id: str
    type: str
    body: bytes
    idempotency_key: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class IngestResult:
    event: Event
    delivery_ids: tuple[str, ...]
    # True when an earlier event with the same idempotency key was returned.
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    workspace_id: str
    event_id: str
    webhook_id: str
    event_type: str
    status: Status
    attempt_count: int  # every attempt, 429s included
    budget_used: int  # attempts that count against 1 + retryAttempts
    rate_limited_count: int
    rate_limited_since: int | None
    next_attempt_at: int | None
    last_status_code: int | None
    last_error: str | None
    last_response_body: str | None
    is_test: bool
    created_at: int
    updated_at: int


class Attempt(NamedTuple):
    """One attempt, as stored: on record whether its result was applied or
    fenced (the request went out either way).  Storage writes these rows."""

    id: str
    delivery_id: str
    number: int
    started_at: int
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None
    outcome: str


class ClaimedDelivery(NamedTuple):
    """Everything the sender needs, read in the claim's single round trip.

    Immutable like the models above, but a tuple: one is built for every
    attempt, and a frozen dataclass's ``__init__`` (``object.__setattr__`` per
    field) cost about 2 us for these 16 fields, a tuple 0.4 us.
    """

    delivery_id: str
    lease_token: str
    workspace_id: str
    webhook_id: str
    event_id: str
    event_type: str
    body: bytes
    url: str
    secrets: tuple[str, ...]
    timeout_ms: int
    retry_attempts: int
    status: Status
    attempt_count: int
    budget_used: int
    rate_limited_count: int
    rate_limited_since: int | None


def subscribes(patterns: tuple[str, ...], event_type: str) -> bool:
    """Whether a webhook subscribed to ``patterns`` receives ``event_type``.

    ``*`` matches every type; ``prefix.*`` matches every type that starts with
    ``prefix.`` (any depth: ``email.*`` takes ``email.bounce.hard``); anything
    else matches exactly.
    """
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False
