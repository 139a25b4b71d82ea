"""GroupCommit's grouping: what goes into which commit, and in which order."""

from __future__ import annotations

import asyncio

import pytest

from hookd.storage.groupcommit import GroupCommit


async def _groups(items: list[int], *, max_weight: int = 100) -> list[list[int]]:
    """Submit ``items`` (each its own weight) while the first commit is held; the groups."""
    groups: list[list[int]] = []
    gate = asyncio.Event()

    async def commit(batch: list[int]) -> list[int | Exception]:
        groups.append(batch)
        await gate.wait()
        return list(batch)

    gc: GroupCommit[int, int] = GroupCommit(
        commit, max_batch=8, weigh=lambda w: w, max_weight=max_weight
    )
    first = asyncio.ensure_future(gc.submit(items[0]))
    await asyncio.sleep(0)  # the first item's commit starts alone
    rest = [asyncio.ensure_future(gc.submit(w)) for w in items[1:]]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(first, *rest) == items
    return groups


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        # Light items only: first come, first served, as many as fit.
        ([1, 2, 3, 4], [[1], [2, 3, 4]]),
        # After a heavy commit, the light items waiting go before the heavy ones queued
        # ahead of them; then the heavy ones, each after the next light group.
        ([60, 70, 80, 1, 2], [[60], [1, 2], [70], [80]]),
        ([60, 70, 1, 80, 2], [[60], [1, 2], [70], [80]]),
        # Light items behind a heavy one at the head share its group when they fit.
        ([1, 70, 2, 3], [[1], [70, 2, 3]]),
        # Items heavier than max_weight still go, alone.
        ([150, 120, 1], [[150], [1], [120]]),
        # Light groups keep to max_weight.
        ([60, 70, 25, 25, 25, 25, 25], [[60], [25, 25, 25, 25], [70, 25]]),
    ],
)
async def test_light_items_go_between_heavy_commits(
    items: list[int], expected: list[list[int]]
) -> None:
    assert await _groups(items) == expected


async def test_heavy_items_are_not_starved_by_a_stream_of_light_ones() -> None:
    groups: list[list[int]] = []
    pending: list[asyncio.Future[int]] = []

    async def commit(batch: list[int]) -> list[int | Exception]:
        groups.append(batch)
        if len(groups) <= 6:  # a light item arrives during each of the first commits
            pending.append(asyncio.ensure_future(gc.submit(1)))
        await asyncio.sleep(0)
        return list(batch)

    gc: GroupCommit[int, int] = GroupCommit(commit, max_batch=8, weigh=lambda w: w, max_weight=100)
    pending += [asyncio.ensure_future(gc.submit(w)) for w in (60, 70, 80)]
    while not all(f.done() for f in pending):
        await asyncio.gather(*pending)
    heavy_positions = [i for i, g in enumerate(groups) if any(w > 25 for w in g)]
    assert heavy_positions == [0, 2, 4]
