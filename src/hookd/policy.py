"""Delivery policy as pure functions: classification, backoff, Retry-After.

Nothing here does I/O, reads the clock or owns randomness: callers pass the
current time and a random source, so every rule is table-tested.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


class ErrorKind(enum.StrEnum):
    """Why an attempt produced no answer: no HTTP status, or one whose body never completed."""

    TIMEOUT = "timeout"  # the deadline passed (with or without a status by then)
    CONNECT = "connect_error"  # refused, reset, DNS, TLS
    INVALID_RESPONSE = "invalid_response"  # malformed status line, oversized headers
    BLOCKED = "blocked"  # refused by the outbound address policy
    # The receiver closed the connection before the body its head announced
    # was complete (RFC 9112 section 8): the status it sent is no answer.
    INCOMPLETE = "incomplete_response"


class Outcome(enum.StrEnum):
    """What an attempt means for its delivery."""

    DELIVERED = "delivered"
    RATE_LIMITED = "rate_limited"
    GONE = "gone"
    BLOCKED = "blocked"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Classification:
    outcome: Outcome
    # Bounded label for metrics: 2xx 3xx 4xx 429 5xx timeout connect_error blocked.
    metric_class: str


METRIC_CLASSES = ("2xx", "3xx", "4xx", "429", "5xx", "timeout", "connect_error", "blocked")


# The answers classify gives, built once (it runs for every attempt).
_BLOCKED = Classification(Outcome.BLOCKED, "blocked")
_TIMEOUT = Classification(Outcome.FAILED, "timeout")
_CONNECT_ERROR = Classification(Outcome.FAILED, "connect_error")
_2XX = Classification(Outcome.DELIVERED, "2xx")
_429 = Classification(Outcome.RATE_LIMITED, "429")
_503_RETRY_AFTER = Classification(Outcome.RATE_LIMITED, "5xx")
_410 = Classification(Outcome.GONE, "4xx")
_3XX = Classification(Outcome.FAILED, "3xx")
_4XX = Classification(Outcome.FAILED, "4xx")
_5XX = Classification(Outcome.FAILED, "5xx")


def classify(
    status_code: int | None, error: ErrorKind | None, has_retry_after: bool
) -> Classification:
    """What an attempt means.  An error wins over a status: a response whose
    body was cut short carries the status of its head, and is still no answer."""
    if error is not None or status_code is None:
        if error is ErrorKind.BLOCKED:
            return _BLOCKED
        if error is ErrorKind.TIMEOUT:
            return _TIMEOUT
        # A malformed or cut-short response is a broken connection as far as
        # operators care.
        return _CONNECT_ERROR
    if 200 <= status_code < 300:
        return _2XX
    if status_code == 429:
        return _429
    if status_code == 503 and has_retry_after:
        return _503_RETRY_AFTER
    if status_code == 410:
        return _410
    if 300 <= status_code < 400:
        return _3XX
    if 400 <= status_code < 500:
        return _4XX
    if 500 <= status_code < 600:
        return _5XX
    # 1xx as a final status or a code outside 100-599: the receiver is broken.
    return _CONNECT_ERROR


def backoff_seconds(
    failures: int,
    *,
    base: float,
    cap: float,
    schedule: tuple[float, ...] = (),
    rng: random.Random,
) -> float:
    """Delay before the next attempt after ``failures`` failed attempts (>= 1).

    Without a schedule: "full jitter", uniform over [0, min(cap, base * 2**(n-1))],
    which spreads a thundering herd of retries evenly.  With a schedule the n-th
    entry (the last one repeating) is the ceiling and the delay is drawn from its
    upper half, so an operator's schedule is kept roughly as written.
    """
    n = max(1, failures)
    if schedule:
        ceiling = min(cap, schedule[min(n, len(schedule)) - 1])
        return rng.uniform(ceiling / 2, ceiling)
    # 2**1100 overflows a float; anything past 2**60 is beyond any cap anyway.
    ceiling = min(cap, base * math.pow(2, min(n - 1, 60)))
    return rng.uniform(0, ceiling)


def rate_limit_backoff_seconds(
    rate_limited: int, *, base: float, cap: float, rng: random.Random
) -> float:
    """The 429 lane's own delay after ``rate_limited`` 429s, when Retry-After gives none.

    "Equal jitter": uniform over the upper half of min(cap, base * 2**(n-1)), so
    a receiver that asked us to slow down always gets at least half the
    ceiling, yet a herd of limited deliveries still spreads out.
    """
    n = max(1, rate_limited)
    ceiling = min(cap, base * math.pow(2, min(n - 1, 60)))
    return rng.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None, now_ms: int, max_seconds: float) -> float | None:
    """Seconds to wait according to a Retry-After header, clamped to ``max_seconds``.

    Accepts delta-seconds and HTTP-dates (RFC 9110 §10.2.3).  Returns ``None``
    for a missing or unusable value so the caller falls back to its own
    backoff; a date in the past or a zero delay means "now" (0.0).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        seconds = float(int(text[:20]))  # 20 digits is already beyond any clamp
        return min(seconds, max_seconds)
    if text.startswith(("-", "+")) or text.replace(".", "", 1).isdigit():
        # Negative or fractional delta-seconds are not valid; do not guess.
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    try:
        delta = when.timestamp() - now_ms / 1000
    except (OverflowError, OSError, ValueError):
        return None
    return min(max(0.0, delta), max_seconds)
