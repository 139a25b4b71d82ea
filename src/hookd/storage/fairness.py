"""Which due deliveries a claim takes when there are more than it may: fair shares.

A pure function, the same for every backend.  FIFO by due time would let one
workspace's backlog (say, 400,000 deliveries queued over 800 webhooks) hold
back every other workspace's fresh events until it drained.  Instead, a
claim takes deliveries round robin: across the workspaces with due work
first, then across each workspace's webhooks, each webhook's oldest first.
The order of workspaces and of webhooks within a round is drawn at random
for each claim, so no one is always last when a batch is short.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple


class Candidate(NamedTuple):
    """A due delivery a claim may take (each webhook's are given oldest first)."""

    workspace: str
    webhook: str
    id: str


def fair_pick(candidates: Iterable[Candidate], wanted: int, rng: random.Random) -> list[str]:
    """Up to ``wanted`` of ``candidates``' ids, in fair turns (see the module)."""
    if wanted <= 0:
        return []
    queues: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for c in candidates:
        queues[c.workspace][c.webhook].append(c.id)
    # Each workspace's deliveries, round robin over its webhooks.
    per_workspace: list[list[str]] = []
    for webhooks in queues.values():
        lanes = list(webhooks.values())
        rng.shuffle(lanes)
        per_workspace.append(_interleave(lanes))
    rng.shuffle(per_workspace)
    return _interleave(per_workspace)[:wanted]


def _interleave(lanes: list[list[str]]) -> list[str]:
    """The first of each lane, then the second of each, and so on."""
    out: list[str] = []
    depth = max((len(lane) for lane in lanes), default=0)
    for i in range(depth):
        out.extend(lane[i] for lane in lanes if i < len(lane))
    return out


class Lane(NamedTuple):
    """What a first read gave one webhook: ``got`` candidates, ``room`` in all."""

    workspace: str
    webhook: str
    got: int
    room: int
    # Whether its queue may hold more than the read returned.
    more: bool


def top_ups(lanes: Iterable[Lane], wanted: int) -> dict[str, int]:
    """Webhooks to read again, each with the room to read up to.

    A read shared out over every webhook with due work (a few rows each, so
    that its cost follows the number of webhooks) gives a workspace with few
    webhooks few candidates beside one with hundreds: its fair share of the
    claim is ``wanted`` over the workspaces, not a few rows.  Each workspace
    short of that share, with lanes that may hold more, gets its shortfall
    spread over those lanes, each up to its room.
    """
    by_workspace: dict[str, list[Lane]] = defaultdict(list)
    for lane in lanes:
        by_workspace[lane.workspace].append(lane)
    if not by_workspace:
        return {}
    share = -(-wanted // len(by_workspace))
    out: dict[str, int] = {}
    for workspace_lanes in by_workspace.values():
        short = share - sum(lane.got for lane in workspace_lanes)
        open_lanes = [lane for lane in workspace_lanes if lane.more and lane.room > lane.got]
        while short > 0 and open_lanes:
            each = -(-short // len(open_lanes))
            still_open = []
            for lane in open_lanes:
                has = out.get(lane.webhook, lane.got)
                extra = min(each, lane.room - has, short)
                if extra <= 0:  # the shortfall is made up
                    break
                out[lane.webhook] = has + extra
                short -= extra
                if out[lane.webhook] < lane.room:
                    still_open.append(lane)
            open_lanes = still_open
    return out
