"""One attempt of one delivery: sign, send, classify, decide, record, observe.

The one attempt path, used by the scheduler's loop, by the API's replay and
by its test send:

- :meth:`Attempts.run` signs the request (a fresh timestamp every time),
  sends it, classifies the answer (``policy.classify``), asks ``lifecycle``
  what it means for the delivery and returns the record the store writes;
- the scheduler hands that record to its loop, whose next round trip writes
  it with the next claim, and calls :meth:`Attempts.observe` once written;
- :meth:`Attempts.attempt` (replay, test send) writes it at once
  (``Store.record_attempts``, shielded from cancellation: the request went
  out, so it is on record) and observes it.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import structlog

from hookd.clock import Clock
from hookd.config import DeliveryConfig
from hookd.lifecycle import Counters, Transition, decide, test_send_result
from hookd.metrics import Metrics
from hookd.models import ClaimedDelivery, Status
from hookd.policy import Outcome, classify, parse_retry_after
from hookd.sender import Sender, SendResult, signature_headers
from hookd.storage import AttemptRecord, RecordResult, Store

log = structlog.get_logger("hookd.attempts")


@dataclass(frozen=True, slots=True)
class Finished:
    """An attempt whose exchange is over: what the store writes, and what was answered."""

    record: AttemptRecord
    result: SendResult

    @property
    def transition(self) -> Transition:
        return self.record.transition


@dataclass(frozen=True, slots=True)
class AttemptReport:
    """An attempt as written: for the API's answer."""

    finished: Finished
    recorded: RecordResult

    @property
    def result(self) -> SendResult:
        return self.finished.result

    @property
    def status(self) -> Status:
        """The delivery's status now: the transition's, or what fenced it."""
        if self.recorded.applied or self.recorded.status is None:
            return self.finished.transition.status
        return self.recorded.status


class Attempts:
    def __init__(
        self,
        store: Store,
        sender: Sender,
        config: DeliveryConfig,
        clock: Clock,
        metrics: Metrics,
        rng: random.Random,
    ) -> None:
        self.store = store
        self.sender = sender
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.rng = rng

    async def run(self, claim: ClaimedDelivery, *, test: bool = False) -> Finished:
        """Send ``claim`` once and decide what the answer means; nothing is written yet.

        ``test``: a test send, attempted once and then ended (never retried,
        never a webhook side effect).
        """
        started_at = self.clock.now_ms()
        timestamp = started_at // 1000
        headers = signature_headers(claim.event_id, timestamp, claim.body, claim.secrets)
        headers["X-Webhook-Event"] = claim.event_type
        self.metrics.in_flight.inc()
        try:
            result = await self.sender.send(claim.url, claim.body, headers, claim.timeout_ms)
        finally:
            self.metrics.in_flight.dec()
        if result.internal and not self.config.record_internal_response_bodies:
            # Only [delivery] allow_networks lets us reach this address, and every
            # tenant can aim at it: what it answered is not theirs to read.
            result = result._replace(body=None)
        now = self.clock.now_ms()
        verdict = classify(result.status_code, result.error, result.retry_after is not None)
        counters = Counters.of(claim)
        if test:
            transition = test_send_result(verdict.outcome is Outcome.DELIVERED, counters)
        else:
            retry_after = None
            if verdict.outcome is Outcome.RATE_LIMITED:
                retry_after = parse_retry_after(
                    result.retry_after, now, self.config.retry_after_max_seconds
                )
            transition = decide(counters, verdict.outcome, retry_after, now, self.config, self.rng)
        record = AttemptRecord(
            delivery_id=claim.delivery_id,
            lease_token=claim.lease_token,
            webhook_id=claim.webhook_id,
            number=claim.attempt_count + 1,
            started_at=started_at,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            error=result.error_text,
            response_body=result.body,
            outcome=verdict.metric_class,
            transition=transition,
        )
        return Finished(record, result)

    async def attempt(self, claim: ClaimedDelivery, *, test: bool = False) -> AttemptReport:
        """Send ``claim`` once, write the attempt at once, observe it."""
        finished = await self.run(claim, test=test)
        write = asyncio.ensure_future(self.store.record_attempts([finished.record]))
        try:
            (recorded,) = await asyncio.shield(write)
        except asyncio.CancelledError:
            # Shutdown caught us mid-write: the request already went out, so
            # finish recording it before letting the cancellation through.
            await write
            raise
        self.observe(claim, finished, recorded, test=test)
        return AttemptReport(finished, recorded)

    def observe(
        self,
        claim: ClaimedDelivery,
        finished: Finished,
        recorded: RecordResult,
        *,
        test: bool = False,
    ) -> None:
        """Metrics and the log line of a written attempt.

        A test send is logged but not counted: its failure says nothing of
        the webhook's deliveries (and must not look like a dead letter).
        """
        m = self.metrics
        record, result, transition = finished.record, finished.result, finished.transition
        fields = {
            "delivery_id": claim.delivery_id,
            "webhook_id": claim.webhook_id,
            "event_id": claim.event_id,
            "attempt": record.number,
            "status_code": result.status_code,
            "error": result.error_text,
            "duration_ms": result.duration_ms,
            "outcome": record.outcome,
            "status": transition.status.value,
        }
        if test:
            log.info("delivery.test_attempt", applied=recorded.applied, **fields)
            return
        m.attempts_by_outcome[record.outcome].inc()
        m.attempt_duration.observe(result.duration_ms / 1000)
        if not recorded.applied:
            m.stale_writes.inc()
            # The lease moved on (expired and re-claimed, or the webhook was
            # deleted meanwhile): surfaced, never silently dropped.
            log.warning(
                "delivery.write_fenced",
                current_status=recorded.status and recorded.status.value,
                **fields,
            )
            return
        m.reached_by_status[transition.status].inc()
        if transition.deactivate_webhook_reason:
            m.webhooks_disabled.inc()
            log.warning(
                "webhook.disabled",
                webhook_id=claim.webhook_id,
                reason=transition.deactivate_webhook_reason,
            )
        if transition.next_attempt_at is not None:
            fields["next_attempt_in_ms"] = transition.next_attempt_at - self.clock.now_ms()
        if transition.dead_letter_reason:
            fields["reason"] = transition.dead_letter_reason
        # Plain successes at debug: at thousands a second, a line each would
        # be most of a day's logs; failures and what they change at info.
        if transition.status is Status.DELIVERED:
            log.debug("delivery.attempt", **fields)
        else:
            log.info("delivery.attempt", **fields)
