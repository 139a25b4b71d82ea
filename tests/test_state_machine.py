"""Property test: the delivery state machine under arbitrary interleavings.

A hypothesis ``RuleBasedStateMachine`` drives the real SQLite store and the
real ``lifecycle.decide`` through ingests, claims, attempts with arbitrary
outcomes, clock advances, lease expiry (stale workers writing late),
replays, webhook updates and deletes.  A small model remembers what each
delivery went through, and the invariants compare it with the database.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hookd.clock import ManualClock
from hookd.config import DeliveryConfig
from hookd.lifecycle import Counters, decide
from hookd.models import TERMINAL, ClaimedDelivery, NewWebhook, Status, WebhookStatus
from hookd.policy import Outcome
from hookd.storage import AttemptRecord, WebhookChanges
from hookd.storage.sqlite import SqliteStore

LEASE_MS = 90_000
CFG = DeliveryConfig(rate_limit_max_count=4, rate_limit_max_age_seconds=600)
WS = "ws_prop"
TYPES = ("a.one", "a.two", "b.one")


@dataclass
class Model:
    """What the test knows about one delivery."""

    event_id: str
    webhook_id: str
    # Outcomes applied since the delivery was created or last replayed.
    applied: list[Outcome] = field(default_factory=list)
    terminal_status: Status | None = None
    deleted: bool = False


class DeliveryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        self.clock = ManualClock()
        self.store = SqliteStore(Path(self.tmp.name) / "prop.db", self.clock)
        self.run(self.store.open())
        self.rng = random.Random(0)
        self.hooks: dict[str, int] = {}  # id -> retry_attempts
        self.deleted_hooks: set[str] = set()
        self.models: dict[str, Model] = {}
        self.claims: list[ClaimedDelivery] = []
        self.stale: list[ClaimedDelivery] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        self.tmp.cleanup()

    # -- rules -----------------------------------------------------------------------

    @rule(
        patterns=st.sampled_from([("*",), ("a.*",), ("a.one", "b.one"), ("b.*",)]),
        retries=st.integers(0, 3),
    )
    def create_webhook(self, patterns: tuple[str, ...], retries: int) -> None:
        if len(self.hooks) >= 4:
            return
        hook = self.run(
            self.store.create_webhook(
                NewWebhook(
                    WS, "h", "https://example.com/", patterns, "s3cret-000", retries, 1000, "u"
                )
            )
        )
        self.hooks[hook.id] = retries

    @rule(event_type=st.sampled_from(TYPES))
    def ingest(self, event_type: str) -> None:
        result = self.run(self.store.ingest_event(WS, event_type, {"t": event_type}))
        for delivery_id in result.delivery_ids:
            d = self.run(self.store.get_delivery(WS, delivery_id))
            self.models[delivery_id] = Model(result.event.id, d.webhook_id)

    @rule(limit=st.integers(1, 5))
    def claim(self, limit: int) -> None:
        claims = self.run(self.store.claim_due(limit, LEASE_MS, {}, 16))
        for c in claims:
            # A re-claim after lease expiry: the earlier holder is now stale.
            for old in [x for x in self.claims if x.delivery_id == c.delivery_id]:
                self.claims.remove(old)
                self.stale.append(old)
            self.claims.append(c)

    @precondition(lambda self: bool(self.claims))
    @rule(
        index=st.integers(0, 100),
        outcome=st.sampled_from(list(Outcome)),
        retry_after=st.one_of(st.none(), st.floats(0, 900)),
    )
    def attempt(self, index: int, outcome: Outcome, retry_after: float | None) -> None:
        claim = self.claims.pop(index % len(self.claims))
        self._record(claim, outcome, retry_after, expect_applied=True)

    @precondition(lambda self: bool(self.stale))
    @rule(index=st.integers(0, 100), outcome=st.sampled_from(list(Outcome)))
    def stale_worker_writes_late(self, index: int, outcome: Outcome) -> None:
        claim = self.stale.pop(index % len(self.stale))
        self._record(claim, outcome, None, expect_applied=False)

    def _record(
        self,
        claim: ClaimedDelivery,
        outcome: Outcome,
        retry_after: float | None,
        expect_applied: bool,
    ) -> None:
        model = self.models[claim.delivery_id]
        counters = Counters(
            claim.budget_used,
            claim.retry_attempts,
            claim.rate_limited_count,
            claim.rate_limited_since,
        )
        t = decide(counters, outcome, retry_after, self.clock.now_ms(), CFG, self.rng)
        record = AttemptRecord(
            claim.delivery_id,
            claim.lease_token,
            claim.webhook_id,
            claim.attempt_count + 1,
            self.clock.now_ms(),
            1,
            None,
            None,
            None,
            outcome.value,
            t,
        )
        (result,) = self.run(self.store.record_attempts([record]))
        if not expect_applied or model.deleted:
            # Fenced: a newer lease holder took over (or replay/record moved
            # the delivery on), or the webhook was deleted meanwhile.
            assert not result.applied
            return
        assert result.applied
        assert model.terminal_status is None, "a terminal delivery was changed"
        model.applied.append(outcome)
        if t.status in TERMINAL:
            model.terminal_status = t.status

    @rule(seconds=st.sampled_from([1, 5, 30, 120, 600]))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def expire_leases(self) -> None:
        self.clock.advance(LEASE_MS / 1000 + 1)

    @precondition(lambda self: bool(self.models))
    @rule(index=st.integers(0, 1000))
    def replay(self, index: int) -> None:
        delivery_id = sorted(self.models)[index % len(self.models)]
        model = self.models[delivery_id]
        before = self.run(self.store.get_delivery(WS, delivery_id))
        result = self.run(self.store.claim_for_replay(WS, delivery_id, LEASE_MS))
        assert result.found
        if before.status is not Status.DEAD_LETTER or model.deleted:
            assert result.claim is None
            after = self.run(self.store.get_delivery(WS, delivery_id))
            assert after.status is before.status
            return
        assert result.status is Status.PENDING
        model.applied = []
        model.terminal_status = None
        for old in [x for x in self.claims if x.delivery_id == delivery_id]:
            self.claims.remove(old)
            self.stale.append(old)
        if result.claim is not None:
            assert result.claim.event_id == model.event_id
            self.claims.append(result.claim)

    @precondition(lambda self: bool(self.hooks))
    @rule(index=st.integers(0, 100), active=st.booleans(), retries=st.integers(0, 3))
    def update_webhook(self, index: int, active: bool, retries: int) -> None:
        hook_id = sorted(self.hooks)[index % len(self.hooks)]
        status = WebhookStatus.ACTIVE if active else WebhookStatus.INACTIVE
        self.run(
            self.store.update_webhook(
                WS, hook_id, WebhookChanges(status=status, retry_attempts=retries), 0
            )
        )

    @precondition(lambda self: bool(self.hooks))
    @rule(index=st.integers(0, 100))
    def delete_webhook(self, index: int) -> None:
        hook_id = sorted(self.hooks)[index % len(self.hooks)]
        assert self.run(self.store.delete_webhook(WS, hook_id))
        del self.hooks[hook_id]
        self.deleted_hooks.add(hook_id)
        for model in self.models.values():
            if model.webhook_id == hook_id:
                if model.terminal_status is None:
                    model.terminal_status = Status.DEAD_LETTER
                model.deleted = True

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def every_delivery_has_exactly_one_consistent_status(self) -> None:
        with sqlite3.connect(self.store.path) as conn:
            rows = conn.execute(
                "SELECT id, status, next_attempt_at, budget_used, rate_limited_count,"
                " rate_limited_since, status_reason, event_id, lease_token FROM deliveries"
            ).fetchall()
        assert len(rows) == len(self.models)
        for delivery_id, status, next_at, budget, rl, rl_since, reason, event_id, lease in rows:
            model = self.models[delivery_id]
            st_ = Status(status)
            assert (next_at is None) == (st_ in TERMINAL)
            assert event_id == model.event_id, "replay must keep the event id"
            if st_ in TERMINAL:
                assert lease is None
            # 429s never consume retryAttempts.
            assert budget == sum(o is not Outcome.RATE_LIMITED for o in model.applied)
            assert rl == sum(o is Outcome.RATE_LIMITED for o in model.applied)
            # A terminal status never changes except by replay.
            if model.terminal_status is not None:
                assert st_ is model.terminal_status
            if st_ is Status.DEAD_LETTER:
                self._dead_letter_is_justified(model, budget, rl, rl_since, reason)

    def _dead_letter_is_justified(
        self, model: Model, budget: int, rl: int, rl_since: int | None, reason: str | None
    ) -> None:
        if model.deleted:
            return
        last = model.applied[-1] if model.applied else None
        assert last is not None, "dead letter without any attempt"
        if last in (Outcome.GONE, Outcome.BLOCKED):
            return
        if last is Outcome.RATE_LIMITED:
            assert rl >= CFG.rate_limit_max_count or (
                rl_since is not None
                and self.clock.now_ms() - rl_since >= 0
                and reason is not None
                and "rate limited" in reason
            )
            return
        assert reason is not None and "retry budget exhausted" in reason
        assert budget >= 1


TestDeliveryStateMachine = DeliveryMachine.TestCase
TestDeliveryStateMachine.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
