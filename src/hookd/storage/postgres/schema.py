"""The PostgreSQL schema: versioned migrations, applied once however many nodes start.

The tables and their meaning are SQLite's (``storage/sqlite/schema.py``);
types are PostgreSQL's.  Migrations run under a session advisory lock, so
nodes starting together migrate once: the others wait for the lock, then
find nothing left to do.  Never edit a migration that shipped.
"""

from __future__ import annotations

import asyncpg

from hookd.clock import Clock
from hookd.storage.base import StoreError
from hookd.storage.postgres.connection import MIGRATION_LOCK

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE workspaces (
            id          TEXT PRIMARY KEY,
            name        TEXT NOT NULL,
            created_at  BIGINT NOT NULL
        );
        CREATE TABLE api_keys (
            id            TEXT PRIMARY KEY,
            workspace_id  TEXT REFERENCES workspaces(id),
            digest        BYTEA NOT NULL UNIQUE,
            prefix        TEXT NOT NULL,
            owner         TEXT NOT NULL,
            created_at    BIGINT NOT NULL,
            revoked_at    BIGINT
        );
        CREATE TABLE webhooks (
            id                     TEXT PRIMARY KEY,
            workspace_id           TEXT NOT NULL REFERENCES workspaces(id),
            name                   TEXT NOT NULL,
            url                    TEXT NOT NULL,
            events                 TEXT NOT NULL,
            secret                 TEXT NOT NULL,
            previous_secret        TEXT,
            previous_secret_until  BIGINT,
            retry_attempts         INTEGER NOT NULL,
            timeout_ms             INTEGER NOT NULL,
            status                 TEXT NOT NULL CHECK (status IN ('active','inactive')),
            disabled_reason        TEXT,
            paused_until           BIGINT,
            -- When the endpoint's current run of 429s began (NULL: it answers).
            limited_since          BIGINT,
            created_by             TEXT NOT NULL,
            created_at             BIGINT NOT NULL,
            updated_at             BIGINT NOT NULL,
            deleted_at             BIGINT
        );
        CREATE INDEX webhooks_workspace ON webhooks (workspace_id, created_at, id)
            WHERE deleted_at IS NULL;
        CREATE TABLE events (
            id               TEXT PRIMARY KEY,
            workspace_id     TEXT NOT NULL REFERENCES workspaces(id),
            type             TEXT NOT NULL,
            body             BYTEA NOT NULL,
            idempotency_key  TEXT,
            created_at       BIGINT NOT NULL
        );
        CREATE INDEX events_idempotency ON events (workspace_id, idempotency_key, created_at)
            WHERE idempotency_key IS NOT NULL;
        CREATE INDEX events_created ON events (created_at);
        CREATE TABLE deliveries (
            -- Insertion order: the tie-break of equal due times (FIFO).
            seq                 BIGSERIAL NOT NULL UNIQUE,
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
            rate_limited_since  BIGINT,
            next_attempt_at     BIGINT,
            lease_token         TEXT,
            last_status_code    INTEGER,
            last_error          TEXT,
            last_response_body  TEXT,
            status_reason       TEXT,
            is_test             INTEGER NOT NULL DEFAULT 0,
            created_at          BIGINT NOT NULL,
            updated_at          BIGINT NOT NULL,
            -- A delivery is scheduled exactly when it is not terminal.
            CHECK ((next_attempt_at IS NULL) = (status IN ('delivered','dead_letter')))
        );
        CREATE INDEX deliveries_due ON deliveries (next_attempt_at, seq)
            WHERE next_attempt_at IS NOT NULL;
        CREATE INDEX deliveries_webhook_due ON deliveries (webhook_id, next_attempt_at, seq)
            WHERE next_attempt_at IS NOT NULL;
        -- In flight: the cluster-wide per-webhook limit counts these.
        CREATE INDEX deliveries_leased ON deliveries (webhook_id, next_attempt_at)
            WHERE lease_token IS NOT NULL;
        CREATE INDEX deliveries_workspace ON deliveries (workspace_id, created_at, id);
        CREATE INDEX deliveries_webhook ON deliveries (webhook_id, status);
        CREATE INDEX deliveries_status ON deliveries (status, updated_at);
        CREATE INDEX deliveries_event ON deliveries (event_id);
        CREATE TABLE attempts (
            id             TEXT PRIMARY KEY,
            delivery_id    TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
            number         INTEGER NOT NULL,
            started_at     BIGINT NOT NULL,
            duration_ms    INTEGER NOT NULL,
            status_code    INTEGER,
            error          TEXT,
            response_body  TEXT,
            outcome        TEXT NOT NULL
        );
        CREATE INDEX attempts_delivery ON attempts (delivery_id, number);
        -- The figures of /metrics, computed by the cluster's leader for every node.
        CREATE TABLE figures (
            name   TEXT PRIMARY KEY,
            value  JSONB NOT NULL,
            at     BIGINT NOT NULL
        );
        """,
    ),
)


async def migrate(conn: asyncpg.Connection, clock: Clock) -> list[int]:
    """Apply the migrations this database lacks, once for the whole cluster; what was applied."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        applied = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        known = {version for version, _ in MIGRATIONS}
        if applied - known:
            raise StoreError(
                f"database schema version {max(applied)} is newer than this hookd knows"
            )
        done = []
        for version, script in MIGRATIONS:
            if version in applied:
                continue
            async with conn.transaction():
                await conn.execute(script)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    version,
                    clock.now_ms(),
                )
            done.append(version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
