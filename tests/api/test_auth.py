"""Keys: which headers, which kinds, what is stored; routes that need none."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from hookd.api.app import build_metrics_app
from hookd.api.auth import KeyCache
from hookd.api.context import CONTEXT
from hookd.keys import digest_key
from hookd.models import ApiKey
from hookd.storage import StoreError
from hookd.storage.postgres import PostgresStore
from tests.api.conftest import Api, Reply


def assert_error(reply: Reply, status: int, field: str) -> None:
    assert reply.status == status, reply.body
    assert set(reply.body) == {"error", "message", "code"}
    assert reply.body["code"] == status
    assert reply.body["message"].startswith(f"{field}:"), reply.body["message"]


async def test_missing_invalid_and_clashing_keys_are_401(api: Api) -> None:
    key = await api.key("ws_a")
    other = await api.key("ws_a")
    cases: list[dict[str, str]] = [
        {},
        {"X-Api-Key": ""},
        {"X-Api-Key": "sk_" + "0" * 48},
        {"X-Api-Key": "not-a-key"},
        {"X-Api-Key": "sk_" + "x" * 500},
        {"Authorization": f"Basic {key}"},
        {"Authorization": "Bearer"},
        {"X-Api-Key": key, "Authorization": f"Bearer {other}"},
        {"X-Api-Key": key, "Authorization": f"Basic {key}"},
    ]
    for headers in cases:
        reply = await api.call("GET", "/v1/webhooks", headers=headers)
        field = "Authorization" if "Basic" in headers.get("Authorization", "") else None
        assert_error(reply, 401, field or reply.body["message"].split(":")[0])
        assert reply.body["error"] == "Unauthorized"
        assert reply.headers["WWW-Authenticate"] == 'Bearer realm="hookd"'
    clash = await api.call(
        "GET", "/v1/webhooks", headers={"X-Api-Key": key, "Authorization": f"Bearer {other}"}
    )
    assert "different keys" in clash.body["message"]


async def test_header_given_twice_is_401(api: Api) -> None:
    key = await api.key("ws_a")
    async with api.session.get(
        api.base_url + "/v1/webhooks", headers=[("X-Api-Key", key), ("X-Api-Key", key)]
    ) as resp:
        assert resp.status == 401


@pytest.mark.parametrize(
    "headers",
    [
        lambda k: {"X-Api-Key": k},
        lambda k: {"Authorization": f"Bearer {k}"},
        lambda k: {"authorization": f"bearer   {k}"},
        lambda k: {"X-Api-Key": k, "Authorization": f"Bearer {k}"},
    ],
)
async def test_either_header_or_both_with_the_same_key(api: Api, headers: object) -> None:
    key = await api.key("ws_a")
    reply = await api.call("GET", "/v1/webhooks", headers=headers(key))  # type: ignore[operator]
    assert reply.status == 200


async def test_revoked_key_is_401(api: Api) -> None:
    key = await api.key("ws_a")
    assert (await api.call("GET", "/v1/webhooks", key=key)).status == 200
    (record,) = await api.store.list_api_keys()
    assert await api.store.revoke_api_key(record.id)
    # Found keys are cached for two seconds (revocation may come from another
    # process): the key stops working within that, generous bound for CI.
    for _ in range(100):
        reply = await api.call("GET", "/v1/webhooks", key=key)
        if reply.status == 401:
            break
        assert reply.status == 200
        await asyncio.sleep(0.1)
    assert_error(reply, 401, "X-Api-Key")
    assert "revoked" in reply.body["message"]


async def test_platform_key_needs_and_uses_x_workspace_id(api: Api) -> None:
    key = await api.key(None, owner="user_platform")
    missing = await api.call("GET", "/v1/webhooks", key=key)
    assert_error(missing, 400, "X-Workspace-Id")
    assert "platform key" in missing.body["message"]
    for bad in ("ws_", "123", "ws_a b", "ws_" + "a" * 62, "ws_ü"):
        reply = await api.call(
            "GET", "/v1/webhooks", headers={"X-Api-Key": key, "X-Workspace-Id": bad}
        )
        assert_error(reply, 400, "X-Workspace-Id")
    created = await api.call(
        "POST",
        "/v1/webhooks",
        headers={"X-Api-Key": key, "X-Workspace-Id": "ws_new"},
        json_body={"name": "n", "url": "https://a.example/x", "events": ["*"]},
    )
    assert created.status == 201
    assert created.body["data"]["workspaceId"] == "ws_new"
    assert created.body["data"]["createdBy"] == "user_platform"


async def test_workspace_key_owner_is_created_by(api: Api) -> None:
    key = await api.key("ws_a", owner="user_42")
    hook = await api.webhook(key)
    assert hook["createdBy"] == "user_42" and hook["workspaceId"] == "ws_a"


async def _stored_bytes(api: Api, directory: Path) -> bytes:
    """Everything the database holds: the SQLite files, or PostgreSQL's tables as text."""
    if isinstance(api.store, PostgresStore):
        conn = await asyncpg.connect(api.store.url)
        try:
            tables = [
                r[0]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            ]
            dumps = [
                await conn.fetchval(f"SELECT string_agg(t::text, ' ') FROM {t} t") or ""
                for t in tables
            ]
        finally:
            await conn.close()
        return " ".join(dumps).encode()
    return await asyncio.to_thread(
        lambda: b"".join(p.read_bytes() for p in directory.glob("*.db*"))
    )


async def test_keys_are_stored_only_as_digests(api: Api, tmp_path: Path) -> None:
    key = await api.key("ws_a")
    await api.call("GET", "/v1/webhooks", key=key)
    raw = await _stored_bytes(api, tmp_path)
    assert key.encode() not in raw
    # (PostgreSQL shows a bytea as \\x and lowercase hex.)
    digest = digest_key(key)
    assert digest in raw or b"\\x" + digest.hex().encode() in raw


async def test_public_routes_need_no_key(api: Api) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/v1/openapi.json"):
        reply = await api.call("GET", path)
        assert reply.status == 200, path


async def test_unknown_routes_and_methods_use_the_envelope(api: Api) -> None:
    key = await api.key("ws_a")
    for k in (None, key):
        for path in ("/v1/nope", "/v1/webhooks/", "/v2/webhooks", "/"):
            reply = await api.call("GET", path, key=k)
            assert reply.status == 404
            assert reply.body == {
                "error": "Not Found",
                "message": "The requested resource was not found",
                "code": 404,
            }
        wrong = await api.call("PUT", "/v1/webhooks", key=k)
        assert_error(wrong, 405, "method")
        assert wrong.body["error"] == "Method Not Allowed"
        assert wrong.headers["Allow"] == "GET, HEAD, POST"
        assert (await api.call("DELETE", "/v1/events", key=k)).headers["Allow"] == "POST"


async def test_metrics_listener_answers_unknown_routes_in_the_envelope(api: Api) -> None:
    app = build_metrics_app(api.app[CONTEXT])
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/metrics")).status == 200
        missing = await client.get("/v1/webhooks")
        assert missing.status == 404
        assert (await missing.json())["message"] == "The requested resource was not found"
        wrong = await client.post("/metrics")
        assert wrong.status == 405 and wrong.headers["Allow"] == "GET, HEAD"


async def test_requests_missing_the_key_cache_together_share_one_lookup(api: Api) -> None:
    key = await api.key("ws_a")
    real = api.store.find_api_key
    calls = 0

    async def slow_find(digest: bytes) -> tuple[ApiKey, bytes] | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(1.0)  # every request below arrives meanwhile
        return await real(digest)

    api.store.find_api_key = slow_find  # type: ignore[method-assign]
    replies = await asyncio.gather(*(api.call("GET", "/v1/webhooks", key=key) for _ in range(16)))
    assert [r.status for r in replies] == [200] * 16
    assert calls == 1


def _found(digest: bytes) -> tuple[ApiKey, bytes]:
    return ApiKey("key_1", "ws_a", "sk_abc", "user_1", 0, None), digest


async def test_a_shared_lookup_outlives_a_caller_that_left_and_shares_its_failure() -> None:
    cache = KeyCache()
    gate = asyncio.Event()
    calls = 0

    async def load(digest: bytes) -> tuple[ApiKey, bytes] | None:
        nonlocal calls
        calls += 1
        await gate.wait()
        if calls == 1:
            raise StoreError("database unavailable")
        return _found(digest)

    first = asyncio.create_task(cache.find(b"d", 0.0, load))
    second = asyncio.create_task(cache.find(b"d", 0.0, load))
    await asyncio.sleep(0)
    first.cancel()  # its client went away
    gate.set()
    with pytest.raises(StoreError):
        await second
    assert first.cancelled()
    # A failure is not remembered: the next request looks again, and a find is cached.
    assert await cache.find(b"d", 0.0, load) == _found(b"d")
    assert await cache.find(b"d", 1.0, load) == _found(b"d")
    assert calls == 2
