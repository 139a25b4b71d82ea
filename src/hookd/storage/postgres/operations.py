"""The operators' statements of PostgreSQL: keys, webhooks, reads, changes, figures.

This module is the backend's ``storage.sql.Sql``: every name the shared
``Admin``, ``Figures`` and ``Housekeeping`` run, with its parameters in the
same positions on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence

from hookd.storage.postgres.queries import MAY_SEND, NOTIFY_DUE
from hookd.storage.rows import (
    CLAIM_COLUMNS,
    CLAIM_JOIN,
    DELIVERY_COLUMNS,
    SCHEDULABLE_SQL,
    WEBHOOK_COLUMNS,
)


def param(position: int) -> str:
    """The placeholder of parameter ``position`` (see storage/sql.py)."""
    return f"${position}"


def values(items: Sequence[str]) -> list[str]:
    """A list as ``= ANY($n::text[])`` takes it."""
    return list(items)


# Idle nodes LISTEN on the due channel (sql.Sql.WAKE).
WAKE: str | None = NOTIFY_DUE

# -- operator changes: replay, webhook deletion, interrupted test sends -------------

APPLY_CHANGE = (
    "UPDATE deliveries SET status = $1, next_attempt_at = $2, lease_token = $3,"
    " status_reason = $4,"
    " budget_used = CASE WHEN $5::int = 1 THEN 0 ELSE budget_used END,"
    " rate_limited_count = CASE WHEN $5::int = 1 THEN 0 ELSE rate_limited_count END,"
    " rate_limited_since = CASE WHEN $5::int = 1 THEN NULL ELSE rate_limited_since END,"
    " updated_at = $6 WHERE id = ANY($7::text[]) AND status = ANY($8::text[])"
)
OPEN_OF_WEBHOOK = (
    f"SELECT id FROM deliveries WHERE webhook_id = $1 AND status IN {SCHEDULABLE_SQL} LIMIT $2"
)
DEAD_LETTERS_OF_WEBHOOK = (
    "SELECT id FROM deliveries WHERE webhook_id = $1 AND status = 'dead_letter' AND is_test = 0"
    " AND ($2::bigint IS NULL OR created_at >= $2) LIMIT $3"
)
INTERRUPTED_TESTS = (
    "SELECT id FROM deliveries WHERE is_test = 1 AND status = 'pending' AND created_at < $1"
    " LIMIT $2"
)
# The delivery a replay changes, locked: of two replays at once, on any
# nodes, the second sees what the first made of it.
REPLAY_TARGET = (
    "SELECT d.status, w.status, w.deleted_at, w.paused_until FROM deliveries d"
    " JOIN webhooks w ON w.id = d.webhook_id"
    " WHERE d.id = $1 AND ($2::text IS NULL OR d.workspace_id = $2) FOR UPDATE OF d"
)
CLAIM_OF = "SELECT " + CLAIM_COLUMNS + " FROM deliveries d" + CLAIM_JOIN + " WHERE d.id = $1"
INSERT_TEST_EVENT = (
    "INSERT INTO events (id, workspace_id, type, body, created_at) VALUES ($1, $2, $3, $4, $5)"
)
INSERT_TEST_DELIVERY = (
    "INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type,"
    " status, next_attempt_at, lease_token, is_test, created_at, updated_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10)"
)

# -- tenancy, keys, webhooks, reads ---------------------------------------------------

ENSURE_WORKSPACE = (
    "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING"
)
GET_WORKSPACE = "SELECT id, name, created_at FROM workspaces WHERE id = $1"
INSERT_KEY = (
    "INSERT INTO api_keys (id, workspace_id, digest, prefix, owner, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
)
FIND_KEY = (
    "SELECT id, workspace_id, prefix, owner, created_at, revoked_at, digest"
    " FROM api_keys WHERE digest = $1"
)
LIST_KEYS = (
    "SELECT id, workspace_id, prefix, owner, created_at, revoked_at"
    " FROM api_keys ORDER BY created_at, id"
)
REVOKE_KEY = "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
COUNT_KEYS = "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL"
LOCK_WORKSPACE = "SELECT id FROM workspaces WHERE id = $1 FOR UPDATE"
COUNT_WEBHOOKS = "SELECT count(*) FROM webhooks WHERE workspace_id = $1 AND deleted_at IS NULL"
INSERT_WEBHOOK = (
    "INSERT INTO webhooks (id, workspace_id, name, url, events, secret,"
    " retry_attempts, timeout_ms, status, created_by, created_at, updated_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $11)"
)
GET_WEBHOOK = (
    f"SELECT {WEBHOOK_COLUMNS} FROM webhooks"
    " WHERE id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR workspace_id = $2)"
)
LIST_WEBHOOKS = (
    f"SELECT {WEBHOOK_COLUMNS} FROM webhooks"
    " WHERE deleted_at IS NULL AND ($1::text IS NULL OR workspace_id = $1)"
    " AND (created_at, id) > ($2::bigint, $3::text) ORDER BY created_at, id LIMIT $4"
)
UPDATE_WEBHOOK = "UPDATE webhooks SET {sets} WHERE id = {id}"
DELETE_WEBHOOK = (
    "UPDATE webhooks SET deleted_at = $1, status = 'inactive', updated_at = $1"
    " WHERE id = $2 AND workspace_id = $3 AND deleted_at IS NULL"
)
GET_EVENT = (
    "SELECT id, workspace_id, type, body, idempotency_key, created_at FROM events"
    " WHERE id = $1 AND ($2::text IS NULL OR workspace_id = $2)"
)
GET_DELIVERY = (
    f"SELECT {DELIVERY_COLUMNS} FROM deliveries"
    " WHERE id = $1 AND ($2::text IS NULL OR workspace_id = $2)"
)
LIST_DELIVERIES = (
    f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {{where}}"
    " ORDER BY created_at DESC, id DESC LIMIT {limit}"
)
LIST_ATTEMPTS = (
    "SELECT id, delivery_id, number, started_at, duration_ms, status_code, error,"
    " response_body, outcome FROM attempts WHERE delivery_id = $1 ORDER BY number, started_at"
)

# -- figures --------------------------------------------------------------------------

COUNT_BY_STATUS = "SELECT status, count(*) FROM deliveries GROUP BY status"


def _oldest_due(now: str, workspace: str = "") -> str:
    """Since when the oldest delivery that could go now has been able to (as in
    SQLite's operations: from its due time or its webhook's last pause's end)."""
    return (
        "SELECT min(GREATEST(first, coalesce(paused_until, 0))) FROM"
        " (SELECT w.paused_until, (SELECT d.next_attempt_at FROM deliveries d"
        f"  WHERE d.webhook_id = w.id AND d.next_attempt_at <= {now}"
        f"  ORDER BY d.next_attempt_at LIMIT 1) AS first FROM webhooks w WHERE {workspace}"
        + MAY_SEND.format(now=now)
        + ") s WHERE first IS NOT NULL"
    )


OLDEST_DUE = _oldest_due("$1")
LEASED_NOW = (
    "SELECT count(*) FROM deliveries WHERE lease_token IS NOT NULL AND next_attempt_at > $1"
)
WORKSPACE_COUNT_BY_STATUS = (
    "SELECT status, count(*) FROM deliveries WHERE workspace_id = $1 GROUP BY status"
)
WORKSPACE_OLDEST_DUE = _oldest_due("$2", "w.workspace_id = $1 AND ")
WORKSPACE_LEASED_NOW = (
    "SELECT count(*) FROM deliveries WHERE workspace_id = $1 AND lease_token IS NOT NULL"
    " AND next_attempt_at > $2"
)
WEBHOOK_OF_WORKSPACE = (
    "SELECT 1 FROM webhooks WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL"
)
WEBHOOK_OUTCOMES = (
    "SELECT count(*) FILTER (WHERE status = 'delivered' AND updated_at >= $2),"
    " count(*) FILTER (WHERE status = 'dead_letter' AND updated_at >= $2),"
    f" count(*) FILTER (WHERE status IN {SCHEDULABLE_SQL})"
    " FROM deliveries WHERE webhook_id = $1 AND is_test = 0"
)
WEBHOOK_LEASED_NOW = (
    "SELECT count(*) FROM deliveries WHERE webhook_id = $1 AND lease_token IS NOT NULL"
    " AND next_attempt_at > $2 AND is_test = 0"
)
WEBHOOK_LAST_ERROR = (
    "SELECT a.started_at, a.status_code, a.error, a.delivery_id"
    " FROM deliveries d JOIN attempts a ON a.delivery_id = d.id"
    " WHERE d.webhook_id = $1 AND d.is_test = 0 AND d.updated_at >= $2"
    " AND a.started_at >= $2 AND a.outcome <> '2xx'"
    " ORDER BY a.started_at DESC, a.number DESC LIMIT 1"
)
PAUSED_WEBHOOKS = (
    "SELECT count(*) FROM webhooks WHERE paused_until > $1 AND status = 'active'"
    " AND deleted_at IS NULL"
)
OLDEST_RATE_LIMITED = "SELECT min(rate_limited_since) FROM deliveries WHERE status = 'rate_limited'"
DATABASE_SIZE = "SELECT pg_database_size(current_database())"
PUBLISH_FIGURES = (
    "INSERT INTO figures (name, value, at) VALUES ($1, $2::jsonb, $3)"
    " ON CONFLICT (name) DO UPDATE SET value = excluded.value, at = excluded.at"
)
PUBLISHED_FIGURES = "SELECT value::text FROM figures WHERE name = $1"

# -- housekeeping ----------------------------------------------------------------------

DELETE_ENDED = (
    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries"
    " WHERE status = $1 AND updated_at < $2 LIMIT $3 FOR UPDATE SKIP LOCKED)"
)
DELETE_ORPHAN_EVENTS = (
    "DELETE FROM events WHERE id IN (SELECT e.id FROM events e"
    " WHERE e.created_at < $1 AND NOT EXISTS"
    " (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT $2 FOR UPDATE SKIP LOCKED)"
)
DELETE_DELETED_WEBHOOKS = (
    "DELETE FROM webhooks WHERE id IN (SELECT w.id FROM webhooks w"
    " WHERE w.deleted_at IS NOT NULL AND NOT EXISTS"
    " (SELECT 1 FROM deliveries d WHERE d.webhook_id = w.id) LIMIT $1 FOR UPDATE SKIP LOCKED)"
)
# Endpoints rate limited since before $1 and paused still at $2 (answering
# 429 now, not merely at some point back then).
LIMITED_WEBHOOKS = (
    "SELECT id FROM webhooks WHERE limited_since < $1 AND paused_until > $2 AND deleted_at IS NULL"
)
