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
