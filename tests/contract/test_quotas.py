"""The contract of quotas: a request beyond one is refused whole, nothing of it stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hookd.clock import ManualClock
from hookd.storage import DeliveryFilter, NewEvent, QuotaExceeded, Store
from hookd.storage.composed import Quotas
from tests.support.backends import BACKENDS, fresh_store
from tests.support.storage import WS, make_webhook


@pytest.fixture(params=BACKENDS)
async def limited_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Store]:
    quotas = Quotas(webhooks_per_workspace=3, deliveries_per_request=6)
    async with fresh_store(request.param, request, tmp_path, clock, quotas) as store:
        yield store


async def test_a_workspace_has_at_most_its_quota_of_webhooks(limited_store: Store) -> None:
    s = limited_store
    hooks = [await make_webhook(s) for _ in range(3)]
    with pytest.raises(QuotaExceeded) as refused:
        await make_webhook(s)
    assert (refused.value.quota, refused.value.status) == ("webhooks_per_workspace", 429)
    assert str(refused.value).startswith("webhooks_per_workspace: ")
    assert len((await s.list_webhooks(WS, 10)).items) == 3
    # Another workspace has its own quota; a deleted webhook frees its place.
    await make_webhook(s, workspace="ws_b")
    await s.delete_webhook(WS, hooks[0].id)
    await make_webhook(s)


async def test_a_request_beyond_the_deliveries_quota_stores_nothing(limited_store: Store) -> None:
    s = limited_store
    for _ in range(3):
        await make_webhook(s)
    # 2 events x 3 webhooks = 6: at the quota.
    accepted = await s.ingest_events(WS, [NewEvent("t", {"i": i}) for i in range(2)])
    assert sum(len(r.delivery_ids) for r in accepted) == 6
    with pytest.raises(QuotaExceeded) as refused:
        await s.ingest_events(WS, [NewEvent("t", {"i": i}) for i in range(3)])
    assert (refused.value.quota, refused.value.status) == ("deliveries_per_request", 413)
    # None of the refused batch was stored; a single event stays within.
    assert len((await s.list_deliveries(WS, DeliveryFilter(), 50)).items) == 6
    single = await s.ingest_event(WS, "t", {})
    assert len(single.delivery_ids) == 3
