"""Every SQL statement the SQLite store runs, one named statement per operation.

A delivery is due when ``next_attempt_at <= now``.  Claiming it sets a fresh
``lease_token`` and moves ``next_attempt_at`` to the lease's expiry, like a
queue's visibility timeout: if the claimer dies the delivery simply becomes
due again.  Every later write is conditional on the token, so a worker whose
lease was taken over can never overwrite the newer attempt.  Times are epoch
milliseconds from the injected clock.

The two statements that carry load, a scheduler turn (SETTLE) and an ingest
group (INGEST), are each ONE statement: an ``INSERT`` into a TEMP view whose
``INSTEAD OF`` trigger does the work.  In autocommit mode SQLite then takes
the write lock, writes, commits and lets go inside a single step, never
holding the lock while this process's other threads keep the GIL from the
writing thread (a BEGIN ... COMMIT of five statements held the lock 4-4.5 ms
for ~1.9 ms of work under load).  TEMP objects live on the connection that
creates them; TEMP triggers may write the main database's tables.
"""

from __future__ import annotations

from hookd.models import Attempt
from hookd.storage.events import PlannedDelivery, PlannedEvent
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
from hookd.storage.sqlite.rows import columns

# -- choosing what to claim (read without the write lock) ---------------------------

# Whether webhook w may send at ?2 (the one definition every statement below uses).
MAY_SEND = (
    "(w.status = 'active' AND w.deleted_at IS NULL"
    " AND (w.paused_until IS NULL OR w.paused_until <= ?2))"
)
# The head of the due queue: the first ?3 deliveries due by ?1, each with
# whether its webhook may send at ?2.  INDEXED BY pins the plan to walking the
# due index in order: with statistics for `webhooks` alone (what PRAGMA
# optimize leaves behind) SQLite would otherwise read and sort every due
# delivery on each claim, 4 ms becoming 1.7 s at a million queued.  rowid
# breaks ties in insertion order (FIFO) and is part of every index entry, so
# no sort is needed.  Nothing about the webhook filters rows here: a filter
# would walk over every due row of a webhook that may not send (an inactive
# webhook's whole backlog, a paused one's) on every claim, about 1 us a row;
# the LIMIT bounds what one look at the head reads, and the caller skips what
# may not go.
_DUE_QUEUE = (
    "SELECT d.next_attempt_at AS due, d.rowid AS rid, d.id AS id, d.webhook_id AS webhook_id, "
    + MAY_SEND
    + " AS sendable"
    " FROM deliveries d INDEXED BY deliveries_due JOIN webhooks w ON w.id = d.webhook_id"
    " WHERE d.next_attempt_at <= ?1 ORDER BY d.next_attempt_at, d.rowid"
)
_DUE_HEAD = _DUE_QUEUE + " LIMIT ?3"
# The claim's candidate scan: that head as [[due, rowid, id, webhook_id,
# sendable], ...], and the connection's data_version as of the read (it
# changes when another connection commits).
CLAIM_SCAN = (
    "SELECT json_group_array(json_array(due, rid, id, webhook_id, sendable)),"
    " (SELECT data_version FROM pragma_data_version) FROM (" + _DUE_HEAD + ")"
)
DATA_VERSION = "PRAGMA data_version"
# Whether that head is full (of deliveries that may not go, when this is asked).
_DUE_HEAD_FULL = (
    "(SELECT count(*) FROM (SELECT 1 FROM deliveries INDEXED BY deliveries_due"
    " WHERE next_attempt_at <= ?1 LIMIT ?3)) >= ?3"
)
# When the head is crowded with webhooks that may not take more (at their
# limit, paused, inactive): the oldest due deliveries of each webhook that may
# send, has room and has due work, read by its own queue's index, less the ?6
# already chosen (NULL: none): [[n, webhook, workspace, [[due, rowid, id], ...]], ...], of which
# the first n may go (its room, at most a share of the ?5 still wanted: half
# as much again as an even share, at least 4, so that webhooks with little due
# work leave room to the others; reading `room` rows of every webhook would
# read ten times the batch).  Only webhooks with due work count in the share:
# counting every webhook left a batch of 4 a webhook when hundreds had nothing
# due.  Rooms are a JSON object {webhook id: room}, ?4 for a webhook not in it.
# One statement, with the outer array built as text (wrapping each webhook's
# array in json() parsed it again, a fifth of the statement).
WEBHOOK_QUEUES = (
    "WITH h AS (SELECT id AS hook, workspace_id AS ws, room FROM (SELECT w.id, w.workspace_id,"
    " coalesce(json_extract(?3, '$.\"' || w.id || '\"'), ?4) AS room FROM webhooks w WHERE "
    + MAY_SEND
    + ") WHERE room > 0 AND EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_webhook_due"
    " WHERE webhook_id = hook AND next_attempt_at <= ?1)),"
    " s AS (SELECT max(4, 3 * ?5 / (2 * max(count(*), 1)) + 1) AS share, max(room) AS most"
    " FROM h)"
    " SELECT '[' || group_concat('[' || min(h.room, s.share) || ',' || json_quote(h.hook)"
    " || ',' || json_quote(h.ws) || ',' || (SELECT json_group_array("
    "json_array(due, rid, id)) FROM (SELECT next_attempt_at AS due, rowid AS rid, id"
    " FROM deliveries INDEXED BY deliveries_webhook_due"
    " WHERE webhook_id = h.hook AND next_attempt_at <= ?1"
    " AND (?6 IS NULL OR id NOT IN (SELECT value FROM json_each(?6)))"
    " ORDER BY next_attempt_at, rowid LIMIT (SELECT coalesce(min(most, share), 0) FROM s)))"
    " || ']') || ']' FROM h, s"
)
# The due time of the first delivery due by ?1 whose webhook may send at ?2:
# the first of the queue when it may (the usual answer, one row), else the
# first such of the queue's head; past a head of ?3 that may not, the earliest
# of each sendable webhook's own queue (a cost bounded by the number of
# webhooks, not by an inactive or paused backlog).
FIRST_SENDABLE_WINDOW = 32
FIRST_SENDABLE = (
    "SELECT coalesce((SELECT due FROM (" + _DUE_QUEUE + " LIMIT 1) WHERE sendable),"
    " (SELECT min(due) FROM (" + _DUE_QUEUE + f" LIMIT {FIRST_SENDABLE_WINDOW}) WHERE sendable),"
    " CASE WHEN " + _DUE_HEAD_FULL.replace("?3", str(FIRST_SENDABLE_WINDOW)) + " THEN"
    " (SELECT min((SELECT next_attempt_at FROM deliveries INDEXED BY deliveries_webhook_due"
    "  WHERE webhook_id = w.id AND next_attempt_at <= ?1"
    "  ORDER BY next_attempt_at LIMIT 1)) FROM webhooks w WHERE " + MAY_SEND + ") END)"
)
# When the earliest 429 pause still in force ends.
PAUSE_ENDS = "SELECT min(paused_until) FROM webhooks WHERE paused_until > ?"

# Bodies up to this size ride the claim's JSON; larger ones (rare: the API
# takes up to server.max_body_bytes) are read one by one after it, so no
# statement nears SQLite's string limit.
CLAIM_JSON_BODY_MAX = 64 * 1024
# After a SETTLE: what an attempt needs of each delivery ?2 leased among ?1
# (the body, stored as the UTF-8 bytes of JSON, as text, or null when larger
# than CLAIM_JSON_BODY_MAX), and [record position, current status] of the
# records SETTLE fenced.
SETTLED = (
    "SELECT (SELECT json_group_array(json_array("
    + CLAIM_COLUMNS.replace(
        "e.body",
        f"CASE WHEN length(e.body) <= {CLAIM_JSON_BODY_MAX} THEN CAST(e.body AS TEXT) END",
    )
    + ")) FROM deliveries d"
    + CLAIM_JOIN
    + " WHERE d.id IN (SELECT value FROM json_each(?1)) AND d.lease_token = ?2),"
    " (SELECT json_group_array(json_array(f.ordinal, d.status)) FROM settle_fenced f"
    " JOIN deliveries d ON d.id = f.delivery_id)"
)
EVENT_BODY = "SELECT body FROM events WHERE id = ?"

# -- SETTLE: a scheduler turn's records and leases, as one statement ---------------

# Every write of an attempt's outcome, for the scheduler, replay and test send
# alike: the turn's transitions (each only where its lease still holds: a
# record whose lease moved on, or was spent by an earlier record of the same
# batch, is fenced and listed in settle_fenced), every attempt row (the
# request went out, fenced or not), the 429 pauses (never shortening one in
# place) and 410 deactivations the applied records bring, and the leases of
# the deliveries the turn chose to claim, only where still due (another
# process may have taken one since it was chosen).  A webhook's waiting
# deliveries keep their due times under a pause: the claim skips them while
# it lasts, and moving them behind it rewrote the whole backlog on every 429.
_TRANSITIONS = columns(TransitionRow, "NEW.records")
_SETTLE_TRIGGER = (
    "CREATE TEMP TRIGGER IF NOT EXISTS settle_round_insert INSTEAD OF INSERT ON settle_round"
    " BEGIN"
    " DELETE FROM settle_fenced;"
    " INSERT INTO settle_fenced (ordinal, delivery_id) SELECT r.ordinal, r.id FROM "
    + columns(TransitionRow, "NEW.records", ("id", "token", "spent"))
    + " AS r WHERE r.spent OR NOT EXISTS (SELECT 1 FROM deliveries d"
    "  WHERE d.id = r.id AND d.lease_token = r.token);"
    " UPDATE deliveries SET status = r.status, next_attempt_at = r.next_at,"
    "  lease_token = NULL, attempt_count = attempt_count + 1, budget_used = r.budget,"
    "  rate_limited_count = r.rl_count, rate_limited_since = r.rl_since,"
    "  last_status_code = r.code, last_error = r.error, last_response_body = r.body,"
    "  status_reason = r.reason, updated_at = NEW.now"
    "  FROM " + _TRANSITIONS + " AS r"
    "  WHERE NOT r.spent AND deliveries.id = r.id AND deliveries.lease_token = r.token;"
    # A fenced attempt went out too: attemptCount counts every attempt row.
    " UPDATE deliveries SET attempt_count = attempt_count + f.n"
    "  FROM (SELECT delivery_id, count(*) AS n FROM settle_fenced GROUP BY delivery_id) AS f"
    "  WHERE deliveries.id = f.delivery_id;"
    " INSERT INTO attempts (id, delivery_id, number, started_at, duration_ms,"
    "  status_code, error, response_body, outcome)"
    "  SELECT id, delivery_id, number, started_at, duration_ms, status_code, error,"
    "  response_body, outcome FROM " + columns(Attempt, "NEW.attempts") + ";"
    # A webhook found answering ends its run of 429s, before this turn's own
    # 429s (applied next) start one again.
    " UPDATE webhooks SET limited_since = NULL"
    "  FROM (SELECT DISTINCT webhook FROM "
    + columns(ReliefRow, "NEW.reliefs")
    + "  WHERE record NOT IN (SELECT ordinal FROM settle_fenced)) AS x"
    "  WHERE webhooks.id = x.webhook AND webhooks.limited_since IS NOT NULL;"
    " UPDATE webhooks SET paused_until = max(coalesce(paused_until, 0), p.until),"
    # A run of 429s goes on only from a pause that ended moments ago: an
    # endpoint nobody tried for longer starts a new one.
    "  limited_since = CASE WHEN coalesce(paused_until, 0) >= NEW.now - "
    + str(LIMITED_RUN_GAP_MS)
    + " THEN coalesce(limited_since, NEW.now) ELSE NEW.now END"
    "  FROM (SELECT webhook, max(until) AS until FROM "
    + columns(PauseRow, "NEW.pauses")
    + "  WHERE record NOT IN (SELECT ordinal FROM settle_fenced) GROUP BY webhook) AS p"
    "  WHERE webhooks.id = p.webhook;"
    " UPDATE webhooks SET status = 'inactive', disabled_reason = d.reason,"
    "  updated_at = NEW.now"
    "  FROM (SELECT webhook, reason, min(record) FROM "
    + columns(DeactivationRow, "NEW.deactivations")
    + "  WHERE record NOT IN (SELECT ordinal FROM settle_fenced) GROUP BY webhook) AS d"
    "  WHERE webhooks.id = d.webhook AND webhooks.status = 'active';"
    " UPDATE deliveries SET lease_token = NEW.token, next_attempt_at = NEW.lease_until"
    "  WHERE id IN (SELECT value FROM json_each(NEW.leases)) AND next_attempt_at <= NEW.now;"
    " END"
)
SETTLE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS settle_fenced"
    " (ordinal INTEGER PRIMARY KEY, delivery_id TEXT NOT NULL)",
    "CREATE TEMP VIEW IF NOT EXISTS settle_round AS SELECT NULL AS records,"
    " NULL AS attempts, NULL AS pauses, NULL AS deactivations, NULL AS reliefs,"
    " NULL AS leases, NULL AS token, NULL AS lease_until, NULL AS now",
    _SETTLE_TRIGGER,
)
SETTLE = (
    "INSERT INTO settle_round"
    " (records, attempts, pauses, deactivations, reliefs, leases, token, lease_until, now)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Leases given back (shutdown, the CLI's replay): due again at once.
RELEASE = (
    "UPDATE deliveries SET lease_token = NULL, next_attempt_at = ? WHERE id = ? AND lease_token = ?"
)

# -- INGEST: a group of events with their deliveries, as one statement ----------------

# The fan-out is computed in Python from a cached copy of each workspace's
# subscriptions (webhook ids and patterns, as the text below makes).  The
# trigger first compares that text with the table's current state and aborts
# the whole statement if a webhook was created, changed, disabled or deleted
# since (the trigger's only RAISE, so SQLITE_CONSTRAINT_TRIGGER says it); the
# caller then reads them again.  A new delivery is due no earlier
# than its webhook's 429 pause ends, read by the statement itself, so that a
# paused webhook's new work does not crowd the head of the due queue.
_SUBSCRIPTIONS_OF_WS = (
    "'' || (SELECT json_group_array(json_array(id, events)) FROM (SELECT id, events"
    " FROM webhooks WHERE workspace_id = {ws} AND status = 'active' AND deleted_at IS NULL"
    " ORDER BY created_at, id))"
)
# [[workspace_id, subscriptions text], ...] for a JSON array of workspace ids.
SUBSCRIPTIONS = (
    "SELECT json_group_array(json_array(value, "
    + _SUBSCRIPTIONS_OF_WS.format(ws="value")
    + ")) FROM json_each(?)"
)
SUBSCRIPTIONS_CHANGED = "hookd: subscriptions changed"
INGEST_DDL = (
    "CREATE TEMP VIEW IF NOT EXISTS ingest_group AS SELECT NULL AS subscriptions,"
    " NULL AS events, NULL AS deliveries, NULL AS status, NULL AS due, NULL AS now",
    "CREATE TEMP TRIGGER IF NOT EXISTS ingest_group_insert INSTEAD OF INSERT ON ingest_group"
    " BEGIN"
    " INSERT OR IGNORE INTO workspaces (id, name, created_at)"
    "  SELECT workspace, workspace, NEW.now FROM "
    + columns(SubscriptionsRow, "NEW.subscriptions", ("workspace",))
    + ";"
    f" SELECT RAISE(ABORT, '{SUBSCRIPTIONS_CHANGED}') FROM "
    + columns(SubscriptionsRow, "NEW.subscriptions")
    + " AS s WHERE s.text IS NOT "
    + _SUBSCRIPTIONS_OF_WS.format(ws="s.workspace")
    + ";"
    " INSERT INTO events (id, workspace_id, type, body, idempotency_key, created_at)"
    "  SELECT id, workspace, type, CAST(body AS BLOB), key, NEW.now FROM "
    + columns(PlannedEvent, "NEW.events")
    + ";"
    " INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status,"
    "  next_attempt_at, created_at, updated_at)"
    "  SELECT r.id, r.workspace, r.event, r.webhook, r.type, NEW.status,"
    "  max(NEW.due, coalesce((SELECT paused_until FROM webhooks WHERE id = r.webhook), 0)),"
    "  NEW.now, NEW.now FROM " + columns(PlannedDelivery, "NEW.deliveries") + " AS r;"
    " END",
)
INGEST = (
    "INSERT INTO ingest_group (subscriptions, events, deliveries, status, due, now)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
# The event that took an idempotency key within the window, and its deliveries.
EARLIER_EVENT = (
    "SELECT id, workspace_id, type, body, idempotency_key, created_at FROM events"
    " WHERE workspace_id = ? AND idempotency_key = ? AND created_at >= ?"
    " ORDER BY created_at LIMIT 1"
)
DELIVERIES_OF_EVENT = "SELECT id FROM deliveries WHERE event_id = ? ORDER BY id"
