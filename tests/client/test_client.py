"""The request, keep-alive, the deadline, DNS and addresses, on each transport."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from hookd.metrics import Metrics
from hookd.policy import ErrorKind
from hookd.sender import TIMEOUT_MESSAGE, USER_AGENT, AddressPolicy, Sender
from tests.client.conftest import (
    DROP,
    LOOPBACK,
    Reply,
    Server,
    post,
    until,
)
from tests.hardening.conftest import ScriptedResolver

# -- the request ----------------------------------------------------------------------


async def test_request_head_is_exact(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    sender = await make_sender()
    url = f"http://127.0.0.1:{server.port}/p%7Eath/a%2Fb/caf\u00e9?q=%7e&x=1&s=a%zz"
    result = await sender.send(url, b'{"a":1}', {"webhook-id": "msg_1", "X-Custom": "v"}, 2000)
    assert result.status_code == 200
    (raw,) = server.requests
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    # The URL's own escapes go out as written; what HTTP cannot carry is escaped.
    assert lines[0] == b"POST /p%7Eath/a%2Fb/caf%C3%A9?q=%7e&x=1&s=a%25zz HTTP/1.1"
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers == {
        b"Host": b"127.0.0.1:%d" % server.port,
        b"Content-Type": b"application/json",
        b"User-Agent": USER_AGENT.encode(),
        b"Accept-Encoding": b"gzip, deflate",
        b"webhook-id": b"msg_1",
        b"X-Custom": b"v",
        b"Content-Length": b"7",
    }
    assert body == b'{"a":1}'


async def test_caller_headers_replace_defaults_and_cannot_inject(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    sender = await make_sender(user_agent="probe/1")
    result = await sender.send(server.url("/"), b"x", {"content-type": "text/plain"}, 2000)
    assert result.status_code == 200
    head = server.requests[0].split(b"\r\n\r\n")[0].lower()
    assert head.count(b"content-type:") == 1 and b"content-type: text/plain" in head
    assert b"user-agent: probe/1" in head
    bad_values = [
        "a\r\nX-Injected: 1",
        "a\nb",
        "a\rb",
        "a\x00b",
        "a\x0bb",
        "a\x0cb",
        "\x1b[31m",
        "a\x7f",
    ]
    for bad in [
        *({"X-Webhook-Event": value} for value in bad_values),
        {"Bad Name": "v"},
        {"Host": "x"},
    ]:
        result = await sender.send(server.url("/"), b"x", bad, 2000)
        assert result.error is ErrorKind.CONNECT, bad
        assert result.error_text is not None and result.error_text.startswith("invalid request")
    assert len(server.requests) == 1, "nothing was sent for a bad header"
    # A tab is the one control character a value may hold.
    result = await sender.send(server.url("/"), b"x", {"X-Note": "a\tb"}, 2000)
    assert result.status_code == 200 and b"\r\nX-Note: a\tb\r\n" in server.requests[1]


def test_a_user_agent_with_control_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="control character"):
        Sender(LOOPBACK, user_agent="hookd\x00/1")


async def test_no_proxy_from_the_environment_and_no_cookies(
    server: Server, make_sender: Callable[..., Awaitable[Sender]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    server.default = Reply(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\nContent-Length: 2\r\n\r\nok"
    )
    sender = await make_sender()
    for _ in range(2):
        assert (await post(sender, server.url())).status_code == 200
    assert len(server.requests) == 2, "straight to the receiver"
    assert b"cookie" not in server.requests[1].lower()


async def test_default_port_is_not_in_the_host_header(
    make_sender: Callable[..., Awaitable[Sender]],
) -> None:
    try:
        server = Server()
        await server.start("127.0.0.1", 80)
    except OSError:
        pytest.skip("cannot bind port 80 here")
    try:
        sender = await make_sender()
        result = await post(sender, "http://127.0.0.1/x")
        assert result.status_code == 200
        assert b"\r\nHost: 127.0.0.1\r\n" in server.requests[0]
    finally:
        await server.close()


@pytest.mark.parametrize(
    "url", ["http://[::1", "ftp://127.0.0.1/x", "http:///nohost", "http://127.0.0.1:99999/"]
)
async def test_invalid_urls_are_connect_errors(
    make_sender: Callable[..., Awaitable[Sender]], url: str
) -> None:
    sender = await make_sender()
    result = await post(sender, url)
    assert result.error is ErrorKind.CONNECT, result
    assert result.error_text is not None and result.error_text.startswith("invalid URL"), result


# -- keep-alive -----------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    sender = await make_sender()
    for _ in range(10):
        assert (await post(sender, server.url())).status_code == 200
    assert (server.connections, len(server.requests)) == (1, 10)


async def test_concurrent_requests_each_get_a_connection_then_share_them(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    sender = await make_sender()
    for _ in range(3):
        results = await asyncio.gather(*(post(sender, server.url()) for _ in range(5)))
        assert all(r.status_code == 200 for r in results)
    assert server.connections == 5 and len(server.requests) == 15


async def test_connection_close_means_a_new_connection_each_time(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    server.default = Reply(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    sender = await make_sender()
    for _ in range(4):
        assert (await post(sender, server.url())).status_code == 200
    assert (server.connections, len(server.requests)) == (4, 4)


async def test_peer_closing_an_idle_connection_is_noticed_on_checkout(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    server.script = [Reply(close=True)]  # keep-alive promised, then closed anyway
    sender = await make_sender()
    assert (await post(sender, server.url())).status_code == 200
    await until(lambda: server.closed == 1)
    await asyncio.sleep(0.01)  # the FIN reaches our idle connection
    assert (await post(sender, server.url())).status_code == 200
    # No retry was needed: the closed connection never carried the request.
    assert (server.connections, len(server.requests)) == (2, 2)


async def test_reused_connection_dropped_before_answering_is_retried_once_fresh(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    """The peer's idle timeout and our request cross: the request goes again, once."""
    server.script = [Reply(), DROP]
    metrics = Metrics()
    sender = await make_sender(on_resend=metrics.requests_resent.inc)
    assert (await post(sender, server.url())).status_code == 200
    result = await post(sender, server.url())
    assert (result.status_code, result.body) == (200, "ok"), result
    # Three requests seen: the first, the dropped one, the retry on a new connection.
    assert (server.connections, len(server.requests)) == (2, 3)
    assert metrics.registry.get_sample_value("hookd_requests_resent_total") == 1


async def test_the_retry_happens_only_once(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    server.script = [Reply(), DROP, DROP]
    metrics = Metrics()
    sender = await make_sender(on_resend=metrics.requests_resent.inc)
    assert (await post(sender, server.url())).status_code == 200
    result = await post(sender, server.url())
    assert result.error is ErrorKind.CONNECT and "disconnected" in (result.error_text or "")
    assert (server.connections, len(server.requests)) == (2, 3)
    assert metrics.registry.get_sample_value("hookd_requests_resent_total") == 1


async def test_a_fresh_connection_dropped_before_answering_is_not_retried(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    server.script = [DROP]
    metrics = Metrics()
    sender = await make_sender(on_resend=metrics.requests_resent.inc)
    result = await post(sender, server.url())
    assert result.error is ErrorKind.CONNECT
    assert (server.connections, len(server.requests)) == (1, 1)
    assert metrics.registry.get_sample_value("hookd_requests_resent_total") == 0


async def test_a_reused_connection_that_answered_partly_is_not_retried(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    server.script = [Reply(), Reply(b"HTTP/1.1 200", close=True)]
    sender = await make_sender()
    assert (await post(sender, server.url())).status_code == 200
    result = await post(sender, server.url())
    assert result.error is ErrorKind.CONNECT, result
    assert len(server.requests) == 2


async def test_idle_connections_expire(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    sender = await make_sender(keepalive_seconds=0.1)
    assert (await post(sender, server.url())).status_code == 200
    # The sweep (every keepalive/2) closes it without any new request.
    await until(lambda: server.closed == 1)
    assert (await post(sender, server.url())).status_code == 200
    assert server.connections == 2


async def test_close_closes_every_connection(server: Server) -> None:
    sender = Sender(LOOPBACK)
    await sender.start()
    await asyncio.gather(*(post(sender, server.url()) for _ in range(3)))
    assert server.connections == 3
    await sender.close()
    await until(lambda: server.closed == 3)
    with pytest.raises(RuntimeError):
        await post(sender, server.url())


# -- the deadline ---------------------------------------------------------------------


async def test_timeout_inside_the_head(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    server.script = [Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", hang=True)]
    sender = await make_sender()
    result = await post(sender, server.url(), timeout_ms=200)
    assert (result.status_code, result.error, result.error_text) == (
        None,
        ErrorKind.TIMEOUT,
        TIMEOUT_MESSAGE,
    )
    assert 180 <= result.duration_ms < 1500
    assert (await post(sender, server.url())).status_code == 200
    assert server.connections == 2, "a timed-out connection is not reused"


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 201 Created\r\nContent-Length: 50\r\n\r\npart",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n",
        # Read until close: complete at the close, which never comes.
        b"HTTP/1.1 201 Created\r\n\r\npart",
    ],
    ids=["content-length", "chunked", "until-close"],
)
async def test_timeout_inside_the_body_is_a_timeout_with_what_arrived(
    server: Server, make_sender: Callable[..., Awaitable[Sender]], data: bytes
) -> None:
    server.script = [Reply(data, hang=True)]
    sender = await make_sender()
    result = await post(sender, server.url(), timeout_ms=200)
    assert (result.status_code, result.error, result.error_text, result.body) == (
        201,
        ErrorKind.TIMEOUT,
        TIMEOUT_MESSAGE,
        "part",
    )
    assert 180 <= result.duration_ms < 1500
    assert (await post(sender, server.url())).status_code == 200
    assert server.connections == 2


async def test_timeout_before_a_connection_exists(
    make_sender: Callable[..., Awaitable[Sender]],
) -> None:
    """A DNS lookup that never answers: the deadline cancels it and says timeout."""
    hang = asyncio.Event()

    class SilentResolver(ScriptedResolver):
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list:  # type: ignore[override,type-arg]
            self.lookups.append(host)
            await hang.wait()
            return []

    resolver = SilentResolver({})
    sender = await make_sender(resolver=resolver)
    result = await post(sender, "http://never.example/", timeout_ms=150)
    assert (result.error, result.error_text) == (ErrorKind.TIMEOUT, TIMEOUT_MESSAGE)
    assert 130 <= result.duration_ms < 1500
    # The task that sent is not left cancelled: it goes on awaiting normally.
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)
    assert resolver.lookups == ["never.example"]


@pytest.mark.parametrize(
    "data",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart"],
    ids=["before-the-head", "inside-the-body"],
)
async def test_a_cancelled_exchange_closes_its_connection_at_once(
    server: Server, make_sender: Callable[..., Awaitable[Sender]], data: bytes
) -> None:
    """Shutdown, or an API client gone during a test send: the cancellation goes
    through, and the connection is closed then, not when the receiver closes it."""
    server.script = [Reply(data, hang=True)]
    sender = await make_sender()
    task = asyncio.create_task(post(sender, server.url(), timeout_ms=5000))
    await until(lambda: len(server.requests) == 1)
    await asyncio.sleep(0.02)  # what the receiver wrote has arrived
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: server.closed == 1, timeout=1.0)
    # The next request gets a new connection and its own answer.
    assert (await post(sender, server.url())).status_code == 200
    assert server.connections == 2


# -- DNS and addresses ----------------------------------------------------------------


async def test_dns_answers_are_cached_and_shared(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    server.default = Reply(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    resolver = ScriptedResolver({"receiver.example": ["127.0.0.1"]})
    sender = await make_sender(resolver=resolver)
    url = f"http://receiver.example:{server.port}/"
    results = await asyncio.gather(*(post(sender, url) for _ in range(5)))
    assert all(r.status_code == 200 for r in results), results
    assert resolver.lookups == ["receiver.example"], "one lookup for concurrent requests"
    assert (await post(sender, url)).status_code == 200
    assert resolver.lookups == ["receiver.example"], "cached"
    sender.clear_dns_cache()
    assert (await post(sender, url)).status_code == 200
    assert resolver.lookups == ["receiver.example"] * 2
    assert b"\r\nHost: receiver.example:%d\r\n" % server.port in server.requests[0]


async def test_addresses_are_tried_in_order(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    """127.0.0.2 refuses the connection (no listener there); 127.0.0.1 answers."""
    resolver = ScriptedResolver({"two.example": ["127.0.0.2", "127.0.0.1"]})
    sender = await make_sender(resolver=resolver)
    result = await post(sender, f"http://two.example:{server.port}/")
    assert result.status_code == 200, result
    assert server.connections == 1


async def test_connection_refused_names_host_and_reason(
    make_sender: Callable[..., Awaitable[Sender]],
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = await make_sender()
    result = await post(sender, f"http://127.0.0.1:{port}/")
    assert result.error is ErrorKind.CONNECT
    assert result.error_text is not None
    assert result.error_text.startswith(f"Cannot connect to host 127.0.0.1:{port}"), result


async def test_unknown_name_is_a_connect_error(
    make_sender: Callable[..., Awaitable[Sender]],
) -> None:
    sender = await make_sender(resolver=ScriptedResolver({}))
    result = await post(sender, "http://nowhere.example/")
    assert result.error is ErrorKind.CONNECT
    assert "no such host" in (result.error_text or "")


async def test_refused_addresses_are_blocked_without_dns_or_socket(
    make_sender: Callable[..., Awaitable[Sender]],
) -> None:
    resolver = ScriptedResolver({})
    sender = Sender(AddressPolicy(()), resolver=resolver)
    await sender.start()
    try:
        for url in ("http://127.0.0.1:9/", "http://localhost/", "http://0x7f000001/"):
            result = await post(sender, url)
            assert (result.error, result.error_text) == (ErrorKind.BLOCKED, "blocked"), url
        assert resolver.lookups == []
    finally:
        await sender.close()
