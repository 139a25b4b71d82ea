"""The SQLite store: every SQL statement hookd runs against its embedded database.

Design notes
------------
* One aiosqlite connection, in autocommit mode, does all but ingest.  A
  unit of work is a plain synchronous function handed to aiosqlite's worker
  thread as a single call (``_tx``): its statements run back to back between
  ``BEGIN IMMEDIATE`` and ``COMMIT``, so no other coroutine's statement can
  slip into the transaction and a whole batch costs one thread round trip.
* Writes that arrive concurrently (event ingest, attempt records) are group
  committed: whatever queued up while the previous transaction was being
  committed goes into the next one (``_GroupCommit``).  Each caller is
  answered only after the COMMIT that holds its row returned.
* Ingest has a second connection (and thread) of its own, opened at the first
  ingest, so that events never wait behind a scheduler turn on one thread.
  A group without idempotency keys is one autocommit statement
  (``_INGEST_GROUP_SQL``): the write lock is held for SQLite's work only.
* A delivery is due when ``next_attempt_at <= now``.  Claiming it sets a fresh
  ``lease_token`` and moves ``next_attempt_at`` to the lease's expiry, like a
  queue's visibility timeout: if the claimer dies the delivery simply becomes
  due again.  Every later write is conditional on the token, so a worker
  whose lease was taken over can never overwrite the newer attempt.
* Times are epoch milliseconds from the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

import aiosqlite
import structlog

from hookd.clock import Clock, SystemClock
from hookd.ids import iso_ms, new_id
from hookd.lifecycle import ERROR_WEBHOOK_DELETED
from hookd.models import (
    SCHEDULABLE,
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
    subscribes,
)
from hookd.storage.base import (
    AttemptRecord,
    DeliveryFilter,
    IdempotencyConflict,
    NewEvent,
    Page,
    QueueStats,
    RateLimitStats,
    RecordResult,
    ReplayClaim,
    StoreError,
    WebhookChanges,
    WebhookStats,
)

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")
# What the scheduler's round trip returns: the records' results, the claims.
_Round = tuple[list[RecordResult], list[ClaimedDelivery]]

log = structlog.get_logger("hookd.storage")

_SCHEDULABLE_SQL = "('pending','failed','rate_limited')"

# Versioned migrations, applied in order at open; never edit one that shipped.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE workspaces (
            id          TEXT PRIMARY KEY,
            name        TEXT NOT NULL,
            created_at  INTEGER NOT NULL
        );
        CREATE TABLE api_keys (
            id            TEXT PRIMARY KEY,
            workspace_id  TEXT REFERENCES workspaces(id),
            digest        BLOB NOT NULL UNIQUE,
            prefix        TEXT NOT NULL,
            owner         TEXT NOT NULL,
            created_at    INTEGER NOT NULL,
            revoked_at    INTEGER
        );
        CREATE TABLE webhooks (
            id                     TEXT PRIMARY KEY,
            workspace_id           TEXT NOT NULL REFERENCES workspaces(id),
            name                   TEXT NOT NULL,
            url                    TEXT NOT NULL,
            events                 TEXT NOT NULL,
            secret                 TEXT NOT NULL,
            previous_secret        TEXT,
            previous_secret_until  INTEGER,
            retry_attempts         INTEGER NOT NULL,
            timeout_ms             INTEGER NOT NULL,
            status                 TEXT NOT NULL CHECK (status IN ('active','inactive')),
            disabled_reason        TEXT,
            paused_until           INTEGER,
            created_by             TEXT NOT NULL,
            created_at             INTEGER NOT NULL,
            updated_at             INTEGER NOT NULL,
            deleted_at             INTEGER
        );
        CREATE INDEX webhooks_workspace ON webhooks(workspace_id, created_at, id)
            WHERE deleted_at IS NULL;
        CREATE TABLE events (
            id               TEXT PRIMARY KEY,
            workspace_id     TEXT NOT NULL REFERENCES workspaces(id),
            type             TEXT NOT NULL,
            body             BLOB NOT NULL,
            idempotency_key  TEXT,
            created_at       INTEGER NOT NULL
        );
        CREATE INDEX events_idempotency ON events(workspace_id, idempotency_key, created_at)
            WHERE idempotency_key IS NOT NULL;
        CREATE INDEX events_created ON events(created_at);
        CREATE TABLE deliveries (
            id                  TEXT PRIMARY KEY,
            workspace_id        TEXT NOT NULL REFERENCES workspaces(id),
            event_id            TEXT NOT NULL REFERENCES events(id),
            webhook_id          TEXT NOT NULL REFERENCES webhooks(id),
            event_type          TEXT NOT NULL,
            status              TEXT NOT NULL CHECK (status IN
                                  ('pending','delivered','failed','rate_limited','dead_letter')),
            attempt_count       INTEGER NOT NULL DEFAULT 0,
            budget_used         INTEGER NOT NULL DEFAULT 0,
            rate_limited_count  INTEGER NOT NULL DEFAULT 0,
            rate_limited_since  INTEGER,
            next_attempt_at     INTEGER,
            lease_token         TEXT,
            last_status_code    INTEGER,
            last_error          TEXT,
            last_response_body  TEXT,
            status_reason       TEXT,
            is_test             INTEGER NOT NULL DEFAULT 0,
            created_at          INTEGER NOT NULL,
            updated_at          INTEGER NOT NULL,
            -- A delivery is scheduled exactly when it is not terminal.
            CHECK ((next_attempt_at IS NULL) = (status IN ('delivered','dead_letter')))
        );
        CREATE INDEX deliveries_due ON deliveries(next_attempt_at)
            WHERE next_attempt_at IS NOT NULL;
        CREATE INDEX deliveries_workspace ON deliveries(workspace_id, created_at, id);
        CREATE INDEX deliveries_webhook ON deliveries(webhook_id, status);
        CREATE INDEX deliveries_status ON deliveries(status, updated_at);
        CREATE INDEX deliveries_event ON deliveries(event_id);
        CREATE TABLE attempts (
            id             TEXT PRIMARY KEY,
            delivery_id    TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
            number         INTEGER NOT NULL,
            started_at     INTEGER NOT NULL,
            duration_ms    INTEGER NOT NULL,
            status_code    INTEGER,
            error          TEXT,
            response_body  TEXT,
            outcome        TEXT NOT NULL
        );
        CREATE INDEX attempts_delivery ON attempts(delivery_id, number);
        """,
    ),
    (
        2,
        """
        -- One webhook's queue in due order: the claim's seek past webhooks at
        -- their limit, and the 429 pause's push of a webhook's waiting work.
        CREATE INDEX deliveries_webhook_due ON deliveries(webhook_id, next_attempt_at)
            WHERE next_attempt_at IS NOT NULL;
        """,
    ),
)

_DELIVERY_COLUMNS = (
    "id, workspace_id, event_id, webhook_id, event_type, status, attempt_count, budget_used,"
    " rate_limited_count, rate_limited_since, next_attempt_at, last_status_code, last_error,"
    " last_response_body, is_test, created_at, updated_at, status_reason"
)

_WEBHOOK_COLUMNS = (
    "id, workspace_id, name, url, events, secret, previous_secret, previous_secret_until,"
    " retry_attempts, timeout_ms, status, disabled_reason, paused_until, created_by,"
    " created_at, updated_at"
)

_CLAIM_COLUMNS = (
    "d.id, d.workspace_id, d.webhook_id, d.event_id, d.event_type, e.body, w.url, w.secret,"
    " w.previous_secret, w.previous_secret_until, w.timeout_ms, w.retry_attempts, d.status,"
    " d.attempt_count, d.budget_used, d.rate_limited_count, d.rate_limited_since, d.lease_token"
)


# The hot statements below hand their rows back as one JSON array built inside
# SQLite.  The sqlite3 module releases the GIL around every step of a statement
# (one per row read or written) and must then take it back from the busy event
# loop; on the database thread those hand-backs, not SQLite's own work, were
# most of a transaction's time (a claim of 256 stepped ~600 rows one by one).
# One step per statement is one hand-back.


def _json_rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """The rows of a statement that aggregates them into one JSON array."""
    row = conn.execute(sql, params).fetchone()
    return json.loads(row[0]) if row and row[0] else []


# Whether webhook w may send at ?2 (the one definition every statement below uses).
_MAY_SEND = (
    "(w.status = 'active' AND w.deleted_at IS NULL"
    " AND (w.paused_until IS NULL OR w.paused_until <= ?2))"
)
# The head of the due queue: the first ?3 deliveries due by ?1, each with
# whether its webhook may send at ?2 (active, not paused by a 429).  INDEXED BY
# pins the plan to walking the due index in order: with statistics for
# `webhooks` alone (what PRAGMA optimize leaves behind) SQLite would otherwise
# read and sort every due delivery on each claim, 4 ms becoming 1.7 s at a
# million queued.  rowid breaks ties in insertion order (FIFO) and is part of
# every index entry, so no sort is needed.  Nothing about the webhook filters
# rows here: a filter would walk over every due row of a webhook that may not
# send (an inactive webhook's whole backlog, a paused one's) on every claim,
# about 1 us a row; the LIMIT bounds what one look at the head reads, and the
# caller skips what may not go.
_DUE_QUEUE = (
    "SELECT d.next_attempt_at AS due, d.rowid AS rid, d.id AS id, d.webhook_id AS webhook_id, "
    + _MAY_SEND
    + " AS sendable"
    " FROM deliveries d INDEXED BY deliveries_due JOIN webhooks w ON w.id = d.webhook_id"
    " WHERE d.next_attempt_at <= ?1 ORDER BY d.next_attempt_at, d.rowid"
)
_DUE_HEAD = _DUE_QUEUE + " LIMIT ?3"
# The claim's candidate scan: that head as [[due, rowid, id, webhook_id,
# sendable], ...], and the connection's data_version as of the read (it
# changes when another connection commits).
_CLAIM_SCAN_SQL = (
    "SELECT json_group_array(json_array(due, rid, id, webhook_id, sendable)),"
    " (SELECT data_version FROM pragma_data_version) FROM (" + _DUE_HEAD + ")"
)
# Whether that head is full (of deliveries that may not go, when this is asked).
_DUE_HEAD_FULL = (
    "(SELECT count(*) FROM (SELECT 1 FROM deliveries INDEXED BY deliveries_due"
    " WHERE next_attempt_at <= ?1 LIMIT ?3)) >= ?3"
)
# When the head is crowded with webhooks that may not take more (at their
# limit, paused, inactive): the oldest due deliveries of each webhook that may
# send, has room and has due work, read by its own queue's index, less the ?6
# already chosen (NULL: none): [[n, [[due, rowid, id], ...]], ...], of which
# the first n may go (its room, at most a share of the ?5 still wanted: half
# as much again as an even share, at least 4, so that webhooks with little due
# work leave room to the others; reading `room` rows of every webhook would
# read ten times the batch).  Only webhooks with due work count in the share:
# counting every webhook left a batch of 4 a webhook when hundreds had nothing
# due.  Rooms are a JSON object {webhook id: room}, ?4 for a webhook not in it.
# One statement: the choice once took one per distinct number of rows wanted,
# and one more for the webhooks, each handing the GIL back to a busy event
# loop.  The outer array is built as text: wrapping each webhook's array in
# json() parsed it again (about a fifth of the statement).
_WEBHOOK_QUEUES_SQL = (
    "WITH h AS (SELECT id AS hook, room FROM (SELECT w.id,"
    " coalesce(json_extract(?3, '$.\"' || w.id || '\"'), ?4) AS room FROM webhooks w WHERE "
    + _MAY_SEND
    + ") WHERE room > 0 AND EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_webhook_due"
    " WHERE webhook_id = hook AND next_attempt_at <= ?1)),"
    " s AS (SELECT max(4, 3 * ?5 / (2 * max(count(*), 1)) + 1) AS share, max(room) AS most"
    " FROM h)"
    " SELECT '[' || group_concat('[' || min(h.room, s.share) || ',' || (SELECT json_group_array("
    "json_array(due, rid, id)) FROM (SELECT next_attempt_at AS due, rowid AS rid, id"
    " FROM deliveries INDEXED BY deliveries_webhook_due"
    " WHERE webhook_id = h.hook AND next_attempt_at <= ?1"
    " AND (?6 IS NULL OR id NOT IN (SELECT value FROM json_each(?6)))"
    " ORDER BY next_attempt_at, rowid LIMIT (SELECT coalesce(min(most, share), 0) FROM s)))"
    " || ']') || ']' FROM h, s"
)
# The due time of the first delivery due by ?1 whose webhook may send at ?2:
# the first of the queue when it may (the usual answer, one row), else the
# first such of the queue's head; past a head of ?3 that may not, the
# earliest of each sendable webhook's own queue (a cost bounded by the number
# of webhooks, not by an inactive or paused backlog).  next_due_at asks it each
# time the loop goes idle (every ingest wakes it), so the head is short: a
# parked webhook's new work fills it.
_FIRST_SENDABLE_WINDOW = 32
_FIRST_SENDABLE_SQL = (
    "SELECT coalesce((SELECT due FROM (" + _DUE_QUEUE + " LIMIT 1) WHERE sendable),"
    " (SELECT min(due) FROM (" + _DUE_HEAD + ") WHERE sendable),"
    " CASE WHEN " + _DUE_HEAD_FULL + " THEN"
    " (SELECT min((SELECT next_attempt_at FROM deliveries INDEXED BY deliveries_webhook_due"
    "  WHERE webhook_id = w.id AND next_attempt_at <= ?1"
    "  ORDER BY next_attempt_at LIMIT 1)) FROM webhooks w WHERE " + _MAY_SEND + ") END)"
)
# A due time later than any real one.
_FAR_FUTURE_MS = 2**62
# Bodies up to this size ride the claim's JSON; larger ones (rare: the API
# takes up to server.max_body_bytes) are read one by one after it.
_CLAIM_JSON_BODY_MAX = 64 * 1024
# What an attempt needs of each delivery just leased (the columns of
# _CLAIM_COLUMNS; the body, stored as the UTF-8 bytes of JSON, travels as text,
# or as null when larger than _CLAIM_JSON_BODY_MAX).
_CLAIMED_SQL = (
    "SELECT json_group_array(json_array("
    + _CLAIM_COLUMNS.replace(
        "e.body",
        f"CASE WHEN length(e.body) <= {_CLAIM_JSON_BODY_MAX} THEN CAST(e.body AS TEXT) END",
    )
    + ")) FROM deliveries d JOIN events e ON e.id = d.event_id JOIN webhooks w"
    " ON w.id = d.webhook_id WHERE d.id IN (SELECT value FROM json_each(?)) AND d.lease_token = ?"
)
# Head rows read past the batch, so that webhooks at their limit can still
# leave a full batch; a window this crowded sends the claim to the per-webhook
# queues instead.
_SCAN_SLACK = 64


# How long claims skip a head of the queue found blocked before reading it again.
_HEAD_BLOCKED_RECHECK_MS = 1000


def _claim_window(limit: int) -> int:
    """How many head rows a claim of ``limit`` reads before turning to the webhooks' queues."""
    return min(limit + _SCAN_SLACK, limit * 4)


# One attempt's transition, fenced by its lease token.
_RECORD_TRANSITION_SQL = (
    "UPDATE deliveries SET status = ?, next_attempt_at = ?, lease_token = NULL,"
    " attempt_count = attempt_count + 1, budget_used = ?, rate_limited_count = ?,"
    " rate_limited_since = ?, last_status_code = ?, last_error = ?,"
    " last_response_body = ?, status_reason = ?, updated_at = ?"
    " WHERE id = ? AND lease_token = ?"
)
_INSERT_ATTEMPT_SQL = (
    "INSERT INTO attempts (id, delivery_id, number, started_at, duration_ms,"
    " status_code, error, response_body, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The same for many at once, from a JSON array of [id, lease token, status,
# next attempt, budget used, 429 count, 429 since, status code, error,
# response body, status reason] ...
_RECORD_TRANSITIONS = (
    "UPDATE deliveries SET status = r.status, next_attempt_at = r.next_at,"
    " lease_token = NULL, attempt_count = attempt_count + 1, budget_used = r.budget,"
    " rate_limited_count = r.rl_count, rate_limited_since = r.rl_since,"
    " last_status_code = r.code, last_error = r.error, last_response_body = r.body,"
    " status_reason = r.reason, updated_at = {now}"
    " FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS token,"
    "   json_extract(value, '$[2]') AS status, json_extract(value, '$[3]') AS next_at,"
    "   json_extract(value, '$[4]') AS budget, json_extract(value, '$[5]') AS rl_count,"
    "   json_extract(value, '$[6]') AS rl_since, json_extract(value, '$[7]') AS code,"
    "   json_extract(value, '$[8]') AS error, json_extract(value, '$[9]') AS body,"
    "   json_extract(value, '$[10]') AS reason FROM json_each({records})) AS r"
    " WHERE deliveries.id = r.id AND deliveries.lease_token = r.token"
)
_RECORD_TRANSITIONS_SQL = _RECORD_TRANSITIONS.format(now="?1", records="?2")
# ... which of them still hold their lease (a JSON array of ids), read just
# before that UPDATE in the same transaction (RETURNING steps once per row) ...
_LEASED_SQL = (
    "SELECT json_group_array(d.id) FROM json_each(?) AS r CROSS JOIN deliveries d"
    " ON d.id = json_extract(r.value, '$[0]') AND d.lease_token = json_extract(r.value, '$[1]')"
)
# ... and their attempt rows, from [id, delivery id, number, started at,
# duration, status code, error, response body, outcome].
_INSERT_ATTEMPTS = (
    "INSERT INTO attempts (id, delivery_id, number, started_at, duration_ms,"
    " status_code, error, response_body, outcome)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    " json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'),"
    " json_extract(value, '$[8]') FROM json_each({attempts})"
)
_INSERT_ATTEMPTS_SQL = _INSERT_ATTEMPTS.format(attempts="?")
# A claim's leases: only deliveries still due (another process may have taken
# one since it was chosen).
_LEASE = (
    "UPDATE deliveries SET lease_token = {token}, next_attempt_at = {until}"
    " WHERE id IN (SELECT value FROM json_each({ids})) AND next_attempt_at <= {now}"
)
_LEASE_SQL = _LEASE.format(token="?1", until="?2", ids="?3", now="?4")
# A 429's pause of its webhook: never shortens one already in place.  (The
# webhook's waiting deliveries keep their due times: the claim skips them
# while it is paused, see _DUE_HEAD, and ingest schedules new ones no earlier
# than the pause's end; moving them behind the pause rewrote the whole
# backlog, a page each, 25 us a delivery, on every 429 that lengthened it.)
_PAUSE = (
    "UPDATE webhooks SET paused_until = max(coalesce(paused_until, 0), {until}){source}"
    " WHERE {match}"
)
_PAUSE_SQL = _PAUSE.format(until="?1", source="", match="id = ?2")
# A 410's deactivation of its webhook.
_DEACTIVATE = (
    "UPDATE webhooks SET status = 'inactive', disabled_reason = {reason},"
    " updated_at = {now}{source} WHERE {match} AND status = 'active'"
)
_DEACTIVATE_SQL = _DEACTIVATE.format(reason="?1", now="?2", source="", match="id = ?3")
# The scheduler's round trip as ONE statement, for the reason given at
# _INGEST_GROUP_SQL (a transaction of many statements holds the write lock
# while its thread waits for the GIL between them: the ingest connection then
# waits too): the previous batch's transitions, aborted whole if a lease moved
# on (the caller then takes the transactional path, which tells each record
# apart), their attempt rows, the pauses and deactivations they bring
# ([webhook id, until] and [webhook id, reason], one per webhook), and the
# leases of the deliveries chosen just before by reading the queue without
# the lock (webhooks paused or deactivated here were left out of that
# choice).  What was leased is read back afterwards, also without the lock.
# A TEMP view and trigger on the store's own connection.
_LEASE_MOVED = "hookd: a lease moved on"
_SETTLE_ROUND_DDL = (
    "CREATE TEMP VIEW IF NOT EXISTS settle_round AS SELECT NULL AS records,"
    " NULL AS attempts, NULL AS pauses, NULL AS deactivations, NULL AS leases,"
    " NULL AS token, NULL AS lease_until, NULL AS now",
    "CREATE TEMP TRIGGER IF NOT EXISTS settle_round_insert INSTEAD OF INSERT ON settle_round"
    " BEGIN "
    + _RECORD_TRANSITIONS.format(now="NEW.now", records="NEW.records")
    + f"; SELECT RAISE(ABORT, '{_LEASE_MOVED}')"
    " WHERE changes() <> json_array_length(NEW.records); "
    + _INSERT_ATTEMPTS.format(attempts="NEW.attempts")
    + "; "
    + _PAUSE.format(
        until="p.until",
        source=" FROM (SELECT json_extract(value, '$[0]') AS id,"
        " json_extract(value, '$[1]') AS until FROM json_each(NEW.pauses)) AS p",
        match="webhooks.id = p.id",
    )
    + "; "
    + _DEACTIVATE.format(
        reason="d.reason",
        now="NEW.now",
        source=" FROM (SELECT json_extract(value, '$[0]') AS id,"
        " json_extract(value, '$[1]') AS reason FROM json_each(NEW.deactivations)) AS d",
        match="webhooks.id = d.id",
    )
    + "; "
    + _LEASE.format(token="NEW.token", until="NEW.lease_until", ids="NEW.leases", now="NEW.now")
    + "; END",
)
_SETTLE_ROUND_SQL = (
    "INSERT INTO settle_round"
    " (records, attempts, pauses, deactivations, leases, token, lease_until, now)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# SQLite's JSON functions end a string at an escaped NUL, so a batch whose JSON
# holds one (as text a hostile receiver sent) is bound row by row instead.
_JSON_NUL = "\\u0000"
# A group whose JSON would be larger is bound row by row too: one string per
# statement must stay far below SQLite's length limit (1e9 bytes) and a
# transient copy of the group in memory stays small.
_JSON_BATCH_MAX_CHARS = 32 * 1024 * 1024


def _webhook(row: sqlite3.Row | tuple[Any, ...]) -> Webhook:
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


def _delivery(row: sqlite3.Row | tuple[Any, ...]) -> Delivery:
    last_error = row[12]
    if last_error is None and row[17] is not None:
        last_error = row[17]
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


# Status by its stored value, without the enum's call machinery (every claim).
_STATUS: dict[str, Status] = {status.value: status for status in Status}


def _claimed(row: Sequence[Any], now_ms: int) -> ClaimedDelivery:
    signing = [row[7]]
    if row[8] is not None and row[9] is not None and row[9] > now_ms:
        signing.append(row[8])
    return ClaimedDelivery(
        delivery_id=row[0],
        workspace_id=row[1],
        webhook_id=row[2],
        event_id=row[3],
        event_type=row[4],
        # Text when the row came as JSON (see _CLAIMED_SQL).
        body=row[5].encode() if isinstance(row[5], str) else bytes(row[5]),
        url=row[6],
        secrets=tuple(signing),
        timeout_ms=row[10],
        retry_attempts=row[11],
        status=_STATUS[row[12]],
        attempt_count=row[13],
        budget_used=row[14],
        rate_limited_count=row[15],
        rate_limited_since=row[16],
        lease_token=row[17],
    )


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


# One encoder for every event body: json.dumps with options builds a new one per call.
_BODY_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def serialize_event(
    event_id: str, workspace_id: str, event_type: str, data: Any, created_at_iso: str
) -> bytes:
    """The event body every attempt sends, serialized once at ingest."""
    return _BODY_ENCODER.encode(
        {
            "id": event_id,
            "type": event_type,
            "createdAt": created_at_iso,
            "workspaceId": workspace_id,
            "data": data,
        }
    ).encode("utf-8")


class _GroupCommit(Generic[I, R]):
    """Commit whatever queued up while the previous transaction was running.

    A caller is answered only after the COMMIT containing its item returned.
    Under light load each item gets a transaction of its own at once; under
    heavy load many share one, so the fsync cost is paid per batch.
    """

    def __init__(
        self,
        commit: Callable[[list[I]], Awaitable[list[R | Exception]]],
        max_batch: int,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: I) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        # A caller that goes away (client disconnect) only cancels its own
        # future: the batch, and the other callers waiting on it, go on.
        return await fut

    async def _run(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                results = await self._commit([item for item, _ in batch])
            except Exception as exc:  # the whole commit failed
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    async def drain(self) -> None:
        if self._runner is not None:
            await asyncio.shield(self._runner)


class _IngestItem:
    """One queued ingest: a single event, or a batch that is stored whole or not at all."""

    __slots__ = ("batch", "events", "workspace_id")

    def __init__(
        self,
        workspace_id: str,
        events: Sequence[tuple[str, Any, str | None]],
        batch: bool,
    ) -> None:
        self.workspace_id = workspace_id
        self.events = events  # (type, data, idempotency key)
        # A batch also refuses a reused key whose data differ (a single ingest
        # leaves that to the API, which compares after the fact).
        self.batch = batch

    @property
    def keyed(self) -> bool:
        return any(key is not None for _, _, key in self.events)


def _serialize_item_event(
    item: _IngestItem, index: int, event_id: str, event_type: str, data: Any, now_iso: str
) -> bytes:
    """:func:`serialize_event` for one event of an item; a batch's error names the event."""
    try:
        return serialize_event(event_id, item.workspace_id, event_type, data, now_iso)
    except (ValueError, TypeError) as exc:
        if item.batch:
            kind = TypeError if isinstance(exc, TypeError) else ValueError
            raise kind(f"events[{index}].data: {exc}") from exc
        raise


# DataError: a value over SQLite's length limit (a store-level caller's event).
_INGEST_ITEM_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    ValueError,
    TypeError,
    IdempotencyConflict,
)

_INSERT_EVENT_SQL = (
    "INSERT INTO events (id, workspace_id, type, body, idempotency_key, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_DELIVERY_SQL = (
    "INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status,"
    " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)"
)

# The same for a whole group, from JSON arrays of those values (the body as text).
_INSERT_EVENTS_SQL = (
    "INSERT INTO events (id, workspace_id, type, body, idempotency_key, created_at)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), CAST(json_extract(value, '$[3]') AS BLOB),"
    " json_extract(value, '$[4]'), json_extract(value, '$[5]') FROM json_each(?)"
)
_INSERT_DELIVERIES_SQL = (
    "INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status,"
    " next_attempt_at, created_at, updated_at)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    " 'pending', json_extract(value, '$[5]'), json_extract(value, '$[6]'),"
    " json_extract(value, '$[7]') FROM json_each(?)"
)

# Ingest of a group without idempotency keys as ONE statement, so that in
# autocommit mode SQLite takes the write lock, writes, commits (fsync) and lets
# go inside a single step: the lock is never held while this process's other
# threads keep the GIL from the database thread (a BEGIN ... COMMIT of five
# statements was 4-4.5 ms of lock for ~1.9 ms of work under load, and a
# delivery worker spent two thirds of its time waiting for it).  A TEMP view
# and its INSTEAD OF trigger exist on the ingest connection only; TEMP
# triggers may write the main database's tables.
#
# The fan-out is computed in Python from a cached copy of each workspace's
# subscriptions (webhook ids and patterns, as the text _SUBSCRIPTIONS_SQL
# makes).  The trigger first compares that text with the table's current
# state and aborts the whole statement if a webhook was created, changed,
# disabled or deleted since; the caller then reads them again.  Due
# times read a webhook's 429 pause in the statement itself.
_SUBSCRIPTIONS_OF_WS = (
    "'' || (SELECT json_group_array(json_array(id, events)) FROM (SELECT id, events"
    " FROM webhooks WHERE workspace_id = {ws} AND status = 'active' AND deleted_at IS NULL"
    " ORDER BY created_at, id))"
)
# [[workspace_id, subscriptions text], ...] for a JSON array of workspace ids.
_SUBSCRIPTIONS_SQL = (
    "SELECT json_group_array(json_array(value, "
    + _SUBSCRIPTIONS_OF_WS.format(ws="value")
    + ")) FROM json_each(?)"
)
_SUBSCRIPTIONS_CHANGED = "hookd: subscriptions changed"
_INGEST_GROUP_DDL = (
    "CREATE TEMP VIEW IF NOT EXISTS ingest_group AS"
    " SELECT NULL AS subscriptions, NULL AS events, NULL AS deliveries, NULL AS now",
    "CREATE TEMP TRIGGER IF NOT EXISTS ingest_group_insert INSTEAD OF INSERT ON ingest_group"
    " BEGIN"
    " INSERT OR IGNORE INTO workspaces (id, name, created_at)"
    "  SELECT json_extract(value, '$[0]'), json_extract(value, '$[0]'), NEW.now"
    "  FROM json_each(NEW.subscriptions);"
    f" SELECT RAISE(ABORT, '{_SUBSCRIPTIONS_CHANGED}') FROM json_each(NEW.subscriptions)"
    "  WHERE json_extract(value, '$[1]') IS NOT "
    + _SUBSCRIPTIONS_OF_WS.format(ws="json_extract(value, '$[0]')")
    + ";"
    " INSERT INTO events (id, workspace_id, type, body, idempotency_key, created_at)"
    "  SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    "  json_extract(value, '$[2]'), CAST(json_extract(value, '$[3]') AS BLOB), NULL, NEW.now"
    "  FROM json_each(NEW.events);"
    " INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type, status,"
    "  next_attempt_at, created_at, updated_at)"
    "  SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    "  json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    "  'pending', max(NEW.now, coalesce((SELECT paused_until FROM webhooks"
    "  WHERE id = json_extract(value, '$[3]')), 0)), NEW.now, NEW.now"
    "  FROM json_each(NEW.deliveries);"
    " END",
)
_INGEST_GROUP_SQL = (
    "INSERT INTO ingest_group (subscriptions, events, deliveries, now) VALUES (?, ?, ?, ?)"
)
# Workspaces whose subscriptions are cached at most (the cache is cleared
# when more are seen; it only saves a read).
_SUBSCRIPTIONS_CACHED = 4096


# A workspace's subscriptions: _SUBSCRIPTIONS_SQL's text, and [(webhook id, patterns)].
_Subscriptions = tuple[str, list[tuple[str, tuple[str, ...]]]]


class _PlainGroup(NamedTuple):
    """A group of keyless ingests made ready for _INGEST_GROUP_SQL."""

    workspaces: list[str]
    results: list[list[IngestResult] | Exception]
    # The statement's arguments; None when no item has anything to write.
    args: tuple[str, str, str, int] | None


# How long the event loop waits for the ingest thread to take a group it
# handed over (see _handed_over): its wake-up takes tens of microseconds;
# this bounds the loop's wait should it be slower.
_HAND_OVER_WAIT_SECONDS = 0.002


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _IngestRun:
    """The rows of one ingest transaction, collected and then written by ``executemany``.

    Writing every event and every delivery of a group with one statement each,
    instead of a few statements per event, is most of what makes a group cheap
    on the database thread (each statement is a trip through the sqlite3
    module and a GIL hand-over).  Keys taken earlier in the same run are
    remembered here, since their rows are not in the table yet.
    """

    __slots__ = (
        "conn",
        "deliveries",
        "events",
        "hooks",
        "keys",
        "now",
        "now_iso",
        "store",
        "workspaces",
    )

    def __init__(
        self,
        store: SqliteStore,
        conn: sqlite3.Connection,
        now: int,
        now_iso: str,
        hooks: dict[str, list[tuple[str, tuple[str, ...], int | None]]],
    ) -> None:
        self.store = store
        self.conn = conn
        self.now = now
        self.now_iso = now_iso
        self.hooks = hooks  # read-only within the transaction: shared by runs
        self.workspaces: set[str] = set()
        self.keys: dict[tuple[str, str], tuple[IngestResult, Any]] = {}
        self.events: list[tuple[str, str, str, bytes, str | None, int]] = []
        self.deliveries: list[tuple[str, str, str, str, str, int, int, int]] = []

    def add(self, item: _IngestItem) -> list[IngestResult]:
        ws = item.workspace_id
        now = self.now
        hooks = self._hooks(ws)
        results: list[IngestResult] = []
        for index, (event_type, data, key) in enumerate(item.events):
            if key is not None:
                earlier = self._earlier(ws, key)
                if earlier is not None:
                    results.append(self._repeat(item, index, earlier, event_type, data))
                    continue
            event_id = new_id(now)
            body = _serialize_item_event(item, index, event_id, event_type, data, self.now_iso)
            self.events.append((event_id, ws, event_type, body, key, now))
            first = len(self.deliveries)
            for hook_id, patterns, paused_until in hooks:
                if subscribes(patterns, event_type):
                    # A webhook paused by a 429 gets new work scheduled after the
                    # pause, so the claim query never has to skip over it.
                    due = max(now, paused_until or 0)
                    self.deliveries.append(
                        (new_id(now), ws, event_id, hook_id, event_type, due, now, now)
                    )
            result = IngestResult(
                Event(event_id, ws, event_type, body, key, now),
                tuple(row[0] for row in self.deliveries[first:]),
                duplicate=False,
            )
            if key is not None:
                self.keys[(ws, key)] = (result, data)
            results.append(result)
        return results

    def _hooks(self, ws: str) -> list[tuple[str, tuple[str, ...], int | None]]:
        hooks = self.hooks.get(ws)
        if hooks is None:
            hooks = [
                (r[0], tuple(json.loads(r[1])), r[2])
                for r in self.conn.execute(
                    "SELECT id, events, paused_until FROM webhooks"
                    " WHERE workspace_id = ? AND status = 'active' AND deleted_at IS NULL",
                    (ws,),
                )
            ]
            self.hooks[ws] = hooks
        if ws not in self.workspaces:
            # Once per workspace and transaction, not per event.
            self.conn.execute(
                "INSERT OR IGNORE INTO workspaces (id, name, created_at) VALUES (?, ?, ?)",
                (ws, ws, self.now),
            )
            self.workspaces.add(ws)
        return hooks

    def _earlier(self, ws: str, key: str) -> tuple[IngestResult, Any] | None:
        """The event that took ``key`` within the window, with its data if known."""
        taken = self.keys.get((ws, key))
        if taken is not None:
            return taken
        row = self.conn.execute(
            "SELECT id, workspace_id, type, body, idempotency_key, created_at FROM events"
            " WHERE workspace_id = ? AND idempotency_key = ? AND created_at >= ?"
            " ORDER BY created_at LIMIT 1",
            (ws, key, self.now - self.store._idempotency_window_ms),
        ).fetchone()
        if row is None:
            return None
        ids = self.conn.execute(
            "SELECT id FROM deliveries WHERE event_id = ? ORDER BY id", (row[0],)
        ).fetchall()
        event = Event(row[0], row[1], row[2], bytes(row[3]), row[4], row[5])
        return IngestResult(event, tuple(r[0] for r in ids), duplicate=False), _NOT_LOADED

    def _repeat(
        self,
        item: _IngestItem,
        index: int,
        earlier: tuple[IngestResult, Any],
        event_type: str,
        data: Any,
    ) -> IngestResult:
        original, original_data = earlier
        where = f"events[{index}].idempotencyKey" if item.batch else "idempotencyKey"
        if original.event.type != event_type:
            raise IdempotencyConflict(
                f"{where}: already used for an event of another type",
                index=index if item.batch else None,
                differs="type",
            )
        if item.batch:
            if original_data is _NOT_LOADED:
                original_data = json.loads(original.event.body).get("data")
            if _canonical_json(original_data) != _canonical_json(data):
                raise IdempotencyConflict(
                    f"{where}: already used for an event with other data",
                    index=index,
                    differs="data",
                )
        return IngestResult(original.event, original.delivery_ids, duplicate=True)

    def flush(self) -> None:
        if not self.events:
            return
        # Two statements for the whole group, reading it from JSON arrays: one
        # statement step each rather than one per row (see _json_rows).
        events = json.dumps(
            [(i, ws, t, body.decode(), key, at) for i, ws, t, body, key, at in self.events],
            ensure_ascii=False,
        )
        deliveries = json.dumps(self.deliveries, ensure_ascii=False)
        if (
            _JSON_NUL in events
            or _JSON_NUL in deliveries
            or len(events) + len(deliveries) > _JSON_BATCH_MAX_CHARS
        ):
            self.conn.executemany(_INSERT_EVENT_SQL, self.events)
            self.conn.executemany(_INSERT_DELIVERY_SQL, self.deliveries)
            return
        self.conn.execute(_INSERT_EVENTS_SQL, (events,))
        if self.deliveries:
            self.conn.execute(_INSERT_DELIVERIES_SQL, (deliveries,))


# Stands for "the original's data, not parsed yet" (None is valid JSON data).
_NOT_LOADED: Any = object()


# UPDATE ... FROM came with SQLite 3.33.0; the JSON functions must be there
# too (built in since 3.38, compiled into Python's own builds before that).
MIN_SQLITE_VERSION = (3, 33, 0)


def _require_sqlite_features(conn: sqlite3.Connection) -> None:
    found = sqlite3.sqlite_version_info
    if found < MIN_SQLITE_VERSION:
        raise sqlite3.NotSupportedError(
            f"SQLite {'.'.join(map(str, MIN_SQLITE_VERSION))} or newer is required; this"
            f" Python uses SQLite {sqlite3.sqlite_version}"
        )
    try:
        conn.execute("SELECT json_group_array(value) FROM json_each('[1]')").fetchone()
    except sqlite3.OperationalError as exc:
        raise sqlite3.NotSupportedError(
            f"SQLite's JSON functions are required; this Python's SQLite"
            f" {sqlite3.sqlite_version} lacks them ({exc})"
        ) from exc


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    # Errors hookd raises itself (a newer schema, no WAL) carry no code.  The
    # primary code: SQLITE_BUSY_RECOVERY, _SNAPSHOT and _TIMEOUT count too.
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _classify_sqlite_error(exc: sqlite3.Error) -> StoreError:
    return StoreError(f"database error: {exc}")


def _create_temp_objects(
    statements: Sequence[str],
) -> Callable[[sqlite3.Connection], None]:
    def create(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    return create


def _record_values(records: Sequence[AttemptRecord]) -> tuple[list[Any], list[Any]]:
    """The rows of _RECORD_TRANSITIONS and _INSERT_ATTEMPTS for ``records``."""
    transitions = [
        (
            r.delivery_id,
            r.lease_token,
            r.transition.status.value,
            r.transition.next_attempt_at,
            r.transition.budget_used,
            r.transition.rate_limited_count,
            r.transition.rate_limited_since,
            r.status_code,
            r.error,
            r.response_body,
            r.transition.dead_letter_reason,
        )
        for r in records
    ]
    # The request went out whether or not we still own the delivery, so the
    # attempt is always on record.
    attempts = [
        (
            new_id(r.started_at),
            r.delivery_id,
            r.number,
            r.started_at,
            r.duration_ms,
            r.status_code,
            r.error,
            r.response_body,
            r.outcome,
        )
        for r in records
    ]
    return transitions, attempts


class _OneStatement(NamedTuple):
    """Records as _SETTLE_ROUND_SQL takes them (JSON arrays), and the webhooks they stop."""

    transitions: str
    attempts: str
    pauses: str
    deactivations: str
    stopped: frozenset[str]  # webhooks paused or deactivated: none of theirs is claimed


class _Choice(NamedTuple):
    """What _choose_due chose, and whether a later commit could add to it."""

    ids: list[str]  # deliveries to lease, in the order due
    # The connection's data_version as of a read that saw the whole due queue
    # and chose all of it that may go (None: it did not).  Work committed by
    # another connection after that version is all another choice could find.
    whole_queue_at: int | None


def _one_statement_records(records: Sequence[AttemptRecord]) -> _OneStatement | None:
    """None when the records need the transaction: a delivery listed twice, or
    a NUL that SQLite's JSON functions would cut a string at."""
    seen: set[str] = set()
    pauses: dict[str, int] = {}
    deactivations: dict[str, str] = {}
    for r in records:
        if r.delivery_id in seen:
            return None
        seen.add(r.delivery_id)
        t = r.transition
        if t.pause_webhook_until is not None:
            pauses[r.webhook_id] = max(t.pause_webhook_until, pauses.get(r.webhook_id, 0))
        if t.deactivate_webhook_reason is not None:
            # The first one, as when written one by one.
            deactivations.setdefault(r.webhook_id, t.deactivate_webhook_reason)
    transitions, attempts = _record_values(records)
    written = _OneStatement(
        json.dumps(transitions),
        json.dumps(attempts),
        json.dumps(list(pauses.items())),
        json.dumps(list(deactivations.items())),
        frozenset(pauses) | frozenset(deactivations),
    )
    if any(_JSON_NUL in text for text in written[:4]):
        return None
    return written


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(conn)`` in a write transaction: committed if it returns, rolled back if not."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _wait_out_busy(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], timeout: float
) -> T:
    """``fn(conn)``, run again while another connection holds the lock it needs.

    Another connection may hold it: this process's other one (ingest has its
    own), or another process's (serve, its delivery workers and the CLI share
    the file).  SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20,
    25 ... ms between tries, so a waiter often slept through several of the
    other side's short transactions, leaving both processes idle; here the
    wait polls from 50 us up to 1 ms, for up to ``timeout`` seconds.  Only a
    unit of work that met the lock outside a transaction runs again: nothing
    of it was written.
    """
    deadline: float | None = None
    pause = 0.00005
    while True:
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or conn.in_transaction:
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            elif now >= deadline:
                raise
        # Sleeping releases the GIL: the event loop runs meanwhile.
        time.sleep(pause)
        pause = min(pause * 2, 0.001)


async def _handed_over(queue: Any, run: Callable[[], T]) -> T:
    """``run`` on the thread behind aiosqlite's worker ``queue``, handed the GIL.

    A thread woken while the event loop is busy waits for the GIL until the
    loop idles or is made to let go after sys.getswitchinterval() (5 ms): at
    64 ingest clients, an ingest group waited 2.0 ms to start while the loop
    answered the previous group's requests.  Here the loop blocks until the
    thread has started ``run`` instead (at most _HAND_OVER_WAIT_SECONDS);
    ``run`` should then hold the GIL only until its statement starts (an
    ingest group's rows are made ready on the loop), and the loop answers
    those requests while SQLite writes.  Measured: group start 2.2 -> 0.1
    ms, and more events/s accepted while delivering (README, Benchmark).
    Relies on aiosqlite's queue of (future, callable); the store already
    uses its _execute and _conn.
    """
    started = threading.Event()

    def started_run() -> T:
        started.set()
        return run()

    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    queue.put_nowait((future, started_run))
    started.wait(_HAND_OVER_WAIT_SECONDS)
    return await future


class SqliteStore:
    """The embedded, single-file implementation of :class:`hookd.storage.Store`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Clock | None = None,
        *,
        busy_timeout_ms: int = 5000,
        idempotency_window_ms: int = 86_400_000,
        synchronous: str = "FULL",
    ) -> None:
        self.path = str(path)
        self.clock: Clock = clock or SystemClock()
        self._busy_timeout_ms = busy_timeout_ms
        self._idempotency_window_ms = idempotency_window_ms
        self._synchronous = synchronous
        self._db: aiosqlite.Connection | None = None
        self._ingest_db: aiosqlite.Connection | None = None
        # Per workspace: its subscriptions as _SUBSCRIPTIONS_SQL's text, and
        # parsed ([(webhook id, patterns)]).  The ingest thread fills it; the
        # event loop reads it too (entries are replaced whole, and one gone
        # stale is caught by the ingest statement's check).
        self._subscriptions: dict[str, _Subscriptions] = {}
        # Until when the head of the due queue is known to hold nothing that
        # may go (see _choose_due); claims read the webhooks' queues meanwhile.
        self._head_blocked_until = 0
        # Per connection: the PRAGMA synchronous it was last set to.
        self._current_sync: dict[aiosqlite.Connection | None, str] = {}
        self._ingest: _GroupCommit[_IngestItem, list[IngestResult]] = _GroupCommit(
            self._ingest_group, max_batch=512
        )
        self._records: _GroupCommit[AttemptRecord, RecordResult] = _GroupCommit(
            self._record_group, max_batch=1024
        )

    # -- plumbing -------------------------------------------------------------

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._call(self._configure)
            await self._tx(self._migrate)
            await self._call(_create_temp_objects(_SETTLE_ROUND_DDL))
        except (sqlite3.Error, StoreError) as exc:
            # Close the half-open connection: its worker thread would otherwise
            # keep the process alive after the error is reported.
            if self._db is not None:
                db, self._db = self._db, None
                with contextlib.suppress(sqlite3.Error):
                    await db.close()
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    def _configure(self, conn: sqlite3.Connection) -> None:
        _require_sqlite_features(conn)
        # 0: waiting for another process's lock is done by _call, not SQLite.
        conn.execute("PRAGMA busy_timeout = 0")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if self.path != ":memory:" and str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL journal (got {mode})")
        # FULL: a commit is on disk before the API acknowledges it, even across
        # a power cut; group commit amortises the fsync.
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        known = {version for version, _ in MIGRATIONS}
        if applied - known:
            raise sqlite3.OperationalError(
                f"database schema version {max(applied)} is newer than this hookd knows"
            )
        for version, script in MIGRATIONS:
            if version in applied:
                continue
            for statement in _split_sql(script):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (version, self.clock.now_ms()),
            )

    async def close(self) -> None:
        await self._ingest.drain()
        await self._records.drain()
        ingest_db, self._ingest_db = self._ingest_db, None
        if ingest_db is not None and ingest_db is not self._db:
            with contextlib.suppress(sqlite3.Error):
                await ingest_db.close()
        if self._db is not None:
            db, self._db = self._db, None
            with contextlib.suppress(sqlite3.Error):
                await db.execute("PRAGMA optimize")
            await db.close()

    async def _call(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        db: aiosqlite.Connection | None = None,
        wait_busy: bool = True,
        hand_over: bool = False,
    ) -> T:
        """Run ``fn`` on a connection's thread (the main one unless ``db``).

        ``fn`` runs outside any explicit transaction; one that met another
        process's lock runs again (see :func:`_wait_out_busy`) unless
        ``wait_busy`` is False, for units of work that wait themselves.
        ``hand_over``: the event loop hands the GIL to that thread (see
        :func:`_handed_over`), except on the scheduler's connection (an
        in-memory database has no other), whose thread may be busy.
        """
        db = db or self._db
        if db is None:
            raise StoreError("store is not open")
        conn = db._conn
        timeout = self._busy_timeout_ms / 1000

        def run() -> T:
            return _wait_out_busy(conn, fn, timeout) if wait_busy else fn(conn)

        # aiosqlite runs every call on its connection's one worker thread;
        # handing it a whole unit of work as a single callable is what keeps
        # a transaction's statements together and a batch to one round trip.
        queue = getattr(db, "_tx", None) if hand_over and db is not self._db else None
        try:
            if queue is not None:
                return await _handed_over(queue, run)
            return await db._execute(run)  # type: ignore[no-untyped-call,no-any-return]
        except sqlite3.Error as exc:
            raise _classify_sqlite_error(exc) from exc

    async def _tx(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = True,
        db: aiosqlite.Connection | None = None,
    ) -> T:
        """Run ``fn`` in one write transaction.

        ``durable=False`` is for the scheduler's own bookkeeping (claims,
        attempt records, lease releases): losing such a commit to a power cut
        only means a delivery is sent again, which at-least-once allows, so it
        skips the fsync.  The next durable commit (an ingest) syncs the WAL
        file, earlier frames included, whichever connection wrote them.
        """
        sync = self._synchronous if durable else "NORMAL"
        key = db or self._db

        def run(conn: sqlite3.Connection) -> T:
            self._use_sync(conn, key, sync)
            return _in_transaction(conn, fn)

        return await self._call(run, db=db)

    def _use_sync(
        self, conn: sqlite3.Connection, key: aiosqlite.Connection | None, sync: str
    ) -> None:
        """Set the connection's PRAGMA synchronous for the commits that follow."""
        if self._current_sync.get(key, self._synchronous) != sync:
            conn.execute(f"PRAGMA synchronous = {sync}")
            self._current_sync[key] = sync

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- tenancy and keys -------------------------------------------------------

    async def ensure_workspace(self, workspace_id: str, name: str | None = None) -> Workspace:
        now = self.clock.now_ms()

        def work(conn: sqlite3.Connection) -> Workspace:
            conn.execute(
                "INSERT OR IGNORE INTO workspaces (id, name, created_at) VALUES (?, ?, ?)",
                (workspace_id, name or workspace_id, now),
            )
            row = conn.execute(
                "SELECT id, name, created_at FROM workspaces WHERE id = ?", (workspace_id,)
            ).fetchone()
            return Workspace(*row)

        return await self._tx(work)

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT id, name, created_at FROM workspaces WHERE id = ?", (workspace_id,)
            ).fetchone()
        )
        return Workspace(*row) if row else None

    async def create_api_key(
        self, workspace_id: str | None, digest: bytes, prefix: str, owner: str
    ) -> ApiKey:
        now = self.clock.now_ms()
        key = ApiKey(new_id(now), workspace_id, prefix, owner, now, None)

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys (id, workspace_id, digest, prefix, owner, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key.id, workspace_id, digest, prefix, owner, now),
            )

        await self._tx(work)
        return key

    async def find_api_key(self, digest: bytes) -> tuple[ApiKey, bytes] | None:
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT id, workspace_id, prefix, owner, created_at, revoked_at, digest"
                " FROM api_keys WHERE digest = ?",
                (digest,),
            ).fetchone()
        )
        if row is None:
            return None
        return ApiKey(*row[:6]), bytes(row[6])

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self._call(
            lambda conn: conn.execute(
                "SELECT id, workspace_id, prefix, owner, created_at, revoked_at"
                " FROM api_keys ORDER BY created_at, id"
            ).fetchall()
        )
        return [ApiKey(*row) for row in rows]

    async def revoke_api_key(self, key_id: str) -> bool:
        now = self.clock.now_ms()

        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, key_id),
            )
            return cur.rowcount == 1

        return await self._tx(work)

    async def count_api_keys(self) -> int:
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL"
            ).fetchone()
        )
        return int(row[0])

    # -- webhooks -------------------------------------------------------------

    async def create_webhook(self, new: NewWebhook) -> Webhook:
        now = self.clock.now_ms()
        webhook_id = new_id(now)

        def work(conn: sqlite3.Connection) -> Webhook:
            conn.execute(
                "INSERT OR IGNORE INTO workspaces (id, name, created_at) VALUES (?, ?, ?)",
                (new.workspace_id, new.workspace_id, now),
            )
            conn.execute(
                "INSERT INTO webhooks (id, workspace_id, name, url, events, secret,"
                " retry_attempts, timeout_ms, status, created_by, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)",
                (
                    webhook_id,
                    new.workspace_id,
                    new.name,
                    new.url,
                    json.dumps(list(new.events)),
                    new.secret,
                    new.retry_attempts,
                    new.timeout_ms,
                    new.created_by,
                    now,
                    now,
                ),
            )
            return self._load_webhook(conn, None, webhook_id)  # type: ignore[return-value]

        return await self._tx(work)

    @staticmethod
    def _load_webhook(
        conn: sqlite3.Connection, workspace_id: str | None, webhook_id: str
    ) -> Webhook | None:
        row = conn.execute(
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks"
            " WHERE id = ? AND deleted_at IS NULL AND (? IS NULL OR workspace_id = ?)",
            (webhook_id, workspace_id, workspace_id),
        ).fetchone()
        return _webhook(row) if row else None

    async def get_webhook(self, workspace_id: str | None, webhook_id: str) -> Webhook | None:
        return await self._call(lambda conn: self._load_webhook(conn, workspace_id, webhook_id))

    async def list_webhooks(
        self, workspace_id: str | None, limit: int, cursor: str | None = None
    ) -> Page:
        after = decode_cursor(cursor) if cursor else (-1, "")

        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks"
                " WHERE deleted_at IS NULL AND (? IS NULL OR workspace_id = ?)"
                " AND (created_at, id) > (?, ?)"
                " ORDER BY created_at, id LIMIT ?",
                (workspace_id, workspace_id, after[0], after[1], limit + 1),
            ).fetchall()

        rows = await self._call(work)
        items = [_webhook(r) for r in rows[:limit]]
        nxt = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
        return Page(items, nxt)

    async def update_webhook(
        self, workspace_id: str, webhook_id: str, changes: WebhookChanges, secret_grace_ms: int
    ) -> Webhook | None:
        now = self.clock.now_ms()

        def work(conn: sqlite3.Connection) -> Webhook | None:
            current = self._load_webhook(conn, workspace_id, webhook_id)
            if current is None:
                return None
            sets: list[str] = ["updated_at = ?"]
            args: list[Any] = [now]
            for column, value in (
                ("name", changes.name),
                ("url", changes.url),
                ("retry_attempts", changes.retry_attempts),
                ("timeout_ms", changes.timeout_ms),
            ):
                if value is not None:
                    sets.append(f"{column} = ?")
                    args.append(value)
            if changes.events is not None:
                sets.append("events = ?")
                args.append(json.dumps(list(changes.events)))
            if changes.secret is not None and changes.secret != current.secret:
                # The old secret keeps signing beside the new one for the grace
                # period, so receivers can roll over without dropping requests.
                sets += ["secret = ?", "previous_secret = ?", "previous_secret_until = ?"]
                args += [changes.secret, current.secret, now + secret_grace_ms]
            if changes.status is not None and changes.status != current.status:
                sets.append("status = ?")
                args.append(changes.status.value)
                if changes.status is WebhookStatus.ACTIVE:
                    # Re-enabled by an operator: forget why it was disabled and
                    # any pause left over from an earlier 429.
                    sets += ["disabled_reason = NULL", "paused_until = NULL"]
                else:
                    sets.append("disabled_reason = ?")
                    args.append("disabled by API")
            args += [webhook_id]
            conn.execute(f"UPDATE webhooks SET {', '.join(sets)} WHERE id = ?", args)
            return self._load_webhook(conn, workspace_id, webhook_id)

        return await self._tx(work)

    async def delete_webhook(self, workspace_id: str, webhook_id: str) -> bool:
        now = self.clock.now_ms()

        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE webhooks SET deleted_at = ?, status = 'inactive', updated_at = ?"
                " WHERE id = ? AND workspace_id = ? AND deleted_at IS NULL",
                (now, now, webhook_id, workspace_id),
            )
            if cur.rowcount != 1:
                return False
            # Clearing lease_token fences out any attempt still in flight: its
            # record will not resurrect the delivery.
            conn.execute(
                "UPDATE deliveries SET status = 'dead_letter', status_reason = ?,"
                " next_attempt_at = NULL, lease_token = NULL, updated_at = ?"
                f" WHERE webhook_id = ? AND status IN {_SCHEDULABLE_SQL}",
                (ERROR_WEBHOOK_DELETED, now, webhook_id),
            )
            return True

        return await self._tx(work)

    # -- events ---------------------------------------------------------------

    async def ingest_event(
        self,
        workspace_id: str,
        event_type: str,
        data: Any,
        idempotency_key: str | None = None,
    ) -> IngestResult:
        item = _IngestItem(workspace_id, ((event_type, data, idempotency_key),), batch=False)
        return (await self._ingest.submit(item))[0]

    async def ingest_events(
        self, workspace_id: str, events: Sequence[NewEvent]
    ) -> list[IngestResult]:
        if not events:
            return []
        item = _IngestItem(
            workspace_id, [(e.type, e.data, e.idempotency_key) for e in events], batch=True
        )
        # Queued with single ingests: a batch shares their group's COMMIT (and fsync).
        return await self._ingest.submit(item)

    async def _ingest_connection(self) -> aiosqlite.Connection:
        """The connection (and thread) that ingests, opened at the first ingest.

        Its own connection, so that a group of events never queues on the
        database thread behind a scheduler turn; both meet only at SQLite's
        write lock, which the one-statement ingest holds briefly.  Processes
        that never ingest (delivery workers, the CLI) never open it.
        """
        if self._ingest_db is not None:
            return self._ingest_db
        if self._db is None:
            raise StoreError("store is not open")
        if self.path == ":memory:":  # a second connection would be another database
            db = self._db
        else:
            try:
                db = await aiosqlite.connect(self.path, isolation_level=None)
            except sqlite3.Error as exc:
                raise _classify_sqlite_error(exc) from exc
        try:
            if db is not self._db:
                await self._call(self._configure, db=db)
            await self._call(_create_temp_objects(_INGEST_GROUP_DDL), db=db)
        except BaseException:
            if db is not self._db:
                with contextlib.suppress(sqlite3.Error):
                    await db.close()
            raise
        self._ingest_db = db
        return db

    async def _ingest_group(self, items: list[_IngestItem]) -> list[list[IngestResult] | Exception]:
        """Commit a group: keyless items in one statement, keyed ones in a transaction.

        Each part fails alone: an item is told it failed only if its own
        commit did.
        """
        db = await self._ingest_connection()
        results: dict[int, list[IngestResult] | Exception] = {}
        plain: list[int] = []
        keyed: list[int] = []
        for i, item in enumerate(items):
            (keyed if item.keyed else plain).append(i)
        if plain:
            group = [items[i] for i in plain]
            # Made ready here, while the ingest thread may still be writing the
            # group before: that thread then needs the GIL only to start the
            # statement (see _handed_over).
            prepared = self._prepare_with_cached_subscriptions(group)
            try:
                done = await self._call(
                    lambda conn: self._ingest_plain(conn, group, prepared),
                    db=db,
                    wait_busy=False,
                    hand_over=True,
                )
            except StoreError as exc:
                done = [exc] * len(plain)
            if done is None:  # needs the transactional path after all
                keyed = sorted(keyed + plain)
            else:
                for i, result in zip(plain, done, strict=True):
                    results[i] = result
        if keyed:
            group = [items[i] for i in keyed]
            try:
                done = await self._tx(lambda conn: self._ingest_batch(conn, group), db=db)
            except StoreError as exc:
                done = [exc] * len(keyed)
            for i, result in zip(keyed, done, strict=True):
                results[i] = result
        return [results[i] for i in range(len(items))]

    def _ingest_plain(
        self,
        conn: sqlite3.Connection,
        items: list[_IngestItem],
        prepared: _PlainGroup | None = None,
    ) -> list[list[IngestResult] | Exception] | None:
        """Items without idempotency keys, in one statement (_INGEST_GROUP_SQL).

        ``prepared``: the group as the event loop made it ready, from the
        subscriptions it had cached.  None: the group must take the
        transactional path instead, which isolates a failing item (or its
        JSON would hold NUL or be too large).
        """
        for _ in range(3):
            if prepared is None:
                self._read_subscriptions(conn, sorted({item.workspace_id for item in items}))
                prepared = self._prepare_plain(items, self._subscriptions)
                if prepared is None:
                    return None
            written = self._write_plain(conn, prepared)
            if written is None:
                return None
            if written:
                return prepared.results
            prepared = None  # made from subscriptions that changed since: again
        # Webhooks changing faster than a group commits: take the lock first.
        return None

    def _read_subscriptions(self, conn: sqlite3.Connection, workspaces: list[str]) -> None:
        """Cache the subscriptions of those ``workspaces`` not cached yet."""
        missing = [ws for ws in workspaces if ws not in self._subscriptions]
        if not missing:
            return
        if len(self._subscriptions) + len(missing) > _SUBSCRIPTIONS_CACHED:
            self._subscriptions.clear()
            missing = workspaces
        for ws, text in _json_rows(conn, _SUBSCRIPTIONS_SQL, (json.dumps(missing),)):
            hooks = [(hook_id, tuple(json.loads(p))) for hook_id, p in json.loads(text)]
            self._subscriptions[ws] = (text, hooks)

    def _prepare_with_cached_subscriptions(self, items: list[_IngestItem]) -> _PlainGroup | None:
        """:meth:`_prepare_plain` on the event loop, when every workspace's
        subscriptions are cached (else the ingest thread reads them and does it)."""
        known = {}
        for ws in {item.workspace_id for item in items}:
            # (The ingest thread replaces entries whole, or clears the cache.)
            entry = self._subscriptions.get(ws)
            if entry is None:
                return None
            known[ws] = entry
        return self._prepare_plain(items, known)

    def _prepare_plain(
        self, items: list[_IngestItem], subscriptions: Mapping[str, _Subscriptions]
    ) -> _PlainGroup | None:
        """The group's ids, bodies, fan-out and statement arguments; no SQL.

        None: its JSON would hold NUL or be too large (the transactional path).
        """
        now = self.clock.now_ms()
        workspaces = sorted({item.workspace_id for item in items})
        results, events, deliveries = self._plain_rows(items, subscriptions, now, iso_ms(now))
        if not events:
            return _PlainGroup(workspaces, results, None)
        subscribed = json.dumps(
            [(ws, subscriptions[ws][0]) for ws in workspaces], ensure_ascii=False
        )
        events_json = json.dumps(events, ensure_ascii=False)
        deliveries_json = json.dumps(deliveries, ensure_ascii=False)
        if (
            _JSON_NUL in events_json
            or _JSON_NUL in deliveries_json
            or _JSON_NUL in subscribed
            or len(events_json) + len(deliveries_json) > _JSON_BATCH_MAX_CHARS
        ):
            return None
        return _PlainGroup(workspaces, results, (subscribed, events_json, deliveries_json, now))

    def _write_plain(self, conn: sqlite3.Connection, group: _PlainGroup) -> bool | None:
        """Write a prepared group: True when written; False when the webhooks
        changed since its subscriptions were read (nothing was written, and
        those are forgotten); None when it must take the transactional path."""
        args = group.args
        if args is None:
            return True
        try:
            _wait_out_busy(
                conn, lambda c: c.execute(_INGEST_GROUP_SQL, args), self._busy_timeout_ms / 1000
            )
        except sqlite3.IntegrityError as exc:
            if str(exc) != _SUBSCRIPTIONS_CHANGED:
                return None
            for ws in group.workspaces:
                self._subscriptions.pop(ws, None)
            return False
        except _INGEST_ITEM_ERRORS:
            return None
        return True

    def _plain_rows(
        self,
        items: list[_IngestItem],
        subscriptions: Mapping[str, _Subscriptions],
        now: int,
        now_iso: str,
    ) -> tuple[list[list[IngestResult] | Exception], list[Any], list[Any]]:
        """Per item its results (or its error), and the rows of those that can be written."""
        results: list[list[IngestResult] | Exception] = []
        events: list[Any] = []
        deliveries: list[Any] = []
        for item in items:
            ws = item.workspace_id
            hooks = subscriptions[ws][1]
            item_events: list[Any] = []
            item_deliveries: list[Any] = []
            item_results: list[IngestResult] = []
            try:
                for index, (event_type, data, _key) in enumerate(item.events):
                    event_id = new_id(now)
                    body = _serialize_item_event(item, index, event_id, event_type, data, now_iso)
                    item_events.append((event_id, ws, event_type, body.decode()))
                    ids = []
                    for hook_id, patterns in hooks:
                        if subscribes(patterns, event_type):
                            delivery_id = new_id(now)
                            ids.append(delivery_id)
                            item_deliveries.append((delivery_id, ws, event_id, hook_id, event_type))
                    event = Event(event_id, ws, event_type, body, None, now)
                    item_results.append(IngestResult(event, tuple(ids), duplicate=False))
            except (ValueError, TypeError) as exc:
                results.append(exc)
                continue
            events.extend(item_events)
            deliveries.extend(item_deliveries)
            results.append(item_results)
        return results, events, deliveries

    def _ingest_batch(
        self, conn: sqlite3.Connection, items: list[_IngestItem]
    ) -> list[list[IngestResult] | Exception]:
        now = self.clock.now_ms()
        now_iso = iso_ms(now)
        hooks: dict[str, list[tuple[str, tuple[str, ...], int | None]]] = {}
        # Optimistic: the whole group in one pass, as almost every group succeeds.
        run = _IngestRun(self, conn, now, now_iso, hooks)
        conn.execute("SAVEPOINT ingest_group")
        try:
            results: list[list[IngestResult] | Exception] = [run.add(item) for item in items]
            run.flush()
        except _INGEST_ITEM_ERRORS:
            conn.execute("ROLLBACK TO ingest_group")
            conn.execute("RELEASE ingest_group")
        else:
            conn.execute("RELEASE ingest_group")
            return results
        # Something in the group failed: again, one item per savepoint, so that
        # only the failing item fails (a batch is one item: all or nothing).
        results = []
        for item in items:
            results.append(self._ingest_one(conn, item, now, now_iso, hooks))
        return results

    def _ingest_one(
        self,
        conn: sqlite3.Connection,
        item: _IngestItem,
        now: int,
        now_iso: str,
        hooks: dict[str, list[tuple[str, tuple[str, ...], int | None]]],
    ) -> list[IngestResult] | Exception:
        run = _IngestRun(self, conn, now, now_iso, hooks)
        conn.execute("SAVEPOINT ingest_item")
        try:
            result = run.add(item)
            run.flush()
        except _INGEST_ITEM_ERRORS as exc:
            conn.execute("ROLLBACK TO ingest_item")
            conn.execute("RELEASE ingest_item")
            return exc
        conn.execute("RELEASE ingest_item")
        return result

    async def get_event(self, workspace_id: str | None, event_id: str) -> Event | None:
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT id, workspace_id, type, body, idempotency_key, created_at FROM events"
                " WHERE id = ? AND (? IS NULL OR workspace_id = ?)",
                (event_id, workspace_id, workspace_id),
            ).fetchone()
        )
        return Event(row[0], row[1], row[2], bytes(row[3]), row[4], row[5]) if row else None

    # -- deliveries -------------------------------------------------------------

    async def get_delivery(self, workspace_id: str | None, delivery_id: str) -> Delivery | None:
        row = await self._call(
            lambda conn: conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries"
                " WHERE id = ? AND (? IS NULL OR workspace_id = ?)",
                (delivery_id, workspace_id, workspace_id),
            ).fetchone()
        )
        return _delivery(row) if row else None

    async def list_deliveries(
        self, workspace_id: str | None, flt: DeliveryFilter, limit: int, cursor: str | None = None
    ) -> Page:
        where = ["(? IS NULL OR workspace_id = ?)"]
        args: list[Any] = [workspace_id, workspace_id]
        if cursor:
            created, item_id = decode_cursor(cursor)
            where.append("(created_at, id) < (?, ?)")
            args += [created, item_id]
        for clause, value in (
            ("status = ?", flt.status.value if flt.status else None),
            ("webhook_id = ?", flt.webhook_id),
            ("event_type = ?", flt.event_type),
            ("created_at >= ?", flt.since_ms),
            ("created_at <= ?", flt.until_ms),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        args.append(limit + 1)
        sql = (
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        rows = await self._call(lambda conn: conn.execute(sql, args).fetchall())
        items = [_delivery(r) for r in rows[:limit]]
        nxt = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
        return Page(items, nxt)

    async def list_attempts(self, delivery_id: str) -> list[Attempt]:
        rows = await self._call(
            lambda conn: conn.execute(
                "SELECT id, delivery_id, number, started_at, duration_ms, status_code, error,"
                " response_body, outcome FROM attempts WHERE delivery_id = ?"
                " ORDER BY number, started_at",
                (delivery_id,),
            ).fetchall()
        )
        return [Attempt(*r) for r in rows]

    # -- the scheduler's side ------------------------------------------------------

    async def claim_due(
        self,
        limit: int,
        lease_ms: int,
        per_webhook_room: Mapping[str, int],
        default_room: int,
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries, at most the room left per webhook.

        ``per_webhook_room`` gives the free per-webhook slots of webhooks that
        already have attempts in flight; others get ``default_room``.
        Webhooks with no room are excluded inside the query, so a saturated
        (slow or dead) endpoint never fills a batch.
        """
        _results, claims = await self.settle_and_claim(
            (), limit, lease_ms, per_webhook_room, default_room
        )
        return claims

    async def settle_and_claim(
        self,
        records: Sequence[AttemptRecord],
        limit: int,
        lease_ms: int,
        per_webhook_room: Mapping[str, int],
        default_room: int,
    ) -> _Round:
        """Record finished attempts, then claim more, in one transaction.

        The scheduler's round trip: what the previous batch did is committed
        together with the next batch's leases.  Records go first, so a 429's
        pause or a 410's deactivation is in place before the claim looks at
        the webhook.  Usually that transaction is one statement
        (_SETTLE_ROUND_SQL): the deliveries to lease are chosen before it,
        by reading the queue, and what was leased is read back after it,
        neither holding the write lock (a webhook that the records pause or
        deactivate gets no room in that choice).  A turn chooses and leases
        once more when another process leased some of its choice first, or
        when it took all that was due and another connection (an ingest)
        committed meanwhile.  A record whose lease moved on, a delivery
        listed twice or a NUL take a transaction of several.
        """
        if limit <= 0 and not records:
            return [], []
        now = self.clock.now_ms()
        token = secrets.token_hex(12)
        timeout = self._busy_timeout_ms / 1000
        unread: list[str] = []  # why what was leased could not be read back

        def transaction(conn: sqlite3.Connection) -> _Round:
            results = self._record_rows(conn, records, now) if records else []
            if limit <= 0:
                return results, []
            chosen = self._choose_due(conn, now, limit, per_webhook_room, default_room).ids
            if chosen:
                conn.execute(_LEASE_SQL, (token, now + lease_ms, json.dumps(chosen), now))
            return results, self._leased_claims(conn, chosen, token, now)

        def in_transaction(conn: sqlite3.Connection) -> _Round:
            return _wait_out_busy(conn, lambda c: _in_transaction(c, transaction), timeout)

        def round_trip(conn: sqlite3.Connection) -> _Round:
            self._use_sync(conn, self._db, "NORMAL")
            written = _one_statement_records(records)
            if written is None:  # the same delivery twice, a NUL
                return in_transaction(conn)
            # Chosen without the lock (a wake-up with nothing to claim takes
            # none); the lease is taken only where still due.  A webhook that
            # these records pause or deactivate gets none, as if its pause had
            # been written first.
            room = dict(per_webhook_room)
            room.update(dict.fromkeys(written.stopped, 0))
            choice = (
                self._choose_due(conn, now, limit, room, default_room)
                if limit > 0
                else _Choice([], None)
            )
            chosen = choice.ids
            if not chosen and not records:
                return [], []
            args = (*written[:4], json.dumps(chosen), token, now + lease_ms, now)
            try:
                _wait_out_busy(conn, lambda c: c.execute(_SETTLE_ROUND_SQL, args), timeout)
            except sqlite3.IntegrityError as exc:
                if str(exc) != _LEASE_MOVED:
                    raise
                # Nothing was written: the transaction tells which leases held.
                return in_transaction(conn)
            results = [RecordResult(r.delivery_id, True, r.transition.status) for r in records]
            # Committed: from here on nothing runs again and no error is
            # raised (the records would be written twice).  Leases that cannot
            # be read back expire, and their deliveries are claimed again then.
            try:
                claims = self._leased_claims(conn, chosen, token, now) if chosen else []
            except sqlite3.Error as exc:
                unread.append(str(exc))
                return results, []
            # Choose once more, in two cases.  Another process leased some of
            # the chosen first (it had read the same head of the queue):
            # seeing its leases now keeps the batch full (a short one leaves
            # the loop waiting for a wake-up; with two processes one batch in
            # ten was lost so, often all of it).  Or the choice took all the
            # due queue held and another connection committed since, mostly
            # an ingest whose commit held the write lock this turn waited
            # for: its events are due now, and would otherwise wait for the
            # next turn (at 1,000 events/s, 62 % of turns; ack to first
            # attempt p50 2.9-3.4 -> 1.7-1.9 ms).  (Not when webhooks at their
            # limit left due work behind: a second look would find only more
            # of theirs, as in the ingest run's one busy webhook.)
            try:
                if len(claims) < len(chosen) or (
                    len(claims) < limit
                    and choice.whole_queue_at is not None
                    and conn.execute("PRAGMA data_version").fetchone()[0] != choice.whole_queue_at
                ):
                    taken = Counter(c.webhook_id for c in claims)
                    room.update({w: room.get(w, default_room) - n for w, n in taken.items()})
                    # (Now, not the turn's start: what was committed meanwhile
                    # may be due after it.)
                    later = self.clock.now_ms()
                    more = self._choose_due(
                        conn, later, limit - len(claims), room, default_room
                    ).ids
                    if more:
                        lease = (token, later + lease_ms, json.dumps(more), later)
                        _wait_out_busy(conn, lambda c: c.execute(_LEASE_SQL, lease), timeout)
                        claims += self._leased_claims(conn, more, token, later)
            except sqlite3.Error as exc:
                unread.append(str(exc))
            return results, claims

        done = await self._call(round_trip, wait_busy=False)
        if unread:
            log.error("store.claim_unread", error=unread[0])
        return done

    def _choose_due(
        self,
        conn: sqlite3.Connection,
        now: int,
        limit: int,
        per_webhook_room: Mapping[str, int],
        default_room: int,
    ) -> _Choice:
        """Up to ``limit`` due deliveries whose webhooks may take them, in the order due."""
        room = dict(per_webhook_room)
        chosen: list[str] = []

        def take(rows: Iterable[list[Any]]) -> None:
            """Choose deliveries in the given order while their webhooks have room."""
            for _due, _rowid, delivery_id, webhook_id, sendable in rows:
                if not sendable:
                    continue
                left = room.get(webhook_id, default_room)
                if left <= 0:
                    continue
                room[webhook_id] = left - 1
                chosen.append(delivery_id)
                if len(chosen) >= limit:
                    return

        window = _claim_window(limit)
        head: list[list[Any]] = []
        head_read = now >= self._head_blocked_until
        whole_queue_at: int | None = None
        if head_read:
            rows, version = conn.execute(_CLAIM_SCAN_SQL, (now, now, window)).fetchone()
            head = json.loads(rows) if rows else []
            # (The aggregate keeps the scan's order in practice; sorting makes
            # it a promise, and costs little on a sorted list.  Rows compare by
            # due time, then rowid, which is unique.)
            head.sort()
            take(head)
            if len(head) < window and len(chosen) == sum(1 for row in head if row[4]):
                whole_queue_at = version
            if not chosen and len(head) >= window:
                # Nothing at all could go from the head: the claims that follow
                # go straight to the webhooks' own queues (below) for a while,
                # skipping a read that would only find the same blocked rows
                # (in the isolation run, 2.8 ms of each round trip's 8).
                self._head_blocked_until = now + _HEAD_BLOCKED_RECHECK_MS
        if len(chosen) < limit and (len(head) >= window or not head_read):
            # The head of the queue is crowded with deliveries of webhooks that
            # may not take them now (a slow endpoint's backlog, the one busy
            # webhook, a 429's pause, an inactive webhook): take the oldest due
            # work of each webhook that has room, from its own queue, instead
            # of reading on through rows none may take.
            wanted = limit - len(chosen)
            exclude = json.dumps(chosen) if chosen else None
            args = (now, now, json.dumps(room), default_room, wanted, exclude)
            found: list[list[Any]] = []
            for may_go, queue in _json_rows(conn, _WEBHOOK_QUEUES_SQL, args):
                found.extend(queue[:may_go])
            found.sort()
            chosen.extend(delivery_id for _due, _rowid, delivery_id in found[:wanted])
        return _Choice(chosen, whole_queue_at)

    @staticmethod
    def _leased_claims(
        conn: sqlite3.Connection, chosen: list[str], token: str, now: int
    ) -> list[ClaimedDelivery]:
        """What an attempt needs of the deliveries ``chosen`` that ``token`` leased."""
        if not chosen:
            return []
        rows = _json_rows(conn, _CLAIMED_SQL, (json.dumps(chosen), token))
        for row in rows:
            if row[5] is None:
                (row[5],) = conn.execute(
                    "SELECT body FROM events WHERE id = ?", (row[3],)
                ).fetchone()
        # Sent in the order they were due.
        position = {delivery_id: i for i, delivery_id in enumerate(chosen)}
        rows.sort(key=lambda row: position[row[0]])
        return [_claimed(r, now) for r in rows]

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[RecordResult]:
        if len(records) == 1:
            return [await self._records.submit(records[0])]
        return list(await asyncio.gather(*(self._records.submit(r) for r in records)))

    async def _record_group(self, records: list[AttemptRecord]) -> list[RecordResult | Exception]:
        def work(conn: sqlite3.Connection) -> list[RecordResult | Exception]:
            return list(self._record_rows(conn, records, self.clock.now_ms()))

        return await self._tx(work, durable=False)

    @staticmethod
    def _record_rows(
        conn: sqlite3.Connection, records: Sequence[AttemptRecord], now: int
    ) -> list[RecordResult]:
        transitions, attempts = _record_values(records)
        applied: set[int] = set()  # indexes into records
        attempts_json = json.dumps(attempts)
        if _JSON_NUL in attempts_json or any(
            "\x00" in (r.transition.dead_letter_reason or "") for r in records
        ):
            for i, row in enumerate(transitions):
                if conn.execute(_RECORD_TRANSITION_SQL, (*row[2:], now, *row[:2])).rowcount:
                    applied.add(i)
            conn.executemany(_INSERT_ATTEMPT_SQL, attempts)
        else:
            # Every transition in one UPDATE and every attempt row in one
            # INSERT, both reading the batch from a JSON array.
            todo = list(range(len(records)))
            while todo:
                # A delivery listed twice (a stale lease's record beside the
                # current one) goes in a later round, as if written one by one.
                ids: set[str] = set()
                step: list[int] = []
                later: list[int] = []
                for i in todo:
                    (later if records[i].delivery_id in ids else step).append(i)
                    ids.add(records[i].delivery_id)
                batch = json.dumps([transitions[i] for i in step])
                # (The round trip's usual case, every lease held, is written
                # by _SETTLE_ROUND_SQL; this path is for the others.)
                leased = set(_json_rows(conn, _LEASED_SQL, (batch,)))
                conn.execute(_RECORD_TRANSITIONS_SQL, (now, batch))
                applied.update(i for i in step if records[i].delivery_id in leased)
                todo = later
            conn.execute(_INSERT_ATTEMPTS_SQL, (attempts_json,))
        results: list[RecordResult] = []
        for i, r in enumerate(records):
            t = r.transition
            if i not in applied:
                # Fenced: the lease moved on.  Rare, so a statement of its own.
                row = conn.execute(
                    "SELECT status FROM deliveries WHERE id = ?", (r.delivery_id,)
                ).fetchone()
                results.append(RecordResult(r.delivery_id, False, Status(row[0]) if row else None))
                continue
            if t.pause_webhook_until is not None:
                conn.execute(_PAUSE_SQL, (t.pause_webhook_until, r.webhook_id))
            if t.deactivate_webhook_reason is not None:
                conn.execute(_DEACTIVATE_SQL, (t.deactivate_webhook_reason, now, r.webhook_id))
            results.append(RecordResult(r.delivery_id, True, t.status))
        return results

    async def release(self, leases: Collection[tuple[str, str]]) -> int:
        """Give leases back so the deliveries are due again at once."""
        if not leases:
            return 0
        now = self.clock.now_ms()

        def work(conn: sqlite3.Connection) -> int:
            total = 0
            for delivery_id, token in leases:
                cur = conn.execute(
                    "UPDATE deliveries SET lease_token = NULL, next_attempt_at = ?"
                    " WHERE id = ? AND lease_token = ?",
                    (now, delivery_id, token),
                )
                total += cur.rowcount
            return total

        return await self._tx(work, durable=False)

    async def next_due_at(self) -> int | None:
        """When the earliest scheduled delivery of an active, unpaused webhook is due."""
        now = self.clock.now_ms()

        def work(conn: sqlite3.Connection) -> int | None:
            (due,) = conn.execute(
                _FIRST_SENDABLE_SQL, (_FAR_FUTURE_MS, now, _FIRST_SENDABLE_WINDOW)
            ).fetchone()
            (paused,) = conn.execute(
                "SELECT min(paused_until) FROM webhooks WHERE paused_until > ?", (now,)
            ).fetchone()
            candidates = [v for v in (due, paused) if v is not None]
            return min(candidates) if candidates else None

        return await self._call(work)

    async def queue_stats(self) -> QueueStats:
        now = self.clock.now_ms()

        def work(conn: sqlite3.Connection) -> QueueStats:
            by_status = {s.value: 0 for s in Status}
            for status, count in conn.execute(
                "SELECT status, count(*) FROM deliveries GROUP BY status"
            ):
                by_status[status] = count
            # Work that waits on purpose (inactive webhook, a 429 pause) is not
            # late, so it stays out of the scheduling-lag figure.  (A lease
            # that expired is late work again.)
            (oldest,) = conn.execute(
                _FIRST_SENDABLE_SQL, (now, now, _FIRST_SENDABLE_WINDOW)
            ).fetchone()
            in_flight = conn.execute(
                "SELECT count(*) FROM deliveries WHERE next_attempt_at > ?"
                " AND lease_token IS NOT NULL",
                (now,),
            ).fetchone()[0]
            return QueueStats(by_status, oldest, in_flight)

        return await self._call(work)

    # -- operator actions ----------------------------------------------------------

    async def claim_for_replay(
        self, workspace_id: str | None, delivery_id: str, lease_ms: int
    ) -> ReplayClaim:
        now = self.clock.now_ms()
        token = secrets.token_hex(12)

        def work(conn: sqlite3.Connection) -> ReplayClaim:
            row = conn.execute(
                "SELECT d.status, w.status, w.deleted_at, w.paused_until FROM deliveries d"
                " JOIN webhooks w ON w.id = d.webhook_id"
                " WHERE d.id = ? AND (? IS NULL OR d.workspace_id = ?)",
                (delivery_id, workspace_id, workspace_id),
            ).fetchone()
            if row is None:
                return ReplayClaim(found=False)
            if row[0] != Status.DEAD_LETTER.value or row[2] is not None:
                return ReplayClaim(found=True, status=Status(row[0]))
            paused_until = row[3] if row[3] is not None and row[3] > now else None
            sendable = row[1] == WebhookStatus.ACTIVE.value and paused_until is None
            # The API holds the lease and makes the first attempt itself, unless
            # the webhook may not be sent to now: inactive (the delivery waits
            # like its other pending work) or paused by a 429 (it waits for the
            # Retry-After like the rest of the endpoint's queue).
            cur = conn.execute(
                "UPDATE deliveries SET status = 'pending', budget_used = 0,"
                " rate_limited_count = 0, rate_limited_since = NULL, status_reason = NULL,"
                " lease_token = ?, next_attempt_at = ?, updated_at = ?"
                " WHERE id = ? AND status = 'dead_letter'",
                (
                    token if sendable else None,
                    now + lease_ms if sendable else max(now, paused_until or 0),
                    now,
                    delivery_id,
                ),
            )
            if cur.rowcount != 1:  # pragma: no cover - guarded by the SELECT in this transaction
                raise sqlite3.OperationalError("replay transition matched nothing")
            if not sendable:
                return ReplayClaim(found=True, status=Status.PENDING, replayed=True)
            claim = conn.execute(
                f"SELECT {_CLAIM_COLUMNS} FROM deliveries d"
                " JOIN events e ON e.id = d.event_id JOIN webhooks w ON w.id = d.webhook_id"
                " WHERE d.id = ?",
                (delivery_id,),
            ).fetchone()
            return ReplayClaim(
                found=True, status=Status.PENDING, claim=_claimed(claim, now), replayed=True
            )

        return await self._tx(work)

    async def replay_webhook(
        self,
        workspace_id: str,
        webhook_id: str,
        since_ms: int | None,
        *,
        limit: int | None = None,
    ) -> int | None:
        now = self.clock.now_ms()

        def work(conn: sqlite3.Connection) -> int | None:
            if self._load_webhook(conn, workspace_id, webhook_id) is None:
                return None
            # LIMIT -1 is SQLite's "no limit".
            cur = conn.execute(
                "UPDATE deliveries SET status = 'pending', budget_used = 0,"
                " rate_limited_count = 0, rate_limited_since = NULL, status_reason = NULL,"
                " lease_token = NULL, next_attempt_at = ?, updated_at = ?"
                " WHERE id IN (SELECT id FROM deliveries"
                " WHERE webhook_id = ? AND status = 'dead_letter' AND is_test = 0"
                " AND (? IS NULL OR created_at >= ?) LIMIT ?)",
                (now, now, webhook_id, since_ms, since_ms, -1 if limit is None else limit),
            )
            return cur.rowcount

        return await self._tx(work)

    async def create_test_delivery(
        self, webhook: Webhook, event_type: str, data: Any
    ) -> ClaimedDelivery:
        """A delivery the caller attempts once, synchronously, and then ends.

        It is leased from birth with a lease that never lapses into the
        scheduler's hands before the caller records it.
        """
        now = self.clock.now_ms()
        token = secrets.token_hex(12)
        event_id = new_id(now)
        delivery_id = new_id(now)
        body = serialize_event(event_id, webhook.workspace_id, event_type, data, iso_ms(now))

        def work(conn: sqlite3.Connection) -> ClaimedDelivery:
            conn.execute(
                "INSERT INTO events (id, workspace_id, type, body, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (event_id, webhook.workspace_id, event_type, body, now),
            )
            # next_attempt_at far beyond any lease: the scheduler must never pick
            # up a test delivery; the API records its single attempt.
            conn.execute(
                "INSERT INTO deliveries (id, workspace_id, event_id, webhook_id, event_type,"
                " status, next_attempt_at, lease_token, is_test, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, 1, ?, ?)",
                (
                    delivery_id,
                    webhook.workspace_id,
                    event_id,
                    webhook.id,
                    event_type,
                    _NEVER,
                    token,
                    now,
                    now,
                ),
            )
            row = conn.execute(
                f"SELECT {_CLAIM_COLUMNS} FROM deliveries d"
                " JOIN events e ON e.id = d.event_id JOIN webhooks w ON w.id = d.webhook_id"
                " WHERE d.id = ?",
                (delivery_id,),
            ).fetchone()
            return _claimed(row, now)

        return await self._tx(work)

    async def end_interrupted_tests(self, older_than_ms: int) -> int:
        """Dead-letter test sends whose caller died before recording them.

        A test delivery is never scheduled, so one whose process was killed
        mid-request would otherwise stay pending for ever.
        """
        now = self.clock.now_ms()

        def work(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE deliveries SET status = 'dead_letter', next_attempt_at = NULL,"
                " lease_token = NULL, status_reason = 'test delivery interrupted', updated_at = ?"
                " WHERE is_test = 1 AND status = 'pending' AND created_at < ?",
                (now, older_than_ms),
            )
            return cur.rowcount

        return await self._tx(work)

    async def delete_delivered_before(self, cutoff_ms: int, batch: int) -> int:
        """Retention: drop one batch of old delivered deliveries (attempts cascade)."""

        def work(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries"
                " WHERE status = 'delivered' AND updated_at < ? LIMIT ?)",
                (cutoff_ms, batch),
            )
            deleted = cur.rowcount
            # Events nobody references any more, once past the idempotency window.
            conn.execute(
                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e"
                " WHERE e.created_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT ?)",
                (min(cutoff_ms, self.clock.now_ms() - self._idempotency_window_ms), batch),
            )
            return deleted

        return await self._tx(work)

    async def database_size_bytes(self) -> int:
        def work(conn: sqlite3.Connection) -> int:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
            return int(pages) * int(size)

        return await self._call(work)

    # -- what operators look at -----------------------------------------------------

    async def workspace_queue_stats(self, workspace_id: str) -> QueueStats:
        now = self.clock.now_ms()

        def work(conn: sqlite3.Connection) -> QueueStats:
            by_status = {s.value: 0 for s in Status}
            # Through the workspace's webhooks: (webhook_id, status) is an index
            # that covers the count, so no delivery row is read.
            for status, count in conn.execute(
                "SELECT d.status, count(*) FROM webhooks w"
                " JOIN deliveries d INDEXED BY deliveries_webhook ON d.webhook_id = w.id"
                " WHERE w.workspace_id = ? GROUP BY d.status",
                (workspace_id,),
            ):
                by_status[status] = count
            # Each webhook that may send: its first scheduled delivery, one index
            # seek.  A leased delivery is scheduled at its lease's end, so only
            # unclaimed (or lapsed) work can be due by now.
            (oldest,) = conn.execute(
                "SELECT min(first) FROM (SELECT (SELECT min(next_attempt_at) FROM deliveries"
                " INDEXED BY deliveries_webhook_due WHERE webhook_id = w.id"
                " AND next_attempt_at IS NOT NULL) AS first FROM webhooks w"
                " WHERE w.workspace_id = ?1 AND w.status = 'active' AND w.deleted_at IS NULL"
                " AND (w.paused_until IS NULL OR w.paused_until <= ?2)) WHERE first <= ?2",
                (workspace_id, now),
            ).fetchone()
            (in_flight,) = conn.execute(
                "SELECT count(*) FROM webhooks w"
                " JOIN deliveries d INDEXED BY deliveries_webhook_due ON d.webhook_id = w.id"
                " WHERE w.workspace_id = ? AND d.next_attempt_at > ?"
                " AND d.lease_token IS NOT NULL",
                (workspace_id, now),
            ).fetchone()
            return QueueStats(by_status, oldest, in_flight)

        return await self._call(work)

    async def webhook_stats(
        self, workspace_id: str, webhook_id: str, since_ms: int
    ) -> WebhookStats | None:
        now = self.clock.now_ms()

        def work(conn: sqlite3.Connection) -> WebhookStats | None:
            known = conn.execute(
                "SELECT 1 FROM webhooks WHERE id = ? AND workspace_id = ? AND deleted_at IS NULL",
                (webhook_id, workspace_id),
            ).fetchone()
            if known is None:
                return None
            delivered, dead, queued = conn.execute(
                "SELECT coalesce(sum(status = 'delivered' AND updated_at >= ?2), 0),"
                " coalesce(sum(status = 'dead_letter' AND updated_at >= ?2), 0),"
                " coalesce(sum(status IN " + _SCHEDULABLE_SQL + "), 0)"
                " FROM deliveries INDEXED BY deliveries_webhook"
                " WHERE webhook_id = ?1 AND is_test = 0",
                (webhook_id, since_ms),
            ).fetchone()
            (in_flight,) = conn.execute(
                "SELECT count(*) FROM deliveries INDEXED BY deliveries_webhook_due"
                " WHERE webhook_id = ? AND next_attempt_at > ? AND lease_token IS NOT NULL"
                " AND is_test = 0",
                (webhook_id, now),
            ).fetchone()
            # An attempt changes its delivery's updated_at, so the deliveries
            # not touched since since_ms have no attempt in the window to read.
            last = conn.execute(
                "SELECT a.started_at, a.status_code, a.error, a.delivery_id"
                " FROM deliveries d INDEXED BY deliveries_webhook"
                " JOIN attempts a ON a.delivery_id = d.id"
                " WHERE d.webhook_id = ?1 AND d.is_test = 0 AND d.updated_at >= ?2"
                " AND a.started_at >= ?2 AND a.outcome != '2xx'"
                " ORDER BY a.started_at DESC, a.number DESC LIMIT 1",
                (webhook_id, since_ms),
            ).fetchone()
            return WebhookStats(
                since_ms=since_ms,
                delivered=delivered,
                dead_lettered=dead,
                queued=queued,
                in_flight=in_flight,
                last_error_at=last[0] if last else None,
                last_error_status_code=last[1] if last else None,
                last_error=last[2] if last else None,
                last_error_delivery_id=last[3] if last else None,
            )

        return await self._call(work)

    async def rate_limit_stats(self) -> RateLimitStats:
        now = self.clock.now_ms()

        def work(conn: sqlite3.Connection) -> RateLimitStats:
            (paused,) = conn.execute(
                "SELECT count(*) FROM webhooks WHERE paused_until > ? AND status = 'active'"
                " AND deleted_at IS NULL",
                (now,),
            ).fetchone()
            (oldest,) = conn.execute(
                "SELECT min(rate_limited_since) FROM deliveries INDEXED BY deliveries_status"
                " WHERE status = 'rate_limited'"
            ).fetchone()
            return RateLimitStats(paused, oldest)

        return await self._call(work)


# Year 9999: "scheduled, but never by the scheduler".
_NEVER = 253_402_300_799_000


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


__all__ = ["MIGRATIONS", "SCHEDULABLE", "SqliteStore", "decode_cursor", "encode_cursor"]
