"""``Expect: 100-continue``: the key and the declared size come before the invitation.

Raw sockets read exactly what the server writes first, so a ``100 Continue``
sent too early cannot hide behind the final answer that follows it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from hookd.api.auth import PUBLIC_PATHS
from tests.api.conftest import MAX_BODY_BYTES, Api

EVENT = json.dumps({"type": "edge.test", "data": {"n": 1}}).encode()


# -- raw sockets -----------------------------------------------------------------------


async def _head_and_body(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One answer: its head (status line and headers) and its Content-Length body."""
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return head, await reader.readexactly(length)


async def _open(api: Api) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = urlsplit(api.base_url).port
    assert port is not None
    return await asyncio.open_connection("127.0.0.1", port)


def _head(method: str, path: str, *lines: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: hookd", *lines, "", ""]).encode()


async def _first_answer(api: Api, head: bytes) -> tuple[bytes, Any]:
    reader, writer = await _open(api)
    try:
        writer.write(head)
        await writer.drain()
        status_line_and_headers, body = await _head_and_body(reader)
    finally:
        writer.close()
    return status_line_and_headers, json.loads(body)


def _routes_needing_a_key(api: Api) -> list[tuple[str, str]]:
    found = set()
    for route in api.app.router.routes():
        resource = route.resource
        if resource is None or resource.canonical in PUBLIC_PATHS or route.method == "HEAD":
            continue
        path = resource.canonical.replace("{id}", "0" * 24)
        found.add((route.method, path))
    return sorted(found)


async def test_expect_100_continue_waits_for_the_key_on_every_route(api: Api) -> None:
    routes = _routes_needing_a_key(api)
    assert ("POST", "/v1/events") in routes and ("PATCH", f"/v1/webhooks/{'0' * 24}") in routes
    for method, path in routes:
        for credentials in ([], ["X-Api-Key: sk_" + "0" * 40]):
            head, body = await _first_answer(
                api,
                _head(
                    method,
                    path,
                    *credentials,
                    "Content-Type: application/json",
                    "Content-Length: 1000000000",
                    "Expect: 100-continue",
                ),
            )
            # The first bytes are the final answer: no invitation to send the gigabyte.
            assert head.startswith(b"HTTP/1.1 401 "), (method, path, head)
            assert b"100 Continue" not in head
            # The body was never invited: the connection is not reused after it.
            assert b"connection: close" in head.lower()
            assert body["code"] == 401 and body["message"].startswith("X-Api-Key: ")


async def test_expect_100_continue_checks_the_declared_size_before_inviting(api: Api) -> None:
    key = await api.key("ws_edges")
    head, body = await _first_answer(
        api,
        _head(
            "POST",
            "/v1/events",
            f"X-Api-Key: {key}",
            "Content-Type: application/json",
            f"Content-Length: {MAX_BODY_BYTES + 1}",
            "Expect: 100-continue",
        ),
    )
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert body == {
        "error": "Request Entity Too Large",
        "message": f"body: larger than the {MAX_BODY_BYTES} bytes allowed",
        "code": 413,
    }

    head, body = await _first_answer(
        api, _head("POST", "/v1/events", f"X-Api-Key: {key}", "Expect: something-else")
    )
    assert head.startswith(b"HTTP/1.1 417 "), head
    assert body["message"].startswith("Expect: only 100-continue is supported")


async def test_expect_100_continue_invites_an_authenticated_client_that_fits(api: Api) -> None:
    key = await api.key("ws_edges")
    reader, writer = await _open(api)
    try:
        writer.write(
            _head(
                "POST",
                "/v1/events",
                f"X-Api-Key: {key}",
                "Content-Type: application/json",
                f"Content-Length: {len(EVENT)}",
                "Expect: 100-continue",
            )
        )
        await writer.drain()
        async with asyncio.timeout(10):
            invitation = await reader.readuntil(b"\r\n\r\n")
        assert invitation == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(EVENT)
        await writer.drain()
        head, body = await _head_and_body(reader)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 202 "), head
    assert json.loads(body)["data"]["type"] == "edge.test"
