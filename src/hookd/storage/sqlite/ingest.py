"""Ingest: events and their deliveries, group committed on a connection of their own.

Events are written on a second SQLite connection (and thread), opened at the
first ingest, so that a group never queues behind a scheduler turn on the
scheduler's thread; both meet only at SQLite's write lock.  Processes that
never ingest (delivery workers, most CLI commands) never open it.

Every group is written by the one INGEST statement (``queries.py``):

- Items without idempotency keys are planned from a cached copy of each
  workspace's subscriptions and written in autocommit mode, the statement
  checking that copy against the table (a webhook created, changed, disabled
  or deleted since aborts it, and the group is planned again from a fresh
  read).  Once a group's workspaces are cached, the event loop plans the group
  itself and hands it to the ingest thread, which then needs the GIL only to
  start the statement (``DatabaseThread.run``'s hand-over).
- Items with keys must read earlier events, so they are planned and written
  inside one transaction, which takes the write lock first.

A group whose JSON would pass ``JSON_STATEMENT_MAX_CHARS`` is written by
several INGEST statements in one transaction: no statement nears SQLite's
string limit, and the group is still stored whole or not at all.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

from hookd import lifecycle
from hookd.clock import Clock
from hookd.models import IngestResult
from hookd.storage.events import (
    Earlier,
    GroupedIngest,
    GroupPlan,
    IngestItem,
    ItemResult,
    PlannedDelivery,
    PlannedEvent,
    Subscriptions,
)
from hookd.storage.rows import SubscriptionsRow, event_of
from hookd.storage.sqlite import queries as q
from hookd.storage.sqlite import schema
from hookd.storage.sqlite.thread import DatabaseThread, in_transaction, wait_out_busy

# One statement's JSON at most: far below SQLite's length limit (1e9 bytes),
# and a transient copy of a group in memory stays small.
JSON_STATEMENT_MAX_CHARS = 32 * 1024 * 1024
_Args = tuple[str, str, str, str, int | None, int]


class _Prepared(NamedTuple):
    """A group of keyless items made ready for INGEST."""

    workspaces: list[str]
    results: list[ItemResult]
    statements: list[_Args]


def _json_chunks(rows: Sequence[tuple[Any, ...]]) -> list[str]:
    text = json.dumps(rows, ensure_ascii=False)
    if len(text) <= JSON_STATEMENT_MAX_CHARS or len(rows) <= 1:
        return [text]
    half = len(rows) // 2
    return _json_chunks(rows[:half]) + _json_chunks(rows[half:])


def ingest_statements(
    subscriptions: list[SubscriptionsRow],
    events: list[PlannedEvent],
    deliveries: list[PlannedDelivery],
    now: int,
) -> list[_Args]:
    """INGEST's arguments for a group: one statement, or several when it is large."""
    change = lifecycle.created(now)

    def args(subs: str, evs: str, dels: str) -> _Args:
        return (subs, evs, dels, change.status.value, change.next_attempt_at, now)

    subscribed = json.dumps(subscriptions, ensure_ascii=False)
    events_json = json.dumps(events, ensure_ascii=False)
    deliveries_json = json.dumps(deliveries, ensure_ascii=False)
    if len(events_json) + len(deliveries_json) <= JSON_STATEMENT_MAX_CHARS:
        return [args(subscribed, events_json, deliveries_json)]
    # Events first: a delivery's event must exist when it is inserted.
    return (
        [args(subscribed, "[]", "[]")]
        + [args("[]", chunk, "[]") for chunk in _json_chunks(events)]
        + [args("[]", "[]", chunk) for chunk in _json_chunks(deliveries)]
    )


def _write(conn: sqlite3.Connection, statements: list[_Args]) -> None:
    for args in statements:
        conn.execute(q.INGEST, args)


class SqliteIngest(GroupedIngest):
    def __init__(
        self,
        path: str,
        clock: Clock,
        *,
        busy_timeout_ms: int,
        idempotency_window_ms: int,
        synchronous: str,
        max_deliveries: int | None = None,
    ) -> None:
        # The subscription cache is filled on the ingest thread, read on the
        # event loop too.
        super().__init__(clock, idempotency_window_ms, max_deliveries)
        self._path = path
        self._busy_timeout = busy_timeout_ms / 1000
        self._synchronous = synchronous
        self._thread: DatabaseThread | None = None

    async def close(self) -> None:
        await super().close()
        thread, self._thread = self._thread, None
        if thread is not None:
            await thread.close()

    async def _connection(self) -> DatabaseThread:
        if self._thread is not None:
            return self._thread
        thread = DatabaseThread(
            lambda: sqlite3.connect(self._path, isolation_level=None), "hookd-ingest"
        )

        def setup(conn: sqlite3.Connection) -> None:
            wait_out_busy(
                conn,
                lambda c: schema.configure(c, self._path, self._synchronous),
                self._busy_timeout,
            )
            for statement in q.INGEST_DDL:
                conn.execute(statement)

        try:
            await thread.start()
            await thread.run(setup)
        except BaseException:
            await thread.close()
            raise
        self._thread = thread
        return thread

    async def _commit(self, items: list[IngestItem]) -> list[ItemResult]:
        """Commit a group: keyless items in one statement, keyed ones in a transaction.

        Each part fails alone: an item is told it failed only if its own
        commit did.
        """
        thread = await self._connection()
        results: dict[int, ItemResult] = {}
        plain: list[int] = []
        keyed: list[int] = []
        for i, item in enumerate(items):
            (keyed if item.keyed else plain).append(i)
        if plain:
            group = [items[i] for i in plain]
            # Made ready here, while the ingest thread may still be writing the
            # group before: that thread then needs the GIL only to start the
            # statement.
            known = self._subscriptions.known(_workspaces(group))
            prepared = self._prepare(group, known) if known is not None else None
            done = await self._part(
                thread.run(lambda conn: self._write_plain(conn, group, prepared), hand_over=True),
                len(plain),
            )
            if done is None:  # webhooks changing faster than a group commits
                keyed = sorted(keyed + plain)
            else:
                results.update(zip(plain, done, strict=True))
        if keyed:
            group = [items[i] for i in keyed]
            timeout = self._busy_timeout
            done = await self._part(
                thread.run(
                    lambda conn: wait_out_busy(
                        conn,
                        lambda c: in_transaction(c, lambda t: self._write_keyed(t, group)),
                        timeout,
                    )
                ),
                len(keyed),
            )
            assert done is not None
            results.update(zip(keyed, done, strict=True))
        return [results[i] for i in range(len(items))]

    @staticmethod
    async def _part(work: Any, count: int) -> list[ItemResult] | None:
        try:
            done: list[ItemResult] | None = await work
        except Exception as exc:  # the part's commit failed: each of its items fails
            return [exc] * count
        return done

    def _prepare(
        self,
        items: list[IngestItem],
        subscriptions: dict[str, tuple[str, Subscriptions]],
        earlier: Earlier | None = None,
    ) -> _Prepared:
        now = self._clock.now_ms()
        hooks = {ws: hooks for ws, (_, hooks) in subscriptions.items()}
        plan = GroupPlan(now, hooks, earlier, max_deliveries=self._max_deliveries)
        results = plan.add_all(items)
        workspaces = sorted(subscriptions)
        checked = [SubscriptionsRow(ws, subscriptions[ws][0]) for ws in workspaces]
        statements = (
            ingest_statements(checked, plan.events, plan.deliveries, now) if plan.events else []
        )
        return _Prepared(workspaces, results, statements)

    def _write_plain(
        self, conn: sqlite3.Connection, items: list[IngestItem], prepared: _Prepared | None
    ) -> list[ItemResult] | None:
        """Write keyless items; None when the webhooks keep changing under them."""
        for _ in range(3):
            if prepared is None:
                prepared = self._prepare(items, self._read_subscriptions(conn, items))
            try:
                self._write_statements(conn, prepared.statements)
            except sqlite3.IntegrityError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_CONSTRAINT_TRIGGER:
                    raise
                # Planned from subscriptions that changed since: nothing was
                # written; forget them and plan again.
                self._subscriptions.forget(prepared.workspaces)
                prepared = None
                continue
            return prepared.results
        return None

    def _write_statements(self, conn: sqlite3.Connection, statements: list[_Args]) -> None:
        """One statement in autocommit mode, or several in one transaction."""
        if len(statements) == 1:
            (args,) = statements
            wait_out_busy(conn, lambda c: c.execute(q.INGEST, args), self._busy_timeout)
        elif statements:
            wait_out_busy(
                conn,
                lambda c: in_transaction(c, lambda t: _write(t, statements)),
                self._busy_timeout,
            )

    def _read_subscriptions(
        self, conn: sqlite3.Connection, items: list[IngestItem], *, fresh: bool = False
    ) -> dict[str, tuple[str, Subscriptions]]:
        """The subscriptions of the items' workspaces, read where not cached (all if ``fresh``)."""
        workspaces = _workspaces(items)
        missing = self._subscriptions.missing(workspaces, fresh=fresh)
        if missing:
            (text,) = conn.execute(q.SUBSCRIPTIONS, (json.dumps(missing),)).fetchone()
            for ws, subscribed in json.loads(text):
                self._subscriptions.learn(ws, subscribed)
        known = self._subscriptions.known(workspaces)
        assert known is not None
        return known

    def _write_keyed(self, conn: sqlite3.Connection, items: list[IngestItem]) -> list[ItemResult]:
        """Plan and write items that may repeat earlier events (in a transaction)."""
        subscriptions = self._read_subscriptions(conn, items, fresh=True)
        prepared = self._prepare(items, subscriptions, self._earlier_in(conn))
        _write(conn, prepared.statements)
        return prepared.results

    def _earlier_in(self, conn: sqlite3.Connection) -> Earlier:
        oldest = self._clock.now_ms() - self._idempotency_window_ms

        def earlier(ws: str, key: str) -> IngestResult | None:
            row = conn.execute(q.EARLIER_EVENT, (ws, key, oldest)).fetchone()
            if row is None:
                return None
            ids = conn.execute(q.DELIVERIES_OF_EVENT, (row[0],)).fetchall()
            event = event_of(row)
            return IngestResult(event, tuple(r[0] for r in ids), duplicate=False)

        return earlier


def _workspaces(items: list[IngestItem]) -> list[str]:
    return sorted({item.workspace_id for item in items})
