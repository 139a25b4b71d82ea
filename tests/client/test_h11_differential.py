"""Differential fuzz of the own client's response parser against h11.

A few thousand responses, each a valid seed with one to three byte-level
mutations (deleted, inserted or duplicated bytes, a duplicated line), from a
fixed random seed so a failure replays exactly.  Each goes to hookd's
parser (``sender.h1``, whole and in random pieces) and to h11, the strict,
independent HTTP/1.1 implementation.

The property that matters is framing: wherever both take a response as
complete, they agree on its status and on every byte of its body, so a
receiver cannot make hookd read a message boundary somewhere other than
where a standard parser reads it.  Where they disagree on *whether* a
response is acceptable, hookd is lenient only on what it skips (an unknown
header's odd name, a reason phrase) or reads to the close (an unknown
transfer coding), and stricter elsewhere; neither is asserted here.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import h11
import pytest
from bench.head_micro import _Transport

from hookd.sender.h1 import H1Connection

CASES = 3000
SEEDS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: t\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 429 Too Many\r\nRetry-After: 5\r\nContent-Length: 4\r\n\r\nslow",
    b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
]
# Bytes that matter to HTTP/1.1 framing, and a few that should not.
ALPHABET = b"\r\n\x00 \t:0a,;-9\x0b\x7f"

Outcome = tuple[int, bytes] | None  # (status, body) of a complete response, else None


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        i = rng.randrange(len(data) + 1)
        if op == 0 and data:
            del data[min(i, len(data) - 1)]
        elif op == 1:
            data[i:i] = bytes([rng.choice(ALPHABET)])
        elif op == 2 and data:
            data[i:i] = data[i : i + rng.randint(1, 8)]
        elif op == 3 and data:
            data[min(i, len(data) - 1)] = rng.choice(ALPHABET)
        else:
            lines = bytes(data).split(b"\r\n")
            if len(lines) > 2:
                n = rng.randrange(1, len(lines))
                lines.insert(n, lines[n - 1])
                data = bytearray(b"\r\n".join(lines))
    return bytes(data)


def pieces(rng: random.Random, data: bytes) -> Iterator[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        yield data[a:b]


def hookd(reads: Iterator[bytes], loop: asyncio.AbstractEventLoop) -> Outcome:
    conn = H1Connection(loop, set(), ("http", "receiver", 80))
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    done = conn.start(b"", 1 << 20)
    for data in reads:
        if done.done():
            break
        conn.data_received(data)
    if not done.done():
        conn.eof_received()  # the receiver closes after its last byte
    if conn.status is None or conn.error is not None:
        return None
    return conn.status, bytes(conn.body.data)


def h11_outcome(data: bytes) -> Outcome:
    conn = h11.Connection(h11.CLIENT)
    conn.send(
        h11.Request(method="POST", target="/", headers=[("Host", "r"), ("Content-Length", "0")])
    )
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    status = None
    body = b""
    closed = False
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if closed:
                    return None
                conn.receive_data(b"")
                closed = True
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert status is not None
                return status, body
            elif isinstance(event, h11.ConnectionClosed):
                return None
    except h11.RemoteProtocolError:
        return None


def test_hookd_and_h11_frame_every_mutated_response_alike() -> None:
    rng = random.Random(20)
    loop = asyncio.new_event_loop()
    both = 0
    try:
        for _ in range(CASES):
            data = mutate(rng, rng.choice(SEEDS))
            ours = hookd(iter([data]), loop)
            # Parsed in pieces, the same bytes give the same outcome.
            assert hookd(pieces(rng, data), loop) == ours, data
            theirs = h11_outcome(data)
            if ours is not None and theirs is not None:
                both += 1
                assert ours == theirs, data
    finally:
        loop.close()
    # Not vacuous: a good share of the mutants are responses both accept.
    assert both > CASES // 5, both


@pytest.mark.parametrize("seed", SEEDS)
def test_every_seed_is_a_response_both_accept(seed: bytes) -> None:
    loop = asyncio.new_event_loop()
    try:
        ours = hookd(iter([seed]), loop)
    finally:
        loop.close()
    assert ours is not None and ours == h11_outcome(seed)
