"""Every status change a delivery can undergo, as ``lifecycle`` names it: a table.

The attempt outcomes (the SPEC's lifecycle table) are walked through
``lifecycle.decide`` in tests/test_policy.py; these are the changes that come
from elsewhere: a new delivery, an operator's replay, a deleted webhook, the
429 lane's bound for a whole endpoint, a test send and its interruption.
Storage applies them and decides none (tests/contract).
"""

from __future__ import annotations

import pytest

from hookd import lifecycle
from hookd.lifecycle import Change, Counters
from hookd.models import SCHEDULABLE, Status

NOW = 1_700_000_000_000
LATER = NOW + 30_000


@pytest.mark.parametrize(
    ("change", "status", "due", "reason", "fresh", "applies_to"),
    [
        # A new delivery: pending, due at once, from nothing.
        (lifecycle.created(NOW), Status.PENDING, NOW, None, True, frozenset()),
        # Replay: a dead letter only, a fresh budget, due now...
        (
            lifecycle.replayed(NOW, None),
            Status.PENDING,
            NOW,
            None,
            True,
            {Status.DEAD_LETTER},
        ),
        # ...or at the end of its webhook's 429 pause, never before it.
        (
            lifecycle.replayed(NOW, LATER),
            Status.PENDING,
            LATER,
            None,
            True,
            {Status.DEAD_LETTER},
        ),
        (
            lifecycle.replayed(LATER, NOW),
            Status.PENDING,
            LATER,
            None,
            True,
            {Status.DEAD_LETTER},
        ),
        # A deleted webhook ends its unfinished deliveries, counters kept.
        (
            lifecycle.webhook_deleted(),
            Status.DEAD_LETTER,
            None,
            lifecycle.ERROR_WEBHOOK_DELETED,
            False,
            SCHEDULABLE,
        ),
        # An endpoint rate limited longer than the lane allows: the same for its queue.
        (
            lifecycle.lane_expired(),
            Status.DEAD_LETTER,
            None,
            lifecycle.LANE_EXPIRED,
            False,
            SCHEDULABLE,
        ),
        # A test send whose process died: ended, never retried.
        (
            lifecycle.test_interrupted(),
            Status.DEAD_LETTER,
            None,
            lifecycle.ERROR_TEST_INTERRUPTED,
            False,
            {Status.PENDING},
        ),
    ],
)
def test_changes(
    change: Change,
    status: Status,
    due: int | None,
    reason: str | None,
    fresh: bool,
    applies_to: frozenset[Status],
) -> None:
    assert change == Change(status, due, reason, fresh, frozenset(applies_to))
    # Terminal statuses are never scheduled; the others always are.
    assert (change.next_attempt_at is None) == (status in (Status.DELIVERED, Status.DEAD_LETTER))
    # Nothing moves a delivery that has already ended, except a replay of a dead letter.
    assert Status.DELIVERED not in change.from_statuses


@pytest.mark.parametrize(
    ("delivered", "status", "reason"),
    [
        (True, Status.DELIVERED, None),
        (False, Status.DEAD_LETTER, "test delivery failed (never retried)"),
    ],
)
def test_a_test_send_ends_after_one_attempt(
    delivered: bool, status: Status, reason: str | None
) -> None:
    before = Counters(
        budget_used=0, retry_attempts=5, rate_limited_count=0, rate_limited_since=None
    )
    t = lifecycle.test_send_result(delivered, before)
    assert (t.status, t.next_attempt_at, t.dead_letter_reason) == (status, None, reason)
    assert t.budget_used == 1
    # Never a side effect on the webhook: no pause, no deactivation, no end of a 429 run.
    assert (t.pause_webhook_until, t.deactivate_webhook_reason, t.relieves_endpoint) == (
        None,
        None,
        False,
    )
