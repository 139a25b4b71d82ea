"""The HTTP client side of a delivery attempt.

One aiohttp session with keep-alive serves every attempt.  Each request has
the webhook's timeoutMs as its *total* budget (connect, send, response), never
follows a redirect, and reads at most ``max_response_bytes`` of the response
(decompressing it ourselves, with the same bound, so a gzip bomb stays
small).  Whatever happens, ``send`` returns a :class:`SendResult`; it never
raises for a receiver's misbehaviour.

Every connection goes through the address policy's socket factory (see
``sender.addresses``); an IP literal or a localhost/metadata name the policy
forbids is refused before aiohttp sees it, so every notation ends as
``blocked`` rather than as an "invalid URL" or DNS error that gets retried.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from hookd import __version__
from hookd.policy import ErrorKind
from hookd.sender.addresses import AddressPolicy, BlockedAddressError, static_refusal

USER_AGENT = f"hookd/{__version__}"
# The wording of the reference documents for a request that ran out of time.
TIMEOUT_MESSAGE = "The operation was aborted due to timeout"
STORED_BODY_CHARS = 256


@dataclass(frozen=True, slots=True)
class SendResult:
    status_code: int | None
    error: ErrorKind | None
    error_text: str | None
    body: str | None  # first 256 characters of the (decoded) response body
    retry_after: str | None
    duration_ms: int


def _blocked(exc: BaseException) -> bool:
    """Whether the policy refused *every* address the connection could use.

    Happy Eyeballs raises the refusal itself when all candidates were refused
    (they share one message), but a plain ``OSError("Multiple exceptions:
    ...")`` when some were refused and others failed otherwise; that is an
    ordinary connection failure, worth a retry, not ``blocked``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BlockedAddressError):
            return True
        current = current.__cause__ or current.__context__
    return False


_REFUSAL_CACHE_SIZE = 16_384


class Sender:
    def __init__(
        self,
        policy: AddressPolicy,
        *,
        max_response_bytes: int = 8192,
        user_agent: str = USER_AGENT,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.policy = policy
        self.max_response_bytes = max_response_bytes
        self.user_agent = user_agent
        # None: aiohttp's default resolver.  Tests inject one to play DNS rebinding.
        self.resolver = resolver
        self._refusals: dict[str, bool] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,  # the scheduler's semaphores are the limits
            limit_per_host=0,
            ttl_dns_cache=60,
            keepalive_timeout=30,
            socket_factory=self.policy.socket_factory,
            enable_cleanup_closed=False,
            resolver=self.resolver,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Never through an HTTP(S)_PROXY from the environment: the policy
            # would then judge the proxy's address, not the receiver's.
            trust_env=False,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Content-Type"),
        )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(
        self, url: str, body: bytes, headers: dict[str, str], timeout_ms: int
    ) -> SendResult:
        session = self._session
        if session is None:
            raise RuntimeError("sender is not started")
        full_headers = {
            "Content-Type": "application/json",
            "User-Agent": self.user_agent,
            "Accept-Encoding": "gzip, deflate",
            **headers,
        }
        timeout_s = timeout_ms / 1000
        started = time.monotonic()

        def elapsed_ms() -> int:
            return round((time.monotonic() - started) * 1000)

        if self._refused_without_dns(url):
            return SendResult(None, ErrorKind.BLOCKED, "blocked", None, None, elapsed_ms())

        status: int | None = None
        retry_after: str | None = None
        text: str | None = None
        # What arrived of the body, kept when the receiver stalls mid-body.
        got = bytearray()
        try:
            async with asyncio.timeout(timeout_s):
                async with session.post(
                    url,
                    data=body,
                    headers=full_headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout_s),
                ) as resp:
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
                    text = await self._read_body(resp, got)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            if status is not None:
                # The receiver answered but dribbled its body: its status stands.
                text = _stored_text(got, self.max_response_bytes)
                return SendResult(status, None, None, text, retry_after, elapsed_ms())
            return SendResult(None, ErrorKind.TIMEOUT, TIMEOUT_MESSAGE, None, None, elapsed_ms())
        except aiohttp.ClientResponseError as exc:
            return SendResult(
                None,
                ErrorKind.INVALID_RESPONSE,
                f"invalid response: {exc.message}",
                None,
                None,
                elapsed_ms(),
            )
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, OSError) as exc:
            if status is not None:
                text = _stored_text(got, self.max_response_bytes)
                return SendResult(status, None, None, text, retry_after, elapsed_ms())
            if _blocked(exc):
                return SendResult(None, ErrorKind.BLOCKED, "blocked", None, None, elapsed_ms())
            if isinstance(exc, aiohttp.ClientPayloadError):
                kind = ErrorKind.INVALID_RESPONSE
            else:
                kind = ErrorKind.CONNECT
            return SendResult(None, kind, _describe(exc), None, None, elapsed_ms())
        except (aiohttp.InvalidURL, ValueError) as exc:
            return SendResult(
                None, ErrorKind.CONNECT, f"invalid URL: {exc}", None, None, elapsed_ms()
            )
        return SendResult(status, None, None, text, retry_after, elapsed_ms())

    def _refused_without_dns(self, url: str) -> bool:
        # The answer depends only on the URL and this sender's fixed policy, and
        # a box sends to the same few thousand URLs again and again: remember it.
        known = self._refusals.get(url)
        if known is not None:
            return known
        try:
            host = URL(url).raw_host
        except (ValueError, UnicodeError):
            return False  # aiohttp reports it as an invalid URL
        refused = host is not None and static_refusal(host, self.policy) is not None
        if len(self._refusals) >= _REFUSAL_CACHE_SIZE:
            self._refusals.clear()
        self._refusals[url] = refused
        return refused

    async def _read_body(self, resp: aiohttp.ClientResponse, out: bytearray) -> str:
        """Read and decode at most ``max_response_bytes`` into ``out``."""
        limit = self.max_response_bytes
        encoding = resp.headers.get("Content-Encoding", "").strip().lower()
        decompressor = None
        if encoding in ("gzip", "x-gzip"):
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            decompressor = zlib.decompressobj()
        raw_read = 0
        # Compressed input is bounded too: a body that inflates to nothing
        # (a bomb of zeros trimmed away) must not make us read forever.
        raw_limit = limit * 4
        while len(out) < limit and raw_read < raw_limit:
            chunk = await resp.content.read(min(65536, raw_limit - raw_read))
            if not chunk:
                break
            raw_read += len(chunk)
            if decompressor is None:
                out += chunk
                continue
            try:
                out += decompressor.decompress(chunk, limit - len(out))
            except zlib.error:
                out += chunk  # not really compressed: keep the raw bytes
                decompressor = None
        return _stored_text(out, limit)


def _stored_text(out: bytearray, limit: int) -> str:
    return out[:limit].decode("utf-8", errors="replace")[:STORED_BODY_CHARS]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:500]
