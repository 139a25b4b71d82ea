"""A webhook receiver that costs as little CPU as possible: a raw asyncio protocol.

HTTP/1.1 with keep-alive, parsed only as far as needed: the end of the headers,
``Content-Length`` and the first byte of the path, which chooses the answer:

- ``/o...`` answers ``200`` with an empty body;
- ``/r...`` answers ``429`` with ``Retry-After: 1``;
- ``/p...`` answers ``429`` with ``Retry-After: 3600``: the webhook is parked
  for longer than any benchmark runs;
- ``/g...`` answers ``410 Gone`` (hookd then sets the webhook inactive);
- ``/h...`` never answers (the connection hangs until the client gives up);
- ``/d...`` sends 48 KB of response head, then one more byte of it every
  ``DRIBBLE_INTERVAL`` seconds, never ending the head (a hostile receiver
  that makes a client parse a large head one byte per read).

Run as its own process (``python -m bench.receiver``): it prints
``{"port": N}`` on stdout, then answers one JSON line of counters for every
``stats`` line on stdin and exits when stdin closes (so it never outlives the
benchmark).  :class:`Receiver` is also embedded in the latency load generator,
which needs the arrival time of each event on its own clock.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable

from bench.common import run_fast

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
RATE_LIMITED = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
GONE = b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n"
PARKED = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\nContent-Length: 0\r\n\r\n"
_CL = b"\r\ncontent-length:"
# 48 header lines of 1,000 bytes: under every client's line limit, 48 KB in all.
DRIBBLE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    + b"".join(b"X-Pad-%02d: " % i + b"p" * 988 + b"\r\n" for i in range(48))
    + b"X-Dribble: "
)
DRIBBLE_INTERVAL = 0.05


class Counters:
    __slots__ = (
        "connections",
        "dribble",
        "first_ok",
        "gone",
        "hang",
        "last_ok",
        "ok",
        "rate_limited",
    )

    def __init__(self) -> None:
        self.ok = 0
        self.rate_limited = 0
        self.hang = 0
        self.gone = 0
        self.dribble = 0
        self.connections = 0
        self.first_ok = 0.0
        self.last_ok = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "ok": self.ok,
            "rate_limited": self.rate_limited,
            "hang": self.hang,
            "gone": self.gone,
            "dribble": self.dribble,
            "connections": self.connections,
            "first_ok": self.first_ok,
            "last_ok": self.last_ok,
            "now": time.monotonic(),
        }


class _Conn(asyncio.Protocol):
    __slots__ = ("buf", "counters", "dribbling", "hung", "on_body", "transport")

    def __init__(
        self,
        counters: Counters,
        on_body: Callable[[bytes], None] | None,
        dribbling: set[asyncio.Transport],
    ) -> None:
        self.counters = counters
        self.on_body = on_body
        self.dribbling = dribbling
        self.buf = b""
        self.hung = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.counters.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.dribbling.discard(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.hung:
            return
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            cl = 0
            pos = buf.find(b"\r\nContent-Length:", 0, end)
            if pos < 0:
                pos = buf[:end].lower().find(_CL)
            if pos >= 0:
                eol = buf.find(b"\r\n", pos + 2)
                cl = int(buf[pos + 17 : eol])
            total = end + 4 + cl
            if len(buf) < total:
                break
            kind = buf[buf.find(b" ") + 2]
            c = self.counters
            if kind == 0x6F:  # "o"
                now = time.monotonic()
                if not c.ok:
                    c.first_ok = now
                c.ok += 1
                c.last_ok = now
                if self.on_body is not None:
                    self.on_body(buf[end + 4 : total])
                self.transport.write(OK)  # type: ignore[union-attr]
            elif kind == 0x72:  # "r"
                c.rate_limited += 1
                self.transport.write(RATE_LIMITED)  # type: ignore[union-attr]
            elif kind == 0x70:  # "p"
                c.rate_limited += 1
                self.transport.write(PARKED)  # type: ignore[union-attr]
            elif kind == 0x67:  # "g"
                c.gone += 1
                self.transport.write(GONE)  # type: ignore[union-attr]
            elif kind == 0x64:  # "d": a head that never ends, a byte at a time
                c.dribble += 1
                self.hung = True
                self.transport.write(DRIBBLE_HEAD)  # type: ignore[union-attr]
                self.dribbling.add(self.transport)  # type: ignore[arg-type]
                buf = b""
                break
            else:  # "h": hang until the client gives up
                c.hang += 1
                self.hung = True
                buf = b""
                break
            buf = buf[total:]
        self.buf = buf


class Receiver:
    def __init__(self, on_body: Callable[[bytes], None] | None = None) -> None:
        self.counters = Counters()
        self.on_body = on_body
        self.server: asyncio.Server | None = None
        self.port = 0
        self.dribbling: set[asyncio.Transport] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Conn(self.counters, self.on_body, self.dribbling), host, port, backlog=1024
        )
        self.port = self.server.sockets[0].getsockname()[1]
        loop.call_later(DRIBBLE_INTERVAL, self._dribble)
        return self.port

    def _dribble(self) -> None:
        # One timer for every dribbling connection: the receiver's own cost
        # stays small beside the client's.
        for transport in list(self.dribbling):
            if transport.is_closing():
                self.dribbling.discard(transport)
            else:
                transport.write(b"p")
        asyncio.get_running_loop().call_later(DRIBBLE_INTERVAL, self._dribble)


async def _main() -> None:
    receiver = Receiver()
    port = await receiver.start()
    print(json.dumps({"port": port}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = line.strip()
        if cmd == b"stats":
            print(json.dumps(receiver.counters.as_dict()), flush=True)
        elif cmd == b"reset":
            receiver.counters.__init__()  # type: ignore[misc]
            print("{}", flush=True)


if __name__ == "__main__":
    run_fast(_main())
