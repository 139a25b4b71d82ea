"""Prometheus metrics, on a registry of their own per daemon instance.

Labels are bounded sets (outcome classes, statuses); no URL or id is ever a
label.  Every label combination is created at start so a series exists at
zero before its first increment, which keeps ``rate()`` and alerts honest.

Counters and the in-flight gauge move where things happen (scheduler, API).
The gauges that describe the database (queue depth, scheduling lag, size) are
written by the daemon's stats task from :meth:`Metrics.observe_queue`, so a
scrape never touches the database and never waits on it.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.registry import Collector

from hookd import __version__
from hookd.models import IngestResult, Status
from hookd.policy import METRIC_CLASSES
from hookd.storage.base import QueueStats, RateLimitStats

# The ``*_created`` companion series double the series count and are read by
# nothing in a Prometheus setup; the switch is process-wide in prometheus-client.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Webhook latencies: from a fast in-datacenter receiver (ms) up to the largest
# allowed timeoutMs (60 s).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Statuses a delivery reaches as the result of an attempt.
REACHED_STATUSES = (Status.DELIVERED, Status.FAILED, Status.RATE_LIMITED, Status.DEAD_LETTER)
# Terminal statuses retention deletes after their age.
RETAINED_STATUSES = (Status.DELIVERED, Status.DEAD_LETTER)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        # What /metrics renders: this registry, or one that adds the worker
        # processes' series to it (see workers.MergedRegistry).
        self.exposed: Collector = self.registry
        r = self.registry
        self.events_ingested = Counter(
            "hookd_events_ingested",
            "Events accepted and committed (idempotent repeats not counted).",
            registry=r,
        )
        self.deliveries_created = Counter(
            "hookd_deliveries_created", "Deliveries created by event fan-out.", registry=r
        )
        self.attempts = Counter(
            "hookd_attempts",
            "Delivery attempts by outcome class.",
            ["outcome"],
            registry=r,
        )
        self.deliveries_reached = Counter(
            "hookd_delivery_transitions",
            "Deliveries moved to a status by an attempt.",
            ["status"],
            registry=r,
        )
        self.attempt_duration = Histogram(
            "hookd_attempt_duration_seconds",
            "Duration of delivery attempts, request start to response read.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "hookd_attempts_in_flight",
            "Delivery attempts this process has in flight.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "hookd_queue_deliveries",
            "Deliveries in the database by status (refreshed every stats interval).",
            ["status"],
            registry=r,
        )
        self.leased = Gauge(
            "hookd_queue_leased_deliveries",
            "Deliveries currently claimed under a lease, by any hookd process.",
            registry=r,
        )
        self.oldest_due_age = Gauge(
            "hookd_queue_oldest_due_age_seconds",
            "How long the oldest due, unclaimed delivery has been waiting (scheduling lag);"
            " 0 when nothing is due.",
            registry=r,
        )
        self.stats_timestamp = Gauge(
            "hookd_queue_stats_timestamp_seconds",
            "Unix time the queue gauges were last read from the database.",
            registry=r,
        )
        self.webhooks_disabled = Counter(
            "hookd_webhooks_disabled",
            "Webhooks set inactive because their endpoint answered 410 Gone.",
            registry=r,
        )
        self.stale_writes = Counter(
            "hookd_attempt_results_fenced",
            "Attempt results not applied because the delivery's lease had moved on.",
            registry=r,
        )
        self.database_size = Gauge(
            "hookd_database_size_bytes",
            "Size of the database (pages times page size, free pages included).",
            registry=r,
        )
        self.requests_resent = Counter(
            "hookd_requests_resent",
            "Requests sent once more on a fresh connection because the reused"
            " keep-alive connection they went out on closed before any byte of the answer.",
            registry=r,
        )
        self.retention_deleted = Counter(
            "hookd_retention_deleted_deliveries",
            "Deliveries removed by retention, attempts with them, by the status they ended in.",
            ["status"],
            registry=r,
        )
        self.webhooks_paused = Gauge(
            "hookd_webhooks_paused",
            "Active webhooks in a 429 pause (their Retry-After not yet over).",
            registry=r,
        )
        self.rate_limited_oldest_age = Gauge(
            "hookd_rate_limited_oldest_age_seconds",
            "How long the delivery longest in the 429 lane has been there (since its first"
            " 429); 0 when the lane is empty.",
            registry=r,
        )
        self.ready = Gauge(
            "hookd_ready",
            "1 when the daemon is ready (database reachable, scheduler loop alive), as"
            " /readyz would answer; refreshed every stats interval.",
            registry=r,
        )
        self.build = Info("hookd_build", "hookd build information.", registry=r)
        self.build.info({"version": __version__, "python": platform.python_version()})
        # Memory, CPU and file descriptors of the process, as every exporter has them.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        # The labelled children, created up front (every series starts at 0)
        # and kept: looking a child up costs more than incrementing it.
        self.attempts_by_outcome = {o: self.attempts.labels(outcome=o) for o in METRIC_CLASSES}
        self.reached_by_status = {
            s: self.deliveries_reached.labels(status=s.value) for s in REACHED_STATUSES
        }
        for status in Status:
            self.queue_depth.labels(status=status.value)
        self.retention_deleted_by_status = {
            s: self.retention_deleted.labels(status=s.value) for s in RETAINED_STATUSES
        }

    def observe_ingest(self, result: IngestResult) -> None:
        """Count one ``POST /v1/events`` (or any other ingest) once it is committed."""
        if result.duplicate:
            return
        self.events_ingested.inc()
        self.deliveries_created.inc(len(result.delivery_ids))

    def observe_queue(self, stats: QueueStats, now_ms: int, database_bytes: int) -> None:
        for status in Status:
            self.queue_depth.labels(status=status.value).set(stats.by_status.get(status.value, 0))
        self.leased.set(stats.in_flight)
        lag_ms = 0 if stats.oldest_due_ms is None else max(0, now_ms - stats.oldest_due_ms)
        self.oldest_due_age.set(lag_ms / 1000)
        # When the figures were read, which on a follower is when the leader
        # published them: the stale-statistics alert sees a leader that stopped.
        read_at_ms = now_ms if stats.read_at_ms is None else stats.read_at_ms
        self.stats_timestamp.set(read_at_ms / 1000)
        self.database_size.set(database_bytes)

    def observe_rate_limits(self, stats: RateLimitStats, now_ms: int) -> None:
        self.webhooks_paused.set(stats.paused_webhooks)
        since = stats.oldest_rate_limited_since_ms
        self.rate_limited_oldest_age.set(0 if since is None else max(0, now_ms - since) / 1000)
