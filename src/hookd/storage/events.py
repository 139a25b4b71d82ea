"""What an ingest writes, planned in Python the same way by every backend.

An ingest group (single events and batches that arrived together) becomes
rows: each event with its id and its body, serialized once and sent as is by
every attempt, and one delivery per subscribed active webhook (the fan-out).
The idempotency rule lives here too: a key used within the window returns the
original event, unless the type or the data differ.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from hookd.clock import Clock
from hookd.ids import iso_ms, new_id
from hookd.models import Event, IngestResult, subscribes
from hookd.storage.base import IdempotencyConflict, QuotaExceeded
from hookd.storage.groupcommit import GroupCommit

# One encoder for every event body: json.dumps with options builds a new one per call.
_BODY_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_body(
    event_id: str, workspace_id: str, event_type: str, data: Any, created_at_iso: str
) -> str:
    """The event body every attempt sends, as JSON text (stored as its UTF-8 bytes)."""
    return _BODY_ENCODER.encode(
        {
            "id": event_id,
            "type": event_type,
            "createdAt": created_at_iso,
            "workspaceId": workspace_id,
            "data": data,
        }
    )


def same_data(a: Any, b: Any) -> bool:
    """Whether two events' data are the same JSON (key order aside)."""

    def canonical(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    return canonical(a) == canonical(b)


class IngestItem:
    """One queued ingest: a single event, or a batch that is stored whole or not at all."""

    __slots__ = ("batch", "events", "workspace_id")

    def __init__(
        self,
        workspace_id: str,
        events: Sequence[tuple[str, Any, str | None]],
        batch: bool,
    ) -> None:
        self.workspace_id = workspace_id
        self.events = events  # (type, data, idempotency key)
        # A batch's errors name the event (events[3].data: ...).
        self.batch = batch

    @property
    def keyed(self) -> bool:
        return any(key is not None for _, _, key in self.events)


class PlannedEvent(NamedTuple):
    id: str
    workspace: str
    type: str
    body: str  # JSON text; stored as its UTF-8 bytes
    key: str | None


class PlannedDelivery(NamedTuple):
    id: str
    workspace: str
    event: str
    webhook: str
    type: str


# A workspace's active subscriptions: [(webhook id, patterns)], oldest webhook first.
Subscriptions = Sequence[tuple[str, tuple[str, ...]]]
# Rows (about) one group commit writes at most, unless one item alone is more:
# other workspaces' ingests and the scheduler then wait for one write at a
# time of that size, not for a whole group of large requests.
GROUP_ROWS = 10_000
# What fails one item of a group without failing the others.
ITEM_ERRORS = (ValueError, TypeError, IdempotencyConflict, QuotaExceeded)
# An item's results, or why it failed.
ItemResult = list[IngestResult] | Exception
# The event that took (workspace, key) within the window, with its data, or None.
Earlier = Callable[[str, str], IngestResult | None]


class GroupPlan:
    """The rows of an ingest group, item by item; an item that fails adds nothing."""

    __slots__ = (
        "_earlier",
        "_keys",
        "_max_deliveries",
        "_subscriptions",
        "deliveries",
        "events",
        "now",
        "now_iso",
    )

    def __init__(
        self,
        now: int,
        subscriptions: Mapping[str, Subscriptions],
        earlier: Earlier | None = None,
        *,
        max_deliveries: int | None = None,
    ) -> None:
        self.now = now
        # Deliveries one item (one request) may create: [quotas] deliveries_per_request.
        self._max_deliveries = max_deliveries
        self.now_iso = iso_ms(now)
        self._subscriptions = subscriptions
        self._earlier = earlier
        # Keys taken earlier in this group (their rows are not stored yet),
        # with each event's data.
        self._keys: dict[tuple[str, str], tuple[IngestResult, Any]] = {}
        self.events: list[PlannedEvent] = []
        self.deliveries: list[PlannedDelivery] = []

    def add(self, item: IngestItem) -> list[IngestResult]:
        """Plan ``item``'s rows and return its results; raises what makes it fail."""
        ws = item.workspace_id
        hooks = self._subscriptions[ws]
        now = self.now
        events: list[PlannedEvent] = []
        deliveries: list[PlannedDelivery] = []
        taken: dict[tuple[str, str], tuple[IngestResult, Any]] = {}
        results: list[IngestResult] = []
        for index, (event_type, data, key) in enumerate(item.events):
            if key is not None:
                original = taken.get((ws, key)) or self._original(ws, key)
                if original is not None:
                    results.append(_repeat(item, index, original, event_type, data))
                    continue
            event_id = new_id(now)
            try:
                body = event_body(event_id, ws, event_type, data, self.now_iso)
                encoded = body.encode("utf-8")
            except (ValueError, TypeError) as exc:
                if item.batch:
                    kind = TypeError if isinstance(exc, TypeError) else ValueError
                    raise kind(f"events[{index}].data: {exc}") from exc
                raise
            events.append(PlannedEvent(event_id, ws, event_type, body, key))
            ids = []
            for hook_id, patterns in hooks:
                if subscribes(patterns, event_type):
                    delivery_id = new_id(now)
                    ids.append(delivery_id)
                    deliveries.append(
                        PlannedDelivery(delivery_id, ws, event_id, hook_id, event_type)
                    )
            if self._max_deliveries is not None and len(deliveries) > self._max_deliveries:
                raise QuotaExceeded(
                    "deliveries_per_request",
                    f"the request would create more than {self._max_deliveries} deliveries"
                    " (its events times the active webhooks subscribed to each)",
                    status=413,
                )
            result = IngestResult(
                Event(event_id, ws, event_type, encoded, key, now), tuple(ids), duplicate=False
            )
            if key is not None:
                taken[(ws, key)] = (result, data)
            results.append(result)
        self.events.extend(events)
        self.deliveries.extend(deliveries)
        self._keys.update(taken)
        return results

    def add_all(self, items: Sequence[IngestItem]) -> list[ItemResult]:
        """:meth:`add` each item: its results, or the error that failed it alone."""
        results: list[ItemResult] = []
        for item in items:
            try:
                results.append(self.add(item))
            except ITEM_ERRORS as exc:
                results.append(exc)
        return results

    def _original(self, ws: str, key: str) -> tuple[IngestResult, Any] | None:
        taken = self._keys.get((ws, key))
        if taken is not None or self._earlier is None:
            return taken
        found = self._earlier(ws, key)
        return (found, _NOT_LOADED) if found is not None else None


# Stands for "the original's data, not parsed yet" (None is valid JSON data).
_NOT_LOADED: Any = object()


def _repeat(
    item: IngestItem,
    index: int,
    original: tuple[IngestResult, Any],
    event_type: str,
    data: Any,
) -> IngestResult:
    """The original event for a repeated key, or IdempotencyConflict if it differs."""
    result, original_data = original
    where = f"events[{index}].idempotencyKey" if item.batch else "idempotencyKey"
    position = index if item.batch else None
    if result.event.type != event_type:
        raise IdempotencyConflict(
            f"{where}: already used for an event of another type", index=position, differs="type"
        )
    if original_data is _NOT_LOADED:
        original_data = json.loads(result.event.body).get("data")
    if not same_data(original_data, data):
        raise IdempotencyConflict(
            f"{where}: already used for an event with other data", index=position, differs="data"
        )
    return IngestResult(result.event, result.delivery_ids, duplicate=True)


class SubscriptionCache:
    """Each workspace's active subscriptions, as ingest plans its fan-out from them.

    Per workspace: the text the backend's INGEST statement compares with the
    table (a webhook created, changed, disabled or deleted since makes the
    statement write nothing), and the parsed ``[(webhook id, patterns)]``.
    Entries are replaced whole; one gone stale is caught by that comparison.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._entries: dict[str, tuple[str, Subscriptions]] = {}

    def missing(self, workspaces: Sequence[str], *, fresh: bool = False) -> list[str]:
        """Which of ``workspaces`` to read (all when ``fresh``, or when it would overflow)."""
        absent = list(workspaces) if fresh else [w for w in workspaces if w not in self._entries]
        if absent and len(self._entries) + len(absent) > self._capacity:
            self._entries.clear()
            return list(workspaces)
        return absent

    def learn(self, workspace: str, text: str) -> None:
        """Take ``text`` (a JSON array of [webhook id, patterns as JSON text]) as read."""
        hooks = [(hook_id, tuple(json.loads(p))) for hook_id, p in json.loads(text)]
        self._entries[workspace] = (text, hooks)

    def weight(self, item: IngestItem) -> int:
        """About how many rows ``item`` writes: its events, each times its workspace's
        webhooks when they are known (an upper bound; the plan gives the truth)."""
        entry = self._entries.get(item.workspace_id)
        return len(item.events) * max(1, len(entry[1]) if entry is not None else 1)

    def forget(self, workspaces: Sequence[str]) -> None:
        for workspace in workspaces:
            self._entries.pop(workspace, None)

    def known(self, workspaces: Sequence[str]) -> dict[str, tuple[str, Subscriptions]] | None:
        """The entries of ``workspaces``, or None when one is not cached."""
        found = {}
        for workspace in workspaces:
            entry = self._entries.get(workspace)
            if entry is None:
                return None
            found[workspace] = entry
        return found


class GroupedIngest:
    """What every backend's ingest shares: items queue for a group commit, and
    fan-out is planned from a cache of each workspace's subscriptions.

    A backend implements ``_commit``: one group's items, each answered with its
    results or its own error (``ItemResult``).
    """

    def __init__(
        self, clock: Clock, idempotency_window_ms: int, max_deliveries: int | None
    ) -> None:
        self._clock = clock
        self._idempotency_window_ms = idempotency_window_ms
        self._max_deliveries = max_deliveries
        self._subscriptions = SubscriptionCache()
        self._group: GroupCommit[IngestItem, list[IngestResult]] = GroupCommit(
            self._commit, max_batch=512, weigh=self._subscriptions.weight, max_weight=GROUP_ROWS
        )

    async def submit(self, item: IngestItem) -> list[IngestResult]:
        return await self._group.submit(item)

    async def close(self) -> None:
        """Wait for what was submitted."""
        await self._group.drain()

    async def _commit(self, items: list[IngestItem]) -> list[ItemResult]:
        raise NotImplementedError
