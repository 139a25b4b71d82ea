"""The fair pick of a claim: round robin over workspaces, then over their webhooks."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from hookd.storage.fairness import Candidate, Lane, fair_pick, top_ups


def lane(workspace: str, webhook: str, count: int) -> list[Candidate]:
    return [Candidate(workspace, webhook, f"{webhook}-{i}") for i in range(count)]


@pytest.mark.parametrize(
    ("candidates", "wanted", "expected_per_workspace"),
    [
        # One workspace's 800-webhook backlog beside another's one fresh event:
        # the fresh one is in every pick.
        (
            [*[c for h in range(800) for c in lane("ws_a", f"a{h}", 4)], *lane("ws_b", "b", 1)],
            256,
            {"ws_a": 255, "ws_b": 1},
        ),
        # Two workspaces with plenty: halves.
        ([*lane("ws_a", "a", 300), *lane("ws_b", "b", 300)], 256, {"ws_a": 128, "ws_b": 128}),
        # A workspace with little takes all of it; the rest goes to the other.
        ([*lane("ws_a", "a", 300), *lane("ws_b", "b", 10)], 256, {"ws_a": 246, "ws_b": 10}),
        # Fewer than wanted: all of them.
        ([*lane("ws_a", "a", 3), *lane("ws_b", "b", 2)], 256, {"ws_a": 3, "ws_b": 2}),
        ([], 256, {}),
        ([*lane("ws_a", "a", 3)], 0, {}),
    ],
)
def test_each_workspace_gets_a_fair_share(
    candidates: list[Candidate], wanted: int, expected_per_workspace: dict[str, int]
) -> None:
    by_id = {c.id: c for c in candidates}
    for seed in range(5):
        picked = fair_pick(candidates, wanted, random.Random(seed))
        assert len(picked) == len(set(picked)) == min(wanted, len(candidates))
        assert Counter(by_id[i].workspace for i in picked) == expected_per_workspace


def test_webhooks_of_a_workspace_share_it_and_each_keeps_its_order() -> None:
    candidates = [*lane("ws_a", "a1", 10), *lane("ws_a", "a2", 10), *lane("ws_a", "a3", 1)]
    picked = fair_pick(candidates, 9, random.Random(3))
    by_hook = Counter(i.split("-")[0] for i in picked)
    assert by_hook == {"a1": 4, "a2": 4, "a3": 1}
    for hook in ("a1", "a2"):
        mine = [i for i in picked if i.startswith(hook)]
        assert mine == [f"{hook}-{n}" for n in range(len(mine))]  # oldest first


@pytest.mark.parametrize(
    ("lanes", "wanted", "expected"),
    [
        # One webhook beside a hundred, each read for 4: read again up to its room.
        (
            [
                *(Lane("ws_a", f"a{i}", 4, 32, True) for i in range(100)),
                Lane("ws_b", "b", 4, 32, True),
            ],
            256,
            {"b": 32},
        ),
        # Up to the workspace's share only (128 of 256), spread over its open lanes.
        (
            [
                Lane("ws_a", "a", 200, 200, True),
                Lane("ws_b", "b1", 4, 100, True),
                Lane("ws_b", "b2", 4, 100, True),
            ],
            256,
            {"b1": 64, "b2": 64},
        ),
        # A lane that returned all its queue holds (more=False) is not read again.
        ([Lane("ws_a", "a", 200, 200, True), Lane("ws_b", "b", 3, 100, False)], 256, {}),
        # A lane at its room is not read again; its sibling takes the shortfall.
        (
            [
                Lane("ws_a", "a", 200, 200, True),
                Lane("ws_b", "b1", 4, 4, True),
                Lane("ws_b", "b2", 4, 500, True),
            ],
            256,
            {"b2": 124},
        ),
        # Every workspace at its share already: nothing.
        ([Lane("ws_a", "a", 128, 200, True), Lane("ws_b", "b", 128, 200, True)], 256, {}),
        ([], 256, {}),
    ],
)
def test_a_workspace_short_of_its_share_is_read_again(
    lanes: list[Lane], wanted: int, expected: dict[str, int]
) -> None:
    assert top_ups(lanes, wanted) == expected
