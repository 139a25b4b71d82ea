"""Every SQL statement the PostgreSQL store runs, one named statement per operation.

The names and parameter orders of the operators' statements are those of
``storage/sql.py``'s protocol, as in SQLite's queries module.  The hot writes
take their rows as one array per column (``unnest``), generated from the
shared row declarations (``storage/rows.py``, ``storage/events.py``) by
:func:`unnest`, so positions are written once.  Data-modifying CTEs make a
scheduler turn's records, or an ingest group, one statement.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any, NamedTuple

from hookd.models import Attempt
from hookd.storage.events import PlannedDelivery, PlannedEvent
from hookd.storage.postgres.connection import DUE_CHANNEL
from hookd.storage.rows import (
    CLAIM_COLUMNS,
    CLAIM_JOIN,
    LIMITED_RUN_GAP_MS,
    DeactivationRow,
    PauseRow,
    ReliefRow,
    SubscriptionsRow,
    TransitionRow,
)


def _pg_type(annotation: str) -> str:
    return "text[]" if "str" in annotation else "bigint[]"


def unnest(row: type[NamedTuple], first: int, alias: str) -> str:
    """``unnest($first::type[], ...) WITH ORDINALITY AS alias(field, ..., ordinal)``."""
    hints = typing.get_type_hints(row)
    arrays = ", ".join(
        f"${first + i}::{_pg_type(str(hints[name]))}" for i, name in enumerate(row._fields)
    )
    return f"unnest({arrays}) WITH ORDINALITY AS {alias}({', '.join(row._fields)}, ordinal)"


def arrays(row: type[NamedTuple], rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """``rows`` as the column arrays :func:`unnest` reads."""
    if not rows:
        return [[] for _ in row._fields]
    return [list(column) for column in zip(*rows, strict=True)]


MAY_SEND = (
    "w.status = 'active' AND w.deleted_at IS NULL"
    " AND (w.paused_until IS NULL OR w.paused_until <= {now})"
)

# -- the scheduler's turn (one transaction, under CLAIM_LOCK) ------------------------

_R = 13  # the first parameter after the 12 transition arrays
_NOW = _R + 9 + 3 + 3 + 2  # after the attempts', pauses', deactivations' and reliefs' arrays
# The turn's records, each applied only where its lease still holds (a record
# whose lease moved on, or was spent by an earlier record of the batch, is
# fenced), every attempt row (the request went out, fenced or not), and what
# the applied records do to their webhooks, in ONE update of each (a
# statement may not update a row twice): a 429's pause (never shortening one
# in place) and the start of its run of 429s, a 410's deactivation, or the
# end of a run of 429s for a webhook found answering (a 429 of the same turn
# wins).  Answers [position, current status] of each fenced record.
SETTLE = (
    "WITH r AS (SELECT * FROM " + unnest(TransitionRow, 1, "r") + "),"
    " applied AS (UPDATE deliveries d SET status = r.status, next_attempt_at = r.next_at,"
    "  lease_token = NULL, attempt_count = d.attempt_count + 1, budget_used = r.budget,"
    "  rate_limited_count = r.rl_count, rate_limited_since = r.rl_since,"
    "  last_status_code = r.code, last_error = r.error, last_response_body = r.body,"
    f"  status_reason = r.reason, updated_at = ${_NOW}"
    "  FROM r WHERE r.spent = 0 AND d.id = r.id AND d.lease_token = r.token"
    "  RETURNING r.ordinal, d.id, d.status),"
    " attempt_rows AS (INSERT INTO attempts (id, delivery_id, number, started_at, duration_ms,"
    "  status_code, error, response_body, outcome)"
    "  SELECT id, delivery_id, number, started_at, duration_ms, status_code, error,"
    "  response_body, outcome FROM " + unnest(Attempt, _R, "a") + "),"
    " effects AS (SELECT webhook, max(until) AS until, min(reason) AS reason,"
    "  bool_or(relief) AS relief FROM ("
    "   SELECT record, webhook, until, NULL::text AS reason, false AS relief FROM "
    + unnest(PauseRow, _R + 9, "p")
    + "   UNION ALL SELECT record, webhook, NULL::bigint, reason, false FROM "
    + unnest(DeactivationRow, _R + 12, "x")
    + "   UNION ALL SELECT record, webhook, NULL::bigint, NULL::text, true FROM "
    + unnest(ReliefRow, _R + 15, "f")
    + "  ) e WHERE record + 1 IN (SELECT ordinal FROM applied) GROUP BY webhook),"
    " webhooks_changed AS (UPDATE webhooks w SET"
    "  paused_until = CASE WHEN e.until IS NULL THEN w.paused_until"
    "   ELSE GREATEST(coalesce(w.paused_until, 0), e.until) END,"
    # A run of 429s goes on only from a pause that ended moments ago: an
    # endpoint nobody tried for longer starts a new one.
    "  limited_since = CASE WHEN e.until IS NULL"
    "   THEN (CASE WHEN e.relief THEN NULL ELSE w.limited_since END)"
    f"   WHEN NOT e.relief AND coalesce(w.paused_until, 0) >= ${_NOW} - {LIMITED_RUN_GAP_MS}"
    f"   THEN coalesce(w.limited_since, ${_NOW}) ELSE ${_NOW} END,"
    "  status = CASE WHEN e.reason IS NULL THEN w.status ELSE 'inactive' END,"
    "  disabled_reason = CASE WHEN e.reason IS NOT NULL AND w.status = 'active'"
    "   THEN e.reason ELSE w.disabled_reason END,"
    "  updated_at = CASE WHEN e.reason IS NOT NULL AND w.status = 'active'"
    f"   THEN ${_NOW} ELSE w.updated_at END"
    "  FROM effects e WHERE w.id = e.webhook)"
    # (A fenced record's delivery may have been written by another record of
    # this very statement: its status is the new one.)
    " SELECT r.ordinal - 1,"
    "  coalesce((SELECT a.status FROM applied a WHERE a.id = r.id LIMIT 1), d.status)"
    " FROM r LEFT JOIN deliveries d ON d.id = r.id"
    " WHERE r.ordinal NOT IN (SELECT ordinal FROM applied)"
)

# The deliveries a turn may lease, locked for it: the oldest due work of each
# webhook that may send and has room.  A webhook's room is the least of what
# the scheduler asks ($3, $4: its local rooms, $5 for the others) and the
# cluster's limit ($6) less its deliveries in flight on every node (the leases
# not expired).  Read by each webhook's own index: the cost follows the
# number of webhooks, not the backlog's size.  The turn then picks its fair
# share of them (storage/fairness.py) and LEASE takes those.
CANDIDATES = (
    "WITH inflight AS (SELECT webhook_id, count(*) AS n FROM deliveries"
    "  WHERE lease_token IS NOT NULL AND next_attempt_at > $1 AND is_test = 0"
    "  GROUP BY webhook_id),"
    " local_rooms AS (SELECT * FROM unnest($3::text[], $4::bigint[]) AS x(webhook, room)),"
    " hooks AS (SELECT w.id, w.workspace_id,"
    "  LEAST(coalesce(x.room, $5), $6 - coalesce(i.n, 0), $2) AS room"
    "  FROM webhooks w LEFT JOIN inflight i ON i.webhook_id = w.id"
    "  LEFT JOIN local_rooms x ON x.webhook = w.id WHERE " + MAY_SEND.format(now="$1") + ")"
    " SELECT h.workspace_id, h.id, c.id, c.next_attempt_at, c.seq FROM hooks h CROSS JOIN LATERAL"
    "  (SELECT d.id, d.next_attempt_at, d.seq FROM deliveries d"
    "   WHERE d.webhook_id = h.id AND d.next_attempt_at <= $1"
    "   ORDER BY d.next_attempt_at, d.seq LIMIT GREATEST(h.room, 0)"
    "   FOR UPDATE OF d SKIP LOCKED) c"
    " ORDER BY h.id, c.next_attempt_at, c.seq"
)
# The chosen deliveries' leases, and what an attempt needs of each.
LEASE = (
    "WITH leased AS (UPDATE deliveries d SET lease_token = $2, next_attempt_at = $3"
    "  WHERE d.id = ANY($1::text[]) RETURNING d.*)"
    " SELECT " + CLAIM_COLUMNS + " FROM leased d" + CLAIM_JOIN
)
# A fenced attempt went out too: attemptCount counts every attempt row.
COUNT_FENCED = (
    "UPDATE deliveries SET attempt_count = attempt_count + x.n"
    " FROM (SELECT id, count(*) AS n FROM unnest($1::text[]) AS f(id) GROUP BY id) x"
    " WHERE deliveries.id = x.id"
)
RELEASE = (
    "UPDATE deliveries SET lease_token = NULL, next_attempt_at = $1"
    " FROM unnest($2::text[], $3::text[]) AS x(id, token)"
    " WHERE deliveries.id = x.id AND deliveries.lease_token = x.token"
)
# The first due time of a delivery whose webhook may send ($2 = now), due by
# $1: one index seek per webhook that may send.
FIRST_SENDABLE = (
    "SELECT min((SELECT d.next_attempt_at FROM deliveries d"
    " WHERE d.webhook_id = w.id AND d.next_attempt_at <= $1"
    " ORDER BY d.next_attempt_at LIMIT 1)) FROM webhooks w WHERE " + MAY_SEND.format(now="$2")
)
PAUSE_ENDS = "SELECT min(paused_until) FROM webhooks WHERE paused_until > $1"

# -- ingest ---------------------------------------------------------------------------

_SUBSCRIPTIONS_OF = (
    "coalesce((SELECT json_agg(json_build_array(id, events) ORDER BY created_at, id)"
    " FROM webhooks WHERE workspace_id = {ws} AND status = 'active' AND deleted_at IS NULL"
    ")::text, '[]')"
)
SUBSCRIPTIONS = (
    "SELECT s.workspace, "
    + _SUBSCRIPTIONS_OF.format(ws="s.workspace")
    + " FROM unnest($1::text[]) AS s(workspace)"
)
_E = 3  # events' first array; then deliveries', then status, due, now
# A group's events and deliveries, unless a workspace's subscriptions changed
# since the group was planned from them (then nothing is written, and the
# answer says so).  A new delivery is due no earlier than its webhook's 429
# pause ends.  Wakes every node listening (at commit) when it made work.
INGEST = (
    "WITH subs AS (SELECT * FROM " + unnest(SubscriptionsRow, 1, "s") + "),"
    " stale AS (SELECT 1 FROM subs s WHERE s.text IS DISTINCT FROM "
    + _SUBSCRIPTIONS_OF.format(ws="s.workspace")
    + " LIMIT 1),"
    f" new_workspaces AS (INSERT INTO workspaces (id, name, created_at)"
    f"  SELECT workspace, workspace, ${_E + 12} FROM subs"
    "  WHERE NOT EXISTS (SELECT 1 FROM stale) ON CONFLICT (id) DO NOTHING),"
    " new_events AS (INSERT INTO events (id, workspace_id, type, body, idempotency_key, created_at)"
    f"  SELECT id, workspace, type, convert_to(body, 'UTF8'), key, ${_E + 12} FROM "
    + unnest(PlannedEvent, _E, "e")
    + "  WHERE NOT EXISTS (SELECT 1 FROM stale)),"
    " new_deliveries AS (INSERT INTO deliveries (id, workspace_id, event_id, webhook_id,"
    "  event_type, status, next_attempt_at, created_at, updated_at)"
    f"  SELECT x.id, x.workspace, x.event, x.webhook, x.type, ${_E + 10},"
    f"  GREATEST(${_E + 11}, coalesce(w.paused_until, 0)), ${_E + 12}, ${_E + 12} FROM "
    + unnest(PlannedDelivery, _E + 5, "x")
    + "  JOIN webhooks w ON w.id = x.webhook WHERE NOT EXISTS (SELECT 1 FROM stale))"
    " SELECT EXISTS (SELECT 1 FROM stale),"
    f" (SELECT pg_notify('{DUE_CHANNEL}', '') WHERE NOT EXISTS (SELECT 1 FROM stale)"
    f"  AND cardinality(${_E + 5}::text[]) > 0)::text"
)
# One transaction's lock on each idempotency key it uses, so that nodes taking
# the same key at once do it one after the other (the second sees the first).
LOCK_KEYS = (
    "SELECT pg_advisory_xact_lock(hashtextextended(k, 7))"
    " FROM (SELECT unnest($1::text[]) AS k ORDER BY 1) keys"
)
EARLIER_EVENTS = (
    "SELECT DISTINCT ON (idempotency_key) id, workspace_id, type, body, idempotency_key,"
    " created_at FROM events WHERE workspace_id = $1 AND idempotency_key = ANY($2::text[])"
    " AND created_at >= $3 ORDER BY idempotency_key, created_at"
)
DELIVERIES_OF_EVENTS = (
    "SELECT event_id, array_agg(id ORDER BY id) FROM deliveries"
    " WHERE event_id = ANY($1::text[]) GROUP BY event_id"
)
NOTIFY_DUE = f"SELECT pg_notify('{DUE_CHANNEL}', '')"
# Webhook changes wait for the transaction that takes this (ingest, when they
# keep invalidating its plan).
HOLD_WEBHOOKS = "LOCK TABLE webhooks IN SHARE MODE"
