"""The scheduler: one supervised loop that turns due deliveries into attempts.

Each turn of the loop is one database round trip: it writes the attempts
that finished since the previous turn (attempt row + transition, fenced by
the claim's lease token) and claims the next due deliveries, in one
transaction (``Store.settle_and_claim``).  It starts one task per claim and
turns again as soon as there is room or something to write.  Room is two
limits: a global number of attempts in flight, and a number per webhook.
Webhooks at their limit are excluded inside the claim query, so a slow or
dead endpoint holds at most its own slots and never a batch.

An attempt task runs the one attempt path (``attempts.Attempts.run``: sign,
send, classify, decide), hands the record to the loop and ends.  Writing
records in the loop's round trip, rather than one write per attempt, is what
keeps the database cost per delivery small: whatever finished while the
previous round trip ran shares the next one.

Shutdown stops claiming, lets in-flight attempts run for the drain timeout,
then cancels the rest; the loop writes every record it was handed (a request
that went out is on record) and the leases of cancelled attempts are given
back, so another start (or another process) retries them at once instead of
after the lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter as Tally

import structlog

from hookd.attempts import Attempts, Finished
from hookd.clock import Clock
from hookd.config import DeliveryConfig
from hookd.lifecycle import Transition
from hookd.models import ClaimedDelivery
from hookd.storage import RecordResult, Store, StoreError

log = structlog.get_logger("hookd.scheduler")

# Most webhooks remembered as just rate limited (see Scheduler._probing).
_PROBING_MAX = 4096


class _Flight:
    """One attempt in flight: whether it still holds a slot, and whether its
    result was handed to the loop (or, for API attempts, written)."""

    __slots__ = ("claim", "holds_slot", "recorded")

    def __init__(self, claim: ClaimedDelivery) -> None:
        self.claim = claim
        self.holds_slot = True
        self.recorded = False


class _Finished:
    """A finished attempt waiting for the loop's next round trip."""

    __slots__ = ("finished", "flight")

    def __init__(self, flight: _Flight, finished: Finished) -> None:
        self.flight = flight
        self.finished = finished


class Scheduler:
    def __init__(
        self, store: Store, attempts: Attempts, config: DeliveryConfig, clock: Clock
    ) -> None:
        self.store = store
        self.attempts = attempts
        self.config = config
        self.clock = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: dict[asyncio.Task[None], _Flight] = {}
        self._per_webhook: Tally[str] = Tally()
        # Webhooks that asked for a pause, with its end: once it is over they
        # get one request at a time until a request sent after it is answered
        # with anything but another pause (oldest first, for the bound).
        # Without this every pause ended in a burst of per_webhook_concurrency
        # requests at an endpoint that had just asked for fewer.
        self._probing: dict[str, int] = {}
        # Finished attempts whose records the loop writes in its next round trip.
        self._finished_attempts: list[_Finished] = []
        # Attempts holding a concurrency slot (their HTTP exchange is not over).
        self._sending = 0
        # Claimed at the end of a full batch, their slots taken, their
        # attempts started only once the next round trip is on its way
        # (see _iterate).
        self._unsent: list[_Flight] = []
        # Monotonic time of the last completed loop iteration, for readiness.
        self.last_progress = time.monotonic()
        self._loop_task: asyncio.Task[None] | None = None

    # -- public ------------------------------------------------------------------

    def wake(self) -> None:
        """Something may be due now (new event, replay): look at the queue."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks) + len(self._unsent)

    def start(self) -> asyncio.Task[None]:
        self._loop_task = asyncio.create_task(self.run(), name="hookd-scheduler")
        return self._loop_task

    async def run(self) -> None:
        """Claim and dispatch until ``stop``; errors are logged and retried."""
        # Test sends left pending by a dead process: older than any request
        # could still be running.
        cutoff = self.clock.now_ms() - round(self.config.lease_seconds * 1000)
        try:
            ended = await self.store.end_interrupted_tests(cutoff)
        except StoreError as exc:
            log.error("scheduler.cleanup_error", error=str(exc))
        else:
            if ended:
                log.warning("scheduler.interrupted_tests_ended", count=ended)
        failures = 0
        # While stopping, the loop goes on writing records until the last
        # attempt has finished or been cancelled.
        while not self._stopping or self._tasks or self._unsent or self._finished_attempts:
            try:
                await self._iterate()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Supervision: a locked or full database, a bug in one batch —
                # none of it may end delivery for good.  Back off and go on.
                failures += 1
                if self._stopping and not self._tasks:
                    # Shutting down with a database that refuses the records:
                    # their leases expire and the deliveries are sent again.
                    log.error(
                        "scheduler.records_lost_at_stop",
                        count=len(self._finished_attempts),
                        error=str(exc),
                    )
                    self._finished_attempts.clear()
                    return
                # Claims already holding slots go out whatever failed.
                self._send_unsent()
                delay = min(30.0, 0.1 * 2 ** min(failures, 8))
                log.error(
                    "scheduler.loop_error",
                    error=str(exc),
                    error_type=type(exc).__name__,
                    retry_in_seconds=delay,
                    exc_info=not isinstance(exc, StoreError),
                )
                await self._wait_for_wake(delay)

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop claiming, drain in-flight attempts, release what did not finish."""
        timeout = self.config.drain_timeout_seconds if drain_timeout is None else drain_timeout
        self._stopping = True
        self._wake.set()
        # Claims waiting for the next round trip go out now, and drain (or
        # are cancelled and their leases released) with the rest.
        self._send_unsent()
        flights = dict(self._tasks)
        pending = set(flights)
        if pending:
            log.info("scheduler.draining", in_flight=len(pending), timeout_seconds=timeout)
            _done, pending = await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        if self._loop_task is not None:
            # The loop writes the records of every attempt that finished, then ends.
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        unfinished = [
            (flight.claim.delivery_id, flight.claim.lease_token)
            for flight in flights.values()
            if not flight.recorded
        ]
        released = 0
        try:
            released = await self.store.release(unfinished) if unfinished else 0
        except StoreError as exc:
            # Their leases end by themselves: the deliveries are only taken later.
            log.warning("scheduler.release_failed", leases=len(unfinished), error=str(exc))
        log.info("scheduler.stopped", released_leases=released, cancelled=len(pending))

    # -- the loop ------------------------------------------------------------------

    async def _iterate(self) -> None:
        cfg = self.config
        finished = self._finished_attempts
        free = cfg.concurrency - self._sending
        want = min(free, cfg.batch_size)
        if self._stopping or self.in_flight + len(finished) >= 2 * cfg.concurrency:
            # (The second bound: attempts whose records wait on a slow
            # database; claiming more would only pile up leases.)
            want = 0
        if want <= 0 and not finished:
            self._send_unsent()
            # Every slot busy is progress too: the loop is alive and waiting
            # for attempts to finish, not stuck.
            self.last_progress = time.monotonic()
            if not (self._stopping and not self._tasks):
                await self._wait_for_wake(cfg.poll_interval_seconds)
            return
        room = {
            webhook: cfg.per_webhook_concurrency - n for webhook, n in self._per_webhook.items()
        }
        for webhook in self._probing:
            room[webhook] = min(
                room.get(webhook, cfg.per_webhook_concurrency),
                1 - self._per_webhook.get(webhook, 0),
            )
        self._finished_attempts = []
        write = asyncio.ensure_future(
            self.store.settle_and_claim(
                [f.finished.record for f in finished],
                max(want, 0),
                round(cfg.lease_seconds * 1000),
                room,
                cfg.per_webhook_concurrency,
            )
        )
        # The previous batch starts after the round trip's task, so that the
        # task runs first and hands the database thread its work before this
        # thread spends 10-15 ms starting the batch's requests (see below).
        self._send_unsent()
        try:
            results, claims = await asyncio.shield(write)
        except asyncio.CancelledError:
            # Cancelled (shutdown) while the transaction runs on the database
            # thread: it commits regardless, so account for it before leaving.
            with contextlib.suppress(Exception):
                results, claims = await write
                self._settle(finished, results)
                await self.store.release([(c.delivery_id, c.lease_token) for c in claims])
            raise
        except BaseException:
            # Nothing was written: the records go into the next round trip.
            self._finished_attempts[:0] = finished
            raise
        self.last_progress = time.monotonic()
        # (Observing this while the next round trip runs was measured: the
        # two threads then contend for the GIL, 5-10% more CPU a delivery and
        # fewer deliveries/s.)
        self._settle(finished, results)
        if want > 0 and len(claims) >= want and not self._stopping:
            # Possibly more due right now: claim again at once.  The claim runs
            # on the database thread while this thread sends the batch just
            # claimed, which therefore only takes its slots here: its attempts
            # start in the next iteration, right after the round trip's task
            # is created.  Started here, each attempt's first step (take a
            # connection, write the request) would run before that task, in
            # the order they were scheduled, leaving the database thread idle
            # for those 10-15 ms of every batch (measured: round trips seen by
            # the loop 32 ms against 26, 5,900-6,400 deliveries/s against
            # 6,900-7,900).  A sleep(0) is no substitute: under uvloop it
            # returns only once the whole batch has been answered.
            self._unsent = [self._take_slot(claim) for claim in claims]
            return
        for claim in claims:
            self._send(self._take_slot(claim))
        if want <= 0 or self._finished_attempts:
            return
        if self._wake.is_set():
            # Woken while the round trip ran (mostly an ingest that committed
            # after this turn had chosen): what woke it is due now, so the
            # next turn claims it at once, without asking when work is due.
            self._wake.clear()
            return
        next_due = await self.store.next_due_at()
        now = self.clock.now_ms()
        if next_due is not None and next_due > now:
            timeout = min(cfg.poll_interval_seconds, (next_due - now) / 1000)
        else:
            # Nothing scheduled, or due work we may not take now (its webhook
            # is at its limit or paused): a finishing attempt, an ingest or a
            # replay wakes us; the poll interval bounds the wait otherwise.
            timeout = cfg.poll_interval_seconds
        await self._wait_for_wake(timeout)

    def _settle(self, finished: list[_Finished], results: list[RecordResult]) -> None:
        for item, recorded in zip(finished, results, strict=True):
            # A 429 or 410 kept its slot until its pause or deactivation was
            # written (in the same transaction as the claim that follows).
            self._release_slot(item.flight)
            try:
                self.attempts.observe(item.flight.claim, item.finished, recorded)
            except Exception:
                # Metrics and logs only: every slot is given back whatever
                # goes wrong here.
                log.exception("scheduler.observe_error", delivery_id=item.flight.claim.delivery_id)

    async def _wait_for_wake(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    def _take_slot(self, claim: ClaimedDelivery) -> _Flight:
        self._per_webhook[claim.webhook_id] += 1
        self._sending += 1
        return _Flight(claim)

    def _send(self, flight: _Flight) -> None:
        task = asyncio.create_task(self._run_attempt(flight))
        self._tasks[task] = flight
        task.add_done_callback(self._task_done)

    def _send_unsent(self) -> None:
        unsent, self._unsent = self._unsent, []
        for flight in unsent:
            self._send(flight)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        flight = self._tasks.pop(task)
        if not flight.recorded:
            # Failed or cancelled before its exchange ended: nothing to write.
            self._release_slot(flight)
        self._wake.set()

    def _release_slot(self, flight: _Flight) -> None:
        if not flight.holds_slot:
            return
        flight.holds_slot = False
        self._sending -= 1
        webhook_id = flight.claim.webhook_id
        self._per_webhook[webhook_id] -= 1
        if self._per_webhook[webhook_id] <= 0:
            del self._per_webhook[webhook_id]
        self._wake.set()

    def _pace(self, webhook_id: str, started_at: int, transition: Transition) -> None:
        """Note what an answer says of ``webhook_id``'s pace (see _probing)."""
        pause_until = transition.pause_webhook_until
        if pause_until is not None:
            pause_until = max(pause_until, self._probing.pop(webhook_id, pause_until))
            self._probing[webhook_id] = pause_until
            if len(self._probing) > _PROBING_MAX:
                # Webhooks deleted while paused never answer again.
                del self._probing[next(iter(self._probing))]
        elif started_at >= self._probing.get(webhook_id, started_at + 1):
            # Answers to requests sent before the pause ended say nothing of it.
            del self._probing[webhook_id]

    async def _run_attempt(self, flight: _Flight) -> None:
        claim = flight.claim
        try:
            finished = await self.attempts.run(claim)
            transition = finished.transition
            self._pace(claim.webhook_id, finished.record.started_at, transition)
            if (
                transition.pause_webhook_until is None
                and transition.deactivate_webhook_reason is None
            ):
                # The exchange is over: the endpoint's slot is free for its next
                # delivery while this one's record waits for the loop (the lease
                # still guards the delivery itself).  A 429 or 410 keeps the slot
                # until its pause or deactivation is in the database, so no claim
                # can slip past it.
                self._release_slot(flight)
            # No await from the response to here: a cancellation either comes
            # before the exchange ended (lease released at stop) or not at all.
            flight.recorded = True
            self._finished_attempts.append(_Finished(flight, finished))
            self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The lease stays; the delivery is retried when it expires.
            log.error(
                "delivery.attempt_error",
                delivery_id=claim.delivery_id,
                webhook_id=claim.webhook_id,
                error=str(exc),
                exc_info=not isinstance(exc, StoreError),
            )
