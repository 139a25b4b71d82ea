"""What the backend-neutral parts of storage need of a backend: its SQL and its connection.

The operators' side of a store (``admin.py``, ``figures.py``,
``housekeeping.py``) is written once, against two small protocols: a
:class:`Database` to run statements on, and :class:`Sql`, the named
statements of the operations it runs.  Each backend's ``queries`` module
provides every name, with positional parameters in the same order
(``?1``... in SQLite, ``$1``... in PostgreSQL), and converts a list of ids
or statuses into the parameter its SQL expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from hookd.clock import Clock
from hookd.storage.rows import Row


class Transaction(Protocol):
    """The statements of one write transaction."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a write; how many rows it changed."""
        ...

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Row]: ...

    async def row(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...


class Database(Protocol):
    """A connection (or pool) for reads and short write transactions."""

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Row]: ...

    async def row(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...


class Sql(Protocol):
    """The named statements of the backend-neutral operations (each backend's queries module)."""

    # Run in a transaction that made work due (a replay, a re-activated
    # webhook): wakes other processes' idle schedulers at its commit.  None
    # where they look by themselves (SQLite: one machine, a short poll).
    WAKE: str | None

    # tenancy and keys
    ENSURE_WORKSPACE: str
    GET_WORKSPACE: str
    INSERT_KEY: str
    FIND_KEY: str
    LIST_KEYS: str
    REVOKE_KEY: str
    COUNT_KEYS: str
    # webhooks
    LOCK_WORKSPACE: str
    COUNT_WEBHOOKS: str
    INSERT_WEBHOOK: str
    GET_WEBHOOK: str
    LIST_WEBHOOKS: str
    UPDATE_WEBHOOK: str
    DELETE_WEBHOOK: str
    # events and deliveries
    GET_EVENT: str
    GET_DELIVERY: str
    LIST_DELIVERIES: str
    LIST_ATTEMPTS: str
    # operator changes
    APPLY_CHANGE: str
    OPEN_OF_WEBHOOK: str
    DEAD_LETTERS_OF_WEBHOOK: str
    INTERRUPTED_TESTS: str
    REPLAY_TARGET: str
    CLAIM_OF: str
    INSERT_TEST_EVENT: str
    INSERT_TEST_DELIVERY: str
    # figures
    COUNT_BY_STATUS: str
    OLDEST_DUE: str
    LEASED_NOW: str
    WORKSPACE_COUNT_BY_STATUS: str
    WORKSPACE_OLDEST_DUE: str
    WORKSPACE_LEASED_NOW: str
    WEBHOOK_OF_WORKSPACE: str
    WEBHOOK_OUTCOMES: str
    WEBHOOK_LEASED_NOW: str
    WEBHOOK_LAST_ERROR: str
    PAUSED_WEBHOOKS: str
    OLDEST_RATE_LIMITED: str
    DATABASE_SIZE: str
    # housekeeping
    DELETE_ENDED: str
    DELETE_ORPHAN_EVENTS: str
    DELETE_DELETED_WEBHOOKS: str
    LIMITED_WEBHOOKS: str

    def param(self, position: int) -> str:
        """The placeholder of parameter ``position`` (1-based), for statements built in code."""
        ...

    def values(self, values: Sequence[str]) -> Any:
        """A list of strings as the parameter an ``IN`` over it takes."""
        ...


class Statements:
    """A part of a store that runs a backend's named statements (``Sql``) on its
    ``Database``: ``Admin``, ``Figures`` and ``Housekeeping``, which a backend's
    store inherits (``composed.ComposedStore``); it sets these attributes."""

    _db: Database
    _q: Sql
    _clock: Clock
