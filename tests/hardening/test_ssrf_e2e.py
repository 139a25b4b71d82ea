"""The address policy end to end: the real scheduler, sender and SQLite, an EMPTY allow list.

An "internal" listener on 127.0.0.1 (and ::1 where the box has IPv6) stands
for the service an attacker wants to reach.  It counts accepted TCP
connections, so "zero" means not even a handshake got there.  The spying
policy records every address the connect-time check judged, which shows
*which* check refused what.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hookd.models import Status
from hookd.sender import CLIENTS
from tests.hardening.conftest import (
    CountingServer,
    PolicyHarness,
    ScriptedResolver,
    listen_on_same_port,
    running_daemon,
    wait_status,
    wait_terminal,
)

MakeHarness = Callable[..., Awaitable[PolicyHarness]]


# Hosts that mean this machine: the internal listener's port makes them real targets.
@pytest.fixture(params=CLIENTS)
def sender_client(request: pytest.FixtureRequest) -> str:
    """This suite runs on every transport: hookd's own client and aiohttp's."""
    return str(request.param)


LOCAL_HOSTS = [
    "127.0.0.1",
    "127.0.0.1.",
    "0177.1",
    "017700000001",
    "0x7f000001",
    "0x7f.1",
    "2130706433",
    "127.000.000.001",
    "127.1",
    "0.0.0.0",  # Linux routes a connect to 0.0.0.0 to the local host
    "0",
    "[::ffff:7f00:1]",
    "[::ffff:127.0.0.1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "[::127.0.0.1]",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[::]",
    "localhost",
    "LOCALHOST.",
    "api.localhost",
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits, folded by IDNA
]
# Elsewhere-internal hosts: never connected to, so no listener is needed to prove it.
REMOTE_HOSTS = [
    "169.254.169.254",
    "[::ffff:a9fe:a9fe]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:a9fe:a9fe::]",
    "[2001::a9fe:a9fe]",  # Teredo
    "[fe80::1%25eth0]",
    "[fe80::1%25lo]",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.0.1",
    "100.64.0.1",
    "224.0.0.1",
    "255.255.255.255",
    "[fc00::1]",
    "[ff02::1]",
    "metadata.google.internal",
]


def url_for(host: str, port: int) -> str:
    return f"http://{host}:{port}/hook"


@pytest.mark.parametrize("host", LOCAL_HOSTS + REMOTE_HOSTS)
async def test_every_notation_ends_blocked_and_reaches_nothing(
    policy_harness: MakeHarness, internal: CountingServer, host: str
) -> None:
    h = await policy_harness(allow_networks=())
    await h.webhook(url_for(host, internal.port), retry_attempts=5)
    (delivery_id,) = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
    h.scheduler.start()
    await wait_status(h, delivery_id, Status.DEAD_LETTER)

    (attempt,) = await h.store.list_attempts(delivery_id)
    assert (attempt.error, attempt.outcome, attempt.status_code) == ("blocked", "blocked", None)
    d = await h.store.get_delivery(None, delivery_id)
    assert d is not None and d.attempt_count == 1 and d.next_attempt_at is None
    assert d.last_error == "blocked"
    # Not retried, however long we wait: retrying cannot help.
    h.clock.advance(24 * 3600)
    for _ in range(5):
        h.scheduler.wake()
        await asyncio.sleep(0.02)
    assert len(await h.store.list_attempts(delivery_id)) == 1
    assert internal.connections == 0
    assert h.policy.opened == [], "no socket was even created"
    assert h.metrics.attempts.labels(outcome="blocked")._value.get() == 1


async def test_the_internal_listener_does_count(
    policy_harness: MakeHarness, internal: CountingServer
) -> None:
    """Control: allowed, the same URLs reach the listener, so zero above means something."""
    h = await policy_harness(allow_networks=("127.0.0.0/8", "::1/128"))
    hosts = ["127.0.0.1", "[::ffff:127.0.0.1]"] + (["[::1]"] if "::1" in internal.hosts else [])
    for host in hosts:
        await h.webhook(url_for(host, internal.port))
    ids = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
    h.scheduler.start()
    await wait_terminal(h, ids)
    for delivery_id in ids:
        d = await h.store.get_delivery(None, delivery_id)
        assert d is not None and d.status is Status.DELIVERED
    assert internal.connections == len(hosts) == internal.requests


async def test_the_connect_time_check_alone_stops_every_local_notation(
    policy_harness: MakeHarness, internal: CountingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Switch off the sender's DNS-free pre-check: the socket factory still refuses all."""
    monkeypatch.setattr("hookd.sender.http.static_refusal", lambda host, policy: None)
    h = await policy_harness(allow_networks=())
    by_id: dict[str, str] = {}
    for host in LOCAL_HOSTS:
        await h.webhook(url_for(host, internal.port), events=(f"e.{len(by_id)}",), retry_attempts=0)
        (delivery_id,) = (await h.store.ingest_event("ws_test", f"e.{len(by_id)}", {})).delivery_ids
        by_id[delivery_id] = host
    h.scheduler.start()
    await wait_terminal(h, by_id)

    outcomes: dict[str, str | None] = {}
    for delivery_id, host in by_id.items():
        (attempt,) = await h.store.list_attempts(delivery_id)
        outcomes[host] = attempt.error
    assert internal.connections == 0
    assert h.policy.opened == []
    # What the sender connects to at all, the socket factory refused, on the resolved address:
    for host in ("127.0.0.1", "0x7f000001", "0x7f.1", "[::ffff:7f00:1]", "[::1]", "localhost"):
        assert outcomes[host] == "blocked", (host, outcomes[host])
    refused = {ipaddress.ip_address(a) for a in h.policy.refused}
    assert ipaddress.ip_address("127.0.0.1") in refused  # localhost, 0x7f000001 via getaddrinfo
    assert ipaddress.ip_address("::ffff:7f00:1") in refused
    # The rest never got as far as a socket: these *.localhost names do not resolve
    # here (legacy notations are judged as their address, so they are among the above).
    for host, error in outcomes.items():
        assert error is not None, host
        assert error == "blocked" or error.startswith(("invalid URL", "Cannot connect")), (
            host,
            error,
        )


async def test_a_name_resolving_inward_is_refused_at_connect_time(
    policy_harness: MakeHarness, internal: CountingServer
) -> None:
    answers = {"internal.example": ["127.0.0.1", "::1"]}
    resolver = ScriptedResolver(answers)
    h = await policy_harness(allow_networks=(), resolver=resolver)
    await h.webhook(url_for("internal.example", internal.port), retry_attempts=3)
    (delivery_id,) = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
    h.scheduler.start()
    await wait_status(h, delivery_id, Status.DEAD_LETTER)
    (attempt,) = await h.store.list_attempts(delivery_id)
    assert attempt.error == "blocked"
    assert resolver.lookups == ["internal.example"]
    assert sorted(h.policy.refused) == ["127.0.0.1", "::1"]
    assert internal.connections == 0


async def test_dns_rebinding_between_deliveries_is_caught(
    policy_harness: MakeHarness,
) -> None:
    """A name first answers with an allowed address, then with an internal one.

    127.0.0.2 plays the receiver's public address (the only allowed network);
    127.0.0.1 is the internal service, on the same port, so only the DNS
    answer differs.  The API accepted the URL: it is an ordinary name.
    """
    from hookd.sender import destination_problem
    from hookd.sender.addresses import AddressPolicy

    public, private = CountingServer(), CountingServer()
    try:
        port = await public.listen("127.0.0.2")
        await private.listen("127.0.0.1", port)
    except OSError:
        await public.close()
        pytest.skip("127.0.0.2 or the same port on 127.0.0.1 is not available")
    try:
        resolver = ScriptedResolver({"rebind.example": ["127.0.0.2"]})
        h = await policy_harness(allow_networks=("127.0.0.2/32",), resolver=resolver)
        url = url_for("rebind.example", port)
        assert destination_problem(url, AddressPolicy(("127.0.0.2/32",))) is None
        await h.webhook(url, retry_attempts=3)
        h.scheduler.start()
        (first,) = (await h.store.ingest_event("ws_test", "t", {"n": 1})).delivery_ids
        await wait_status(h, first, Status.DELIVERED)
        assert (public.connections, private.connections) == (1, 0)

        # Rebind.  The cache stands in for the TTL running out.
        resolver.answers["rebind.example"] = ["127.0.0.1"]
        h.sender.clear_dns_cache()
        (second,) = (await h.store.ingest_event("ws_test", "t", {"n": 2})).delivery_ids
        await wait_status(h, second, Status.DEAD_LETTER)
        (attempt,) = await h.store.list_attempts(second)
        assert attempt.error == "blocked"
        assert (public.connections, private.connections) == (1, 0)
        assert h.policy.refused == ["127.0.0.1"]

        # A mixed answer (the classic multi-A trick) connects only where allowed.
        resolver.answers["rebind.example"] = ["127.0.0.1", "127.0.0.2"]
        h.sender.clear_dns_cache()
        (third,) = (await h.store.ingest_event("ws_test", "t", {"n": 3})).delivery_ids
        await wait_status(h, third, Status.DELIVERED)
        assert (public.connections, private.connections) == (2, 0)
        assert h.policy.refused == ["127.0.0.1", "127.0.0.1"]
    finally:
        await public.close()
        await private.close()


async def test_refused_and_unreachable_mix_is_a_retryable_failure(
    policy_harness: MakeHarness,
) -> None:
    """One answer refused, the other merely down: a connection error (retried), not 'blocked'."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        dead_port = s.getsockname()[1]
    resolver = ScriptedResolver({"mixed.example": ["127.0.0.1", "127.0.0.2"]})
    h = await policy_harness(allow_networks=("127.0.0.2/32",), resolver=resolver)
    await h.webhook(url_for("mixed.example", dead_port), retry_attempts=2)
    (delivery_id,) = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
    h.scheduler.start()
    await wait_status(h, delivery_id, Status.FAILED)
    (attempt,) = await h.store.list_attempts(delivery_id)
    assert attempt.outcome == "connect_error" and attempt.error != "blocked"


async def test_redirect_into_internal_space_is_not_followed(
    policy_harness: MakeHarness, internal: CountingServer
) -> None:
    redirector = CountingServer(
        response=(
            b"HTTP/1.1 307 Temporary Redirect\r\n"
            b"Location: http://127.0.0.1:%d/admin\r\nContent-Length: 0\r\n\r\n" % internal.port
        )
    )
    await listen_on_same_port(redirector, ["127.0.0.2"])
    try:
        # Even with the internal listener *allowed*, a redirect is never followed.
        h = await policy_harness(allow_networks=("127.0.0.0/8",))
        await h.webhook(f"http://127.0.0.2:{redirector.port}/hook", retry_attempts=0)
        (delivery_id,) = (await h.store.ingest_event("ws_test", "t", {})).delivery_ids
        h.scheduler.start()
        await wait_status(h, delivery_id, Status.DEAD_LETTER)
        (attempt,) = await h.store.list_attempts(delivery_id)
        assert (attempt.status_code, attempt.outcome) == (307, "3xx")
        assert redirector.connections == 1 and internal.connections == 0
    finally:
        await redirector.close()


# -- the API's 400 -------------------------------------------------------------------

API_REJECTS = [
    "http://0177.1/",
    "http://0x7f000001/",
    "http://2130706433/",
    "http://127.000.000.001/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[fe80::1%25eth0]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://localhost:8080/",
    "http://x.localhost/",
    "http://metadata.google.internal/",
]


async def test_api_rejects_obviously_internal_urls_with_a_reason(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as d, aiohttp.ClientSession() as http:
        headers = {"X-Api-Key": d.key}

        async def create(url: str) -> tuple[int, Any]:
            body = {"name": "n", "url": url, "events": ["*"]}
            async with http.post(f"{d.base_url}/v1/webhooks", json=body, headers=headers) as r:
                return r.status, await r.json()

        for url in API_REJECTS:
            status, body = await create(url)
            assert status == 400, (url, body)
            assert body["code"] == 400 and body["message"].startswith("url: host "), body
            assert "outbound address policy" in body["message"], body
        status, created = await create("https://crm.example.com/hook")
        assert status == 201
        hook = created["data"]["_id"]
        async with http.patch(
            f"{d.base_url}/v1/webhooks/{hook}",
            json={"url": "http://[::ffff:127.0.0.1]:6379/"},
            headers=headers,
        ) as r:
            assert r.status == 400
            body = await r.json()
        assert "IPv4-mapped 127.0.0.1, loopback" in body["message"]
        assert json.dumps(body).count("allow_networks") == 1


async def test_api_accepts_what_allow_networks_allows(tmp_path: Path) -> None:
    allow = {"allow_networks": ("127.0.0.0/8",)}
    async with running_daemon(tmp_path, delivery=allow) as d, aiohttp.ClientSession() as http:
        headers = {"X-Api-Key": d.key}
        body = {"name": "n", "url": "http://127.0.0.1:9000/", "events": ["*"]}
        async with http.post(f"{d.base_url}/v1/webhooks", json=body, headers=headers) as r:
            assert r.status == 201
        body["url"] = "http://10.0.0.1/"
        async with http.post(f"{d.base_url}/v1/webhooks", json=body, headers=headers) as r:
            assert r.status == 400
