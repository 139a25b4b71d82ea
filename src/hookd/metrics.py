"""Prometheus metrics, on a registry of their own per daemon instance.

Labels are bounded sets (outcome classes, statuses); no URL or id is ever a
label.  Every label combination is created at start so a series exists at
zero before its first increment, which keeps ``rate()`` and alerts honest.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from hookd import __version__
from hookd.models import Status
from hookd.policy import METRIC_CLASSES

# Webhook latencies: from a fast in-datacenter receiver (ms) up to the largest
# allowed timeoutMs (60 s).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Statuses a delivery reaches as the result of an attempt.
REACHED_STATUSES = (Status.DELIVERED, Status.FAILED, Status.RATE_LIMITED, Status.DEAD_LETTER)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_ingested = Counter(
            "hookd_events_ingested", "Events accepted and committed.", registry=r
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
            "hookd_deliveries_transitions",
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
            "hookd_attempts_in_flight", "Delivery attempts currently in flight.", registry=r
        )
        self.queue_depth = Gauge(
            "hookd_deliveries", "Deliveries in the database by status.", ["status"], registry=r
        )
        self.oldest_due_age = Gauge(
            "hookd_oldest_due_delivery_age_seconds",
            "How long the oldest due, unclaimed delivery has been waiting (scheduling lag).",
            registry=r,
        )
        self.webhooks_disabled = Counter(
            "hookd_webhooks_disabled_gone",
            "Webhooks set inactive because their endpoint answered 410 Gone.",
            registry=r,
        )
        self.stale_writes = Counter(
            "hookd_fenced_writes",
            "Attempt results not applied because the delivery's lease had moved on.",
            registry=r,
        )
        self.database_size = Gauge(
            "hookd_database_size_bytes", "Size of the database file.", registry=r
        )
        self.retention_deleted = Counter(
            "hookd_retention_deleted_deliveries",
            "Delivered deliveries removed by retention.",
            registry=r,
        )
        self.build = Info("hookd_build", "hookd build information.", registry=r)
        self.build.info({"version": __version__})
        for outcome in METRIC_CLASSES:
            self.attempts.labels(outcome=outcome)
        for status in REACHED_STATUSES:
            self.deliveries_reached.labels(status=status.value)
        for status in Status:
            self.queue_depth.labels(status=status.value)
