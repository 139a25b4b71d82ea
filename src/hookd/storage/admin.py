"""Tenancy, keys, webhooks, reads and operator actions: the same for every backend.

Written against ``sql.Database`` and a backend's named statements
(``sql.Sql``); status changes are ``lifecycle`` decisions applied by one
statement, APPLY_CHANGE.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection
from typing import Any

from hookd import lifecycle
from hookd.ids import iso_ms, new_id
from hookd.models import (
    ApiKey,
    Attempt,
    ClaimedDelivery,
    Delivery,
    Event,
    NewWebhook,
    Status,
    Webhook,
    WebhookStatus,
    Workspace,
)
from hookd.storage.base import (
    DeliveryFilter,
    Page,
    QuotaExceeded,
    ReplayClaim,
    StoreError,
    WebhookChanges,
    decode_cursor,
    encode_cursor,
)
from hookd.storage.events import event_body
from hookd.storage.rows import (
    NEVER_MS,
    api_key_of,
    attempt_of,
    claimed,
    delivery_of,
    event_of,
    webhook_of,
)
from hookd.storage.sql import Sql, Statements, Transaction

# Deliveries one APPLY_CHANGE statement names at most.
CHANGE_CHUNK = 1000


async def apply_change(
    tx: Transaction,
    q: Sql,
    change: lifecycle.Change,
    ids: Collection[str],
    now: int,
    *,
    token: str | None = None,
    next_at: int | None = None,
) -> int:
    """Apply ``change`` to those of ``ids`` in one of its statuses; how many it moved.

    ``token`` and ``next_at``: the lease the caller takes at once (a replay
    it attempts itself), overriding the change's due time.
    """
    return await tx.execute(
        q.APPLY_CHANGE,
        (
            change.status.value,
            change.next_attempt_at if next_at is None else next_at,
            token,
            change.reason,
            int(change.fresh_budget),
            now,
            q.values(list(ids)),
            q.values(sorted(s.value for s in change.from_statuses)),
        ),
    )


async def apply_in_chunks(
    tx: Transaction,
    q: Sql,
    change: lifecycle.Change,
    select: str,
    params: tuple[Any, ...],
    now: int,
    limit: int | None = None,
) -> int:
    """Apply ``change`` to what ``select`` (its last parameter a LIMIT) finds, chunk by chunk."""
    total = 0
    while limit is None or total < limit:
        chunk = CHANGE_CHUNK if limit is None else min(CHANGE_CHUNK, limit - total)
        ids = [row[0] for row in await tx.rows(select, (*params, chunk))]
        if not ids:
            break
        moved = await apply_change(tx, q, change, ids, now)
        if moved != len(ids):
            # Chosen in this transaction: each must move.  Surfaced, never ignored.
            raise StoreError(f"{change.status.value}: {len(ids) - moved} deliveries did not move")
        total += moved
        if len(ids) < chunk:
            break
    return total


class Admin(Statements):
    # [quotas] webhooks_per_workspace; None: no limit.
    _webhooks_per_workspace: int | None

    # -- tenancy and keys ---------------------------------------------------------

    async def ensure_workspace(self, workspace_id: str, name: str | None = None) -> Workspace:
        now = self._clock.now_ms()
        async with self._db.transaction() as tx:
            await tx.execute(self._q.ENSURE_WORKSPACE, (workspace_id, name or workspace_id, now))
            row = await tx.row(self._q.GET_WORKSPACE, (workspace_id,))
        assert row is not None
        return Workspace(row[0], row[1], row[2])

    async def create_api_key(
        self, workspace_id: str | None, digest: bytes, prefix: str, owner: str
    ) -> ApiKey:
        now = self._clock.now_ms()
        key = ApiKey(new_id(now), workspace_id, prefix, owner, now, None)
        async with self._db.transaction() as tx:
            await tx.execute(self._q.INSERT_KEY, (key.id, workspace_id, digest, prefix, owner, now))
        return key

    async def find_api_key(self, digest: bytes) -> tuple[ApiKey, bytes] | None:
        row = await self._db.row(self._q.FIND_KEY, (digest,))
        return (api_key_of(row), bytes(row[6])) if row is not None else None

    async def list_api_keys(self) -> list[ApiKey]:
        return [api_key_of(row) for row in await self._db.rows(self._q.LIST_KEYS)]

    async def revoke_api_key(self, key_id: str) -> bool:
        async with self._db.transaction() as tx:
            return await tx.execute(self._q.REVOKE_KEY, (self._clock.now_ms(), key_id)) == 1

    async def count_api_keys(self) -> int:
        row = await self._db.row(self._q.COUNT_KEYS)
        return int(row[0]) if row is not None else 0

    # -- webhooks -------------------------------------------------------------------

    async def create_webhook(self, new: NewWebhook) -> Webhook:
        now = self._clock.now_ms()
        webhook_id = new_id(now)
        async with self._db.transaction() as tx:
            await tx.execute(self._q.ENSURE_WORKSPACE, (new.workspace_id, new.workspace_id, now))
            # Locked (PostgreSQL) or under the write lock (SQLite): two creates
            # at once cannot both take the last place.
            await tx.row(self._q.LOCK_WORKSPACE, (new.workspace_id,))
            counted = await tx.row(self._q.COUNT_WEBHOOKS, (new.workspace_id,))
            quota = self._webhooks_per_workspace
            if quota is not None and counted is not None and counted[0] >= quota:
                raise QuotaExceeded(
                    "webhooks_per_workspace",
                    f"the workspace has {counted[0]} webhooks, as many as its quota allows",
                    status=429,
                )
            await tx.execute(
                self._q.INSERT_WEBHOOK,
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
            row = await tx.row(self._q.GET_WEBHOOK, (webhook_id, None))
        assert row is not None
        return webhook_of(row)

    async def get_webhook(self, workspace_id: str | None, webhook_id: str) -> Webhook | None:
        row = await self._db.row(self._q.GET_WEBHOOK, (webhook_id, workspace_id))
        return webhook_of(row) if row is not None else None

    async def list_webhooks(
        self, workspace_id: str | None, limit: int, cursor: str | None = None
    ) -> Page:
        after = decode_cursor(cursor) if cursor else (-1, "")
        rows = await self._db.rows(self._q.LIST_WEBHOOKS, (workspace_id, *after, limit + 1))
        items = [webhook_of(r) for r in rows[:limit]]
        nxt = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
        return Page(items, nxt)

    async def update_webhook(
        self, workspace_id: str, webhook_id: str, changes: WebhookChanges, secret_grace_ms: int
    ) -> Webhook | None:
        now = self._clock.now_ms()
        async with self._db.transaction() as tx:
            row = await tx.row(self._q.GET_WEBHOOK, (webhook_id, workspace_id))
            if row is None:
                return None
            current = webhook_of(row)
            # column -> new value (the values become parameters, in this order)
            sets: dict[str, Any] = {"updated_at": now}
            for column, value in (
                ("name", changes.name),
                ("url", changes.url),
                ("retry_attempts", changes.retry_attempts),
                ("timeout_ms", changes.timeout_ms),
            ):
                if value is not None:
                    sets[column] = value
            if changes.events is not None:
                sets["events"] = json.dumps(list(changes.events))
            if changes.secret is not None and changes.secret != current.secret:
                # The old secret keeps signing beside the new one for the grace
                # period, so receivers can roll over without dropping requests.
                sets["secret"] = changes.secret
                sets["previous_secret"] = current.secret
                sets["previous_secret_until"] = now + secret_grace_ms
            if changes.status is not None and changes.status != current.status:
                sets["status"] = changes.status.value
                # Re-enabled by an operator: forget why it was disabled and any
                # pause or run of 429s left over from before.
                active = changes.status is WebhookStatus.ACTIVE
                sets["disabled_reason"] = None if active else "disabled by API"
                if active:
                    sets["paused_until"] = None
                    sets["limited_since"] = None
            param = self._q.param
            update = self._q.UPDATE_WEBHOOK.format(
                sets=", ".join(f"{column} = {param(i)}" for i, column in enumerate(sets, 1)),
                id=param(len(sets) + 1),
            )
            await tx.execute(update, (*sets.values(), webhook_id))
            if sets.get("status") == WebhookStatus.ACTIVE.value:
                await self._wake(tx)  # its waiting deliveries may go again
            row = await tx.row(self._q.GET_WEBHOOK, (webhook_id, workspace_id))
        return webhook_of(row) if row is not None else None

    async def delete_webhook(self, workspace_id: str, webhook_id: str) -> bool:
        now = self._clock.now_ms()
        async with self._db.transaction() as tx:
            if await tx.execute(self._q.DELETE_WEBHOOK, (now, webhook_id, workspace_id)) != 1:
                return False
            # The change clears each lease, fencing out any attempt still in
            # flight: its record will not resurrect the delivery.
            await apply_in_chunks(
                tx,
                self._q,
                lifecycle.webhook_deleted(),
                self._q.OPEN_OF_WEBHOOK,
                (webhook_id,),
                now,
            )
        return True

    # -- events and deliveries ----------------------------------------------------------

    async def get_event(self, workspace_id: str | None, event_id: str) -> Event | None:
        row = await self._db.row(self._q.GET_EVENT, (event_id, workspace_id))
        return event_of(row) if row is not None else None

    async def get_delivery(self, workspace_id: str | None, delivery_id: str) -> Delivery | None:
        row = await self._db.row(self._q.GET_DELIVERY, (delivery_id, workspace_id))
        return delivery_of(row) if row is not None else None

    async def list_deliveries(
        self, workspace_id: str | None, flt: DeliveryFilter, limit: int, cursor: str | None = None
    ) -> Page:
        param = self._q.param
        args: list[Any] = []
        where = ["1 = 1"]
        if workspace_id is not None:
            args.append(workspace_id)
            where.append(f"workspace_id = {param(len(args))}")
        if cursor:
            created, item_id = decode_cursor(cursor)
            args += [created, item_id]
            where.append(f"(created_at, id) < ({param(len(args) - 1)}, {param(len(args))})")
        for column, operator, value in (
            ("status", "=", flt.status.value if flt.status else None),
            ("webhook_id", "=", flt.webhook_id),
            ("event_type", "=", flt.event_type),
            ("created_at", ">=", flt.since_ms),
            ("created_at", "<=", flt.until_ms),
        ):
            if value is not None:
                args.append(value)
                where.append(f"{column} {operator} {param(len(args))}")
        args.append(limit + 1)
        sql = self._q.LIST_DELIVERIES.format(where=" AND ".join(where), limit=param(len(args)))
        rows = await self._db.rows(sql, args)
        items = [delivery_of(r) for r in rows[:limit]]
        nxt = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
        return Page(items, nxt)

    async def list_attempts(self, delivery_id: str) -> list[Attempt]:
        return [attempt_of(r) for r in await self._db.rows(self._q.LIST_ATTEMPTS, (delivery_id,))]

    # -- operator actions -----------------------------------------------------------------

    async def claim_for_replay(
        self, workspace_id: str | None, delivery_id: str, lease_ms: int
    ) -> ReplayClaim:
        now = self._clock.now_ms()
        token = secrets.token_hex(12)
        async with self._db.transaction() as tx:
            row = await tx.row(self._q.REPLAY_TARGET, (delivery_id, workspace_id))
            if row is None:
                return ReplayClaim(found=False)
            status, hook_status, deleted_at, paused_until = Status(row[0]), row[1], row[2], row[3]
            if status is not Status.DEAD_LETTER or deleted_at is not None:
                return ReplayClaim(found=True, status=status)
            paused = paused_until if paused_until is not None and paused_until > now else None
            # The caller holds the lease and makes the first attempt itself,
            # unless the webhook may not be sent to now: inactive (the delivery
            # waits like its other pending work) or paused by a 429.
            sendable = hook_status == WebhookStatus.ACTIVE.value and paused is None
            change = lifecycle.replayed(now, paused)
            moved = await apply_change(
                tx,
                self._q,
                change,
                (delivery_id,),
                now,
                token=token if sendable else None,
                next_at=now + lease_ms if sendable else None,
            )
            if moved != 1:
                raise StoreError(f"replay of {delivery_id} matched nothing")
            if not sendable:
                return ReplayClaim(found=True, status=change.status, replayed=True)
            claim = await tx.row(self._q.CLAIM_OF, (delivery_id,))
        assert claim is not None
        return ReplayClaim(
            found=True, status=change.status, claim=claimed(claim, now), replayed=True
        )

    async def replay_webhook(
        self,
        workspace_id: str | None,
        webhook_id: str,
        since_ms: int | None,
        limit: int | None = None,
    ) -> int | None:
        now = self._clock.now_ms()
        async with self._db.transaction() as tx:
            row = await tx.row(self._q.GET_WEBHOOK, (webhook_id, workspace_id))
            if row is None:
                return None
            change = lifecycle.replayed(now, webhook_of(row).paused_until)
            moved = await apply_in_chunks(
                tx,
                self._q,
                change,
                self._q.DEAD_LETTERS_OF_WEBHOOK,
                (webhook_id, since_ms),
                now,
                limit,
            )
            if moved:
                await self._wake(tx)
            return moved

    async def _wake(self, tx: Transaction) -> None:
        if self._q.WAKE is not None:
            await tx.row(self._q.WAKE)

    async def create_test_delivery(
        self, webhook: Webhook, event_type: str, data: Any
    ) -> ClaimedDelivery:
        """A delivery the caller attempts once, synchronously, and then ends.

        It is leased from birth, due "never", so the scheduler never takes it.
        """
        now = self._clock.now_ms()
        token = secrets.token_hex(12)
        event_id = new_id(now)
        delivery_id = new_id(now)
        body = event_body(event_id, webhook.workspace_id, event_type, data, iso_ms(now))
        status = lifecycle.created(now).status
        async with self._db.transaction() as tx:
            await tx.execute(
                self._q.INSERT_TEST_EVENT,
                (event_id, webhook.workspace_id, event_type, body.encode(), now),
            )
            await tx.execute(
                self._q.INSERT_TEST_DELIVERY,
                (
                    delivery_id,
                    webhook.workspace_id,
                    event_id,
                    webhook.id,
                    event_type,
                    status.value,
                    NEVER_MS,
                    token,
                    now,
                    now,
                ),
            )
            row = await tx.row(self._q.CLAIM_OF, (delivery_id,))
        assert row is not None
        return claimed(row, now)
