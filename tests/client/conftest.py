"""The delivery client's tests, on each transport (hookd's own HTTP/1.1 client and
aiohttp's ClientSession), against raw sockets on loopback.

A tiny asyncio server writes canned bytes for each request it reads and counts
the TCP connections it accepted, so "reused" and "not reused" are facts seen
from the receiver's side, not from the client's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from hookd.sender import CLIENTS, AddressPolicy, Sender, SendResult

LOOPBACK = AddressPolicy(["127.0.0.0/8", "::1/128"])
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
LIMIT = 8192


@dataclass
class Reply:
    """What the server does with one request."""

    data: bytes = OK
    close: bool = False  # close the connection after writing
    hang: bool = False  # stay silent after writing, until the client closes
    split: int = 0  # write in pieces of this many bytes, pausing between them


DROP = Reply(b"", close=True)  # read the request, close without a byte


@dataclass
class Server:
    """Raw HTTP/1.1 on 127.0.0.1: reads each request, answers from ``script`` by request number."""

    script: list[Reply] = field(default_factory=list)
    default: Reply = field(default_factory=Reply)
    connections: int = 0
    closed: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0
    host: str = "127.0.0.1"
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def start(self, host: str = "127.0.0.1", port: int = 0, **kwargs: object) -> None:
        self.host = host
        self._server = await asyncio.start_server(self._handle, host, port, **kwargs)  # type: ignore[arg-type]
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                n = len(self.requests)
                self.requests.append(head + body)
                reply = self.script[n] if n < len(self.script) else self.default
                if reply.split:
                    for i in range(0, len(reply.data), reply.split):
                        writer.write(reply.data[i : i + reply.split])
                        await writer.drain()
                        await asyncio.sleep(0.002)
                else:
                    writer.write(reply.data)
                    await writer.drain()
                if reply.hang:
                    await reader.read()  # returns at the client's close
                    return
                if reply.close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.closed += 1
            self._tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    await s.start()
    yield s
    await s.close()


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    """Every sender test runs on each transport: hookd's own client and aiohttp's."""
    return str(request.param)


@pytest.fixture
async def make_sender(client: str) -> AsyncIterator[Callable[..., Awaitable[Sender]]]:
    made: list[Sender] = []

    async def make(**kwargs: object) -> Sender:
        kwargs.setdefault("max_response_bytes", LIMIT)
        kwargs.setdefault("client", client)
        sender = Sender(LOOPBACK, **kwargs)  # type: ignore[arg-type]
        await sender.start()
        made.append(sender)
        return sender

    yield make
    for sender in made:
        await sender.close()


async def post(sender: Sender, url: str, timeout_ms: int = 2000, **headers: str) -> SendResult:
    return await sender.send(url, b'{"n":1}', dict(headers), timeout_ms)


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)
