"""Each delivery lane end to end: real SQLite file, real loopback receiver, manual clock."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
import standardwebhooks
from aiohttp import web

from hookd.models import Status, WebhookStatus
from hookd.sender import TIMEOUT_MESSAGE
from tests.conftest import Harness, Receiver, eventually

SECRET = "test-secret-0123456789"


async def delivery_status(h: Harness, delivery_id: str) -> Status:
    d = await h.store.get_delivery(None, delivery_id)
    assert d is not None
    return d.status


async def wait_status(h: Harness, delivery_id: str, *statuses: Status) -> None:
    async def reached() -> bool:
        return await delivery_status(h, delivery_id) in statuses

    await eventually(reached)


async def quiet_period(h: Harness, receiver: Receiver, path: str, expected: int) -> None:
    """Give the scheduler real time to (wrongly) send more; nothing may arrive."""
    for _ in range(5):
        h.scheduler.wake()
        await asyncio.sleep(0.05)
    assert len(receiver.received(path)) == expected


async def test_2xx_is_delivered_once_with_spec_headers(
    harness: Harness, receiver: Receiver
) -> None:
    hook = await harness.webhook(receiver.status("/ok", 200))
    result = await harness.store.ingest_event("ws_test", "email.replied", {"n": 1})
    (delivery_id,) = result.delivery_ids
    harness.scheduler.start()
    await wait_status(harness, delivery_id, Status.DELIVERED)

    (req,) = receiver.received("/ok")
    assert req.body == result.event.body
    body = json.loads(req.body)
    assert list(body) == ["id", "type", "createdAt", "workspaceId", "data"]
    assert body["id"] == result.event.id and body["data"] == {"n": 1}
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"].startswith("hookd/")
    assert req.headers["X-Webhook-Event"] == "email.replied"
    assert req.headers["X-Webhook-Id"] == result.event.id
    assert req.headers["X-Webhook-Timestamp"] == str(harness.clock.now_ms() // 1000)
    assert req.headers["webhook-id"] == result.event.id
    delivery = await harness.store.get_delivery("ws_test", delivery_id)
    assert delivery is not None
    assert (delivery.attempt_count, delivery.budget_used, delivery.last_status_code) == (1, 1, 200)
    assert delivery.next_attempt_at is None
    attempts = await harness.store.list_attempts(delivery_id)
    assert [(a.status_code, a.outcome, a.response_body) for a in attempts] == [
        (200, "2xx", "answer 200")
    ]
    assert hook.id == delivery.webhook_id
    await quiet_period(harness, receiver, "/ok", 1)


async def test_5xx_retries_with_backoff_then_dead_letters(
    harness: Harness, receiver: Receiver
) -> None:
    await harness.webhook(receiver.status("/fail", 500), retry_attempts=2)
    (delivery_id,) = (await harness.store.ingest_event("ws_test", "t", {})).delivery_ids
    t0 = harness.clock.now_ms()
    harness.scheduler.start()

    await wait_status(harness, delivery_id, Status.FAILED)
    d = await harness.store.get_delivery(None, delivery_id)
    assert d is not None and d.budget_used == 1 and d.attempt_count == 1
    assert d.next_attempt_at is not None
    # Full jitter over [0, base=5s] for the first retry.
    assert t0 <= d.next_attempt_at <= t0 + 5_000
    # The retry waits for its time: no second request until the clock moves.
    if d.next_attempt_at > harness.clock.now_ms():
        await quiet_period(harness, receiver, "/fail", 1)

    harness.clock.advance(5)
    harness.scheduler.wake()
    await receiver.wait_for("/fail", 2)
    await eventually(lambda: _attempt_count(harness, delivery_id, 2))
    assert await delivery_status(harness, delivery_id) is Status.FAILED

    harness.clock.advance(10)  # second retry: within [0, 10s]
    harness.scheduler.wake()
    await wait_status(harness, delivery_id, Status.DEAD_LETTER)

    attempts = await harness.store.list_attempts(delivery_id)
    assert [a.status_code for a in attempts] == [500, 500, 500]
    assert [a.number for a in attempts] == [1, 2, 3]
    assert attempts[0].started_at == t0
    assert attempts[1].started_at == t0 + 5_000
    assert attempts[2].started_at == t0 + 15_000
    d = await harness.store.get_delivery(None, delivery_id)
    assert d is not None and d.next_attempt_at is None and d.budget_used == 3
    assert d.last_error is not None and "retry budget exhausted" in d.last_error
    harness.clock.advance(3600)
    await quiet_period(harness, receiver, "/fail", 3)


async def _attempt_count(h: Harness, delivery_id: str, n: int) -> bool:
    return len(await h.store.list_attempts(delivery_id)) >= n


async def test_429_parks_in_its_own_lane_without_using_the_budget(
    harness: Harness, receiver: Receiver
) -> None:
    # retryAttempts=0: a single ordinary failure would dead-letter at once.
    url = receiver.status("/limited", 429, 429, 200, headers={"Retry-After": "120"})
    hook = await harness.webhook(url, retry_attempts=0)
    (first,) = (await harness.store.ingest_event("ws_test", "t", {"n": 1})).delivery_ids
    t0 = harness.clock.now_ms()
    harness.scheduler.start()
    await wait_status(harness, first, Status.RATE_LIMITED)

    d = await harness.store.get_delivery(None, first)
    assert d is not None
    assert (d.budget_used, d.rate_limited_count, d.rate_limited_since) == (0, 1, t0)
    assert d.next_attempt_at == t0 + 120_000
    paused = await harness.store.get_webhook(None, hook.id)
    assert paused is not None and paused.paused_until == t0 + 120_000

    # The whole endpoint is paused: a new delivery waits for the Retry-After too.
    (second,) = (await harness.store.ingest_event("ws_test", "t", {"n": 2})).delivery_ids
    harness.clock.advance(119)
    await quiet_period(harness, receiver, "/limited", 1)
    assert await delivery_status(harness, second) is Status.PENDING

    harness.clock.advance(1)
    harness.scheduler.wake()
    await receiver.wait_for("/limited", 2)
    # One 429 more (the second answer), then 200 for everything after its Retry-After.
    await eventually(lambda: _rl_count(harness, 2))
    harness.clock.advance(120)
    harness.scheduler.wake()
    await wait_status(harness, first, Status.DELIVERED)
    await wait_status(harness, second, Status.DELIVERED)
    for delivery_id in (first, second):
        d = await harness.store.get_delivery(None, delivery_id)
        assert d is not None and d.budget_used == 1


async def test_after_a_429_pause_one_request_probes_before_the_rest_go(
    harness: Harness, receiver: Receiver
) -> None:
    limited = True
    gate = asyncio.Event()
    in_flight = 0

    async def endpoint(request: web.Request, n: int) -> web.StreamResponse:
        nonlocal in_flight
        if limited:
            return web.Response(status=429, headers={"Retry-After": "60"})
        in_flight += 1
        try:
            await gate.wait()
        finally:
            in_flight -= 1
        return web.Response(status=200)

    await harness.webhook(receiver.on("/paced", endpoint))
    ids = await _ingest(harness, 8)
    harness.scheduler.start()
    # Eight requests in flight at once, each answered 429.
    for delivery_id in ids:
        await wait_status(harness, delivery_id, Status.RATE_LIMITED)
    assert len(receiver.received("/paced")) == 8

    limited = False
    await _one_probe_after_the_pause(harness, receiver, "/paced", 8)
    gate.set()
    for delivery_id in ids:
        await wait_status(harness, delivery_id, Status.DELIVERED)
    assert len(receiver.received("/paced")) == 16
    # Its 200 opened the endpoint's whole room again.
    gate.clear()
    more = await _ingest(harness, 4)
    harness.scheduler.wake()
    await eventually(lambda: _async(in_flight == 4))
    gate.set()
    for delivery_id in more:
        await wait_status(harness, delivery_id, Status.DELIVERED)


async def test_answers_to_requests_sent_before_a_pause_do_not_end_the_probe(
    harness: Harness, receiver: Receiver
) -> None:
    sent_before, after_pause = asyncio.Event(), asyncio.Event()

    async def endpoint(request: web.Request, n: int) -> web.StreamResponse:
        if n == 0:
            return web.Response(status=429, headers={"Retry-After": "60"})
        await (sent_before if n < 4 else after_pause).wait()
        return web.Response(status=200)

    await harness.webhook(receiver.on("/mixed", endpoint))
    await _ingest(harness, 4)
    harness.scheduler.start()
    await receiver.wait_for("/mixed", 4)
    await eventually(lambda: _count(harness, Status.RATE_LIMITED, 1))
    # The other three, sent before the 429 came back, are answered 200 now.
    sent_before.set()
    await eventually(lambda: _count(harness, Status.DELIVERED, 3))
    later = await _ingest(harness, 4)
    await _one_probe_after_the_pause(harness, receiver, "/mixed", 4)
    after_pause.set()
    for delivery_id in later:
        await wait_status(harness, delivery_id, Status.DELIVERED)
    assert len(receiver.received("/mixed")) == 9


async def _ingest(h: Harness, count: int) -> list[str]:
    return [
        (await h.store.ingest_event("ws_test", "t", {"n": n})).delivery_ids[0] for n in range(count)
    ]


async def _one_probe_after_the_pause(h: Harness, receiver: Receiver, path: str, sent: int) -> None:
    """The 60 s pause ends: one request goes, held open by the endpoint, and
    nothing else follows it meanwhile."""
    h.clock.advance(60)
    h.scheduler.wake()
    await receiver.wait_for(path, sent + 1)
    await quiet_period(h, receiver, path, sent + 1)


async def _count(h: Harness, status: Status, expected: int) -> bool:
    page = await h.store.list_deliveries("ws_test", _all(), 50)
    return sum(d.status is status for d in page.items) == expected


async def _async(value: bool) -> bool:
    return value


async def _rl_count(h: Harness, total: int) -> bool:
    page = await h.store.list_deliveries("ws_test", _all(), 50)
    return sum(d.rate_limited_count for d in page.items) >= total


def _all():  # type: ignore[no-untyped-def]
    from hookd.storage import DeliveryFilter

    return DeliveryFilter()


async def test_503_with_retry_after_http_date_is_rate_limited(
    harness: Harness, receiver: Receiver
) -> None:
    t0 = harness.clock.now_ms()
    when = t0 // 1000 + 30
    from email.utils import formatdate

    url = receiver.status("/busy", 503, headers={"Retry-After": formatdate(when, usegmt=True)})
    await harness.webhook(url, retry_attempts=0)
    (delivery_id,) = (await harness.store.ingest_event("ws_test", "t", {})).delivery_ids
    harness.scheduler.start()
    await wait_status(harness, delivery_id, Status.RATE_LIMITED)
    d = await harness.store.get_delivery(None, delivery_id)
    assert d is not None and d.next_attempt_at == when * 1000
    assert d.budget_used == 0


async def test_429_lane_has_its_own_bound(harness_factory, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    h: Harness = await harness_factory(rate_limit_max_count=3)
    await h.webhook(receiver.status("/always429", 429, headers={"Retry-After": "1"}))
    (delivery_id,) = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
    h.scheduler.start()
    for n in (1, 2):
        await receiver.wait_for("/always429", n)
        await eventually(lambda n=n: _attempt_count(h, delivery_id, n))
        assert await delivery_status(h, delivery_id) is Status.RATE_LIMITED
        h.clock.advance(1)
        h.scheduler.wake()
    await wait_status(h, delivery_id, Status.DEAD_LETTER)
    d = await h.store.get_delivery(None, delivery_id)
    assert d is not None
    assert (d.rate_limited_count, d.budget_used) == (3, 0)
    assert d.last_error is not None and "rate limited 3 times" in d.last_error


async def test_429_lane_max_age(harness_factory, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    h: Harness = await harness_factory(rate_limit_max_age_seconds=600)
    await h.webhook(receiver.status("/slow429", 429, headers={"Retry-After": "400"}))
    (delivery_id,) = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
    h.scheduler.start()
    await wait_status(h, delivery_id, Status.RATE_LIMITED)
    h.clock.advance(400)
    h.scheduler.wake()
    await eventually(lambda: _attempt_count(h, delivery_id, 2))
    assert await delivery_status(h, delivery_id) is Status.RATE_LIMITED
    h.clock.advance(400)
    h.scheduler.wake()
    await wait_status(h, delivery_id, Status.DEAD_LETTER)
    d = await h.store.get_delivery(None, delivery_id)
    assert d is not None and d.rate_limited_count == 3 and d.budget_used == 0


async def test_410_disables_the_webhook_and_its_pending_work_waits(
    harness: Harness, receiver: Receiver
) -> None:
    hook = await harness.webhook(receiver.status("/gone", 410))
    (first,) = (await harness.store.ingest_event("ws_test", "t", {})).delivery_ids
    harness.scheduler.start()
    await wait_status(harness, first, Status.DEAD_LETTER)
    disabled = await harness.store.get_webhook(None, hook.id)
    assert disabled is not None
    assert disabled.status is WebhookStatus.INACTIVE
    assert disabled.disabled_reason == "endpoint answered 410 Gone"
    d = await harness.store.get_delivery(None, first)
    assert d is not None and d.attempt_count == 1
    # Inactive webhooks get no new deliveries...
    assert (await harness.store.ingest_event("ws_test", "t", {})).delivery_ids == ()
    assert harness.metrics.webhooks_disabled._value.get() == 1


async def test_inactive_webhook_pending_deliveries_wait_until_reactivated(
    harness: Harness, receiver: Receiver
) -> None:
    from hookd.storage import WebhookChanges

    hook = await harness.webhook(receiver.status("/paused", 200))
    (delivery_id,) = (await harness.store.ingest_event("ws_test", "t", {})).delivery_ids
    await harness.store.update_webhook(
        "ws_test", hook.id, WebhookChanges(status=WebhookStatus.INACTIVE), 0
    )
    harness.scheduler.start()
    await quiet_period(harness, receiver, "/paused", 0)
    assert await delivery_status(harness, delivery_id) is Status.PENDING
    await harness.store.update_webhook(
        "ws_test", hook.id, WebhookChanges(status=WebhookStatus.ACTIVE), 0
    )
    harness.scheduler.wake()
    await wait_status(harness, delivery_id, Status.DELIVERED)


async def test_hanging_receiver_times_out_within_timeout_ms(
    harness: Harness, receiver: Receiver
) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request, n: int) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=200)

    await harness.webhook(receiver.on("/hang", hang), timeout_ms=300, retry_attempts=0)
    (delivery_id,) = (await harness.store.ingest_event("ws_test", "t", {})).delivery_ids
    harness.scheduler.start()
    await wait_status(harness, delivery_id, Status.DEAD_LETTER)
    release.set()
    (attempt,) = await harness.store.list_attempts(delivery_id)
    assert attempt.status_code is None
    assert attempt.error == TIMEOUT_MESSAGE
    assert attempt.outcome == "timeout"
    # Bounded by timeoutMs (300 ms) plus scheduling slack, not by the receiver.
    assert 250 <= attempt.duration_ms < 5_000


async def test_redirects_are_not_followed(harness: Harness, receiver: Receiver) -> None:
    target = receiver.status("/target", 200)

    async def redirect(request: web.Request, n: int) -> web.StreamResponse:
        raise web.HTTPFound(target)

    await harness.webhook(receiver.on("/redirect", redirect), retry_attempts=0)
    (delivery_id,) = (await harness.store.ingest_event("ws_test", "t", {})).delivery_ids
    harness.scheduler.start()
    await wait_status(harness, delivery_id, Status.DEAD_LETTER)
    (attempt,) = await harness.store.list_attempts(delivery_id)
    assert attempt.status_code == 302 and attempt.outcome == "3xx"
    assert receiver.received("/target") == []


async def test_connection_refused_is_a_connect_error(harness: Harness) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await harness.webhook(f"http://127.0.0.1:{port}/nobody", retry_attempts=0)
    (delivery_id,) = (await harness.store.ingest_event("ws_test", "t", {})).delivery_ids
    harness.scheduler.start()
    await wait_status(harness, delivery_id, Status.DEAD_LETTER)
    (attempt,) = await harness.store.list_attempts(delivery_id)
    assert attempt.status_code is None and attempt.outcome == "connect_error"
    assert attempt.error


async def test_blocked_destination_dead_letters_without_retry(
    harness_factory,
    receiver: Receiver,  # type: ignore[no-untyped-def]
) -> None:
    h: Harness = await harness_factory(allow_networks=())
    await h.webhook(receiver.status("/internal", 200), retry_attempts=5)
    (delivery_id,) = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
    h.scheduler.start()
    await wait_status(h, delivery_id, Status.DEAD_LETTER)
    (attempt,) = await h.store.list_attempts(delivery_id)
    assert attempt.error == "blocked" and attempt.outcome == "blocked"
    assert receiver.received("/internal") == []


async def test_every_attempt_is_signed_afresh_and_verifies(
    harness: Harness, receiver: Receiver
) -> None:
    await harness.webhook(receiver.status("/signed", 500, 503, 200), retry_attempts=3)
    result = await harness.store.ingest_event("ws_test", "invoice.paid", {"amount": 42})
    (delivery_id,) = result.delivery_ids
    harness.scheduler.start()
    for n in (1, 2):
        await receiver.wait_for("/signed", n)
        await eventually(lambda n=n: _attempt_count(harness, delivery_id, n))
        harness.clock.advance(3600)
        harness.scheduler.wake()
    await wait_status(harness, delivery_id, Status.DELIVERED)

    requests = receiver.received("/signed")
    assert len(requests) == 3
    verifier = standardwebhooks.Webhook(base64.b64encode(SECRET.encode()).decode())
    timestamps = []
    for req in requests:
        expected_hex = hmac.new(SECRET.encode(), req.body, hashlib.sha256).hexdigest()
        assert req.headers["X-Webhook-Signature"] == expected_hex
        assert req.headers["X-Webhook-Id"] == result.event.id
        # The standardwebhooks verifier checks the timestamp against real time,
        # so verify with a frozen "now" equal to the signed timestamp.
        ts = int(req.headers["webhook-timestamp"])
        timestamps.append(ts)
        payload = verifier.verify(req.body, _frozen(req.headers, ts))
        assert payload["id"] == result.event.id
    assert len(set(timestamps)) == 3, "each attempt is re-signed with a fresh timestamp"


def _frozen(headers: dict[str, str], ts: int) -> dict[str, str]:
    import datetime as dt
    from unittest import mock

    # standardwebhooks compares webhook-timestamp to datetime.now(); pin it.
    fake_now = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    patcher = mock.patch("standardwebhooks.webhooks.datetime")
    mocked = patcher.start()
    mocked.now.return_value = fake_now
    mocked.fromtimestamp.side_effect = dt.datetime.fromtimestamp
    mocked.timezone = dt.timezone
    _PATCHES.append(patcher)
    return {k.lower(): v for k, v in headers.items()}


_PATCHES: list = []  # type: ignore[type-arg]


@pytest.fixture(autouse=True)
def _stop_patches():  # type: ignore[no-untyped-def]
    yield
    while _PATCHES:
        _PATCHES.pop().stop()


async def test_dead_endpoint_does_not_slow_a_healthy_one(
    harness_factory,
    receiver: Receiver,  # type: ignore[no-untyped-def]
) -> None:
    h: Harness = await harness_factory(per_webhook_concurrency=4, concurrency=32, batch_size=16)
    release = asyncio.Event()

    async def hang(request: web.Request, n: int) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=200)

    dead = await h.webhook(receiver.on("/dead", hang), timeout_ms=20_000, events=("dead.*",))
    await h.webhook(receiver.status("/healthy", 200), events=("live.*",))
    dead_ids = []
    live_ids = []
    # The dead endpoint's work is queued first, so it sits at the head of the queue.
    for i in range(60):
        dead_ids += (await h.store.ingest_event("ws_test", "dead.x", {"i": i})).delivery_ids
    for i in range(60):
        live_ids += (await h.store.ingest_event("ws_test", "live.x", {"i": i})).delivery_ids
    h.scheduler.start()
    await receiver.wait_for("/healthy", 60, timeout=15)

    async def all_live_delivered() -> bool:
        return all([await delivery_status(h, d) is Status.DELIVERED for d in live_ids])

    await eventually(all_live_delivered, timeout=15)
    # The dead endpoint holds exactly its own slots, and none of its attempts
    # has even finished (its timeout is 20 s): the healthy work did not wait.
    assert len(receiver.received("/dead")) == 4
    assert h.scheduler.in_flight == 4
    for d in dead_ids:
        assert await delivery_status(h, d) is Status.PENDING
    release.set()
    assert dead.id


async def test_a_batch_that_takes_every_slot_goes_out_and_no_more_than_the_slots(
    harness_factory,
    receiver: Receiver,  # type: ignore[no-untyped-def]
) -> None:
    # batch_size == concurrency: each full claim takes every slot, so the loop
    # holds the batch (slots taken, requests not yet started) into an
    # iteration that has nothing to claim; the batch must still go out there.
    h: Harness = await harness_factory(concurrency=4, batch_size=4, per_webhook_concurrency=4)
    open_now = 0
    most_open = 0

    async def slow_ok(request: web.Request, n: int) -> web.StreamResponse:
        nonlocal open_now, most_open
        open_now += 1
        most_open = max(most_open, open_now)
        await asyncio.sleep(0.01)
        open_now -= 1
        return web.Response(status=200)

    await h.webhook(receiver.on("/slots", slow_ok))
    ids = []
    for i in range(40):
        ids += (await h.store.ingest_event("ws_test", "order.created", {"i": i})).delivery_ids
    h.scheduler.start()
    await receiver.wait_for("/slots", 40, timeout=20)
    for delivery_id in ids:
        await wait_status(h, delivery_id, Status.DELIVERED)
    assert len(receiver.received("/slots")) == 40  # each once
    assert most_open == 4  # the slots were all used, and never exceeded


async def test_stop_sends_a_batch_held_for_the_next_round_trip(
    harness_factory,
    receiver: Receiver,  # type: ignore[no-untyped-def]
) -> None:
    h: Harness = await harness_factory(concurrency=8, batch_size=4, per_webhook_concurrency=8)
    await h.webhook(receiver.status("/held", 200))
    ids = []
    for i in range(4):
        ids += (await h.store.ingest_event("ws_test", "order.created", {"i": i})).delivery_ids
    # One iteration by hand: a full batch is claimed and held for the next.
    await h.scheduler._iterate()
    assert h.scheduler.in_flight == 4
    assert receiver.received("/held") == []
    # The loop is stopped before it ever runs that next iteration.
    h.scheduler.start()
    await h.scheduler.stop(drain_timeout=10)
    # Stop sent the held batch and wrote its records: nothing left leased.
    assert len(receiver.received("/held")) == 4
    for d in ids:
        assert await delivery_status(h, d) is Status.DELIVERED


async def test_a_wake_during_a_short_round_trip_claims_again_without_asking_when_work_is_due(
    harness_factory,
    receiver: Receiver,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An ingest that wakes the loop while its round trip runs (and claims
    less than it wanted) has the next round trip start at once: the loop does
    not first ask the store when work is due, nor wait."""
    h: Harness = await harness_factory(concurrency=8, batch_size=4, per_webhook_concurrency=8)
    await h.webhook(receiver.status("/woken", 200))
    asked: list[int] = []
    settle = h.store.settle_and_claim
    next_due_at = h.store.next_due_at

    async def woken_meanwhile(*args: Any) -> Any:
        done = await settle(*args)
        h.scheduler.wake()  # as an ingest committing meanwhile does
        return done

    async def counted() -> int | None:
        asked.append(1)
        return await next_due_at()

    monkeypatch.setattr(h.store, "settle_and_claim", woken_meanwhile)
    monkeypatch.setattr(h.store, "next_due_at", counted)
    await h.scheduler._iterate()  # nothing due: a short claim, woken meanwhile
    assert asked == []
    assert not h.scheduler._wake.is_set()  # the wake-up was taken
    monkeypatch.setattr(h.store, "settle_and_claim", settle)
    await asyncio.wait_for(h.scheduler._iterate(), timeout=10)  # not woken: asks, then waits
    assert asked == [1]
