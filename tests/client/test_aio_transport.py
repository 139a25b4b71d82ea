"""The aiohttp transport (``sender.aio``) under aioresponses: what it asks aiohttp
for, and how it reads each answer and each aiohttp error into a result.

The transport's behaviour against real sockets is covered with the own
client's in tests/client/ and the hardening suites; here aiohttp's
request path is replaced, so each aiohttp outcome can be set exactly.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from hookd.policy import ErrorKind
from hookd.sender import TIMEOUT_MESSAGE, USER_AGENT, AddressPolicy, BlockedAddressError, Sender
from hookd.sender.aio import AiohttpClient

URL_ = "http://receiver.example/hook"
BODY = b'{"n":1}'


class Response(aiohttp.ClientResponse):
    """aioresponses (0.7.9) builds responses without the ``stream_writer`` that
    aiohttp 3.14 requires; its ``response_class`` option lets us add one that
    has sent nothing."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    s = Sender(AddressPolicy(), max_response_bytes=64, client="aiohttp")
    await s.start()
    yield s
    await s.close()


async def send(sender: Sender, timeout_ms: int = 2000, **headers: str) -> Any:
    return await sender.send(URL_, BODY, dict(headers), timeout_ms)


def test_the_aiohttp_client_is_the_transport(sender: Sender) -> None:
    assert isinstance(sender.transport, AiohttpClient)


async def test_the_request_is_ours_and_nothing_is_implicit(sender: Sender) -> None:
    with aioresponses() as m:
        m.post(URL_, status=200, body=b"ok", response_class=Response)
        result = await send(sender, **{"X-Webhook-Event": "t.x", "content-type": "text/plain"})
        ((method, url), calls) = next(iter(m.requests.items()))
    assert (result.status_code, result.error, result.body) == (200, None, "ok")
    assert (method, url) == ("POST", URL(URL_))
    (call,) = calls
    assert call.kwargs["data"] == BODY
    assert call.kwargs["allow_redirects"] is False
    assert call.kwargs["headers"] == {
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "gzip, deflate",
        "content-type": "text/plain",
        "X-Webhook-Event": "t.x",
    }


async def test_a_redirect_is_a_status_not_followed(sender: Sender) -> None:
    with aioresponses() as m:
        m.post(
            URL_,
            status=302,
            headers={"Location": "http://127.0.0.1/inside"},
            response_class=Response,
        )
        result = await send(sender)
        assert [key[1] for key in m.requests] == [URL(URL_)]
    assert (result.status_code, result.error) == (302, None)


async def test_retry_after_and_a_gzip_body_bounded_by_max_response_bytes(sender: Sender) -> None:
    with aioresponses() as m:
        m.post(
            URL_,
            status=429,
            body=gzip.compress(b"slow down " * 100),
            headers={"Retry-After": "120", "Content-Encoding": "gzip"},
            response_class=Response,
        )
        result = await send(sender)
    assert (result.status_code, result.retry_after) == (429, "120")
    assert result.body == ("slow down " * 7)[:64], "decoded by us, 64 bytes at most"


async def test_a_control_character_in_a_header_is_refused_before_aiohttp(sender: Sender) -> None:
    with aioresponses() as m:
        result = await send(sender, **{"X-Webhook-Event": "a\x0bb"})
        assert m.requests == {}
    assert result.error is ErrorKind.CONNECT
    assert (result.error_text or "").startswith("invalid request")


async def test_the_deadline_covers_the_whole_request(sender: Sender) -> None:
    async def slow(url: URL, **kwargs: Any) -> CallbackResult:
        await asyncio.sleep(5)
        return CallbackResult(status=200)

    with aioresponses() as m:
        m.post(URL_, callback=slow)
        result = await send(sender, timeout_ms=100)
    assert (result.status_code, result.error, result.error_text) == (
        None,
        ErrorKind.TIMEOUT,
        TIMEOUT_MESSAGE,
    )
    assert result.duration_ms < 1000


def _connector_error(os_error: OSError) -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("receiver.example", 80, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, os_error)


@pytest.mark.parametrize(
    ("exception", "kind", "text"),
    [
        (_connector_error(BlockedAddressError("blocked")), ErrorKind.BLOCKED, "blocked"),
        (
            _connector_error(ConnectionRefusedError(111, "Connect call failed")),
            ErrorKind.CONNECT,
            "Cannot connect to host receiver.example:80 ssl:False [Connect call failed]",
        ),
        (aiohttp.ServerDisconnectedError(), ErrorKind.CONNECT, "Server disconnected"),
        (
            aiohttp.ClientResponseError(None, (), message="Bad status line"),  # type: ignore[arg-type]
            ErrorKind.INVALID_RESPONSE,
            "invalid response: Bad status line",
        ),
        (
            aiohttp.ClientPayloadError("Response payload is not completed"),
            ErrorKind.INVALID_RESPONSE,  # before any head: nothing was incomplete
            "invalid response",
        ),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), ErrorKind.CONNECT, "reset"),
    ],
    ids=["blocked", "refused", "disconnected", "bad-head", "payload", "reset"],
)
async def test_aiohttp_errors_become_the_same_results(
    sender: Sender, exception: Exception, kind: ErrorKind, text: str
) -> None:
    with aioresponses() as m:
        m.post(URL_, exception=exception)
        result = await send(sender)
    assert (result.status_code, result.error) == (None, kind), result
    assert text in (result.error_text or ""), result
