"""The storage contract every backend implements.

The scheduler, the API and the CLI only ever talk to a :class:`Store`; every
backend passes the same contract suite (``tests/contract/``), which uses
nothing but this protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from hookd.lifecycle import Transition
from hookd.models import (
    ApiKey,
    Attempt,
    ClaimedDelivery,
    Delivery,
    Event,
    IngestResult,
    NewWebhook,
    Status,
    Webhook,
    WebhookStatus,
    Workspace,
)

# Text a receiver controls (response bodies, errors) is stored with each NUL
# character replaced by U+FFFD: PostgreSQL's text cannot hold NUL, and every
# backend stores the same.
_NUL = "\x00"


def storable_text(text: str | None) -> str | None:
    """``text`` as every backend stores it (see above)."""
    if text is None or _NUL not in text:
        return text
    return text.replace(_NUL, "\ufffd")


def encode_cursor(created_at: int, item_id: str) -> str:
    return f"{created_at}.{item_id}"


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Split a list cursor; raises ValueError when it is not one of ours."""
    created, sep, item_id = cursor.partition(".")
    if not sep or not created.isdigit() or len(created) > 15:
        raise ValueError("malformed cursor")
    if len(item_id) != 24 or any(c not in "0123456789abcdef" for c in item_id):
        raise ValueError("malformed cursor")
    return int(created), item_id


class StoreError(Exception):
    """The store cannot do what was asked (full disk, read-only file, locked)."""


class IdempotencyConflict(Exception):
    """A reused idempotency key carries a different event type or other data.

    ``index`` is the position of the offending event in a batch (``None`` for
    a single ingest) and ``differs`` names what differs: ``"type"`` or ``"data"``.
    """

    def __init__(self, message: str, *, index: int | None = None, differs: str = "type") -> None:
        super().__init__(message)
        self.index = index
        self.differs = differs


class QuotaExceeded(Exception):
    """A request would go beyond a configured quota; nothing of it was stored.

    ``quota`` is the configuration key (``[quotas]``), which the message names
    first; ``status`` the HTTP status the API answers with.
    """

    def __init__(self, quota: str, message: str, *, status: int) -> None:
        super().__init__(f"{quota}: {message}")
        self.quota = quota
        self.status = status


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One event of a batch ingest (:meth:`Store.ingest_events`)."""

    type: str
    data: Any
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookChanges:
    """Fields of a partial update; ``None`` means "leave as is"."""

    name: str | None = None
    url: str | None = None
    events: tuple[str, ...] | None = None
    secret: str | None = None
    retry_attempts: int | None = None
    timeout_ms: int | None = None
    status: WebhookStatus | None = None


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    status: Status | None = None
    webhook_id: str | None = None
    event_type: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[Any]
    next_cursor: str | None


class AttemptRecord(NamedTuple):
    """One finished attempt and the transition decided for it (a tuple: one per
    attempt, see models.ClaimedDelivery)."""

    delivery_id: str
    lease_token: str
    webhook_id: str
    number: int
    started_at: int
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None
    outcome: str
    transition: Transition


class RecordResult(NamedTuple):
    delivery_id: str
    # False when the lease no longer matched: another worker owns the delivery
    # now, or an operator action (webhook deletion) ended it meanwhile.
    applied: bool
    status: Status | None = None


@dataclass(frozen=True, slots=True)
class ReplayClaim:
    """Outcome of asking to replay one delivery."""

    found: bool
    status: Status | None = None  # the status that refused the replay, if any
    claim: ClaimedDelivery | None = None
    # True when this call moved the delivery out of dead_letter: a concurrent
    # replay that lost the race sees found=True, replayed=False.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class QueueStats:
    by_status: Mapping[str, int] = field(default_factory=dict)
    # next_attempt_at of the oldest due delivery whose webhook may send (an
    # expired lease is due again)
    oldest_due_ms: int | None = None
    in_flight: int = 0
    # When these were read: on PostgreSQL, by the leader, which publishes them
    # for the other nodes (None: just now).
    read_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class WebhookStats:
    """One webhook's recent health, as the dashboard shows it (test sends left out)."""

    since_ms: int
    # Deliveries that ended (delivered / dead_letter) at or after since_ms.
    delivered: int = 0
    dead_lettered: int = 0
    # Deliveries still scheduled (pending, failed, rate_limited), and those of
    # them claimed under a lease right now.
    queued: int = 0
    in_flight: int = 0
    # The latest attempt since since_ms that did not get a 2xx, if any.
    last_error_at: int | None = None
    last_error_status_code: int | None = None
    last_error: str | None = None
    last_error_delivery_id: str | None = None

    @property
    def success_rate(self) -> float | None:
        """Share of the deliveries that ended in the window which were delivered."""
        ended = self.delivered + self.dead_lettered
        return self.delivered / ended if ended else None


@dataclass(frozen=True, slots=True)
class RateLimitStats:
    """The 429 lane as a whole, for the metrics."""

    # Active webhooks whose Retry-After pause has not run out.
    paused_webhooks: int = 0
    # rate_limited_since of the delivery longest in the lane (None: lane empty).
    oldest_rate_limited_since_ms: int | None = None


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    def watch_due(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever another process (another node) made work due.

        A backend shared by several nodes wakes idle schedulers on every
        ingest; one file shared by one daemon need not (its ingests wake
        its scheduler directly).
        """
        ...

    async def is_leader(self) -> bool:
        """Whether this process runs the cluster's retention and statistics now.

        One process of a cluster at a time; a lone daemon always does.
        """
        ...

    # -- tenancy and keys -------------------------------------------------
    async def ensure_workspace(self, workspace_id: str, name: str | None = None) -> Workspace: ...

    async def create_api_key(
        self, workspace_id: str | None, digest: bytes, prefix: str, owner: str
    ) -> ApiKey: ...

    async def find_api_key(self, digest: bytes) -> tuple[ApiKey, bytes] | None: ...

    async def list_api_keys(self) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id: str) -> bool: ...

    async def count_api_keys(self) -> int: ...

    # -- webhooks -----------------------------------------------------------
    async def create_webhook(self, new: NewWebhook) -> Webhook: ...

    async def get_webhook(self, workspace_id: str | None, webhook_id: str) -> Webhook | None: ...

    async def list_webhooks(
        self, workspace_id: str | None, limit: int, cursor: str | None = None
    ) -> Page: ...

    async def update_webhook(
        self, workspace_id: str, webhook_id: str, changes: WebhookChanges, secret_grace_ms: int
    ) -> Webhook | None: ...

    async def delete_webhook(self, workspace_id: str, webhook_id: str) -> bool: ...

    # -- events and deliveries -------------------------------------------------
    async def ingest_event(
        self,
        workspace_id: str,
        event_type: str,
        data: Any,
        idempotency_key: str | None = None,
    ) -> IngestResult:
        """Store the event with one delivery per subscribed active webhook, durably.

        A key used within the window returns the original event
        (``duplicate``) and creates nothing; with another type or other data
        it raises :class:`IdempotencyConflict`.  ``event_type`` is valid
        (``validation.validate_event_type``).
        """
        ...

    async def ingest_events(
        self, workspace_id: str, events: Sequence[NewEvent]
    ) -> list[IngestResult]:
        """Store every event of ``events`` with its fan-out in one durable commit, or none.

        Results come in the order of ``events``.  An event whose idempotency
        key was used within the window, earlier in the same batch included,
        gets the original event back (``duplicate``); if the type or the data
        differ, :class:`IdempotencyConflict` names the event's index and
        nothing of the batch is stored.  Data that cannot be serialized raises
        ``ValueError``/``TypeError`` whose message starts with ``events[i]``,
        again storing nothing.
        """
        ...

    async def get_event(self, workspace_id: str | None, event_id: str) -> Event | None: ...

    async def get_delivery(self, workspace_id: str | None, delivery_id: str) -> Delivery | None: ...

    async def list_deliveries(
        self, workspace_id: str | None, flt: DeliveryFilter, limit: int, cursor: str | None = None
    ) -> Page: ...

    async def list_attempts(self, delivery_id: str) -> list[Attempt]: ...

    # -- the scheduler's side ------------------------------------------------------
    async def claim_due(
        self,
        limit: int,
        lease_ms: int,
        per_webhook_room: Mapping[str, int],
        default_room: int,
    ) -> list[ClaimedDelivery]: ...

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[RecordResult]:
        """Write each record's attempt, and its transition where its lease still holds."""
        ...

    async def settle_and_claim(
        self,
        records: Sequence[AttemptRecord],
        limit: int,
        lease_ms: int,
        per_webhook_room: Mapping[str, int],
        default_room: int,
    ) -> tuple[list[RecordResult], list[ClaimedDelivery]]:
        """``record_attempts(records)`` then ``claim_due(...)``, atomically."""
        ...

    async def release(self, leases: Collection[tuple[str, str]]) -> int: ...

    async def next_due_at(self) -> int | None: ...

    async def queue_stats(self) -> QueueStats: ...

    # -- operator actions ----------------------------------------------------------
    async def claim_for_replay(
        self, workspace_id: str | None, delivery_id: str, lease_ms: int
    ) -> ReplayClaim: ...

    async def replay_webhook(
        self,
        workspace_id: str | None,
        webhook_id: str,
        since_ms: int | None,
        limit: int | None = None,
    ) -> int | None:
        """Replay the webhook's dead letters (not test sends), at most ``limit`` of them.

        None when the webhook does not exist (in that workspace).  Called
        again until it answers less than ``limit``, it replays them all.
        """
        ...

    async def create_test_delivery(
        self, webhook: Webhook, event_type: str, data: Any
    ) -> ClaimedDelivery: ...

    async def delete_ended_before(self, status: Status, cutoff_ms: int, batch: int) -> int:
        """Retention: delete up to ``batch`` deliveries in ``status`` (terminal) last
        changed before ``cutoff_ms``, with their attempts; how many."""
        ...

    async def delete_orphan_events(self, batch: int) -> int:
        """Delete up to ``batch`` events no delivery refers to any more, once past
        the idempotency window; how many."""
        ...

    async def delete_deleted_webhooks(self, batch: int) -> int:
        """Delete up to ``batch`` deleted webhooks none of whose deliveries are left."""
        ...

    async def end_expired_lanes(self, limited_before_ms: int) -> int:
        """``lifecycle.lane_expired`` for the unfinished deliveries of every webhook
        answering 429 (or 503 with Retry-After) since before ``limited_before_ms``
        and paused still: the 429 lane's bound, for the endpoint as a whole.  A
        run of 429s ends at any other answer, at re-activation, and when nobody
        tried the endpoint for ``rows.LIMITED_RUN_GAP_MS`` after a pause.  How
        many ended."""
        ...

    async def end_interrupted_tests(self, older_than_ms: int) -> int:
        """``lifecycle.test_interrupted`` for pending test sends made before ``older_than_ms``."""
        ...

    async def database_size_bytes(self) -> int: ...

    # -- what operators look at ---------------------------------------------------
    async def workspace_queue_stats(self, workspace_id: str) -> QueueStats:
        """:meth:`queue_stats` for one workspace's deliveries only.

        ``oldest_due_ms`` counts only deliveries whose webhook may send now
        (active, not paused by a 429), like the scheduling-lag gauge.
        """
        ...

    async def webhook_stats(
        self, workspace_id: str, webhook_id: str, since_ms: int
    ) -> WebhookStats | None:
        """How one webhook of the workspace has fared since ``since_ms``; ``None`` if not found."""
        ...

    async def rate_limit_stats(self) -> RateLimitStats:
        """Paused webhooks and the age of the 429 lane, over every workspace."""
        ...
