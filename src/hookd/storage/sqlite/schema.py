"""The SQLite schema: versioned migrations, and what every connection is set to.

Migrations are applied in order at open, in one transaction; never edit one
that shipped.  A database whose schema is newer than this hookd knows is
refused, as is an SQLite too old for the statements hookd runs.
"""

from __future__ import annotations

import sqlite3

from hookd.clock import Clock

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
    (
        3,
        """
        -- When the endpoint's current run of 429s began (NULL: it answers): the
        -- 429 lane's bound for the endpoint as a whole.
        ALTER TABLE webhooks ADD COLUMN limited_since INTEGER;
        """,
    ),
)


# UPDATE ... FROM came with SQLite 3.33.0; the JSON functions must be there
# too (built in since 3.38, compiled into Python's own builds before that).
MIN_SQLITE_VERSION = (3, 33, 0)


def require_sqlite_features(conn: sqlite3.Connection) -> None:
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


def configure(conn: sqlite3.Connection, path: str, synchronous: str) -> None:
    """WAL, foreign keys and ``synchronous``; hookd waits for locks itself (busy_timeout 0)."""
    require_sqlite_features(conn)
    conn.execute("PRAGMA busy_timeout = 0")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot switch {path} to WAL journal (got {mode})")
    # FULL: a commit is on disk before the API acknowledges it, even across a
    # power cut; group commit amortises the fsync.
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")


def migrate(conn: sqlite3.Connection, clock: Clock) -> None:
    """Apply the migrations this database lacks (the caller holds a transaction)."""
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
        for statement in (s.strip() for s in script.split(";")):
            if statement:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
            (version, clock.now_ms()),
        )
