"""Response framing, table-driven, on each transport: what the client reads of
each response and whether the connection is fit to reuse after it."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import pytest
from bench.head_micro import feed, make_head

from hookd.policy import ErrorKind
from hookd.sender import Sender
from tests.client.conftest import (
    DROP,
    LIMIT,
    Reply,
    Server,
    post,
)

# -- the parser, table-driven ---------------------------------------------------------

_GZIP_HELLO = gzip.compress(b"hello gzip")
_DEFLATE_HELLO = zlib.compress(b"hello deflate")
_BOMB = gzip.compress(bytes(10 * 1024 * 1024), 9)  # 10 MiB of zeros, ~10 KiB sent


def _with_length(head: bytes, body: bytes) -> bytes:
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


@dataclass(frozen=True)
class Case:
    reply: Reply
    status: int | None
    body: str | None = None  # expected stored body (exact) when status is set
    error: ErrorKind | None = None
    error_text: str = ""  # substring of the error text
    reused: bool = True  # the next request goes over the same connection
    retry_after: str | None = None
    # The connection is fit for the next request (or closed): False only where
    # a client puts back in its pool what it should not have.
    then_ok: bool = True


CASES: dict[str, Case] = {
    "content-length": Case(
        Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), 200, "hello"
    ),
    "content-length-list": Case(
        Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"), 200, "hello"
    ),
    "content-length-zero": Case(
        Reply(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"), 202, ""
    ),
    "chunked-extensions-trailers": Case(
        Reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5;ext=1\r\nhello\r\n6 ; name="v"\r\n world\r\nB\r\n 0123456789\r\n'
            b"0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n"
        ),
        200,
        "hello world 0123456789",
    ),
    "chunked-wins-over-length": Case(
        Reply(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n"
        ),
        200,
        "ok",
        reused=False,
    ),
    "close-delimited": Case(
        Reply(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", close=True),
        200,
        "until the end",
        reused=False,
    ),
    "interim-1xx-skipped": Case(
        Reply(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
        ),
        201,
        "ok",
    ),
    "101-is-invalid": Case(
        Reply(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", hang=True),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="101",
        reused=False,
    ),
    "204-no-body": Case(Reply(b"HTTP/1.1 204 No Content\r\n\r\n"), 204, ""),
    "304-no-body": Case(Reply(b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n"), 304, ""),
    "status-without-reason": Case(Reply(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"), 200, "ok"),
    "status-999": Case(Reply(b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n"), 999, ""),
    "redirect-is-a-status": Case(
        Reply(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n"),
        302,
        "",
    ),
    "bare-lf-lines": Case(Reply(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"), 200, "ok"),
    "retry-after": Case(
        Reply(b"HTTP/1.1 429 Too Many\r\nRetry-After:  120 \r\nContent-Length: 4\r\n\r\nslow"),
        429,
        "slow",
        retry_after="120",
    ),
    "header-names-any-case": Case(
        Reply(b"HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh: 2\r\nCONNECTION: keep-alive\r\n\r\nok"),
        200,
        "ok",
    ),
    "connection-close": Case(
        Reply(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
        200,
        "ok",
        reused=False,
    ),
    "http-1.0": Case(
        Reply(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"), 200, "ok", reused=False
    ),
    "extra-bytes-after-response": Case(
        Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE"), 200, "ok", reused=False
    ),
    # A body cut short by the peer is no answer, whatever its head said; what
    # arrived is kept.  A body delimited by the close ("close-delimited") is whole.
    "truncated-body": Case(
        Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", close=True),
        200,
        "only this",
        error=ErrorKind.INCOMPLETE,
        error_text="incomplete response: Server disconnected before the end of the body",
        reused=False,
    ),
    "head-only-then-close": Case(
        Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", close=True),
        200,
        "",
        error=ErrorKind.INCOMPLETE,
        error_text="incomplete response",
        reused=False,
    ),
    "oversize-head": Case(
        Reply(b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * (70 * 1024) + b"\r\n\r\n", hang=True),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="64 KiB",
        reused=False,
    ),
    "overlong-header-line": Case(
        Reply(b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 9000 + b"\r\nContent-Length: 0\r\n\r\n"),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="longer than",
        reused=False,
    ),
    "too-many-headers": Case(
        Reply(
            b"HTTP/1.1 200 OK\r\n"
            + b"".join(b"X-%d: v\r\n" % i for i in range(200))
            + b"Content-Length: 0\r\n\r\n"
        ),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="too many",
        reused=False,
    ),
    "bad-status-code": Case(
        Reply(b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", hang=True),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="status line",
        reused=False,
    ),
    "not-http-at-all": Case(
        Reply(b"SSH-2.0-OpenSSH_9.6\r\n", hang=True),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="status line",
        reused=False,
    ),
    "http-2-status-line": Case(
        Reply(b"HTTP/2 200\r\n\r\n", hang=True),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        reused=False,
    ),
    "header-without-colon": Case(
        Reply(b"HTTP/1.1 200 OK\r\nNoColonHere\r\nContent-Length: 0\r\n\r\n"),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="header line",
        reused=False,
    ),
    "nul-in-header-value": Case(
        Reply(b"HTTP/1.1 200 OK\r\nX-Note: a\x00b\r\nContent-Length: 2\r\n\r\nok"),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="NUL",
        reused=False,
    ),
    # "X-Note: a<CR>Content-Length: 5" is one line to us and two to a parser that
    # ends lines at a bare CR: refused, whichever header it hides in.
    "bare-cr-in-header-value": Case(
        Reply(b"HTTP/1.1 200 OK\r\nX-Note: a\rContent-Length: 5\r\nContent-Length: 2\r\n\r\nok"),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="bare CR",
        reused=False,
    ),
    "bare-cr-in-status-line": Case(
        Reply(b"HTTP/1.1 200 O\rK\r\nContent-Length: 2\r\n\r\nok"),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="bare CR",
        reused=False,
    ),
    # Other control characters in a header we do not act on are tolerated.
    "tab-and-bell-in-header-value": Case(
        Reply(b"HTTP/1.1 200 OK\r\nX-Note: a\tb\x07\r\nContent-Length: 2\r\n\r\nok"), 200, "ok"
    ),
    "conflicting-content-length": Case(
        Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="Content-Length",
        reused=False,
    ),
    "signed-content-length": Case(
        Reply(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="Content-Length",
        reused=False,
    ),
    "folded-content-length": Case(
        Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n 0\r\n\r\nok"),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="folded",
        reused=False,
    ),
    # Garbled chunked framing is an invalid response, whatever the head said.
    "bad-chunk-size": Case(
        Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\nmore"),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="chunk size",
        reused=False,
    ),
    "chunk-size-0x-prefix": Case(
        Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n0\r\n\r\n"),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="chunk size",
        reused=False,
    ),
    "chunk-without-line-end": Case(
        Reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX3\r\nabc\r\n0\r\n\r\n"
        ),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="line end",
        reused=False,
    ),
    "endless-chunk-size-line": Case(
        Reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"e" * 5000,
            hang=True,
        ),
        None,
        error=ErrorKind.INVALID_RESPONSE,
        error_text="too long",
        reused=False,
    ),
    "chunked-cut-short": Case(
        Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nhalf", close=True),
        200,
        "half",
        error=ErrorKind.INCOMPLETE,
        error_text="incomplete response",
        reused=False,
    ),
    "chunked-without-last-chunk": Case(
        Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\n", close=True),
        200,
        "half",
        error=ErrorKind.INCOMPLETE,
        error_text="incomplete response",
        reused=False,
    ),
    "chunked-cut-in-trailers": Case(
        Reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n",
            close=True,
        ),
        200,
        "ok",
        error=ErrorKind.INCOMPLETE,
        error_text="incomplete response",
        reused=False,
    ),
    "429-cut-short": Case(
        Reply(
            b"HTTP/1.1 429 Slow Down\r\nRetry-After: 5\r\nContent-Length: 9\r\n\r\nslo",
            close=True,
        ),
        429,
        "slo",
        error=ErrorKind.INCOMPLETE,
        error_text="incomplete response",
        reused=False,
        retry_after="5",
    ),
    "gzip": Case(
        Reply(_with_length(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n", _GZIP_HELLO)),
        200,
        "hello gzip",
    ),
    "deflate": Case(
        Reply(_with_length(b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\n", _DEFLATE_HELLO)),
        200,
        "hello deflate",
    ),
    "gzip-chunked": Case(
        Reply(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(
                b"%x\r\n%s\r\n" % (len(_GZIP_HELLO[i : i + 7]), _GZIP_HELLO[i : i + 7])
                for i in range(0, len(_GZIP_HELLO), 7)
            )
            + b"0\r\n\r\n"
        ),
        200,
        "hello gzip",
    ),
    "not-really-gzip": Case(
        Reply(_with_length(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n", b"plain text")),
        200,
        "plain text",
    ),
    "gzip-bomb-bounded": Case(
        Reply(_with_length(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n", _BOMB)),
        200,
        "\x00" * 256,
        reused=False,
    ),
    "body-over-the-limit": Case(
        Reply(_with_length(b"HTTP/1.1 200 OK\r\n", b"y" * (LIMIT + 1))),
        200,
        "y" * 256,
        reused=False,
    ),
    "body-exactly-the-limit": Case(
        Reply(_with_length(b"HTTP/1.1 200 OK\r\n", b"z" * LIMIT)), 200, "z" * 256
    ),
    "invalid-utf8-body": Case(
        Reply(_with_length(b"HTTP/1.1 500 Oops\r\n", b"caf\xe9 \xff")), 500, "caf\ufffd \ufffd"
    ),
    "closes-without-answer": Case(
        DROP, None, error=ErrorKind.CONNECT, error_text="disconnected", reused=False
    ),
    "closes-inside-the-head": Case(
        Reply(b"HTTP/1.1 200 OK\r\nContent-Le", close=True),
        None,
        error=ErrorKind.CONNECT,
        error_text="disconnected",
        reused=False,
    ),
}


# Where aiohttp's parser decides otherwise, and nothing in its public API changes
# that (docs/http-client.md): stricter on framing that RFC 9112 lets a client
# refuse, no bound on a chunk-size line but the deadline, and a complete
# response's connection back in its pool even when we stopped reading early.
AIOHTTP_CASES: dict[str, Case] = {
    "content-length-list": Case(
        CASES["content-length-list"].reply, None, error=ErrorKind.INVALID_RESPONSE, reused=False
    ),
    "chunked-extensions-trailers": Case(
        CASES["chunked-extensions-trailers"].reply,
        None,
        error=ErrorKind.INVALID_RESPONSE,
        reused=False,
    ),
    "chunked-wins-over-length": Case(
        CASES["chunked-wins-over-length"].reply,
        None,
        error=ErrorKind.INVALID_RESPONSE,
        reused=False,
    ),
    "extra-bytes-after-response": Case(
        CASES["extra-bytes-after-response"].reply,
        None,
        error=ErrorKind.INVALID_RESPONSE,
        reused=False,
    ),
    "endless-chunk-size-line": Case(
        CASES["endless-chunk-size-line"].reply, 200, "", error=ErrorKind.TIMEOUT, reused=False
    ),
    "gzip-bomb-bounded": replace(CASES["gzip-bomb-bounded"], reused=True),
    "body-over-the-limit": replace(CASES["body-over-the-limit"], reused=True),
    # A 101 goes back into aiohttp's pool; the next request on it waits in vain.
    "101-is-invalid": replace(CASES["101-is-invalid"], then_ok=False),
}
# Garbled chunk framing that arrives in a later read than the head is not
# reported by aiohttp: the body waits for the deadline.
AIOHTTP_IN_PIECES: dict[str, Case] = {
    "chunked-extensions-trailers": Case(
        CASES["chunked-extensions-trailers"].reply,
        200,
        "hello",
        error=ErrorKind.TIMEOUT,
        reused=False,
    ),
    "bad-chunk-size": Case(
        CASES["bad-chunk-size"].reply, 200, "ok", error=ErrorKind.TIMEOUT, reused=False
    ),
    "chunk-without-line-end": Case(
        CASES["chunk-without-line-end"].reply, 200, "ok", error=ErrorKind.TIMEOUT, reused=False
    ),
}


@pytest.mark.parametrize("split", [0, 7], ids=["whole", "in-pieces"])
@pytest.mark.parametrize("name", list(CASES))
async def test_parser_cases(
    server: Server,
    make_sender: Callable[..., Awaitable[Sender]],
    client: str,
    name: str,
    split: int,
) -> None:
    case = CASES[name]
    if client == "aiohttp":
        case = (split and AIOHTTP_IN_PIECES.get(name)) or AIOHTTP_CASES.get(name, case)
        if name == "endless-chunk-size-line" and split:
            pytest.skip("the same as whole, three seconds later")
    reply = case.reply
    if split:
        if len(reply.data) > 4096:
            pytest.skip("big responses arrive in pieces anyway")
        reply = Reply(reply.data, close=reply.close, hang=reply.hang, split=split)
    server.script = [reply]
    sender = await make_sender()
    started = time.monotonic()
    result = await post(sender, server.url(), timeout_ms=3000)
    assert result.status_code == case.status, result
    assert result.error == case.error, result
    if case.error is not None:
        assert result.error_text is not None, result
        if client == "hookd":  # aiohttp's words are its own
            assert case.error_text in result.error_text, result
        if case.error is not ErrorKind.TIMEOUT:
            # Answered cases end when the answer is judged, not at the deadline.
            assert time.monotonic() - started < 2.5
    else:
        assert result.error_text is None, result
    if case.status is not None:
        # What arrived of the body, whether or not it is complete.
        assert result.body == case.body, result
        assert result.retry_after == case.retry_after
    if not case.then_ok:
        return
    # A second request tells whether the first connection went back to the pool.
    second = await post(sender, server.url())
    assert (second.status_code, second.body) == (200, "ok"), second
    assert server.connections == (1 if case.reused else 2), name
    assert len(server.requests) == 2


async def test_gzip_bomb_keeps_reading_bounded(
    server: Server, make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    """An endless gzip stream of zeros: we stop after 4x the limit of input at most."""
    server.script = [
        Reply(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 100000000\r\n\r\n"
            + _BOMB[: 64 * 1024],
            hang=True,
        )
    ]
    sender = await make_sender(max_response_bytes=1024)
    result = await post(sender, server.url())
    assert result.status_code == 200 and result.body == "\x00" * 256
    assert result.duration_ms < 1000


# -- parsing cost ---------------------------------------------------------------------


def test_a_head_a_byte_at_a_time_costs_a_constant_per_byte() -> None:
    """A receiver dribbling 63 KiB of response head one byte per read.

    CPU for the bytes one at a time over CPU for the same bytes in one read:
    about 200 when each read costs a constant (the call itself), about 16,000
    when each read searches everything buffered again.  Both are CPU times of
    this process measured the same way, so the machine's speed cancels out.
    """
    response = make_head(63 * 1024)
    loop = asyncio.new_event_loop()
    try:
        one_read = min(feed(response, len(response), loop)[0] for _ in range(5))
        bytewise = feed(response, 1, loop)[0]
    finally:
        loop.close()
    ratio = bytewise / one_read
    print(f"byte by byte {bytewise * 1e3:.1f} ms, one read {one_read * 1e6:.0f} us: {ratio:.0f}x")
    assert ratio < 2000, ratio
