"""``hookd listen``: a webhook receiver for development, like ``stripe listen``.

It answers every request on its port, prints each delivery (time, event
type, ids, whether the signatures verify and why not, the body
pretty-printed) and answers 200, or ``--status N`` after ``--delay MS`` to
try hookd's retries and timeouts.  With ``--forward-to URL`` each request is
relayed to the developer's application and hookd gets the application's
answer, which is shown too.

Verification uses the same signing code as hookd's sender: the hex
``X-Webhook-Signature`` of the body and the Standard Webhooks
``webhook-signature`` over ``id.timestamp.body``, with the Standard Webhooks
five-minute tolerance on ``webhook-timestamp``.  The secret is never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

import aiohttp
from aiohttp import web

from hookd.ids import iso_ms
from hookd.sender.signing import hex_signature, signing_key, standard_signature

# Standard Webhooks: refuse timestamps further than this from now.
TOLERANCE_SECONDS = 300
# Request headers not passed on to the application (hop-by-hop, or recomputed).
_NOT_FORWARDED = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade"}
)
FORWARD_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Verdict:
    verified: bool
    reason: str


def verify(
    secret: str | None, headers: Mapping[str, str], body: bytes, now_seconds: float
) -> Verdict:
    """Whether ``body`` and ``headers`` carry valid hookd signatures for ``secret``."""
    if secret is None:
        return Verdict(False, "no --secret given, signatures not checked")
    hex_header = headers.get("X-Webhook-Signature")
    std_header = headers.get("webhook-signature")
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    if hex_header is None and std_header is None:
        return Verdict(False, "no X-Webhook-Signature or webhook-signature header")
    key = signing_key(secret)
    problems: list[str] = []
    if hex_header is None:
        problems.append("X-Webhook-Signature missing")
    else:
        expected = hex_signature(key, body)
        # During a secret rotation the header holds one signature per secret.
        if not any(hmac.compare_digest(expected, s.strip()) for s in hex_header.split(",")):
            problems.append("X-Webhook-Signature does not match the body")
    if std_header is None or msg_id is None or stamp is None:
        problems.append("webhook-id, webhook-timestamp or webhook-signature missing")
    elif not stamp.isdigit():
        problems.append(f"webhook-timestamp {stamp[:20]!r} is not a number")
    else:
        skew = now_seconds - int(stamp)
        expected_std = standard_signature(key, msg_id, int(stamp), body)
        if not any(hmac.compare_digest(expected_std, s) for s in std_header.split()):
            problems.append("webhook-signature does not match")
        elif abs(skew) > TOLERANCE_SECONDS:
            problems.append(
                f"webhook-timestamp is {abs(skew):.0f} s {'old' if skew > 0 else 'ahead'}"
                f" (tolerance {TOLERANCE_SECONDS} s)"
            )
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(True, "X-Webhook-Signature and webhook-signature match")


def pretty(body: bytes) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body.decode("utf-8", "replace")


@dataclass
class Listener:
    secret: str | None
    status: int
    delay_ms: int
    forward_to: str | None
    out: TextIO
    clock: Callable[[], float] = time.time
    session: aiohttp.ClientSession | None = None

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        now = self.clock()
        verdict = verify(self.secret, request.headers, body, now)
        event_type = request.headers.get("X-Webhook-Event", "-")
        lines = [
            f"--- {iso_ms(round(now * 1000))}  {request.method} {request.path_qs}  {event_type}",
            f"    event {request.headers.get('X-Webhook-Id', '-')}"
            f"  webhook-id {request.headers.get('webhook-id', '-')}"
            f"  timestamp {request.headers.get('webhook-timestamp', '-')}",
            ("    verified: " if verdict.verified else "    NOT VERIFIED: ") + verdict.reason,
        ]
        lines += ["    " + line for line in pretty(body).splitlines()]
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        if self.forward_to is None:
            lines.append(f"    <- answered {self.status}")
            self.say("\n".join(lines))
            return web.Response(status=self.status, text="ok\n" if self.status < 300 else "")
        response = await self._forward(request, body, lines)
        self.say("\n".join(lines))
        return response

    async def _forward(
        self, request: web.Request, body: bytes, lines: list[str]
    ) -> web.StreamResponse:
        assert self.session is not None
        assert self.forward_to is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        started = time.monotonic()
        try:
            async with self.session.request(
                request.method, self.forward_to, data=body, headers=headers
            ) as answer:
                answer_body = await answer.read()
                elapsed = (time.monotonic() - started) * 1000
                lines.append(
                    f"    -> forwarded to {self.forward_to}: {answer.status} in {elapsed:.0f} ms"
                )
                lines += ["       " + line for line in pretty(answer_body).splitlines()[:40]]
                content_type = answer.headers.get("Content-Type")
                return web.Response(
                    status=answer.status,
                    body=answer_body,
                    headers={"Content-Type": content_type} if content_type else None,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            lines.append(f"    -> forwarding to {self.forward_to} failed: {reason}; answered 502")
            return web.Response(status=502, text=f"hookd listen: forwarding failed: {reason}\n")


async def listen(
    host: str,
    port: int,
    *,
    secret: str | None,
    status: int,
    delay_ms: int,
    forward_to: str | None,
    out: TextIO | None = None,
) -> int:
    listener = Listener(secret, status, delay_ms, forward_to, out or sys.stdout)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", listener.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if forward_to is not None:
            listener.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS)
            )
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        answer = f"forwarding to {forward_to}" if forward_to else f"answering {status}"
        delay = f" after {delay_ms} ms" if delay_ms else ""
        check = "verifying signatures" if secret is not None else "not verifying (no --secret)"
        listener.say(
            f"hookd listen: receiving on http://{bound[0]}:{bound[1]}/ ({answer}{delay};"
            f" {check}); Ctrl-C stops"
        )
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        if listener.session is not None:
            await listener.session.close()
        await runner.cleanup()
    return 0
