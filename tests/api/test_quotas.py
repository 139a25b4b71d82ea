"""Quotas over HTTP: refused whole, with 429 or 413 and a message naming the quota."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hookd.clock import ManualClock
from hookd.config import QuotasConfig
from tests.api.conftest import Api, api_config, running_api
from tests.support.backends import BACKENDS

QUOTAS = QuotasConfig(webhooks_per_workspace=2, deliveries_per_request=4, events_per_batch=3)


@pytest.fixture(params=BACKENDS)
async def api(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Api]:
    config = api_config(quotas=QUOTAS)
    async with running_api(request.param, request, tmp_path, clock, config) as served:
        yield served


async def test_webhooks_beyond_the_workspace_quota_are_429(api: Api) -> None:
    key = await api.key("ws_a")
    for _ in range(2):
        await api.webhook(key)
    reply = await api.call(
        "POST",
        "/v1/webhooks",
        key=key,
        json_body={"name": "x", "url": "https://example.com/x", "events": ["*"]},
    )
    assert reply.status == 429
    assert reply.body["message"].startswith("webhooks_per_workspace: ")
    listed = await api.call("GET", "/v1/webhooks", key=key)
    assert len(listed.body["data"]) == 2


async def test_a_batch_beyond_the_events_quota_is_413(api: Api) -> None:
    key = await api.key("ws_a")
    events = [{"type": "t.x", "data": {"i": i}} for i in range(4)]
    reply = await api.call("POST", "/v1/events/batch", key=key, json_body={"events": events})
    assert reply.status == 413
    assert reply.body["message"] == "events_per_batch: the batch has 4 events; the quota is 3"


async def test_a_request_beyond_the_deliveries_quota_is_413_and_stores_nothing(api: Api) -> None:
    key = await api.key("ws_a")
    for _ in range(2):
        await api.webhook(key)
    # 3 events x 2 webhooks = 6 > 4.
    events = [{"type": "t.x", "data": {"i": i}} for i in range(3)]
    reply = await api.call("POST", "/v1/events/batch", key=key, json_body={"events": events})
    assert reply.status == 413
    assert reply.body["message"].startswith("deliveries_per_request: ")
    listed = await api.call("GET", "/v1/deliveries", key=key)
    assert listed.body["data"] == []
    ok = await api.call("POST", "/v1/events", key=key, json_body={"type": "t.x", "data": {}})
    assert ok.status == 202 and len(ok.body["data"]["deliveryIds"]) == 2
