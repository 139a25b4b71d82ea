"""API keys and tenancy: who is calling, and for which workspace.

A key arrives as ``X-Api-Key: KEY`` or ``Authorization: Bearer KEY`` (both
are fine when they carry the same key).  Only its SHA-256 digest is looked
up, and the stored digest is compared in constant time.  A platform key
(``sk_user_…``) acts on the workspace named by ``X-Workspace-Id``; a
workspace key (``sk_…``) is bound to its own, and naming another workspace
with it is a 403 (the answer is the same whether or not that workspace
exists, so it reveals nothing).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import HttpVersion11, web
from aiohttp.typedefs import Handler

from hookd.api import ui
from hookd.api.context import CONTEXT
from hookd.api.errors import ApiError, bad_request, failure_answer
from hookd.api.inputs import check_declared_size
from hookd.ids import WORKSPACE_ID_PROBLEM, is_workspace_id
from hookd.keys import WORKSPACE_PREFIX, digest_key
from hookd.models import ApiKey

API_KEY_HEADER = "X-Api-Key"
WORKSPACE_HEADER = "X-Workspace-Id"
MAX_KEY_CHARS = 200
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="hookd"'}

# Routes anyone may call: probes, metrics, the API description and the
# dashboard's static files (whose API calls carry the key).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v1/openapi.json"}) | ui.PATHS


@dataclass(frozen=True, slots=True)
class Principal:
    key: ApiKey
    workspace_id: str

    @property
    def owner(self) -> str:
        return self.key.owner


# web.RequestKey (typed request storage) arrived after the oldest aiohttp the
# project accepts; older ones get the plain string key they expect.
_REQUEST_KEY = getattr(web, "RequestKey", None)
PRINCIPAL: Any = (
    _REQUEST_KEY("hookd_principal", Principal) if _REQUEST_KEY is not None else "hookd_principal"
)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, dict(_CHALLENGE))


def _single_header(request: web.Request, name: str) -> str | None:
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise unauthorized(f"{name}: send the header only once")
    return values[0] if values else None


def presented_key(request: web.Request) -> str:
    """The one key the request carries; two different ones are refused."""
    candidates: list[str] = []
    x_api_key = _single_header(request, API_KEY_HEADER)
    if x_api_key is not None:
        if not x_api_key.strip():
            raise unauthorized(f"{API_KEY_HEADER}: empty")
        candidates.append(x_api_key.strip())
    authorization = _single_header(request, "Authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("Authorization: expected 'Bearer <API key>'")
        candidates.append(token.strip())
    if not candidates:
        raise unauthorized(
            f"{API_KEY_HEADER}: an API key is required (X-Api-Key or Authorization: Bearer)"
        )
    if len(set(candidates)) > 1:
        raise unauthorized(f"{API_KEY_HEADER}: X-Api-Key and Authorization carry different keys")
    return candidates[0]


def _plausible(key: str) -> bool:
    # Printable ASCII without space (0x21-0x7E), checked in C rather than per character.
    return (
        key.startswith(WORKSPACE_PREFIX)
        and len(key) <= MAX_KEY_CHARS
        and key.isascii()
        and key.isprintable()
        and " " not in key
    )


# A stored key found by its digest, with that digest (Store.find_api_key).
_Found = tuple[ApiKey, bytes]
KeyLookup = Callable[[bytes], Awaitable[_Found | None]]


class KeyCache:
    """Keys found recently, so a busy client is not a database read per request.

    Entries live ``ttl`` seconds: a key revoked with ``hookd keys revoke`` (often
    from another process, which cannot tell us) stops working within that time.
    Only keys that exist are kept, so random keys cannot fill the cache.
    Requests that miss while a lookup of the same key is running wait for it
    instead of each reading the database: when a busy client's entry expired,
    every one of its requests in flight missed at once, each a read on the
    connection the scheduler's turns use (188 reads in one 64-client ingest
    benchmark run; 6 with this).
    """

    def __init__(self, ttl: float = 2.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[bytes, tuple[float, tuple[ApiKey, bytes]]] = {}
        self._loading: dict[bytes, asyncio.Future[_Found | None]] = {}

    async def find(self, digest: bytes, now: float, load: KeyLookup) -> _Found | None:
        """The cached key for ``digest``, else what ``load`` finds (one load at a time)."""
        found = self.get(digest, now)
        if found is not None:
            return found
        loading = self._loading.get(digest)
        if loading is None:
            loading = asyncio.ensure_future(self._load(digest, now, load))
            self._loading[digest] = loading
        # Shielded: a caller that goes away (client disconnect) does not cancel
        # the lookup the others wait for.
        return await asyncio.shield(loading)

    async def _load(self, digest: bytes, now: float, load: KeyLookup) -> _Found | None:
        try:
            found = await load(digest)
        finally:
            del self._loading[digest]
        if found is not None:
            self.put(digest, found, now)
        return found

    def get(self, digest: bytes, now: float) -> tuple[ApiKey, bytes] | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < now:
            return None
        return entry[1]

    def put(self, digest: bytes, found: tuple[ApiKey, bytes], now: float) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[digest] = (now + self.ttl, found)


KEY_CACHE: web.AppKey[KeyCache] = web.AppKey("hookd_key_cache", KeyCache)


async def authenticate(request: web.Request) -> Principal:
    store = request.app[CONTEXT].store
    key = presented_key(request)
    if not _plausible(key):
        raise unauthorized(f"{API_KEY_HEADER}: invalid API key")
    digest = digest_key(key)
    found = await request.app[KEY_CACHE].find(digest, time.monotonic(), store.find_api_key)
    if found is None or not hmac.compare_digest(found[1], digest):
        raise unauthorized(f"{API_KEY_HEADER}: invalid API key")
    api_key = found[0]
    if api_key.revoked_at is not None:
        raise unauthorized(f"{API_KEY_HEADER}: this API key has been revoked")

    named = request.headers.getall(WORKSPACE_HEADER, [])
    if len(named) > 1:
        raise bad_request(WORKSPACE_HEADER, "send the header only once")
    workspace = named[0].strip() if named else None
    if workspace is not None and not is_workspace_id(workspace):
        raise bad_request(WORKSPACE_HEADER, WORKSPACE_ID_PROBLEM)
    if api_key.workspace_id is None:
        if workspace is None:
            raise bad_request(
                WORKSPACE_HEADER, "header is required with a platform key (sk_user_...)"
            )
        return Principal(api_key, workspace)
    if workspace is not None and workspace != api_key.workspace_id:
        raise ApiError(
            403, f"{WORKSPACE_HEADER}: this workspace key cannot act on another workspace"
        )
    return Principal(api_key, api_key.workspace_id)


def _needs_key(request: web.Request) -> bool:
    match = request.match_info
    # Unknown routes and wrong methods answer 404/405 without asking for a key:
    # which routes exist is public (see /v1/openapi.json).
    if match.http_exception is not None:
        return False
    resource = match.route.resource
    path = resource.canonical if resource is not None else request.path
    return path not in PUBLIC_PATHS


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The Expect hook below may have authenticated the request already.
    if PRINCIPAL not in request and _needs_key(request):
        request[PRINCIPAL] = await authenticate(request)
    return await handler(request)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: the key and the declared size first, then the invitation.

    aiohttp calls this as soon as the headers are in, before any middleware;
    its default invites every client to send its body at once.  Here a
    client without a valid key, or announcing more than ``max_body_bytes``,
    gets its 401 or 413 instead and never sends the body.
    """
    expect = request.headers.get("Expect", "")
    try:
        if expect.lower() != "100-continue":
            raise ApiError(417, f"Expect: only 100-continue is supported, got {expect[:40]!r}")
        if _needs_key(request):
            request[PRINCIPAL] = await authenticate(request)
        check_declared_size(request)
    except Exception as exc:
        refusal = failure_answer(request, exc)
        # The body was never invited, so what follows on this connection is unknown.
        refusal.force_close()
        return refusal
    if request.version == HttpVersion11 and request.transport is not None:
        request.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


def principal(request: web.Request) -> Principal:
    who = request.get(PRINCIPAL)
    if not isinstance(who, Principal):  # pragma: no cover - a route missing from auth
        raise RuntimeError("request was not authenticated")
    return who
