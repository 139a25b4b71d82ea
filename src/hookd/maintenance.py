"""Long operator work in chunks: retention sweeps and bulk replay of dead letters.

The daemon (retention in the background) and the CLI (with progress on a
terminal) run the same loops.  Every chunk is its own short transaction: a daemon running beside
keeps claiming and recording between them.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from hookd.config import Config, RetentionConfig
from hookd.ids import iso_ms
from hookd.models import Status
from hookd.progress import Progress
from hookd.storage.base import Store


@dataclass
class Sweep:
    """What one retention sweep removed or ended."""

    delivered: int = 0
    dead_letters: int = 0
    orphan_events: int = 0
    deleted_webhooks: int = 0
    lane_ended: int = 0

    @property
    def deliveries(self) -> int:
        return self.delivered + self.dead_letters


async def _batches(
    delete: Callable[[], Awaitable[int]],
    batch: int,
    pause_seconds: float,
    deadline: float,
    on_batch: Callable[[int], None],
) -> int:
    """``delete`` batch after batch until one comes back short or ``deadline`` passes."""
    total = 0
    while True:
        deleted = await delete()
        total += deleted
        on_batch(deleted)
        if deleted < batch or time.monotonic() >= deadline:
            return total
        # The pause hands the database (one writer at a time) back to claims
        # and attempt records.
        await asyncio.sleep(pause_seconds)


async def sweep(
    store: Store,
    retention: RetentionConfig,
    lane_max_age_seconds: float,
    now_ms: int,
    *,
    delivered_max_age_seconds: float | None = None,
    on_batch: Callable[[Status, int], None] = lambda status, deleted: None,
) -> Sweep:
    """One retention sweep, each kind of row in short batches, for at most
    ``retention.interval_seconds`` (the next sweep goes on where it stopped).

    Delivered deliveries and dead letters past their ages, then events no
    delivery refers to any more, then deleted webhooks left without
    deliveries; last, the 429 lane's bound for whole endpoints
    (``lifecycle.lane_expired``).  ``on_batch`` sees each batch of deliveries:
    their status and count.
    """
    deadline = time.monotonic() + retention.interval_seconds
    batch, pause = retention.batch_size, retention.batch_pause_seconds
    done = Sweep()
    delivered_age = (
        retention.delivered_max_age_seconds
        if delivered_max_age_seconds is None
        else delivered_max_age_seconds
    )
    # 0 in the configuration turns a kind's retention off; ``hookd purge
    # --older-than 0`` asks for every delivered delivery ended by now.
    for status, age, attribute, applies in (
        (Status.DELIVERED, delivered_age, "delivered", delivered_max_age_seconds is not None),
        (Status.DEAD_LETTER, retention.dead_letter_max_age_seconds, "dead_letters", False),
    ):
        if age > 0 or applies:
            cutoff = now_ms - round(age * 1000) + 1

            async def delete_ended(status: Status = status, cutoff: int = cutoff) -> int:
                return await store.delete_ended_before(status, cutoff, batch)

            count = await _batches(
                delete_ended, batch, pause, deadline, functools.partial(on_batch, status)
            )
            setattr(done, attribute, count)
    done.orphan_events = await _batches(
        lambda: store.delete_orphan_events(batch), batch, pause, deadline, lambda _n: None
    )
    done.deleted_webhooks = await _batches(
        lambda: store.delete_deleted_webhooks(batch), batch, pause, deadline, lambda _n: None
    )
    done.lane_ended = await store.end_expired_lanes(now_ms - round(lane_max_age_seconds * 1000))
    return done


async def replay_dead_letters(
    store: Store,
    workspace_id: str,
    webhook_id: str,
    since_ms: int | None,
    chunk: int,
    at_most: int,
) -> AsyncIterator[int]:
    """Put the webhook's dead letters back to pending, ``chunk`` at a time.

    ``at_most`` is how many there were when the caller looked: a replayed
    delivery that a running daemon dead-letters again meanwhile (a blocked
    destination fails at once) is not replayed a second time by the same run.
    """
    left = at_most
    while left > 0:
        asked = min(chunk, left)
        moved = await store.replay_webhook(workspace_id, webhook_id, since_ms, limit=asked)
        if not moved:  # none left, or the webhook was deleted meanwhile
            return
        left -= moved
        yield moved
        if moved < asked:
            return


# -- the CLI's commands over them ---------------------------------------------------


async def bulk_replay_command(
    store: Store, webhook_id: str, since_ms: int | None, chunk: int
) -> int:
    """``hookd replay --webhook ID [--since T]``: exit status 0, or 1 if no such webhook."""
    webhook = await store.get_webhook(None, webhook_id)
    if webhook is None:
        print(f"hookd: no webhook {webhook_id}", file=sys.stderr)
        return 1
    # Every dead letter of the webhook, test sends aside: with --since, an upper bound.
    stats = await store.webhook_stats(webhook.workspace_id, webhook_id, 0)
    at_most = stats.dead_lettered if stats is not None else 0
    progress = Progress(
        f"replaying dead letters of {webhook_id}",
        total=at_most if since_ms is None else None,
        unit="deliveries",
    )
    async for moved in replay_dead_letters(
        store, webhook.workspace_id, webhook_id, since_ms, chunk, at_most
    ):
        progress.advance(moved)
    scope = f" created since {iso_ms(since_ms)}" if since_ms is not None else ""
    progress.finish(
        f"replayed {_count(progress.done, 'dead letter', 'dead letters')}"
        f" of webhook {webhook_id}{scope} in {progress.elapsed:.1f} s;"
        " a running hookd delivers them"
    )
    return 0


async def purge_command(
    store: Store, config: Config, now_ms: int, delivered_max_age_seconds: float | None
) -> int:
    """``hookd purge``: one retention sweep now, with progress."""
    progress = Progress("deleting old deliveries", unit="deliveries")
    done = await sweep(
        store,
        config.retention,
        config.delivery.rate_limit_max_age_seconds,
        now_ms,
        delivered_max_age_seconds=delivered_max_age_seconds,
        on_batch=lambda _status, deleted: progress.advance(deleted),
    )
    progress.finish(
        f"deleted {_count(done.delivered, 'delivered delivery', 'delivered deliveries')},"
        f" {_count(done.dead_letters, 'dead letter', 'dead letters')},"
        f" {_count(done.orphan_events, 'event', 'events')} and"
        f" {_count(done.deleted_webhooks, 'deleted webhook', 'deleted webhooks')}; ended"
        f" {_count(done.lane_ended, 'delivery', 'deliveries')} waiting behind endpoints"
        f" rate limited too long; in {progress.elapsed:.1f} s"
    )
    return 0


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
