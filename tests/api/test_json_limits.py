"""The two limits on an event's data, at their boundaries, on both ingest routes.

- Numbers: a number whose value overflows a double is refused, integers
  included (receivers in JavaScript or Go cannot hold it); the largest
  integer that still rounds to a finite double is accepted and stored exactly.
- Depth: an event's data nests at most 31 levels on either route, so the body
  a receiver gets (the data inside its envelope) nests at most 32.

The docs state both rules; the test reads the numbers from the same constants.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from hookd.bodies import MAX_DATA_DEPTH, MAX_EVENT_DEPTH
from tests.api.conftest import Api

# 2**1024 - 2**970 is where rounding to the nearest double reaches infinity.
LARGEST_FINITE = 2**1024 - 2**970 - 1
JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


async def _send(api: Api, key: str, route: str, data_json: bytes) -> Any:
    event = b'{"type":"limits.t","data":' + data_json + b"}"
    raw = (
        event if route == "single" else b'{"events":[{"type":"limits.t","data":1},' + event + b"]}"
    )
    path = "/v1/events" if route == "single" else "/v1/events/batch"
    return await api.call("POST", path, key=key, data=raw, headers=JSON)


def _field(route: str) -> str:
    return "data" if route == "single" else "events[1].data"


@pytest.mark.parametrize("route", ["single", "batch"])
async def test_data_nests_31_levels_on_both_routes(api: Api, route: str) -> None:
    assert MAX_DATA_DEPTH == 31 and MAX_EVENT_DEPTH == 32
    key = await api.key("ws_limits")
    await api.webhook(key)
    deepest = nested(MAX_DATA_DEPTH)
    assert depth_of(deepest) == 31
    accepted = await _send(api, key, route, json.dumps(deepest).encode())
    assert accepted.status == 202, accepted.body
    # What a receiver gets: the data inside the event envelope, 32 levels.
    event = accepted.body["data"] if route == "single" else accepted.body["data"][1]
    stored = await api.call("GET", f"/v1/events/{event['_id']}", key=key)
    assert stored.status == 200, stored.body
    assert stored.body["data"]["data"] == deepest

    refused = await _send(api, key, route, json.dumps(nested(MAX_DATA_DEPTH + 1)).encode())
    assert refused.status == 400
    assert refused.body["message"] == f"{_field(route)}: nested deeper than 31 levels"


@pytest.mark.parametrize("route", ["single", "batch"])
async def test_numbers_beyond_a_double_are_refused_on_both_routes(api: Api, route: str) -> None:
    key = await api.key("ws_limits")
    for fits in (LARGEST_FINITE, -LARGEST_FINITE, 10**308, int(sys.float_info.max)):
        accepted = await _send(api, key, route, str(fits).encode())
        assert accepted.status == 202, (fits, accepted.body)
        event = accepted.body["data"] if route == "single" else accepted.body["data"][1]
        stored = await api.call("GET", f"/v1/events/{event['_id']}", key=key)
        assert stored.body["data"]["data"] == fits  # stored as sent, digit for digit
    for too_big in (LARGEST_FINITE + 1, -(LARGEST_FINITE + 1), 10**309, 10**4299, "1e309"):
        refused = await _send(api, key, route, str(too_big).encode())
        assert refused.status == 400, (too_big, refused.body)
        assert refused.body["message"].startswith("body: invalid JSON: number ")
        assert refused.body["message"].endswith(" overflows a double")
    # Digits in a string are just text.
    text = await _send(api, key, route, b'"' + b"9" * 5000 + b'"')
    assert text.status == 202, text.body
