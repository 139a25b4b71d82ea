"""Table tests for the pure policy functions and lifecycle decisions."""

from __future__ import annotations

import random
from dataclasses import replace
from email.utils import formatdate

import pytest

from hookd.config import DeliveryConfig
from hookd.lifecycle import Counters, decide
from hookd.models import Status
from hookd.policy import ErrorKind, Outcome, backoff_seconds, classify, parse_retry_after

NOW_MS = 1_717_236_000_000


@pytest.mark.parametrize(
    ("status", "error", "retry_after", "outcome", "label"),
    [
        (200, None, False, Outcome.DELIVERED, "2xx"),
        (204, None, False, Outcome.DELIVERED, "2xx"),
        (299, None, False, Outcome.DELIVERED, "2xx"),
        (429, None, False, Outcome.RATE_LIMITED, "429"),
        (429, None, True, Outcome.RATE_LIMITED, "429"),
        (503, None, True, Outcome.RATE_LIMITED, "5xx"),
        (503, None, False, Outcome.FAILED, "5xx"),
        (410, None, False, Outcome.GONE, "4xx"),
        (301, None, False, Outcome.FAILED, "3xx"),
        (302, None, True, Outcome.FAILED, "3xx"),
        (304, None, False, Outcome.FAILED, "3xx"),
        (400, None, False, Outcome.FAILED, "4xx"),
        (404, None, False, Outcome.FAILED, "4xx"),
        (500, None, False, Outcome.FAILED, "5xx"),
        (502, None, True, Outcome.FAILED, "5xx"),
        (599, None, False, Outcome.FAILED, "5xx"),
        (101, None, False, Outcome.FAILED, "connect_error"),
        (600, None, False, Outcome.FAILED, "connect_error"),
        (None, ErrorKind.TIMEOUT, False, Outcome.FAILED, "timeout"),
        (None, ErrorKind.CONNECT, False, Outcome.FAILED, "connect_error"),
        (None, ErrorKind.INVALID_RESPONSE, False, Outcome.FAILED, "connect_error"),
        (None, ErrorKind.BLOCKED, False, Outcome.BLOCKED, "blocked"),
        (None, ErrorKind.INCOMPLETE, False, Outcome.FAILED, "connect_error"),
        # A head arrived, its body did not: the error decides, not the status.
        (200, ErrorKind.TIMEOUT, False, Outcome.FAILED, "timeout"),
        (200, ErrorKind.INCOMPLETE, False, Outcome.FAILED, "connect_error"),
        (429, ErrorKind.INCOMPLETE, True, Outcome.FAILED, "connect_error"),
        (410, ErrorKind.TIMEOUT, False, Outcome.FAILED, "timeout"),
        (503, ErrorKind.TIMEOUT, True, Outcome.FAILED, "timeout"),
    ],
)
def test_classify(
    status: int | None, error: ErrorKind | None, retry_after: bool, outcome: Outcome, label: str
) -> None:
    c = classify(status, error, retry_after)
    assert (c.outcome, c.metric_class) == (outcome, label)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 30 ", 30.0),
        ("3599", 3599.0),
        ("7200", 3600.0),  # clamped to the configured maximum
        ("315360000", 3600.0),  # ten years
        ("9" * 40, 3600.0),  # absurdly large
        ("-5", None),  # negative delta-seconds are invalid
        ("+5", None),
        ("1.5", None),  # fractional delta-seconds are invalid
        ("soon", None),
        ("Mon, 32 Foo 2024 99:99:99 GMT", None),
        ("١٢٣", None),  # non-ASCII digits are not delta-seconds
        (formatdate(NOW_MS / 1000 + 90, usegmt=True), 90.0),
        (formatdate(NOW_MS / 1000 - 90, usegmt=True), 0.0),  # past date: now
        (formatdate(NOW_MS / 1000 + 10 * 365 * 86400, usegmt=True), 3600.0),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),  # the RFC's own example, long past
        ("Sunday, 06-Nov-94 08:49:37 GMT", 0.0),  # obsolete RFC 850 format
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW_MS, 3600.0) == expected


@pytest.mark.parametrize("failures", [1, 2, 3, 5, 10, 64, 2000])
def test_full_jitter_backoff_stays_within_its_ceiling(failures: int) -> None:
    rng = random.Random(failures)
    ceiling = min(3600.0, 5.0 * 2 ** min(failures - 1, 60))
    samples = [backoff_seconds(failures, base=5.0, cap=3600.0, rng=rng) for _ in range(200)]
    assert all(0.0 <= s <= ceiling for s in samples)
    # Full jitter really spreads: both halves of the range are used.
    assert min(samples) < ceiling / 2 < max(samples)


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [(1, 5.0, 10.0), (2, 30.0, 60.0), (3, 150.0, 300.0), (4, 150.0, 300.0), (9, 150.0, 300.0)],
)
def test_schedule_backoff_uses_the_upper_half_of_each_entry(
    failures: int, low: float, high: float
) -> None:
    rng = random.Random(1)
    for _ in range(100):
        delay = backoff_seconds(
            failures, base=1.0, cap=3600.0, schedule=(10.0, 60.0, 300.0), rng=rng
        )
        assert low <= delay <= high


def test_backoff_cap_applies_to_a_schedule() -> None:
    rng = random.Random(3)
    assert backoff_seconds(1, base=1, cap=20, schedule=(100.0,), rng=rng) <= 20


CFG = DeliveryConfig(rate_limit_max_count=5, rate_limit_max_age_seconds=1000)


def counters(used: int = 0, retries: int = 3, rl: int = 0, since: int | None = None) -> Counters:
    return Counters(used, retries, rl, since)


@pytest.mark.parametrize(
    ("before", "outcome", "retry_after", "status", "used", "rl"),
    [
        (counters(), Outcome.DELIVERED, None, Status.DELIVERED, 1, 0),
        (counters(), Outcome.FAILED, None, Status.FAILED, 1, 0),
        (counters(used=2), Outcome.FAILED, None, Status.FAILED, 3, 0),
        (counters(used=3), Outcome.FAILED, None, Status.DEAD_LETTER, 4, 0),
        (counters(retries=0), Outcome.FAILED, None, Status.DEAD_LETTER, 1, 0),
        (counters(retries=0), Outcome.RATE_LIMITED, 10.0, Status.RATE_LIMITED, 0, 1),
        (
            counters(used=3, rl=3, since=NOW_MS),
            Outcome.RATE_LIMITED,
            1.0,
            Status.RATE_LIMITED,
            3,
            4,
        ),
        (counters(rl=4, since=NOW_MS), Outcome.RATE_LIMITED, 1.0, Status.DEAD_LETTER, 0, 5),
        (
            counters(rl=1, since=NOW_MS - 1_000_000),
            Outcome.RATE_LIMITED,
            1.0,
            Status.DEAD_LETTER,
            0,
            2,
        ),
        (counters(), Outcome.GONE, None, Status.DEAD_LETTER, 1, 0),
        (counters(), Outcome.BLOCKED, None, Status.DEAD_LETTER, 1, 0),
        (counters(used=1, rl=2, since=NOW_MS), Outcome.DELIVERED, None, Status.DELIVERED, 2, 2),
    ],
)
def test_decide(
    before: Counters,
    outcome: Outcome,
    retry_after: float | None,
    status: Status,
    used: int,
    rl: int,
) -> None:
    t = decide(before, outcome, retry_after, NOW_MS, CFG, random.Random(0))
    assert (t.status, t.budget_used, t.rate_limited_count) == (status, used, rl)
    assert (t.next_attempt_at is None) == (status in (Status.DELIVERED, Status.DEAD_LETTER))
    assert (t.dead_letter_reason is not None) == (status is Status.DEAD_LETTER)


def test_rate_limited_waits_exactly_retry_after_and_pauses_the_webhook() -> None:
    t = decide(counters(), Outcome.RATE_LIMITED, 42.0, NOW_MS, CFG, random.Random(0))
    assert t.next_attempt_at == NOW_MS + 42_000
    assert t.pause_webhook_until == NOW_MS + 42_000
    assert t.rate_limited_since == NOW_MS


def test_rate_limited_without_retry_after_uses_the_lane_backoff() -> None:
    cfg = replace(CFG, rate_limit_backoff_base_seconds=10, rate_limit_backoff_cap_seconds=900)
    t = decide(
        counters(rl=3, since=NOW_MS), Outcome.RATE_LIMITED, None, NOW_MS, cfg, random.Random(0)
    )
    assert t.next_attempt_at is not None
    # 4th 429: ceiling 10 * 2**3 s, drawn from its upper half.
    assert NOW_MS + 40_000 <= t.next_attempt_at <= NOW_MS + 80_000


@pytest.mark.parametrize("retry_after", [0.0, None])
def test_retry_after_zero_or_past_falls_back_to_the_lane_backoff(retry_after: float | None) -> None:
    for seed in range(20):
        t = decide(counters(), Outcome.RATE_LIMITED, retry_after, NOW_MS, CFG, random.Random(seed))
        assert t.next_attempt_at is not None
        assert NOW_MS + 5_000 <= t.next_attempt_at <= NOW_MS + 10_000


def test_gone_deactivates_the_webhook() -> None:
    t = decide(counters(), Outcome.GONE, None, NOW_MS, CFG, random.Random(0))
    assert t.deactivate_webhook_reason == "endpoint answered 410 Gone"
    assert t.pause_webhook_until is None


def test_failure_backoff_is_within_the_first_ceiling() -> None:
    for seed in range(50):
        t = decide(counters(), Outcome.FAILED, None, NOW_MS, CFG, random.Random(seed))
        assert t.next_attempt_at is not None
        assert NOW_MS <= t.next_attempt_at <= NOW_MS + 5_000
