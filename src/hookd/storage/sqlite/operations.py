"""The operators' statements of SQLite: keys, webhooks, reads, changes, figures.

This module is the backend's ``storage.sql.Sql``: every name the shared
``Admin``, ``Figures`` and ``Housekeeping`` run, with its parameters in the
same positions on every backend.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from hookd.storage.rows import (
    CLAIM_COLUMNS,
    CLAIM_JOIN,
    DELIVERY_COLUMNS,
    SCHEDULABLE_SQL,
    WEBHOOK_COLUMNS,
)
from hookd.storage.sqlite.queries import MAY_SEND


def param(position: int) -> str:
    """The placeholder of parameter ``position`` (see storage/sql.py)."""
    return f"?{position}"


def values(items: Sequence[str]) -> str:
    """A list as ``IN (SELECT value FROM json_each(?))`` takes it."""
    return json.dumps(list(items))


# Delivery workers beside serve poll every poll_interval_seconds (sql.Sql.WAKE).
WAKE: str | None = None

# -- operator changes: replay, webhook deletion, interrupted test sends -------------

# A lifecycle.Change applied to the deliveries ?ids that are in one of the
# statuses it applies to (?from): its status, due time (or lease expiry) and
# reason, a fresh budget or the counters kept, and the lease (NULL: none).
APPLY_CHANGE = (
    "UPDATE deliveries SET status = ?1, next_attempt_at = ?2, lease_token = ?3,"
    " status_reason = ?4,"
    " budget_used = CASE WHEN ?5 THEN 0 ELSE budget_used END,"
    " rate_limited_count = CASE WHEN ?5 THEN 0 ELSE rate_limited_count END,"
    " rate_limited_since = CASE WHEN ?5 THEN NULL ELSE rate_limited_since END,"
    " updated_at = ?6"
    " WHERE id IN (SELECT value FROM json_each(?7))"
    " AND status IN (SELECT value FROM json_each(?8))"
)
# Which deliveries each change applies to, a chunk at a time.
OPEN_OF_WEBHOOK = (
    f"SELECT id FROM deliveries WHERE webhook_id = ?1 AND status IN {SCHEDULABLE_SQL} LIMIT ?2"
)
DEAD_LETTERS_OF_WEBHOOK = (
    "SELECT id FROM deliveries WHERE webhook_id = ?1 AND status = 'dead_letter' AND is_test = 0"
    " AND (?2 IS NULL OR created_at >= ?2) LIMIT ?3"
)
INTERRUPTED_TESTS = (
    "SELECT id FROM deliveries WHERE is_test = 1 AND status = 'pending' AND created_at < ?1"
    " LIMIT ?2"
)
REPLAY_TARGET = (
    "SELECT d.status, w.status, w.deleted_at, w.paused_until FROM deliveries d"
    " JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = ?1"
    " AND (?2 IS NULL OR d.workspace_id = ?2)"
)
CLAIM_OF = "SELECT " + CLAIM_COLUMNS + " FROM deliveries d" + CLAIM_JOIN + " WHERE d.id = ?1"

# -- tenancy, keys, webhooks, reads ---------------------------------------------------

ENSURE_WORKSPACE = "INSERT OR IGNORE INTO workspaces (id, name, created_at) VALUES (?1, ?2, ?3)"
GET_WORKSPACE = "SELECT id, name, created_at FROM workspaces WHERE id = ?1"
INSERT_KEY = (
    "INSERT INTO api_keys (id, workspace_id, digest, prefix, owner, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
FIND_KEY = (
    "SELECT id, workspace_id, prefix, owner, created_at, revoked_at, digest"
    " FROM api_keys WHERE digest = ?"
)
LIST_KEYS = (
    "SELECT id, workspace_id, prefix, owner, created_at, revoked_at"
    " FROM api_keys ORDER BY created_at, id"
)
REVOKE_KEY = "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
COUNT_KEYS = "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL"
# (The write transaction already keeps other writers out.)
LOCK_WORKSPACE = "SELECT id FROM workspaces WHERE id = ?1"
COUNT_WEBHOOKS = "SELECT count(*) FROM webhooks WHERE workspace_id = ?1 AND deleted_at IS NULL"
INSERT_WEBHOOK = (
    "INSERT INTO webhooks (id, workspace_id, name, url, events, secret,"
    " retry_attempts, timeout_ms, status, created_by, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)"
)
GET_WEBHOOK = (
    f"SELECT {WEBHOOK_COLUMNS} FROM webhooks"
    " WHERE id = ?1 AND deleted_at IS NULL AND (?2 IS NULL OR workspace_id = ?2)"
)
LIST_WEBHOOKS = (
    f"SELECT {WEBHOOK_COLUMNS} FROM webhooks"
    " WHERE deleted_at IS NULL AND (?1 IS NULL OR workspace_id = ?1)"
    " AND (created_at, id) > (?2, ?3) ORDER BY created_at, id LIMIT ?4"
)
UPDATE_WEBHOOK = "UPDATE webhooks SET {sets} WHERE id = {id}"
DELETE_WEBHOOK = (
    "UPDATE webhooks SET deleted_at = ?1, status = 'inactive', updated_at = ?1"
    " WHERE id = ?2 AND workspace_id = ?3 AND deleted_at IS NULL"
)
INSERT_TEST_EVENT = (
    "INSERT INTO events (id, workspace_id, type, body, created_at) VALUES (?, ?, ?, ?, ?)"
)
INSERT_TEST_DELIVERY = (
    "INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type,"
    " status, next_attempt_at, lease_token, is_test, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)"
)
GET_EVENT = (
    "SELECT id, workspace_id, type, body, idempotency_key, created_at FROM events"
    " WHERE id = ?1 AND (?2 IS NULL OR workspace_id = ?2)"
)
GET_DELIVERY = (
    f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1 AND (?2 IS NULL OR workspace_id = ?2)"
)
LIST_DELIVERIES = (
    f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {{where}}"
    " ORDER BY created_at DESC, id DESC LIMIT {limit}"
)
LIST_ATTEMPTS = (
    "SELECT id, delivery_id, number, started_at, duration_ms, status_code, error,"
    " response_body, outcome FROM attempts WHERE delivery_id = ? ORDER BY number, started_at"
)

# -- figures: /metrics and what the dashboard shows -----------------------------------

COUNT_BY_STATUS = "SELECT status, count(*) FROM deliveries GROUP BY status"


def _oldest_due(now: str, workspace: str = "") -> str:
    """Since when the oldest delivery that could go now has been able to: due
    by ``now``, its webhook active and not paused, counted from its due time
    or from the end of its webhook's last 429 pause, whichever is later
    (deliveries that waited behind a pause were not late while it lasted; a
    lease that expired is late work again).  One index seek per webhook that
    may send; ``workspace`` narrows the webhooks."""
    return (
        "SELECT min(max(first, coalesce(paused_until, 0))) FROM"
        " (SELECT w.paused_until, (SELECT next_attempt_at FROM deliveries"
        f"  INDEXED BY deliveries_webhook_due WHERE webhook_id = w.id AND next_attempt_at <= {now}"
        f"  ORDER BY next_attempt_at LIMIT 1) AS first FROM webhooks w WHERE {workspace}"
        + MAY_SEND.replace("?2", now)
        + ") WHERE first IS NOT NULL"
    )


OLDEST_DUE = _oldest_due("?1")
LEASED_NOW = "SELECT count(*) FROM deliveries WHERE next_attempt_at > ? AND lease_token IS NOT NULL"
# A workspace's deliveries by status, through its webhooks: (webhook_id,
# status) is an index that covers the count, so no delivery row is read.
WORKSPACE_COUNT_BY_STATUS = (
    "SELECT d.status, count(*) FROM webhooks w"
    " JOIN deliveries d INDEXED BY deliveries_webhook ON d.webhook_id = w.id"
    " WHERE w.workspace_id = ? GROUP BY d.status"
)
WORKSPACE_OLDEST_DUE = _oldest_due("?2", "w.workspace_id = ?1 AND ")
WORKSPACE_LEASED_NOW = (
    "SELECT count(*) FROM webhooks w"
    " JOIN deliveries d INDEXED BY deliveries_webhook_due ON d.webhook_id = w.id"
    " WHERE w.workspace_id = ? AND d.next_attempt_at > ? AND d.lease_token IS NOT NULL"
)
WEBHOOK_OF_WORKSPACE = (
    "SELECT 1 FROM webhooks WHERE id = ? AND workspace_id = ? AND deleted_at IS NULL"
)
# A webhook's deliveries that ended since ?2, and those still scheduled (test sends aside).
WEBHOOK_OUTCOMES = (
    "SELECT coalesce(sum(status = 'delivered' AND updated_at >= ?2), 0),"
    " coalesce(sum(status = 'dead_letter' AND updated_at >= ?2), 0),"
    f" coalesce(sum(status IN {SCHEDULABLE_SQL}), 0)"
    " FROM deliveries INDEXED BY deliveries_webhook WHERE webhook_id = ?1 AND is_test = 0"
)
WEBHOOK_LEASED_NOW = (
    "SELECT count(*) FROM deliveries INDEXED BY deliveries_webhook_due"
    " WHERE webhook_id = ? AND next_attempt_at > ? AND lease_token IS NOT NULL AND is_test = 0"
)
# The latest attempt since ?2 without a 2xx.  An attempt changes its
# delivery's updated_at, so deliveries not touched since have none to read.
WEBHOOK_LAST_ERROR = (
    "SELECT a.started_at, a.status_code, a.error, a.delivery_id"
    " FROM deliveries d INDEXED BY deliveries_webhook"
    " JOIN attempts a ON a.delivery_id = d.id"
    " WHERE d.webhook_id = ?1 AND d.is_test = 0 AND d.updated_at >= ?2"
    " AND a.started_at >= ?2 AND a.outcome != '2xx'"
    " ORDER BY a.started_at DESC, a.number DESC LIMIT 1"
)
PAUSED_WEBHOOKS = (
    "SELECT count(*) FROM webhooks WHERE paused_until > ? AND status = 'active'"
    " AND deleted_at IS NULL"
)
OLDEST_RATE_LIMITED = (
    "SELECT min(rate_limited_since) FROM deliveries INDEXED BY deliveries_status"
    " WHERE status = 'rate_limited'"
)
DATABASE_SIZE = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"


# -- maintenance -----------------------------------------------------------------------

# One batch of deliveries in status ?1 last changed before ?2 (their attempts go with them).
DELETE_ENDED = (
    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries"
    " WHERE status = ?1 AND updated_at < ?2 LIMIT ?3)"
)
# Events nobody refers to any more, made before ?1 (the idempotency window's start).
DELETE_ORPHAN_EVENTS = (
    "DELETE FROM events WHERE id IN (SELECT e.id FROM events e"
    " WHERE e.created_at < ?1 AND NOT EXISTS"
    " (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT ?2)"
)
# Deleted webhooks none of whose deliveries are left.
DELETE_DELETED_WEBHOOKS = (
    "DELETE FROM webhooks WHERE id IN (SELECT w.id FROM webhooks w"
    " WHERE w.deleted_at IS NOT NULL AND NOT EXISTS"
    " (SELECT 1 FROM deliveries d WHERE d.webhook_id = w.id) LIMIT ?1)"
)
# Webhooks whose run of 429s began before ?1 (the lane's maximum age).
# Endpoints rate limited since before ?1 and paused still at ?2 (answering
# 429 now, not merely at some point back then).
LIMITED_WEBHOOKS = (
    "SELECT id FROM webhooks WHERE limited_since < ?1 AND paused_until > ?2 AND deleted_at IS NULL"
)
