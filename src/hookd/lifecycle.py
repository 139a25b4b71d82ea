"""Where a delivery changes status.

Every status change a delivery can undergo is decided here, as a pure
function of its counters, the attempt's outcome and the clock; the storage
layer then applies the decision as a conditional update fenced by the lease
token (see ``storage.sqlite``).  The only other movers of status are the
operator actions at the bottom of this module (replay, webhook deletion),
whose SQL also lives in storage.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from hookd.config import DeliveryConfig
from hookd.models import ClaimedDelivery, Status
from hookd.policy import Outcome, backoff_seconds, rate_limit_backoff_seconds

ERROR_WEBHOOK_DELETED = "webhook deleted"
ERROR_BLOCKED = "blocked"


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
        return Transition(
            Status.DELIVERED, None, c.budget_used + 1, c.rate_limited_count, c.rate_limited_since
        )
    if outcome is Outcome.BLOCKED:
        return Transition(
            Status.DEAD_LETTER,
            None,
            c.budget_used + 1,
            c.rate_limited_count,
            c.rate_limited_since,
            dead_letter_reason="destination blocked by the outbound address policy",
        )
    if outcome is Outcome.GONE:
        return Transition(
            Status.DEAD_LETTER,
            None,
            c.budget_used + 1,
            c.rate_limited_count,
            c.rate_limited_since,
            deactivate_webhook_reason="endpoint answered 410 Gone",
            dead_letter_reason="endpoint answered 410 Gone",
        )
    if outcome is Outcome.RATE_LIMITED:
        # The 429 lane never touches budget_used: a receiver asking us to slow
        # down has not failed the delivery.
        count = c.rate_limited_count + 1
        since = c.rate_limited_since if c.rate_limited_since is not None else now_ms
        if count >= config.rate_limit_max_count:
            return Transition(
                Status.DEAD_LETTER,
                None,
                c.budget_used,
                count,
                since,
                dead_letter_reason=f"rate limited {count} times",
            )
        if now_ms - since >= config.rate_limit_max_age_seconds * 1000:
            return Transition(
                Status.DEAD_LETTER,
                None,
                c.budget_used,
                count,
                since,
                dead_letter_reason="rate limited for longer than the lane allows",
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
        return Transition(
            Status.FAILED,
            now_ms + round(delay * 1000),
            used,
            c.rate_limited_count,
            c.rate_limited_since,
        )
    return Transition(
        Status.DEAD_LETTER,
        None,
        used,
        c.rate_limited_count,
        c.rate_limited_since,
        dead_letter_reason=f"retry budget exhausted after {used} attempts",
    )


def replayed(now_ms: int) -> Transition:
    """A dead letter given a fresh budget by an operator."""
    return Transition(Status.PENDING, now_ms, 0, 0, None)


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


# The name starts with "test": keep pytest from collecting it where it is imported.
setattr(test_send_result, "__test__", False)  # noqa: B010
