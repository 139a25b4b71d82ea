"""Micro-benchmark of the delivery client alone: hookd's own vs aiohttp's ClientSession.

``python -m bench.client_micro [-n 20000] [-c 64] [--urls 50] [--repeat 3] [--uvloop]``

The raw receiver (``bench.receiver``) runs in its own process; this process
only sends: N POSTs of a ~400-byte JSON body with the six signature headers,
``-c`` at a time, over ``--urls`` distinct URLs.  For each client it prints
requests/s and the CPU this process spent per request (``time.process_time``),
the figure to trust on a shared box: throughput moves with whatever else runs
on the two cores, CPU per request much less.

Both are ``hookd.sender.Sender``: "hookd" on its own HTTP/1.1 client (the
default), "aiohttp" on the aiohttp transport (``[delivery] client =
"aiohttp"``), with the same request, deadline and bounded body read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bench.common import run_fast
from bench.harness import ReceiverProc
from hookd.sender import AddressPolicy, Sender, signature_headers

POLICY = AddressPolicy(["127.0.0.0/8"])
BODY = json.dumps(
    {
        "id": "665af12014fb9fa5143d17f1",
        "type": "email.replied",
        "created_at": "2026-11-23T09:44:37.123Z",
        "workspace_id": "ws_benchmark",
        "data": {
            "thread_id": "th_0123456789abcdef",
            "message_id": "<CAF=abcdef0123456789@mail.example.com>",
            "from": "someone@example.com",
            "subject": "Re: the quarterly numbers, once more",
            "snippet": "Thanks, that works for me. Let's talk on Thursday at 10 -- I'll send an invite.",
            "labels": ["inbox", "important"],
        },
    },
    separators=(",", ":"),
).encode()
HEADERS = signature_headers("665af12014fb9fa5143d17f1", 1_763_891_077, BODY, ["whsec_" + "A" * 43])
TIMEOUT_MS = 10_000
LIMIT = 8192

Send = Callable[[str], Awaitable[int | None]]


class Client:
    """A started Sender on one transport, sending the benchmark's request."""

    def __init__(self, kind: str) -> None:
        self.sender = Sender(POLICY, max_response_bytes=LIMIT, client=kind)

    async def start(self) -> None:
        await self.sender.start()

    async def send(self, url: str) -> int | None:
        return (await self.sender.send(url, BODY, dict(HEADERS), TIMEOUT_MS)).status_code

    async def close(self) -> None:
        await self.sender.close()


async def _drive(send: Send, urls: list[str], n: int, concurrency: int) -> int:
    next_index = 0
    ok = 0

    async def worker() -> None:
        nonlocal next_index, ok
        while next_index < n:
            i = next_index
            next_index += 1
            if await send(urls[i % len(urls)]) == 200:
                ok += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


async def _one(kind: str, urls: list[str], n: int, concurrency: int) -> dict[str, float]:
    client = Client(kind)
    await client.start()
    try:
        # Warm up: connections, DNS-free URL caches, code paths.
        await _drive(client.send, urls, min(2000, n), concurrency)
        cpu0, wall0 = time.process_time(), time.monotonic()
        ok = await _drive(client.send, urls, n, concurrency)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    finally:
        await client.close()
    if ok != n:
        raise RuntimeError(f"{kind}: only {ok} of {n} requests answered 200")
    return {"rps": n / wall, "cpu_us": cpu / n * 1e6}


def _run(coro: Coroutine[Any, Any, dict[str, float]], use_uvloop: bool) -> dict[str, float]:
    return run_fast(coro) if use_uvloop else asyncio.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=20_000)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--urls", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    parser.add_argument("--client", choices=("aiohttp", "hookd", "both"), default="both")
    args = parser.parse_args()

    kinds = ["aiohttp", "hookd"] if args.client == "both" else [args.client]
    receiver = ReceiverProc()
    try:
        urls = [receiver.url(f"/o/{i}") for i in range(args.urls)]
        results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for r in range(args.repeat):
            for kind in kinds:  # interleaved, so drift in the box's load hits both
                res = _run(_one(kind, urls, args.requests, args.concurrency), args.uvloop)
                results[kind].append(res)
                print(
                    f"run {r + 1} {kind:8s} {res['rps']:8.0f} req/s  {res['cpu_us']:6.1f} CPU us/req",
                    flush=True,
                )
        loop_name = "uvloop" if args.uvloop else "asyncio"
        print(
            f"\nmedian over {args.repeat} runs ({loop_name}, n={args.requests}, c={args.concurrency}):"
        )
        for kind in kinds:
            rps = statistics.median(x["rps"] for x in results[kind])
            cpu = statistics.median(x["cpu_us"] for x in results[kind])
            print(f"  {kind:8s} {rps:8.0f} req/s  {cpu:6.1f} CPU us/req")
        print(json.dumps({"loop": loop_name, "results": results}))
    finally:
        receiver.close()


if __name__ == "__main__":
    main()
