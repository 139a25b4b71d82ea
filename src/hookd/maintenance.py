"""Long operator work in chunks: bulk replay of dead letters and retention purges.

Each operation is an async iterator of chunk sizes, so the daemon (retention
in the background) and the CLI (with progress on a terminal) run the same
loop.  Every chunk is its own short transaction: a daemon running beside
keeps claiming and recording between them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

from hookd.ids import iso_ms
from hookd.progress import Progress
from hookd.storage.base import Store


async def purge_delivered(
    store: Store, cutoff_ms: int, batch: int, pause_seconds: float
) -> AsyncIterator[int]:
    """Delete delivered deliveries last changed before ``cutoff_ms``; yields each batch's count."""
    while True:
        deleted = await store.delete_delivered_before(cutoff_ms, batch)
        yield deleted
        if deleted < batch:
            return
        # The pause hands the database (one writer at a time) back to claims
        # and attempt records.
        await asyncio.sleep(pause_seconds)


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
        f"replayed {progress.done} dead letter{'' if progress.done == 1 else 's'}"
        f" of webhook {webhook_id}{scope} in {progress.elapsed:.1f} s;"
        " a running hookd delivers them"
    )
    return 0


async def purge_command(
    store: Store, max_age_seconds: float, batch: int, pause_seconds: float, now_ms: int
) -> int:
    """``hookd purge``: one retention sweep now, with progress."""
    cutoff = now_ms - round(max_age_seconds * 1000)
    progress = Progress("deleting delivered deliveries", unit="deliveries")
    async for deleted in purge_delivered(store, cutoff, batch, pause_seconds):
        progress.advance(deleted)
    progress.finish(
        f"deleted {progress.done} delivered deliver{'y' if progress.done == 1 else 'ies'}"
        f" last changed before {iso_ms(cutoff)} in {progress.elapsed:.1f} s"
    )
    return 0
