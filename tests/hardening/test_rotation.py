"""Secret rotation end to end: the old secret signs beside the new one for the grace period.

Real scheduler, sender, SQLite and a loopback receiver; the ManualClock carries
us past the grace period.  Receivers verify with the ``standardwebhooks``
reference library (pinned to the signed timestamp, since the clock is manual)
and recompute the hex HMAC of ``X-Webhook-Signature``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import standardwebhooks
import standardwebhooks.webhooks
from standardwebhooks.webhooks import WebhookVerificationError

from hookd.clock import ManualClock
from hookd.models import Status
from hookd.sender.signing import signing_key
from hookd.storage import WebhookChanges
from tests.conftest import Harness, Received, Receiver
from tests.hardening.conftest import running_daemon, wait_status

GRACE_S = 3600
OLD = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
NEW = "plain-new-secret-0123456789"


class _PinnedNow(datetime):
    """``datetime`` whose ``now`` is the test's choice (the reference verifier reads it)."""

    pinned = datetime(2024, 6, 1, tzinfo=UTC)

    @classmethod
    def now(cls, tz: Any = None) -> _PinnedNow:
        return cls.pinned  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def _pin_verifier_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standardwebhooks.webhooks, "datetime", _PinnedNow)


def _verifier(secret: str) -> standardwebhooks.Webhook:
    # The reference library base64-decodes what it is given; hookd keys a plain
    # secret by its UTF-8 bytes.
    if secret.startswith("whsec_"):
        return standardwebhooks.Webhook(secret)
    return standardwebhooks.Webhook(base64.b64encode(secret.encode()).decode())


def verifies(secret: str, req: Received) -> bool:
    """Both signature headers, checked as a receiver holding only ``secret`` would."""
    headers = {k.lower(): v for k, v in req.headers.items()}
    _PinnedNow.pinned = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)
    try:
        _verifier(secret).verify(req.body, headers)
        standard = True
    except WebhookVerificationError:
        standard = False
    expected_hex = hmac.new(signing_key(secret), req.body, hashlib.sha256).hexdigest()
    hex_ok = expected_hex in headers["x-webhook-signature"].split(",")
    assert standard == hex_ok, "the two header families must agree"
    return standard


def signature_counts(req: Received) -> tuple[int, int]:
    headers = {k.lower(): v for k, v in req.headers.items()}
    v1 = headers["webhook-signature"].split(" ")
    assert all(entry.startswith("v1,") for entry in v1)
    return len(v1), len(headers["x-webhook-signature"].split(","))


async def deliver_one(h: Harness, receiver: Receiver, path: str) -> Received:
    before = len(receiver.received(path))
    (delivery_id,) = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
    h.scheduler.wake()
    await wait_status(h, delivery_id, Status.DELIVERED)
    return receiver.received(path)[before]


async def test_old_secret_signs_beside_the_new_one_for_the_grace_period(
    harness_factory: Callable[..., Awaitable[Harness]], receiver: Receiver
) -> None:
    h = await harness_factory(secret_grace_seconds=GRACE_S)
    hook = await h.webhook(receiver.status("/r", 200), secret=OLD)
    h.scheduler.start()

    before = await deliver_one(h, receiver, "/r")
    assert signature_counts(before) == (1, 1)
    assert verifies(OLD, before) and not verifies(NEW, before)

    rotated_at = h.clock.now_ms()
    updated = await h.store.update_webhook(
        "ws_test",
        hook.id,
        WebhookChanges(secret=NEW),
        round(h.scheduler.config.secret_grace_seconds * 1000),
    )
    assert updated is not None and updated.secret == NEW

    during = await deliver_one(h, receiver, "/r")
    assert signature_counts(during) == (2, 2)
    assert verifies(NEW, during) and verifies(OLD, during)
    # The new secret comes first: receivers that only read the first value move on.
    first_hex = during.headers["X-Webhook-Signature"].split(",")[0]
    assert first_hex == hmac.new(NEW.encode(), during.body, hashlib.sha256).hexdigest()

    h.clock.set(rotated_at + GRACE_S * 1000 - 1000)  # one second before the end
    last = await deliver_one(h, receiver, "/r")
    assert signature_counts(last) == (2, 2) and verifies(OLD, last)

    h.clock.set(rotated_at + GRACE_S * 1000 + 1000)
    after = await deliver_one(h, receiver, "/r")
    assert signature_counts(after) == (1, 1)
    assert verifies(NEW, after) and not verifies(OLD, after)


async def test_a_retry_after_the_grace_period_is_signed_with_the_new_secret_only(
    harness_factory: Callable[..., Awaitable[Harness]], receiver: Receiver
) -> None:
    h = await harness_factory(secret_grace_seconds=60)
    hook = await h.webhook(receiver.status("/retry", 500, 200), secret=OLD, retry_attempts=2)
    await h.store.update_webhook("ws_test", hook.id, WebhookChanges(secret=NEW), 60_000)
    (delivery_id,) = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
    h.scheduler.start()
    await wait_status(h, delivery_id, Status.FAILED)
    h.clock.advance(3600)  # past the backoff and the grace period
    h.scheduler.wake()
    await wait_status(h, delivery_id, Status.DELIVERED)
    first, second = receiver.received("/retry")
    assert signature_counts(first) == (2, 2) and verifies(OLD, first)
    assert signature_counts(second) == (1, 1)
    assert verifies(NEW, second) and not verifies(OLD, second)
    assert first.headers["X-Webhook-Id"] == second.headers["X-Webhook-Id"]


async def test_rotation_edge_cases(
    harness_factory: Callable[..., Awaitable[Harness]], receiver: Receiver
) -> None:
    h = await harness_factory()
    hook = await h.webhook(receiver.status("/edge", 200), secret=OLD)
    h.scheduler.start()

    # The same secret again is no rotation: still one signature.
    await h.store.update_webhook("ws_test", hook.id, WebhookChanges(secret=OLD), 60_000)
    same = await deliver_one(h, receiver, "/edge")
    assert signature_counts(same) == (1, 1)

    # A zero grace period drops the old secret at once.
    await h.store.update_webhook("ws_test", hook.id, WebhookChanges(secret=NEW), 0)
    instant = await deliver_one(h, receiver, "/edge")
    assert signature_counts(instant) == (1, 1) and verifies(NEW, instant)

    # A second rotation within the grace period: the two newest secrets sign, and
    # the first one's grace ends then (only one previous secret is kept).
    third = "third-secret-0123456789"
    await h.store.update_webhook("ws_test", hook.id, WebhookChanges(secret=OLD), 60_000)
    await h.store.update_webhook("ws_test", hook.id, WebhookChanges(secret=third), 60_000)
    twice = await deliver_one(h, receiver, "/edge")
    assert signature_counts(twice) == (2, 2)
    assert verifies(third, twice) and verifies(OLD, twice) and not verifies(NEW, twice)


async def test_rotation_through_the_api_uses_secret_grace_seconds(
    tmp_path: Path, receiver: Receiver
) -> None:
    clock = ManualClock()
    delivery = {"allow_networks": ("127.0.0.0/8",), "secret_grace_seconds": 120.0}
    async with running_daemon(tmp_path, clock=clock, delivery=delivery) as d:
        headers = {"X-Api-Key": d.key}
        async with aiohttp.ClientSession(base_url=d.base_url, headers=headers) as http:
            body = {"name": "rot", "url": receiver.url("/api"), "events": ["*"], "secret": OLD}
            async with http.post("/v1/webhooks", json=body) as r:
                assert r.status == 201
                hook = (await r.json())["data"]
            async with http.patch(f"/v1/webhooks/{hook['_id']}", json={"secret": NEW}) as r:
                assert r.status == 200
                shown = (await r.json())["data"]
            assert shown["secret"].endswith("...") and NEW not in shown["secret"]

            async def send() -> Received:
                n = len(receiver.received("/api"))
                async with http.post("/v1/events", json={"type": "t", "data": {}}) as r:
                    assert r.status == 202
                return (await receiver.wait_for("/api", n + 1))[n]

            during = await send()
            assert signature_counts(during) == (2, 2)
            assert verifies(OLD, during) and verifies(NEW, during)
            clock.advance(121)
            after = await send()
            assert signature_counts(after) == (1, 1)
            assert verifies(NEW, after) and not verifies(OLD, after)
