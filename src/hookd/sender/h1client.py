"""hookd's own HTTP/1.1 client: the default transport of the Sender.

A purpose-built keep-alive client on asyncio Protocols (the wire part is
``sender.h1``), because a delivery's whole CPU budget is smaller than what a
general-purpose client spends on one request.  It does exactly what a
webhook POST needs:

- **One deadline.**  The webhook's timeoutMs is the *total* budget (DNS,
  connect, TLS, send, response head, body), enforced by a single
  ``loop.call_at`` timer per request.  While we wait for the response it
  ends the exchange through the connection's future; before that (DNS,
  connect) it cancels the task, and the cancellation is turned into the
  timeout result.  A response is an answer only when it is complete: one
  whose body the deadline cut short is a timeout, one the receiver cut
  short (closed early) an incomplete response, each reported with the
  status of its head and what arrived of the body.
- **Bounded reads.**  At most ``max_response_bytes`` of decoded body are
  kept (gzip/deflate decoded here, with the same bound, the compressed
  input bounded at 4x), the response head at 64 KiB.  A connection whose
  body we stopped reading is closed, never pooled.
- **Nothing implicit.**  Redirects are never followed (a 3xx is a status),
  no proxy from the environment, no cookies.
- **Keep-alive pool.**  Idle connections per (scheme, host, port), last in
  first out, closed after 30 s idle; a connection the peer closed while
  idle is dropped on checkout.  A request that fails on a *reused*
  connection before any response byte arrived is sent once more on a fresh
  connection (see ``_exchange``), and counted through ``on_resend``.
- **The address policy on every connection.**  Each new connection goes to
  one exact IP address that ``AddressPolicy.socket_factory`` approved just
  before connecting (``sender.addresses``), after DNS, so every notation,
  DNS answer and rebinding meets the same rule; an IP literal or a
  localhost/metadata name the policy forbids is refused before any DNS
  (``static_refusal``), so it ends as ``blocked`` rather than as a retried
  DNS error.  DNS goes through an aiohttp ``AbstractResolver`` (tests
  script one) with answers cached for 60 s; addresses are tried in order.
- **TLS** with ``ssl.create_default_context()`` (verification on), the
  URL's host as SNI and verified name, and no fallback to the subject's CN
  for a certificate without subjectAltName.

Whatever happens, ``exchange`` returns a :class:`SendResult`; it never
raises for a receiver's misbehaviour.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp.abc import AbstractResolver

from hookd.policy import ErrorKind
from hookd.sender.addresses import BlockedAddressError
from hookd.sender.h1 import H1Connection
from hookd.sender.request import AddrInfo, Target
from hookd.sender.transport import (
    TIMEOUT_MESSAGE,
    ClientOptions,
    SendResult,
    cannot_connect,
    default_tls_context,
    elapsed_ms,
    failed,
    timed_out,
)

DNS_TTL_SECONDS = 60.0
# With more addresses still to try, one address gets its share of what is
# left of the deadline, but at least this long.
MIN_CONNECT_SHARE_SECONDS = 0.25

_CACHE_SIZE = 16_384

PoolKey = tuple[str, str, int]


class _Blocked(Exception):
    """The policy refused every address the host resolved to."""


class _ConnectFailed(Exception):
    """No connection could be made; the text says why."""


class _Deadline:
    """The one timer of a request: it ends the exchange, or the connect phase."""

    __slots__ = ("conn", "expired", "task", "when")

    def __init__(self, when: float) -> None:
        # The task to cancel if the deadline passes while connecting: looked
        # up only when a connection is made (a pooled one needs none; the
        # lookup cost ~1.5 us a request).
        self.task: asyncio.Task[Any] | None = None
        self.when = when  # loop time
        # The connection whose response we are waiting for, if any.
        self.conn: H1Connection | None = None
        self.expired = False

    def fire(self) -> None:
        self.expired = True
        conn = self.conn
        if conn is not None:
            conn.expire()
        elif self.task is not None:
            # DNS, connect or TLS: coroutines we can only stop by cancelling.
            self.task.cancel()


class H1Client:
    """The :class:`~hookd.sender.transport.Transport` on ``sender.h1``."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self.policy = options.policy
        self.max_response_bytes = options.max_response_bytes
        self.keepalive_seconds = options.keepalive_seconds
        self.on_resend = options.on_resend
        # None: aiohttp's default resolver.  Tests inject one to play DNS rebinding.
        self.resolver = options.resolver
        self._ssl_context = options.ssl_context
        self._builder = options.builder
        self._idle: dict[PoolKey, list[H1Connection]] = {}
        self._live: set[H1Connection] = set()
        self._dns: dict[tuple[str, int], tuple[float, list[AddrInfo]]] = {}
        self._lookups: dict[tuple[str, int], asyncio.Task[list[AddrInfo]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._own_resolver: AbstractResolver | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        if self.resolver is None:
            from aiohttp.resolver import DefaultResolver

            self._own_resolver = DefaultResolver()
        self._sweeper = loop.call_later(self.keepalive_seconds / 2, self._sweep)

    async def close(self) -> None:
        if self._loop is None:
            return
        self._loop = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self._lookups.values()):
            task.cancel()
        self._lookups.clear()
        self._idle.clear()
        for conn in list(self._live):
            conn.abort()
        if self._own_resolver is not None:
            resolver, self._own_resolver = self._own_resolver, None
            await resolver.close()
        # Let the transports' connection_lost callbacks run before the loop may close.
        await asyncio.sleep(0)

    def clear_dns_cache(self) -> None:
        """Forget cached DNS answers (the next connection to a name looks it up again)."""
        self._dns.clear()

    async def exchange(
        self, target: Target, body: bytes, headers: dict[str, str], timeout_ms: int, started: float
    ) -> SendResult:
        loop = self._loop
        if loop is None:
            raise RuntimeError("sender is not started")
        try:
            request = self._builder.build(target, body, headers)
        except ValueError as exc:
            return failed(ErrorKind.CONNECT, f"invalid request: {exc}", started)

        deadline = _Deadline(loop.time() + timeout_ms / 1000)
        timer = loop.call_at(deadline.when, deadline.fire)
        try:
            conn = await self._exchange(target, request, deadline)
        except asyncio.CancelledError:
            task = deadline.task
            if deadline.expired and task is not None and task.uncancel() == 0:
                return timed_out(started)
            if deadline.conn is not None:
                # Cancelled while waiting for the answer (shutdown, an API
                # client gone during a test send): no one will read it, so
                # the connection goes now rather than whenever the receiver
                # closes it.
                deadline.conn.abort()
            raise
        except _Blocked:
            return failed(ErrorKind.BLOCKED, "blocked", started)
        except _ConnectFailed as exc:
            return failed(ErrorKind.CONNECT, str(exc), started)
        finally:
            timer.cancel()
        if conn is None:
            return timed_out(started)
        return self._outcome(conn, started)

    def _outcome(self, conn: H1Connection, started: float) -> SendResult:
        status = conn.status
        if conn.timed_out or conn.incomplete:
            conn.abort()
            if status is None:
                return timed_out(started)
            # A head arrived, its body did not finish: no answer, but what
            # arrived is worth recording.
            if conn.timed_out:
                kind, text = ErrorKind.TIMEOUT, TIMEOUT_MESSAGE
            else:
                kind, text = ErrorKind.INCOMPLETE, f"incomplete response: {conn.error}"[:500]
            body = conn.body.text()
            return SendResult(
                status, kind, text, body, conn.retry_after, elapsed_ms(started), conn.internal
            )
        if status is None or conn.error is not None:
            conn.abort()
            error = conn.error or "no response"
            if conn.invalid:
                return failed(ErrorKind.INVALID_RESPONSE, f"invalid response: {error}", started)
            return failed(ErrorKind.CONNECT, error[:500], started)
        text = conn.body.text()
        retry_after = conn.retry_after
        internal = conn.internal
        self._release(conn)
        return SendResult(status, None, None, text, retry_after, elapsed_ms(started), internal)

    # -- one exchange --------------------------------------------------------------------

    async def _exchange(
        self, target: Target, request: bytes, deadline: _Deadline
    ) -> H1Connection | None:
        """Send ``request`` and wait for its outcome; None when the deadline passed first."""
        conn = self._checkout(target.key)
        if conn is not None:
            deadline.conn = conn
            await conn.start(request, self.max_response_bytes)
            deadline.conn = None
            if conn.received or conn.timed_out or conn.error is None:
                return conn
            # The peer closed this kept-alive connection just as we reused it
            # (its idle timeout and our request crossed).  Sending once more on
            # a fresh connection is safe: the receiver never started to answer,
            # so at worst it got the request and dropped it unanswered, which
            # at-least-once delivery (and the webhook-id header receivers
            # deduplicate on) already allows for.  Only once, and only on a
            # fresh connection, so a receiver that always does this fails.
            conn.abort()
            if deadline.expired:
                return None
            if self.on_resend is not None:
                self.on_resend()
        deadline.task = asyncio.current_task()
        conn = await self._connect(target, deadline)
        if deadline.expired:
            # The timer fired while the connect completed: whoever swallowed
            # its cancellation, the request is over.
            conn.abort()
            task = deadline.task
            if task is not None and task.cancelling():
                task.uncancel()
            return None
        deadline.conn = conn
        await conn.start(request, self.max_response_bytes)
        deadline.conn = None
        return conn

    def _checkout(self, key: PoolKey) -> H1Connection | None:
        pool = self._idle.get(key)
        if not pool:
            return None
        assert self._loop is not None
        oldest = self._loop.time() - self.keepalive_seconds
        while pool:
            conn = pool.pop()
            transport = conn.transport
            if conn.closed or transport is None or transport.is_closing():
                continue
            if conn.idle_since < oldest:
                conn.abort()
                continue
            return conn
        return None

    def _release(self, conn: H1Connection) -> None:
        loop = self._loop
        if loop is None or not conn.reusable():
            conn.abort()
            return
        conn.park(loop.time())
        pool = self._idle.get(conn.key)
        if pool is None:
            self._idle[conn.key] = [conn]
        else:
            pool.append(conn)

    def _sweep(self) -> None:
        loop = self._loop
        if loop is None:
            return
        oldest = loop.time() - self.keepalive_seconds
        for key, pool in list(self._idle.items()):
            # Pools are LIFO: the longest idle are at the front.
            stale = 0
            while stale < len(pool) and (pool[stale].idle_since < oldest or pool[stale].closed):
                pool[stale].abort()
                stale += 1
            if stale:
                del pool[:stale]
            if not pool:
                del self._idle[key]
        self._sweeper = loop.call_later(self.keepalive_seconds / 2, self._sweep)

    # -- new connections -----------------------------------------------------------------

    async def _connect(self, target: Target, deadline: _Deadline) -> H1Connection:
        loop = self._loop
        if loop is None:
            raise _ConnectFailed("sender is closed")
        infos = target.addr_infos
        if infos is None:
            try:
                infos = await self._resolve(target.host, target.port)
            except (OSError, ValueError, UnicodeError) as exc:
                raise _ConnectFailed(cannot_connect(target, exc)) from None
        refused = 0
        failure: BaseException | None = None
        for i, info in enumerate(infos):
            try:
                sock = self.policy.socket_factory(info)
            except BlockedAddressError:
                refused += 1
                continue
            except OSError as exc:  # e.g. an IPv6 answer on a host without IPv6
                failure = exc
                continue
            try:
                if i < len(infos) - 1:
                    async with asyncio.timeout(self._connect_share(deadline, len(infos) - i)):
                        await loop.sock_connect(sock, info[4])
                else:
                    await loop.sock_connect(sock, info[4])
            except OSError as exc:  # TimeoutError included: try the next address
                sock.close()
                failure = exc
                continue
            except BaseException:
                sock.close()
                raise
            conn = await self._handshake(loop, target, sock)
            conn.internal = self.policy.connected_to_listed(str(info[4][0]))
            return conn
        if failure is None and refused:
            raise _Blocked
        if failure is None:
            failure = OSError("DNS returned no addresses")
        raise _ConnectFailed(cannot_connect(target, failure))

    def _connect_share(self, deadline: _Deadline, left: int) -> float:
        # The request's own timer ends the whole attempt; this only keeps one
        # silent address from using all of it while others wait their turn.
        assert self._loop is not None
        return max(MIN_CONNECT_SHARE_SECONDS, (deadline.when - self._loop.time()) / left)

    async def _handshake(
        self, loop: asyncio.AbstractEventLoop, target: Target, sock: socket.socket
    ) -> H1Connection:
        live = self._live
        key = target.key

        def factory() -> H1Connection:
            return H1Connection(loop, live, key)

        try:
            if target.tls:
                _, conn = await loop.create_connection(
                    factory,
                    sock=sock,
                    ssl=self._tls_context(),
                    server_hostname=target.server_hostname,
                )
            else:
                _, conn = await loop.create_connection(factory, sock=sock)
        except OSError as exc:  # ssl.SSLError is one
            sock.close()
            raise _ConnectFailed(cannot_connect(target, exc)) from None
        except BaseException:
            sock.close()
            raise
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # Built on first use: loading the CA store costs milliseconds.
            self._ssl_context = default_tls_context()
        return self._ssl_context

    async def _resolve(self, host: str, port: int) -> list[AddrInfo]:
        loop = self._loop
        assert loop is not None
        key = (host, port)
        cached = self._dns.get(key)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        # Concurrent deliveries to one name share one lookup; it runs on even
        # if the request that started it gives up.
        task = self._lookups.get(key)
        if task is None:
            task = loop.create_task(self._lookup(host, port))
            self._lookups[key] = task
            task.add_done_callback(self._lookup_done(key))
        return await asyncio.shield(task)

    def _lookup_done(self, key: tuple[str, int]) -> Callable[[asyncio.Task[list[AddrInfo]]], None]:
        def done(task: asyncio.Task[list[AddrInfo]]) -> None:
            if self._lookups.get(key) is task:
                del self._lookups[key]
            if not task.cancelled():
                task.exception()  # seen, even if every waiter gave up

        return done

    async def _lookup(self, host: str, port: int) -> list[AddrInfo]:
        resolver = self.resolver or self._own_resolver
        assert resolver is not None
        answers = await resolver.resolve(host, port, family=socket.AF_UNSPEC)
        infos: list[AddrInfo] = []
        for answer in answers:
            address = answer["host"]
            if ":" in address:
                sockaddr: tuple[object, ...] = (address, answer["port"], 0, 0)
                infos.append(
                    (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)
                )
            else:
                sockaddr = (address, answer["port"])
                infos.append((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        if not infos:
            raise OSError(f"DNS returned no addresses for {host}")
        loop = self._loop
        if loop is not None:
            if len(self._dns) >= _CACHE_SIZE:
                self._dns.clear()
            self._dns[(host, port)] = (loop.time() + DNS_TTL_SECONDS, infos)
        return infos
