"""Storage: the contract, and the backends that implement it."""

from __future__ import annotations

from hookd.storage.base import (
    AttemptRecord,
    DeliveryFilter,
    IdempotencyConflict,
    Page,
    QueueStats,
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
    "Page",
    "QueueStats",
    "RecordResult",
    "ReplayClaim",
    "Store",
    "StoreError",
    "WebhookChanges",
]
