"""A store composed of parts: what every backend's store class delegates, written once.

A backend's store subclasses :class:`ComposedStore`: it inherits the shared
``Admin``, ``Figures`` and ``Housekeeping``, which run the backend's named
statements (``sql.Sql``) on its connection, and hands its own scheduling and
ingest parts to ``_compose``; the backend itself implements opening, closing
and what is its alone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hookd.clock import Clock
from hookd.models import (
    ClaimedDelivery,
    IngestResult,
)
from hookd.storage.admin import Admin
from hookd.storage.base import (
    AttemptRecord,
    NewEvent,
    RecordResult,
)
from hookd.storage.events import IngestItem
from hookd.storage.figures import Figures
from hookd.storage.housekeeping import Housekeeping
from hookd.storage.sql import Database, Sql

Round = tuple[list[RecordResult], list[ClaimedDelivery]]


@dataclass(frozen=True, slots=True)
class Quotas:
    """What a store refuses beyond (``[quotas]``); None: no limit."""

    webhooks_per_workspace: int | None = None
    deliveries_per_request: int | None = None


NO_QUOTAS = Quotas()


class Scheduling(Protocol):
    """A backend's scheduler side."""

    async def settle_and_claim(
        self,
        records: Sequence[AttemptRecord],
        limit: int,
        lease_ms: int,
        per_webhook_room: Mapping[str, int],
        default_room: int,
    ) -> Round: ...

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[RecordResult]: ...

    async def release(self, leases: Collection[tuple[str, str]]) -> int: ...

    async def next_due_at(self) -> int | None: ...


class Ingest(Protocol):
    """A backend's ingest: group committed."""

    async def submit(self, item: IngestItem) -> list[IngestResult]: ...

    async def close(self) -> None:
        """Wait for what was submitted; release what ingest holds."""
        ...


class ComposedStore(Admin, Figures, Housekeeping):
    """The ``Store`` protocol from a backend's parts (see the module's docstring)."""

    _scheduling: Scheduling
    _ingest: Ingest

    def _compose(
        self,
        db: Database,
        sql: Sql,
        clock: Clock,
        *,
        scheduling: Scheduling,
        ingest: Ingest,
        idempotency_window_ms: int,
        quotas: Quotas,
    ) -> None:
        """Set what the inherited parts read: the backend's store calls this once."""
        self._db = db
        self._q = sql
        self._clock = clock
        self._scheduling = scheduling
        self._ingest = ingest
        self._idempotency_window_ms = idempotency_window_ms
        self._webhooks_per_workspace = quotas.webhooks_per_workspace

    # -- ingest ----------------------------------------------------------------------------

    async def ingest_event(
        self,
        workspace_id: str,
        event_type: str,
        data: Any,
        idempotency_key: str | None = None,
    ) -> IngestResult:
        item = IngestItem(workspace_id, ((event_type, data, idempotency_key),), batch=False)
        return (await self._ingest.submit(item))[0]

    async def ingest_events(
        self, workspace_id: str, events: Sequence[NewEvent]
    ) -> list[IngestResult]:
        if not events:
            return []
        item = IngestItem(
            workspace_id, [(e.type, e.data, e.idempotency_key) for e in events], batch=True
        )
        # Queued with single ingests: a batch shares their group's commit (and fsync).
        return await self._ingest.submit(item)

    # -- the scheduler's side -------------------------------------------------------------

    async def claim_due(
        self,
        limit: int,
        lease_ms: int,
        per_webhook_room: Mapping[str, int],
        default_room: int,
    ) -> list[ClaimedDelivery]:
        _results, claims = await self._scheduling.settle_and_claim(
            (), limit, lease_ms, per_webhook_room, default_room
        )
        return claims

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[RecordResult]:
        return await self._scheduling.record_attempts(records)

    async def settle_and_claim(
        self,
        records: Sequence[AttemptRecord],
        limit: int,
        lease_ms: int,
        per_webhook_room: Mapping[str, int],
        default_room: int,
    ) -> Round:
        return await self._scheduling.settle_and_claim(
            records, limit, lease_ms, per_webhook_room, default_room
        )

    async def release(self, leases: Collection[tuple[str, str]]) -> int:
        return await self._scheduling.release(leases)

    async def next_due_at(self) -> int | None:
        return await self._scheduling.next_due_at()
