"""Where a delivery changes status.

Every status change a delivery can undergo is decided here, as a pure
function; storage applies the decision and decides none:

- created: ``created`` (every new delivery is ``pending``, due at once);
- an attempt's outcome: ``decide`` (the scheduler and replay) and
  ``test_send_result`` (a test send), a :class:`Transition` that storage
  writes where the delivery's lease still holds (fenced by the lease token);
- operator actions and cleanup: ``replayed``, ``webhook_deleted``,
  ``lane_expired`` and ``test_interrupted``, a :class:`Change` that storage
  applies to the deliveries it names that are in one of the statuses the
  change lists.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from hookd.config import DeliveryConfig
from hookd.models import SCHEDULABLE, ClaimedDelivery, Status
from hookd.policy import Outcome, backoff_seconds, rate_limit_backoff_seconds

ERROR_WEBHOOK_DELETED = "webhook deleted"
ERROR_TEST_INTERRUPTED = "test delivery interrupted"


class Counters(NamedTuple):
    """The parts of a delivery that a decision depends on.

    This and Transition are built for every attempt: tuples (see
    models.ClaimedDelivery).
    """

    budget_used: int
    retry_attempts: int
    rate_limited_count: int
    rate_limited_since: int | None

    @classmethod
    def of(cls, claim: ClaimedDelivery) -> Counters:
        return cls(
            claim.budget_used,
            claim.retry_attempts,
            claim.rate_limited_count,
            claim.rate_limited_since,
        )


class Transition(NamedTuple):
    status: Status
    next_attempt_at: int | None  # None when terminal
    budget_used: int
    rate_limited_count: int
    rate_limited_since: int | None
    # Side effects on the webhook that the same write applies.
    pause_webhook_until: int | None = None
    deactivate_webhook_reason: str | None = None
    # Why the delivery went to dead_letter, when it did.
    dead_letter_reason: str | None = None
    # The endpoint answered something other than a 429 (or 503 with
    # Retry-After): a run of rate limiting is over.
    relieves_endpoint: bool = False


def _spent(
    c: Counters,
    status: Status,
    next_attempt_at: int | None,
    *,
    dead_letter_reason: str | None = None,
    deactivate_webhook_reason: str | None = None,
) -> Transition:
    """An attempt answered outside the 429 lane: it spends one unit of the
    budget, and the endpoint's run of rate limiting (if any) is over."""
    return Transition(
        status,
        next_attempt_at,
        c.budget_used + 1,
        c.rate_limited_count,
        c.rate_limited_since,
        deactivate_webhook_reason=deactivate_webhook_reason,
        dead_letter_reason=dead_letter_reason,
        relieves_endpoint=True,
    )


def decide(
    counters: Counters,
    outcome: Outcome,
    retry_after_seconds: float | None,
    now_ms: int,
    config: DeliveryConfig,
    rng: random.Random,
) -> Transition:
    c = counters
    if outcome is Outcome.DELIVERED:
        return _spent(c, Status.DELIVERED, None)
    if outcome is Outcome.BLOCKED:
        return _spent(
            c,
            Status.DEAD_LETTER,
            None,
            dead_letter_reason="destination blocked by the outbound address policy",
        )
    if outcome is Outcome.GONE:
        gone = "endpoint answered 410 Gone"
        return _spent(
            c, Status.DEAD_LETTER, None, deactivate_webhook_reason=gone, dead_letter_reason=gone
        )
    if outcome is Outcome.RATE_LIMITED:
        # The 429 lane never touches budget_used: a receiver asking us to slow
        # down has not failed the delivery.
        count = c.rate_limited_count + 1
        since = c.rate_limited_since if c.rate_limited_since is not None else now_ms
        ended = None
        if count >= config.rate_limit_max_count:
            ended = f"rate limited {count} times"
        elif now_ms - since >= config.rate_limit_max_age_seconds * 1000:
            ended = "rate limited for longer than the lane allows"
        if ended is not None:
            return Transition(
                Status.DEAD_LETTER, None, c.budget_used, count, since, dead_letter_reason=ended
            )
        if retry_after_seconds is not None and retry_after_seconds > 0:
            delay = retry_after_seconds
        else:
            # No usable Retry-After, or "0" / a date already past (often a
            # skewed clock): retrying at once would hammer an endpoint that just
            # said it is overloaded, so the lane's own backoff decides.
            delay = rate_limit_backoff_seconds(
                count,
                base=config.rate_limit_backoff_base_seconds,
                cap=config.rate_limit_backoff_cap_seconds,
                rng=rng,
            )
        until = now_ms + round(delay * 1000)
        return Transition(
            Status.RATE_LIMITED, until, c.budget_used, count, since, pause_webhook_until=until
        )
    used = c.budget_used + 1
    if used < 1 + c.retry_attempts:
        delay = backoff_seconds(
            used,
            base=config.backoff_base_seconds,
            cap=config.backoff_cap_seconds,
            schedule=config.retry_schedule_seconds,
            rng=rng,
        )
        return _spent(c, Status.FAILED, now_ms + round(delay * 1000))
    return _spent(
        c,
        Status.DEAD_LETTER,
        None,
        dead_letter_reason=f"retry budget exhausted after {used} attempts",
    )


class Change(NamedTuple):
    """A status change that does not come from an attempt.

    It applies to deliveries in one of ``from_statuses`` only (a delivery
    that moved on meanwhile is left alone), and either gives a fresh budget
    (attempt counters back to 0) or keeps the counters.
    """

    status: Status
    next_attempt_at: int | None  # None when terminal
    reason: str | None
    fresh_budget: bool
    from_statuses: frozenset[Status]


def created(now_ms: int) -> Change:
    """A new delivery: ``pending``, due at once.

    (Storage schedules it no earlier than its webhook's 429 pause ends: the
    claim would skip it until then anyway, see ``storage``.)
    """
    return Change(Status.PENDING, now_ms, None, fresh_budget=True, from_statuses=frozenset())


def replayed(now_ms: int, paused_until: int | None) -> Change:
    """A dead letter given a fresh budget by an operator.

    Due at once, or when its webhook's 429 pause ends: a replay waits for the
    endpoint's Retry-After like the rest of its queue.
    """
    due = max(now_ms, paused_until or 0)
    return Change(
        Status.PENDING, due, None, fresh_budget=True, from_statuses=frozenset({Status.DEAD_LETTER})
    )


def webhook_deleted() -> Change:
    """The webhook is gone: its unfinished deliveries end (and any lease in flight with them)."""
    return Change(
        Status.DEAD_LETTER,
        None,
        ERROR_WEBHOOK_DELETED,
        fresh_budget=False,
        from_statuses=SCHEDULABLE,
    )


LANE_EXPIRED = "endpoint rate limited for longer than the lane allows"


def lane_expired() -> Change:
    """Deliveries waiting behind an endpoint that has answered 429 for longer than
    the lane's maximum age: they would otherwise wait for ever, never tried."""
    return Change(
        Status.DEAD_LETTER, None, LANE_EXPIRED, fresh_budget=False, from_statuses=SCHEDULABLE
    )


def test_interrupted() -> Change:
    """A test send whose process died before recording it: never retried, so it ends."""
    return Change(
        Status.DEAD_LETTER,
        None,
        ERROR_TEST_INTERRUPTED,
        fresh_budget=False,
        from_statuses=frozenset({Status.PENDING}),
    )


def test_send_result(delivered: bool, counters: Counters) -> Transition:
    """A test send is attempted once and ends: never retried, never a webhook side effect."""
    return Transition(
        Status.DELIVERED if delivered else Status.DEAD_LETTER,
        None,
        counters.budget_used + 1,
        counters.rate_limited_count,
        counters.rate_limited_since,
        dead_letter_reason=None if delivered else "test delivery failed (never retried)",
    )


# The names start with "test": keep pytest from collecting them where they are imported.
setattr(test_send_result, "__test__", False)  # noqa: B010
setattr(test_interrupted, "__test__", False)  # noqa: B010
