"""Storage: the contract, and the backends that implement it."""

from __future__ import annotations

from hookd.storage.base import (
    AttemptRecord,
    DeliveryFilter,
    IdempotencyConflict,
    NewEvent,
    Page,
    QueueStats,
    QuotaExceeded,
    RecordResult,
    ReplayClaim,
    Store,
    StoreError,
    WebhookChanges,
)

__all__ = [
    "AttemptRecord",
    "DeliveryFilter",
    "IdempotencyConflict",
    "NewEvent",
    "Page",
    "QueueStats",
    "QuotaExceeded",
    "RecordResult",
    "ReplayClaim",
    "Store",
    "StoreError",
    "WebhookChanges",
]
