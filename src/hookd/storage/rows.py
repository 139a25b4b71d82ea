"""The rows every backend reads and writes, each declared once.

The hot writes (a scheduler turn's records, an ingest group) hand their rows
to the database in bulk: SQLite reads them from a JSON array per kind
(``sqlite/queries.py``), PostgreSQL from one array per column
(``postgres/queries.py``).  Each row kind is a NamedTuple: Python builds rows
of that type and each backend makes the SQL that reads them from the same
field list, so a field's position is written in one place only.

Rows read back are turned into models here too, alike for both backends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from hookd.ids import new_id
from hookd.models import (
    SCHEDULABLE,
    ApiKey,
    Attempt,
    ClaimedDelivery,
    Delivery,
    Event,
    Status,
    Webhook,
    WebhookStatus,
)
from hookd.storage.base import AttemptRecord, RecordResult, storable_text


class Row(Protocol):
    """A row as a driver returns it: its columns by position."""

    def __getitem__(self, index: int, /) -> Any: ...


# The columns the converters below read, in their order, for both backends.
DELIVERY_COLUMNS = (
    "id, workspace_id, event_id, webhook_id, event_type, status, attempt_count, budget_used,"
    " rate_limited_count, rate_limited_since, next_attempt_at, last_status_code, last_error,"
    " last_response_body, is_test, created_at, updated_at, status_reason"
)
WEBHOOK_COLUMNS = (
    "id, workspace_id, name, url, events, secret, previous_secret, previous_secret_until,"
    " retry_attempts, timeout_ms, status, disabled_reason, paused_until, created_by,"
    " created_at, updated_at"
)
# What an attempt needs of a leased delivery (models.ClaimedDelivery), from
# deliveries ``d``.
CLAIM_COLUMNS = (
    "d.id, d.workspace_id, d.webhook_id, d.event_id, d.event_type, e.body, w.url, w.secret,"
    " w.previous_secret, w.previous_secret_until, w.timeout_ms, w.retry_attempts, d.status,"
    " d.attempt_count, d.budget_used, d.rate_limited_count, d.rate_limited_since, d.lease_token"
)
CLAIM_JOIN = " JOIN events e ON e.id = d.event_id JOIN webhooks w ON w.id = d.webhook_id"

# Year 9999: "scheduled, but never by the scheduler" (a test send's delivery).
NEVER_MS = 253_402_300_799_000
# Status by its stored value, without the enum's call machinery (every claim).
STATUS: dict[str, Status] = {status.value: status for status in Status}
# An endpoint's run of 429s (webhooks.limited_since, which bounds the lane for
# the whole endpoint) continues through a 429 only if its previous pause ended
# at most this long before: the probe after a pause comes within a scheduler
# turn or two.  Longer, and nobody tried the endpoint in between.
LIMITED_RUN_GAP_MS = 60_000
# models.SCHEDULABLE as an SQL list, for ``status IN …``.
SCHEDULABLE_SQL = "(" + ",".join(f"'{s.value}'" for s in sorted(SCHEDULABLE)) + ")"


class TransitionRow(NamedTuple):
    """One attempt's transition, written where the delivery's lease still holds."""

    id: str
    token: str
    # 1: the lease was already spent by an earlier record of the same batch.
    spent: int
    status: str
    next_at: int | None
    budget: int
    rl_count: int
    rl_since: int | None
    code: int | None
    error: str | None
    body: str | None
    reason: str | None


class PauseRow(NamedTuple):
    """A 429's pause of its webhook, brought by the TransitionRow at ``record``."""

    record: int
    webhook: str
    until: int


class DeactivationRow(NamedTuple):
    """A 410's deactivation of its webhook, brought by the TransitionRow at ``record``."""

    record: int
    webhook: str
    reason: str


class SubscriptionsRow(NamedTuple):
    """A workspace's subscriptions as the ingest group was made from them."""

    workspace: str
    text: str


class ReliefRow(NamedTuple):
    """The record at ``record`` found its webhook answering (not a 429): a run of
    rate limiting, if one was on, is over."""

    record: int
    webhook: str


class SettleRows(NamedTuple):
    """Records as a backend writes them, and the webhooks they stop."""

    transitions: list[TransitionRow]
    attempts: list[Attempt]
    pauses: list[PauseRow]
    deactivations: list[DeactivationRow]
    reliefs: list[ReliefRow]
    stopped: frozenset[str]  # webhooks paused or deactivated: none of theirs is claimed


def settle_rows(records: Sequence[AttemptRecord]) -> SettleRows:
    """What writing ``records`` takes: their rows, and the webhooks they stop."""
    transitions: list[TransitionRow] = []
    attempts: list[Attempt] = []
    pauses: list[PauseRow] = []
    deactivations: list[DeactivationRow] = []
    reliefs: list[ReliefRow] = []
    leases: set[tuple[str, str]] = set()
    for position, r in enumerate(records):
        t = r.transition
        lease = (r.delivery_id, r.lease_token)
        # A second record on one lease: the first spent it.
        spent = int(lease in leases)
        leases.add(lease)
        error, body = storable_text(r.error), storable_text(r.response_body)
        transitions.append(
            TransitionRow(
                r.delivery_id,
                r.lease_token,
                spent,
                t.status.value,
                t.next_attempt_at,
                t.budget_used,
                t.rate_limited_count,
                t.rate_limited_since,
                r.status_code,
                error,
                body,
                t.dead_letter_reason,
            )
        )
        attempts.append(
            Attempt(
                new_id(r.started_at),
                r.delivery_id,
                r.number,
                r.started_at,
                r.duration_ms,
                r.status_code,
                error,
                body,
                r.outcome,
            )
        )
        if t.pause_webhook_until is not None:
            pauses.append(PauseRow(position, r.webhook_id, t.pause_webhook_until))
        if t.deactivate_webhook_reason is not None:
            deactivations.append(
                DeactivationRow(position, r.webhook_id, t.deactivate_webhook_reason)
            )
        if t.relieves_endpoint:
            reliefs.append(ReliefRow(position, r.webhook_id))
    return SettleRows(
        transitions,
        attempts,
        pauses,
        deactivations,
        reliefs,
        frozenset(p.webhook for p in pauses) | frozenset(d.webhook for d in deactivations),
    )


def record_results(
    records: Sequence[AttemptRecord], fenced: Mapping[int, Status]
) -> list[RecordResult]:
    """Each record applied, unless ``fenced`` (by position) gives the status that refused it."""
    return [
        RecordResult(r.delivery_id, False, fenced[i])
        if i in fenced
        else RecordResult(r.delivery_id, True, r.transition.status)
        for i, r in enumerate(records)
    ]


def claimed(row: Row, now_ms: int) -> ClaimedDelivery:
    """A delivery as CLAIM_COLUMNS reads it (the body as bytes, or as text from JSON)."""
    signing = [row[7]]
    if row[8] is not None and row[9] is not None and row[9] > now_ms:
        signing.append(row[8])
    return ClaimedDelivery(
        delivery_id=row[0],
        workspace_id=row[1],
        webhook_id=row[2],
        event_id=row[3],
        event_type=row[4],
        body=row[5].encode() if isinstance(row[5], str) else bytes(row[5]),
        url=row[6],
        secrets=tuple(signing),
        timeout_ms=row[10],
        retry_attempts=row[11],
        status=STATUS[row[12]],
        attempt_count=row[13],
        budget_used=row[14],
        rate_limited_count=row[15],
        rate_limited_since=row[16],
        lease_token=row[17],
    )


def webhook_of(row: Row) -> Webhook:
    return Webhook(
        id=row[0],
        workspace_id=row[1],
        name=row[2],
        url=row[3],
        events=tuple(json.loads(row[4])),
        secret=row[5],
        previous_secret=row[6],
        previous_secret_until=row[7],
        retry_attempts=row[8],
        timeout_ms=row[9],
        status=WebhookStatus(row[10]),
        disabled_reason=row[11],
        paused_until=row[12],
        created_by=row[13],
        created_at=row[14],
        updated_at=row[15],
    )


def delivery_of(row: Row) -> Delivery:
    last_error = row[12]
    if last_error is None and row[17] is not None:
        last_error = row[17]  # why it went to dead_letter without an HTTP error
    return Delivery(
        id=row[0],
        workspace_id=row[1],
        event_id=row[2],
        webhook_id=row[3],
        event_type=row[4],
        status=Status(row[5]),
        attempt_count=row[6],
        budget_used=row[7],
        rate_limited_count=row[8],
        rate_limited_since=row[9],
        next_attempt_at=row[10],
        last_status_code=row[11],
        last_error=last_error,
        last_response_body=row[13],
        is_test=bool(row[14]),
        created_at=row[15],
        updated_at=row[16],
    )


def api_key_of(row: Row) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], row[4], row[5])


def event_of(row: Row) -> Event:
    return Event(row[0], row[1], row[2], bytes(row[3]), row[4], row[5])


def attempt_of(row: Row) -> Attempt:
    return Attempt(*(row[i] for i in range(len(Attempt._fields))))
