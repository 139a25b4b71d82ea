"""The reference documents' own examples, executed against a local hookd.

Requests are parsed out of the seed files (``/work/shared/seeds``, beside the
repository as ``../shared/seeds``): the curl command's method, path, headers
and exact ``-d`` bytes, and the Python ``requests`` snippet's ``headers`` and
``data`` dicts.  Only the host changes, and the placeholders
``YOUR_API_KEY``/``YOUR_API_TOKEN`` become one real key (two different
placeholders in one request would be two different keys, a 401).  The JSON
answers printed in the same files are parsed too and compared field by field.

The manual clock starts at 2024-06-01T10:00:00.000Z, the seeds' own
``createdAt``, so timestamps compare exactly.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hookd.ids import is_id, parse_iso_ms
from hookd.models import Status
from hookd.sender import TIMEOUT_MESSAGE
from tests.api.conftest import Api, Reply
from tests.conftest import Receiver, eventually

SEEDS = Path(__file__).resolve().parents[2].parent / "shared" / "seeds"
TEST_SEND = "000_80864f42edf2d62d.txt"
CREATE = "001_378a4006fbb11645.txt"
UPDATE = "002_ddb404fec4aa88d6.txt"
CLOSIENT = "003_fe354aff64adcd62.txt"
PLACEHOLDERS = ("YOUR_API_KEY", "YOUR_API_TOKEN", "<api-key>")
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

pytestmark = pytest.mark.skipif(not SEEDS.is_dir(), reason=f"seed documents not found at {SEEDS}")


def seed_text(name: str) -> str:
    return (SEEDS / name).read_text(encoding="utf-8")


def seed_answers(name: str) -> list[dict[str, Any]]:
    """Every JSON object that starts a line: the documented responses, in order."""
    text = seed_text(name)
    decoder = json.JSONDecoder()
    out = []
    for match in re.finditer(r"(?m)^\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        out.append(value)
    return out


@dataclass
class SeedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None


def curl_request(name: str) -> SeedRequest:
    lines = seed_text(name)[seed_text(name).index("curl ") :].splitlines()
    argv: list[str] = []
    for n in range(1, len(lines) + 1):
        if lines[n - 1].rstrip().endswith("\\"):
            continue
        try:
            argv = shlex.split("\n".join(lines[:n]).replace("\\\n", " "))
            break
        except ValueError:  # inside a multi-line -d '...'
            continue
    method, url, headers, body = "GET", "", {}, None
    it = iter(argv[1:])
    for arg in it:
        if arg in ("-X", "--request"):
            method = next(it)
        elif arg in ("-H", "--header"):
            name_, _, value = next(it).partition(":")
            headers[name_.strip()] = value.strip()
        elif arg in ("-d", "--data"):
            body = next(it).encode("utf-8")
        elif arg == "--url":
            url = next(it)
        elif not arg.startswith("-"):
            url = arg
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    return SeedRequest(method, path, headers, body)


def python_request(name: str) -> tuple[dict[str, str], dict[str, Any] | None]:
    """The ``headers = {...}`` and ``data = {...}`` of the Python snippet."""
    text = seed_text(name)
    headers = re.search(r"(?ms)^headers = (\{.*?\n\})", text)
    data = re.search(r"(?ms)^data = (\{.*?\n\})", text)
    assert headers is not None
    return json.loads(headers.group(1)), json.loads(data.group(1)) if data else None


def with_key(headers: dict[str, str], key: str) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        for placeholder in PLACEHOLDERS:
            value = value.replace(placeholder, key)
        out[name] = value
    return out


async def send(api: Api, req: SeedRequest, key: str, **path_values: str) -> Reply:
    path = req.path
    for old, new in path_values.items():
        path = path.replace(old, new)
    return await api.call(req.method, path, data=req.body, headers=with_key(req.headers, key))


def seed_create_answer() -> dict[str, Any]:
    (answer,) = seed_answers(CREATE)
    return answer


async def seed_workspace_key(api: Api) -> str:
    # The workspace and owner the create seed shows.
    answer = seed_create_answer()["data"]
    return await api.key(answer["workspaceId"], owner=answer["createdBy"])


# -- create ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["curl", "python"])
async def test_create_webhook_seed(api: Api, variant: str) -> None:
    key = await seed_workspace_key(api)
    req = curl_request(CREATE)
    if variant == "python":
        headers, data = python_request(CREATE)
        req = SeedRequest("POST", req.path, headers, json.dumps(data).encode())
    assert req.method == "POST" and req.path == "/v1/webhooks"
    reply = await send(api, req, key)
    assert reply.status == 201, reply.body
    expected = seed_create_answer()
    got = reply.body
    assert list(got) == list(expected) == ["success", "data"]
    assert got["success"] is True
    assert list(got["data"]) == list(expected["data"])  # same fields, same order
    for field, want in expected["data"].items():
        have = got["data"][field]
        if field == "_id":
            assert is_id(have) and is_id(want)
        elif field == "secret":
            # Generated: 32 random bytes as hex, like the seed's.
            assert re.fullmatch(r"[0-9a-f]{64}", have) and re.fullmatch(r"[0-9a-f]{64}", want)
        else:
            assert have == want, field
    assert reply.headers["Location"] == f"/v1/webhooks/{got['data']['_id']}"


async def test_create_trims_name_and_keeps_the_full_secret_only_there(api: Api) -> None:
    key = await seed_workspace_key(api)
    body = json.loads(curl_request(CREATE).body or b"")
    body["name"] = "  CRM Sync \t"
    created = await api.webhook(key, **body)
    assert created["name"] == "CRM Sync"
    secret = created["secret"]
    fetched = await api.call("GET", f"/v1/webhooks/{created['_id']}", key=key)
    listed = await api.call("GET", "/v1/webhooks", key=key)
    assert fetched.body["data"]["secret"] == secret[:12] + "..."
    assert listed.body["data"][0]["secret"] == secret[:12] + "..."
    assert secret not in fetched.raw.decode() and secret not in listed.raw.decode()


# -- update ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["curl", "python"])
async def test_update_webhook_seed(api: Api, variant: str) -> None:
    key = await seed_workspace_key(api)
    created = seed_create_answer()["data"]
    # The webhook of the create seed, with the seed's own secret, so the masked
    # secret of the update seed can compare exactly.
    hook = await api.webhook(
        key,
        name=created["name"],
        url=created["url"],
        events=created["events"],
        secret=created["secret"],
    )
    (expected, not_found) = seed_answers(UPDATE)
    api.clock.set(parse_iso_ms(expected["data"]["updatedAt"]))
    req = curl_request(UPDATE)
    if variant == "python":
        headers, data = python_request(UPDATE)
        req = SeedRequest("PATCH", req.path, headers, json.dumps(data).encode())
    assert req.method == "PATCH" and req.path == "/v1/webhooks/example_string"

    reply = await send(api, req, key, example_string=hook["_id"])
    assert reply.status == 200, reply.body
    assert reply.body == {**expected, "data": {**expected["data"], "_id": hook["_id"]}}
    assert reply.body["data"]["secret"] == "a1b2c3d4e5f6..."

    # As written in the seed (id "example_string"): the seed's 404, byte for byte equal JSON.
    missing = await send(api, req, key)
    assert missing.status == 404
    assert missing.body == not_found
    assert missing.headers["Content-Type"].startswith("application/json")


# -- test send ------------------------------------------------------------------------


def _test_send_answers() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    ok, failed, timed_out, not_found = seed_answers(TEST_SEND)
    return ok, failed, timed_out, not_found


def _closient_fields() -> list[str]:
    (answer,) = seed_answers(CLOSIENT)
    return [re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k) for k in answer]


def assert_matches_seed(got: dict[str, Any], seed: dict[str, Any]) -> None:
    """Every field the seed shows, with its value; plus the send-test-event seed's fields."""
    assert got["success"] is True
    data = got["data"]
    for field, want in seed["data"].items():
        assert data[field] == want, field
    if "error" not in seed["data"]:
        assert "error" not in data
    extra = set(data) - set(seed["data"])
    # deliveryId, status, responseBody: the Closient seed's vocabulary (camelCase).
    assert extra == {"deliveryId", "status", "responseBody"}
    assert extra < set(_closient_fields())
    assert is_id(data["deliveryId"])


@pytest.mark.parametrize(
    ("answer", "seed_index", "status"),
    [(200, 0, Status.DELIVERED), (500, 1, Status.DEAD_LETTER)],
)
async def test_test_send_seed_answers(
    api: Api, receiver: Receiver, answer: int, seed_index: int, status: Status
) -> None:
    key = await seed_workspace_key(api)
    hook = await api.webhook(key, url=receiver.status("/hook", answer))
    req = curl_request(TEST_SEND)
    assert req.method == "POST" and req.path == "/v1/webhooks/example_string/test"
    assert req.headers["Authorization"] == "Bearer YOUR_API_TOKEN"

    reply = await send(api, req, key, example_string=hook["_id"])
    assert reply.status == 200, reply.body
    seed = _test_send_answers()[seed_index]
    assert_matches_seed(reply.body, seed)
    assert reply.body["data"]["status"] == status.value
    assert reply.body["data"]["responseBody"] == f"answer {answer}"
    (sent,) = receiver.received("/hook")
    assert sent.headers["X-Webhook-Event"] == "test"


async def test_test_send_timeout_seed_answer(api: Api, receiver: Receiver) -> None:
    key = await seed_workspace_key(api)

    async def slow(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(3)
        return web.Response(text="too late")

    hook = await api.webhook(key, url=receiver.on("/slow", slow), timeoutMs=150)
    reply = await send(api, curl_request(TEST_SEND), key, example_string=hook["_id"])
    assert reply.status == 200, reply.body
    seed = _test_send_answers()[2]
    assert seed["data"]["error"] == TIMEOUT_MESSAGE
    assert_matches_seed(reply.body, seed)
    assert reply.body["data"]["status"] == "dead_letter"
    assert reply.body["data"]["responseBody"] is None


async def test_test_send_seed_404(api: Api) -> None:
    key = await seed_workspace_key(api)
    reply = await send(api, curl_request(TEST_SEND), key)
    assert reply.status == 404
    assert reply.body == _test_send_answers()[3]


# -- the delivery vocabulary of the Closient seed ----------------------------------------


def test_status_vocabulary_is_the_seeds() -> None:
    text = seed_text(CLOSIENT)
    options = text.split("Available options:", 1)[1].split("http_status_code", 1)[0]
    seed_statuses = [s.strip() for s in options.replace("\n", "").split(",") if s.strip()]
    assert seed_statuses == [s.value for s in Status]


async def test_replay_answer_has_the_closient_fields(api: Api, receiver: Receiver) -> None:
    key = await seed_workspace_key(api)
    url = receiver.status("/flaky", 500, 200)
    await api.webhook(key, url=url, retryAttempts=0)
    event = await api.call(
        "POST", "/v1/events", key=key, json_body={"type": "email.replied", "data": {}}
    )
    (delivery_id,) = event.body["data"]["deliveryIds"]

    async def dead() -> bool:
        d = await api.store.get_delivery(None, delivery_id)
        return d is not None and d.status is Status.DEAD_LETTER

    await eventually(dead)
    reply = await api.call("POST", f"/v1/deliveries/{delivery_id}/replay", key=key)
    assert reply.status == 200, reply.body
    assert list(reply.body["data"]) == _closient_fields()
    assert reply.body["data"] == {
        "deliveryId": delivery_id,
        "status": "delivered",
        "httpStatusCode": 200,
        "responseBody": "answer 200",
    }
