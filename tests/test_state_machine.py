"""Property test: the delivery state machine under arbitrary interleavings.

A hypothesis ``RuleBasedStateMachine`` drives the real SQLite store and the
real ``lifecycle.decide`` through ingests, attempts with arbitrary outcomes,
time passing, lease expiry (stale workers finishing late), replays, webhook
updates and deletes.  Attempts are written as the scheduler writes
them: two schedulers (two stores on one file, as ``serve`` and a delivery
worker) take turns, each turn's one ``settle_and_claim`` recording the
attempts that finished since, stale leases among them, and claiming the next
batch within each webhook's room.  A small model remembers what
each delivery went through and who holds its lease, and the invariants
compare it with the database.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from hookd.clock import ManualClock
from hookd.config import DeliveryConfig
from hookd.lifecycle import Counters, decide
from hookd.models import TERMINAL, ClaimedDelivery, NewWebhook, Status, WebhookStatus
from hookd.policy import Outcome
from hookd.storage import AttemptRecord, NewEvent, WebhookChanges
from hookd.storage.sqlite import SqliteStore

LEASE_MS = 90_000
CFG = DeliveryConfig(rate_limit_max_count=4, rate_limit_max_age_seconds=600)
WS = "ws_prop"
TYPES = ("a.one", "a.two", "b.one")
# Attempts of one webhook a scheduler has in flight at most (its per-webhook concurrency).
PER_WEBHOOK = 2
SCHEDULERS = 2


class Flight(NamedTuple):
    """An attempt under way: the scheduler that claimed it, and its claim."""

    scheduler: int
    claim: ClaimedDelivery


@dataclass
class Model:
    """What the test knows about one delivery."""

    event_id: str
    webhook_id: str
    # Outcomes applied since the delivery was created or last replayed.
    applied: list[Outcome] = field(default_factory=list)
    terminal_status: Status | None = None
    deleted: bool = False
    attempts: int = 0  # attempts on record, applied or fenced


class DeliveryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        self.clock = ManualClock()
        path = Path(self.tmp.name) / "prop.db"
        # One store a scheduler; the first also serves the API's side.
        self.stores = [SqliteStore(path, self.clock) for _ in range(SCHEDULERS)]
        for store in self.stores:
            self.run(store.open())
        self.store = self.stores[0]
        self.rng = random.Random(0)
        self.hooks: dict[str, int] = {}  # id -> retry_attempts
        self.models: dict[str, Model] = {}
        # The lease each delivery's database row holds (what claims, records,
        # replays and deletions did to it).
        self.leases: dict[str, str] = {}
        self.claims: list[Flight] = []  # attempts under way
        self.stale: list[Flight] = []  # attempts whose lease was taken over since

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        for store in self.stores:
            self.run(store.close())
        self.loop.close()
        self.tmp.cleanup()

    # -- rules -----------------------------------------------------------------------

    @initialize(retries=st.integers(0, 3), events=st.integers(2, 8))
    def a_webhook_with_work(self, retries: int, events: int) -> None:
        self.create_webhook(("*",), retries)
        self.ingest(TYPES[0], events)

    @precondition(lambda self: len(self.hooks) < 4)
    @rule(
        patterns=st.sampled_from([("*",), ("a.*",), ("a.one", "b.one"), ("b.*",)]),
        retries=st.integers(0, 3),
    )
    def create_webhook(self, patterns: tuple[str, ...], retries: int) -> None:
        hook = self.run(
            self.store.create_webhook(
                NewWebhook(
                    WS, "h", "https://example.com/", patterns, "s3cret-000", retries, 1000, "u"
                )
            )
        )
        self.hooks[hook.id] = retries

    @rule(event_type=st.sampled_from(TYPES), count=st.integers(1, 3))
    def ingest(self, event_type: str, count: int) -> None:
        events = [NewEvent(event_type, {"t": event_type, "n": n}) for n in range(count)]
        for result in self.run(self.store.ingest_events(WS, events)):
            for delivery_id in result.delivery_ids:
                d = self.run(self.store.get_delivery(WS, delivery_id))
                self.models[delivery_id] = Model(result.event.id, d.webhook_id)

    @rule(
        # The time since the last turn (LEASE_MS + 1 s: every lease taken so far expired).
        waited=st.sampled_from([0, 1, 5, 30, LEASE_MS // 1000 + 1, 600]),
        scheduler=st.integers(0, SCHEDULERS - 1),
        limit=st.integers(0, 5),
        finishing=st.lists(
            st.tuples(
                st.integers(0, 100),
                st.sampled_from(list(Outcome)),
                st.one_of(st.none(), st.floats(0, 900)),
            ),
            max_size=4,
        ),
    )
    def turn(
        self,
        waited: int,
        scheduler: int,
        limit: int,
        finishing: list[tuple[int, Outcome, float | None]],
    ) -> None:
        """A scheduler's round trip, ``waited`` seconds after the last one: the attempts
        that finished since (some of its flights, stale ones among them) recorded at
        once, its next batch claimed."""
        self.clock.advance(waited)
        flights = [f for f in self.claims + self.stale if f.scheduler == scheduler]
        finished: list[tuple[AttemptRecord, Outcome]] = []
        for index, outcome, retry_after in finishing[: len(flights)]:
            flight = flights.pop(index % len(flights))
            (self.claims if flight in self.claims else self.stale).remove(flight)
            finished.append((self._record(flight.claim, outcome, retry_after), outcome))
        expected = []
        for record, _ in finished:
            # Applied where the record's lease still holds; the first record
            # on a lease spends it.
            current = self.leases.get(record.delivery_id) == record.lease_token
            if current:
                del self.leases[record.delivery_id]
            expected.append(current)
        busy = Counter(f.claim.webhook_id for f in self.claims if f.scheduler == scheduler)
        room = {hook: PER_WEBHOOK - n for hook, n in busy.items()}
        results, claims = self.run(
            self.stores[scheduler].settle_and_claim(
                [record for record, _ in finished], limit, LEASE_MS, room, PER_WEBHOOK
            )
        )
        assert [(r.delivery_id, r.applied) for r in results] == [
            (record.delivery_id, applied)
            for (record, _), applied in zip(finished, expected, strict=True)
        ]
        for (record, outcome), result in zip(finished, results, strict=True):
            model = self.models[record.delivery_id]
            model.attempts += 1  # the request went out: on record either way
            if not result.applied:
                # Fenced: a newer lease holder took over, or a replay or the
                # webhook's deletion moved the delivery on.
                now = self.run(self.store.get_delivery(WS, record.delivery_id))
                assert result.status is now.status
                continue
            assert result.status is record.transition.status
            assert model.terminal_status is None, "a terminal delivery was changed"
            model.applied.append(outcome)
            if record.transition.status in TERMINAL:
                model.terminal_status = record.transition.status
        self._claimed(scheduler, claims, limit, room)

    def _claimed(
        self, scheduler: int, claims: list[ClaimedDelivery], limit: int, room: dict[str, int]
    ) -> None:
        assert len(claims) <= limit
        per_hook = Counter(c.webhook_id for c in claims)
        assert all(n <= room.get(hook, PER_WEBHOOK) for hook, n in per_hook.items())
        now = self.clock.now_ms()
        for hook_id in per_hook:
            # Only a webhook that may send: active, not deleted, not paused
            # (the turn's own records' pauses and deactivations included).
            hook = self.run(self.store.get_webhook(None, hook_id))
            assert hook is not None and hook.status is WebhookStatus.ACTIVE
            assert hook.paused_until is None or hook.paused_until <= now
        for c in claims:
            assert self.models[c.delivery_id].terminal_status is None
            # A re-claim after lease expiry: the earlier holder is now stale.
            self._taken_over(c.delivery_id)
            self.claims.append(Flight(scheduler, c))
            self.leases[c.delivery_id] = c.lease_token

    def _taken_over(self, delivery_id: str) -> None:
        for old in [f for f in self.claims if f.claim.delivery_id == delivery_id]:
            self.claims.remove(old)
            self.stale.append(old)

    def _record(
        self, claim: ClaimedDelivery, outcome: Outcome, retry_after: float | None
    ) -> AttemptRecord:
        t = decide(Counters.of(claim), outcome, retry_after, self.clock.now_ms(), CFG, self.rng)
        return AttemptRecord(
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
        self._taken_over(delivery_id)
        self.leases.pop(delivery_id, None)
        if result.claim is not None:
            assert result.claim.event_id == model.event_id
            # (The API attempts a replay itself; here the first scheduler records it.)
            self.claims.append(Flight(0, result.claim))
            self.leases[delivery_id] = result.claim.lease_token

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
        for delivery_id, model in self.models.items():
            if model.webhook_id == hook_id:
                if model.terminal_status is None:
                    # Ended, and any lease in flight with it.
                    model.terminal_status = Status.DEAD_LETTER
                    self.leases.pop(delivery_id, None)
                model.deleted = True

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def every_delivery_has_exactly_one_consistent_status(self) -> None:
        with sqlite3.connect(self.store.path) as conn:
            rows = conn.execute(
                "SELECT id, status, next_attempt_at, budget_used, rate_limited_count,"
                " rate_limited_since, status_reason, event_id, lease_token FROM deliveries"
            ).fetchall()
            attempts = dict(conn.execute("SELECT delivery_id, count(*) FROM attempts GROUP BY 1"))
        conn.close()
        assert len(rows) == len(self.models)
        for delivery_id, status, next_at, budget, rl, rl_since, reason, event_id, lease in rows:
            model = self.models[delivery_id]
            st_ = Status(status)
            assert (next_at is None) == (st_ in TERMINAL)
            assert event_id == model.event_id, "replay must keep the event id"
            assert lease == self.leases.get(delivery_id), "a lease the model does not know"
            if st_ in TERMINAL:
                assert lease is None
            # Every attempt is on record, fenced or not, and only once.
            assert attempts.get(delivery_id, 0) == model.attempts
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
