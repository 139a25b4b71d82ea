"""The HTTP client side of a delivery attempt: the :class:`Sender`.

``Sender.send(url, body, headers, timeout_ms)`` POSTs one signed request and
returns a :class:`SendResult`; it never raises for a receiver's misbehaviour.
What every request shares is decided here, once, whichever client carries
it:

- **The URL**, parsed once per distinct URL and cached (``sender.request``):
  not http(s), credentials in it, no host: an ``invalid URL`` connect error.
- **The address policy before DNS**: an IP literal (in any notation) or a
  localhost/metadata name the policy forbids ends as ``blocked`` at once
  (``static_refusal``); every other host meets the policy at connect time,
  on the exact address a socket is about to connect to (``sender.addresses``).
- **The request**: default headers, the caller's, and the refusal of names
  the client owns and of values with control characters.
- **The answer**: a response is one only when it is complete; at most
  ``max_response_bytes`` of its body are read (``sender.body``).

The transport (``sender.transport``) does the rest: hookd's own HTTP/1.1
client (``client="hookd"``, the default, ``sender.h1client``) or aiohttp's
``ClientSession`` (``client="aiohttp"``, ``sender.aio``).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp.abc import AbstractResolver
from yarl import URL

from hookd import __version__
from hookd.config import DeliveryConfig
from hookd.policy import ErrorKind
from hookd.sender.addresses import AddressPolicy, static_refusal
from hookd.sender.aio import AiohttpClient
from hookd.sender.h1client import H1Client
from hookd.sender.request import InvalidURLError, RequestBuilder, Target
from hookd.sender.transport import (
    KEEPALIVE_SECONDS,
    ClientOptions,
    SendResult,
    Transport,
    failed,
    tls_context,
)

USER_AGENT = f"hookd/{__version__}"
# The transports ``[delivery] client`` may name.
CLIENTS: Final = ("hookd", "aiohttp")

_CACHE_SIZE = 16_384


class Sender:
    def __init__(
        self,
        policy: AddressPolicy,
        *,
        max_response_bytes: int = 8192,
        user_agent: str = USER_AGENT,
        resolver: AbstractResolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        on_resend: Callable[[], None] | None = None,
        client: str = "hookd",
    ) -> None:
        self.policy = policy
        self.max_response_bytes = max_response_bytes
        options = ClientOptions(
            policy=policy,
            max_response_bytes=max_response_bytes,
            builder=RequestBuilder(user_agent),
            resolver=resolver,
            ssl_context=None if ssl_context is None else tls_context(ssl_context),
            keepalive_seconds=keepalive_seconds,
            on_resend=on_resend,
        )
        self.transport: Transport
        if client == "hookd":
            self.transport = H1Client(options)
        elif client == "aiohttp":
            self.transport = AiohttpClient(options)
        else:
            raise ValueError(f"client must be one of {', '.join(CLIENTS)}, got {client!r}")
        self.client = client
        # URL -> its parsed Target, None when the policy refuses it without DNS,
        # or the text of why it is not a URL we can send to.
        self._targets: dict[str, Target | str | None] = {}
        self._started = False

    @classmethod
    def for_delivery(
        cls, config: DeliveryConfig, *, on_resend: Callable[[], None] | None = None
    ) -> Sender:
        """The sender a delivery process uses, as ``[delivery]`` configures it."""
        return cls(
            AddressPolicy(config.allow_networks),
            max_response_bytes=config.max_response_bytes,
            client=config.client,
            on_resend=on_resend,
        )

    async def start(self) -> None:
        await self.transport.start()
        self._started = True

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.transport.close()

    def clear_dns_cache(self) -> None:
        """Forget cached DNS answers (the next connection to a name looks it up again)."""
        self.transport.clear_dns_cache()

    def send(
        self, url: str, body: bytes, headers: dict[str, str], timeout_ms: int
    ) -> Awaitable[SendResult]:
        """POST ``body`` to ``url``; await the result.  (The transport's own
        coroutine, when there is a request to make: a delivery's CPU budget
        has no room for a second coroutine around it.)"""
        if not self._started:
            raise RuntimeError("sender is not started")
        started = time.monotonic()
        try:
            target = self._targets[url]
        except KeyError:
            target = self._learn(url)
        if target is None:
            return _ready(failed(ErrorKind.BLOCKED, "blocked", started))
        if isinstance(target, str):
            return _ready(failed(ErrorKind.CONNECT, target, started))
        return self.transport.exchange(target, body, headers, timeout_ms, started)

    def _learn(self, url: str) -> Target | str | None:
        # A box sends to the same few thousand URLs again and again: parse each
        # once, and remember the policy's DNS-free verdict with it (it depends
        # only on the URL and this sender's fixed policy).
        target: Target | str | None
        try:
            host = URL(url).raw_host
        except (ValueError, UnicodeError):
            host = None  # reported as an invalid URL below
        if host is not None and static_refusal(host, self.policy) is not None:
            target = None
        else:
            try:
                target = Target(url)
            except InvalidURLError as exc:
                target = f"invalid URL: {exc}"
        if len(self._targets) >= _CACHE_SIZE:
            self._targets.clear()
        self._targets[url] = target
        return target


async def _ready(result: SendResult) -> SendResult:
    return result
