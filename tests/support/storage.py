"""What tests of a store share: a webhook with defaults, a claim's attempt record, a decision.

Everything here goes through the public ``Store`` protocol and the public
models and lifecycle functions, so the contract suite and the
backend-specific suites use the same helpers.
"""

from __future__ import annotations

import random

from hookd.config import DeliveryConfig
from hookd.lifecycle import Counters, Transition, decide
from hookd.models import ClaimedDelivery, NewWebhook, Status, Webhook
from hookd.policy import Outcome
from hookd.storage import AttemptRecord, Store

LEASE_MS = 90_000
WS = "ws_a"
# How long an idempotency key is remembered by the stores these suites open.
IDEMPOTENCY_WINDOW_MS = 86_400_000


async def make_webhook(store: Store, workspace: str = WS, **overrides: object) -> Webhook:
    fields: dict[str, object] = {
        "workspace_id": workspace,
        "name": "hook",
        "url": "https://example.com/hook",
        "events": ("*",),
        "secret": "secret-one-0123",
        "retry_attempts": 3,
        "timeout_ms": 1000,
        "created_by": "user_1",
    }
    fields.update(overrides)
    return await store.create_webhook(NewWebhook(**fields))  # type: ignore[arg-type]


def record_for(
    claim: ClaimedDelivery,
    transition: Transition,
    status_code: int | None = 200,
    *,
    error: str | None = None,
    response_body: str | None = "ok",
) -> AttemptRecord:
    """The record of one attempt of ``claim`` that ended in ``transition``."""
    return AttemptRecord(
        delivery_id=claim.delivery_id,
        lease_token=claim.lease_token,
        webhook_id=claim.webhook_id,
        number=claim.attempt_count + 1,
        started_at=0,
        duration_ms=5,
        status_code=status_code,
        error=error,
        response_body=response_body,
        outcome="2xx",
        transition=transition,
    )


def delivered() -> Transition:
    return Transition(Status.DELIVERED, None, 1, 0, None)


def first_attempt(outcome: Outcome, now_ms: int, retry_after: float | None = None) -> Transition:
    """``lifecycle.decide`` for a fresh delivery (3 retries) whose first attempt ended in ``outcome``."""
    return decide(
        Counters(0, 3, 0, None), outcome, retry_after, now_ms, DeliveryConfig(), random.Random(0)
    )
