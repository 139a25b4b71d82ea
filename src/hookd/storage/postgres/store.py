"""PostgresStore: the same contract on PostgreSQL, for several nodes sharing one queue.

Every guarantee of the SQLite store holds for the cluster as a whole:

- leases and fencing: a record is applied only where its lease token still
  holds (``SETTLE``), so a node whose lease expired never overwrites another's;
- the per-webhook limit, 429 pauses and 410 deactivations are the
  cluster's: scheduler turns take a cluster-wide advisory lock and count every
  node's leases (``scheduling.py``);
- idempotency keys: a transaction locks each key it uses (``ingest.py``);
- replay: the delivery's row is locked, so of two replays one wins;
- idle nodes are woken by ``NOTIFY`` on ingest; one node at a time, the
  leader, runs retention and statistics (``connection.Control``).

The schema is migrated at open under an advisory lock (``schema.py``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

from hookd.clock import Clock, SystemClock
from hookd.storage.base import QueueStats, RateLimitStats, StoreError
from hookd.storage.composed import NO_QUOTAS, ComposedStore, Quotas
from hookd.storage.postgres import operations, schema
from hookd.storage.postgres.connection import Control, PgDatabase, redacted
from hookd.storage.postgres.ingest import PostgresIngest
from hookd.storage.postgres.scheduling import PostgresScheduling


class PostgresStore(ComposedStore):
    def __init__(
        self,
        url: str,
        clock: Clock | None = None,
        *,
        password: str | None = None,
        pool_size: int = 10,
        idempotency_window_ms: int = 86_400_000,
        per_webhook_limit: int = 32,
        listen: bool = True,
        lead: bool = True,
        quotas: Quotas = NO_QUOTAS,
    ) -> None:
        self.url = url
        self.clock: Clock = clock or SystemClock()
        self._pg = PgDatabase(url, password, pool_size)
        # Without it (the CLI) nothing listens and this process never leads.
        self._control = Control(self._pg, lead=lead) if listen else None
        self._compose(
            self._pg,
            operations,
            self.clock,
            scheduling=PostgresScheduling(
                self._pg, self.clock, per_webhook_limit, nodes=self._nodes
            ),
            ingest=PostgresIngest(
                self._pg, self.clock, idempotency_window_ms, quotas.deliveries_per_request
            ),
            idempotency_window_ms=idempotency_window_ms,
            quotas=quotas,
        )

    @property
    def described(self) -> str:
        """Where the data is, for logs: the URL without its password."""
        return redacted(self.url)

    async def open(self) -> None:
        await self._pg.open()
        try:
            await self.migrate()
        except BaseException:
            await self._pg.close()
            raise
        if self._control is not None:
            self._control.start()

    async def migrate(self) -> list[int]:
        """Apply what the schema lacks (once for the cluster); the versions applied."""
        conn = await self._pg.connect(bounded=False)
        try:
            return await schema.migrate(conn, self.clock)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot migrate {redacted(self.url)}: {exc}") from exc
        finally:
            await conn.close()

    async def close(self) -> None:
        await self._ingest.close()
        if self._control is not None:
            await self._control.close()
        await self._pg.close()

    def watch_due(self, wake: Callable[[], None]) -> None:
        if self._control is not None:
            self._control.on_due(wake)

    def _nodes(self) -> int:
        return 1 if self._control is None else self._control.nodes

    @property
    def nodes(self) -> int:
        """Processes delivering from the database, as last counted; each takes
        its share of every webhook's limit (``scheduling.py``)."""
        return self._nodes()

    async def is_leader(self) -> bool:
        return self._control is not None and self._control.leader

    # -- the figures of /metrics: computed once for the cluster ----------------------------

    async def queue_stats(self) -> QueueStats:
        own = super().queue_stats

        async def compute() -> dict[str, Any]:
            return dataclasses.asdict(await own())

        value = await self._cluster_figures("queue", compute)
        return QueueStats(**value)

    async def rate_limit_stats(self) -> RateLimitStats:
        own = super().rate_limit_stats

        async def compute() -> dict[str, Any]:
            return dataclasses.asdict(await own())

        return RateLimitStats(**await self._cluster_figures("rate_limits", compute))

    async def database_size_bytes(self) -> int:
        own = super().database_size_bytes

        async def compute() -> dict[str, Any]:
            return {"bytes": await own()}

        return int((await self._cluster_figures("size", compute))["bytes"])

    async def _cluster_figures(
        self, name: str, compute: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """The leader computes and publishes; the other nodes read what it published.

        (A process outside the cluster's control, a CLI command, computes.)
        """
        if self._control is None:
            return await compute()
        if not await self.is_leader():
            row = await self._pg.row(operations.PUBLISHED_FIGURES, (name,))
            if row is not None:
                published: dict[str, Any] = json.loads(row[0])
                return published
        value = await compute()
        async with self._pg.transaction() as tx:
            await tx.execute(
                operations.PUBLISH_FIGURES, (name, json.dumps(value), self.clock.now_ms())
            )
        return value
