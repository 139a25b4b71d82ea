"""The seam between the Sender and the HTTP client that carries its requests.

The :class:`~hookd.sender.http.Sender` owns what every request has in
common: the URL parsed once, the DNS-free refusal of obviously internal
hosts, the request's headers (``sender.request``), the response body's
bounds (``sender.body``), and the wording of every result.  A
:class:`Transport` gets a parsed target and the deadline and owns the rest:
connections, DNS, the address policy at connect time, the one deadline,
reading the response.  Two exist: hookd's own client (``sender.h1client``,
the default) and aiohttp's ``ClientSession`` (``sender.aio``).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from aiohttp.abc import AbstractResolver

from hookd.policy import ErrorKind
from hookd.sender.addresses import AddressPolicy
from hookd.sender.request import RequestBuilder, Target

# The wording of the reference documents for a request that ran out of time.
TIMEOUT_MESSAGE = "The operation was aborted due to timeout"
KEEPALIVE_SECONDS = 30.0


class SendResult(NamedTuple):
    # A tuple: one per attempt (see models.ClaimedDelivery).
    status_code: int | None  # the status of a response head, complete or not
    error: ErrorKind | None  # why it is no answer (it wins over a status)
    error_text: str | None
    body: str | None  # first 256 characters of the (decoded) response body
    retry_after: str | None
    duration_ms: int
    # The answer came from an address the address policy refuses by default and
    # only [delivery] allow_networks permits (see Attempts.run).
    internal: bool = False


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """What the Sender hands its transport: the same for either."""

    policy: AddressPolicy
    max_response_bytes: int
    builder: RequestBuilder
    # None: aiohttp's default resolver.  Tests inject one to play DNS rebinding.
    resolver: AbstractResolver | None
    # None: the system's CAs (built on first use); either way through tls_context().
    ssl_context: ssl.SSLContext | None
    keepalive_seconds: float
    # Called for each request sent once more after its reused connection
    # closed before any byte of the answer (the daemon counts them).
    on_resend: Callable[[], None] | None


class Transport(Protocol):
    """An HTTP client for the Sender: one request at a time per call, any number at once."""

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Close every connection; in-flight exchanges end."""

    def clear_dns_cache(self) -> None:
        """Forget cached DNS answers (the next connection to a name looks it up again)."""

    async def exchange(
        self, target: Target, body: bytes, headers: dict[str, str], timeout_ms: int, started: float
    ) -> SendResult:
        """POST ``body`` to ``target`` within ``timeout_ms`` (the whole request);
        never raises for a receiver's misbehaviour.  ``started`` is the request's
        ``time.monotonic()`` start, for its duration."""
        ...


def elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def failed(kind: ErrorKind, text: str, started: float) -> SendResult:
    """No response head: blocked, connection or TLS failure, invalid response, bad request."""
    return SendResult(None, kind, text, None, None, elapsed_ms(started))


def timed_out(started: float) -> SendResult:
    return SendResult(None, ErrorKind.TIMEOUT, TIMEOUT_MESSAGE, None, None, elapsed_ms(started))


def cannot_connect(target: Target, exc: BaseException) -> str:
    reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
    ssl_text = "default" if target.tls else "False"
    return f"Cannot connect to host {target.host}:{target.port} ssl:{ssl_text} [{reason}]"[:500]


def tls_context(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context`` as deliveries use it: a certificate must name the host in its
    subjectAltName; one that names it only in the subject's CN is refused, as
    browsers refuse it (RFC 6125 deprecated the CN fallback)."""
    context.hostname_checks_common_name = False
    return context


def default_tls_context() -> ssl.SSLContext:
    """Verification against the system's CAs (loading them costs milliseconds)."""
    return tls_context(ssl.create_default_context())
