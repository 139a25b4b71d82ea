"""The outbound address policy as pure functions: tables of addresses and URL hosts.

Vectors come from GitLab's ``url_blocker_spec`` (legacy IPv4 notations,
IPv4-mapped forms, broadcast variants), Stripe smokescreen's address
classification tests (CGNAT, NAT64 embedding) and the IANA special-purpose
registries; each row says why it is there.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from hookd.sender.addresses import (
    AddressPolicy,
    BlockedAddressError,
    destination_problem,
    forbidden_reason,
    is_forbidden,
    literal_address,
    parse_ip,
)
from hookd.validation import ValidationError, validate_new_webhook, validate_webhook_update

FORBIDDEN = [
    # IPv4
    ("0.0.0.0", "'this network'"),
    ("0.1.2.3", "'this network'"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.255", "carrier-grade NAT"),
    ("127.0.0.1", "loopback"),
    ("127.0.0.2", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),
    ("169.254.0.1", "link-local"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.8", "IETF"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "6to4 relay"),
    ("192.168.1.1", "private"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.1", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::ffff:7f00:1", "IPv4-mapped 127.0.0.1, loopback"),
    ("::ffff:127.0.0.2", "IPv4-mapped 127.0.0.2, loopback"),
    ("::ffff:a9fe:a9fe", "IPv4-mapped 169.254.169.254, link-local"),
    ("::ffff:a00:2", "IPv4-mapped 10.0.0.2, private"),
    ("::ffff:c0a8:102", "IPv4-mapped 192.168.1.2, private"),
    ("::ffff:0:0", "IPv4-mapped 0.0.0.0"),
    ("::ffff:ffff:ffff", "IPv4-mapped 255.255.255.255, broadcast"),
    ("::7f00:1", "IPv4-compatible"),
    ("::a9fe:a9fe", "IPv4-compatible"),
    ("::8.8.8.8", "IPv4-compatible"),  # deprecated form, never a real destination
    ("::ffff:0:a9fe:a9fe", "IPv4-translated"),
    ("64:ff9b::a9fe:a9fe", "NAT64"),
    ("64:ff9b::7f00:1", "NAT64"),
    ("64:ff9b::808:808", "NAT64"),  # blocked wholesale: the gateway is internal infrastructure
    ("64:ff9b:1::a9fe:a9fe", "local-use NAT64"),
    ("100::1", "discard-only"),
    ("2001::1", "Teredo"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:db8::1", "documentation"),
    ("2001:2::1", "IETF protocol assignments"),
    ("2002:a9fe:a9fe::", "6to4"),
    ("2002:7f00:1::", "6to4"),
    ("2002:808:808::", "6to4"),  # blocked wholesale, like NAT64
    ("3fff::1", "documentation"),
    ("5f00::1", "SRv6"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fc00:bf8b:e62c:abcd:abcd:aaaa:aaaa:aaaa", "unique local"),
    ("fe80::1", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fe80::1%eth0", "scoped"),
    ("fec0::1", "site-local"),
    ("feef::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
]

PERMITTED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "169.253.255.255",
    "169.255.0.1",
    "172.15.255.255",  # just outside 172.16/12
    "172.32.0.1",
    "192.167.255.255",
    "192.169.0.1",
    "223.255.255.255",  # last unicast before multicast
    "::ffff:8.8.8.8",  # IPv4-mapped public: judged as 8.8.8.8
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2a00:1450:4001:80b::200e",
]


@pytest.mark.parametrize(("text", "why"), FORBIDDEN)
def test_forbidden_addresses_and_why(text: str, why: str) -> None:
    address = ipaddress.ip_address(text)
    reason = forbidden_reason(address)
    assert reason is not None and why in reason, (text, reason)
    assert is_forbidden(address)
    assert not AddressPolicy().permits(address)


@pytest.mark.parametrize("text", PERMITTED)
def test_global_unicast_is_permitted(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert forbidden_reason(address) is None
    assert AddressPolicy().permits(address)


def test_is_global_alone_is_not_enough() -> None:
    # The reason the policy has its own tables: Python calls these global.
    for text in ("64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::", "::7f00:1", "5f00::1"):
        address = ipaddress.ip_address(text)
        assert address.is_global, text
        assert is_forbidden(address), text


# Host as written in a URL -> the address a resolver would make of it.
LITERALS = [
    ("127.0.0.1", "127.0.0.1"),
    ("0177.1", "127.0.0.1"),  # octal, two parts
    ("017700000001", "127.0.0.1"),  # octal dword
    ("0x7f.1", "127.0.0.1"),
    ("0x7f.0.0.1", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),  # hex dword
    ("0X7F000001", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),  # decimal dword
    ("127.000.000.001", "127.0.0.1"),  # zero padding (octal zeros)
    ("127.0.1", "127.0.0.1"),  # three parts
    ("127.1", "127.0.0.1"),
    ("127.0.0.1.", "127.0.0.1"),  # absolute name
    ("0", "0.0.0.0"),
    ("0377.0377.0377.0377", "255.255.255.255"),
    ("0377.00000000377.00377.0000377", "255.255.255.255"),
    ("0xff.0xff.0xff.0xff", "255.255.255.255"),
    ("0xffffffff", "255.255.255.255"),
    ("4294967295", "255.255.255.255"),
    ("0xa9fea9fe", "169.254.169.254"),
    ("2852039166", "169.254.169.254"),
    ("[::ffff:7f00:1]", "::ffff:7f00:1"),
    ("::ffff:127.0.0.1", "::ffff:7f00:1"),
    ("0:0:0:0:0:ffff:127.0.0.1", "::ffff:7f00:1"),
    ("[::1]", "::1"),
    ("0000:0000:0000:0000:0000:0000:0000:0001", "::1"),
    ("fe80::1%eth0", "fe80::1%eth0"),
    ("fe80::1%25eth0", "fe80::1%25eth0"),  # the URL's percent-encoded zone, as yarl keeps it
    ("%31%32%37.0.0.1", "127.0.0.1"),
]

NOT_LITERALS = [
    "example.com",
    "localhost",
    "deadbeef",  # hex digits without 0x: a name to getaddrinfo
    "1.1.1.1.1",  # five parts: not an address
    "0xBaaaaaaaaaaaaaaaaffffffff",  # overflows 32 bits
    "4294967296",
    "08.1.1.1",  # 8 is not an octal digit
    "127.1 foo",  # inet_aton would stop at the space and say 127.0.0.1
    "127.0.0.1..",
    "",
]


@pytest.mark.parametrize(("host", "expected"), LITERALS)
def test_literal_address_reads_every_notation(host: str, expected: str) -> None:
    assert str(literal_address(host)) == expected


@pytest.mark.parametrize("host", NOT_LITERALS)
def test_literal_address_leaves_names_alone(host: str) -> None:
    assert literal_address(host) is None


# Rows the policy reads more strictly than glibc does ("127.0.0.1." goes to DNS).
_STRICTER_THAN_LIBC = {"127.0.0.1.", "%31%32%37.0.0.1"}


@pytest.mark.parametrize(
    ("host", "expected"),
    [r for r in LITERALS if ":" not in r[0] and r[0] not in _STRICTER_THAN_LIBC],
)
def test_literal_address_agrees_with_the_resolver(host: str, expected: str) -> None:
    """Whatever getaddrinfo makes of an IPv4 notation, literal_address makes the same."""
    infos = socket.getaddrinfo(
        host, 80, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
    )
    assert {info[4][0] for info in infos} == {expected}


def test_allow_networks_open_exactly_what_they_list() -> None:
    policy = AddressPolicy(["127.0.0.0/8", "10.1.0.0/16", "fd00::/8"])
    ip = ipaddress.ip_address
    assert policy.permits(ip("127.0.0.1"))
    assert policy.permits(ip("::ffff:127.0.0.1")), "mapped is the IPv4 address"
    assert policy.permits(ip("10.1.2.3"))
    assert not policy.permits(ip("10.2.0.1"))
    assert policy.permits(ip("fd00::1"))
    assert not policy.permits(ip("::1")), "allowing 127/8 does not allow ::1"
    assert not policy.permits(ip("169.254.169.254"))
    assert not policy.permits(ip("64:ff9b::7f00:1")), "NAT64 is not the IPv4 address"
    assert not policy.permits(ip("::7f00:1")), "IPv4-compatible is not the IPv4 address"
    assert policy.permits(ip("8.8.8.8"))


@pytest.mark.parametrize(
    ("allow", "address", "listed"),
    [
        # Internal, and permitted only through the list: what a tenant must not read.
        (["127.0.0.0/8"], "127.0.0.1", True),
        (["127.0.0.0/8"], "::ffff:127.0.0.1", True),
        (["10.1.0.0/16", "fd00::/8"], "10.1.2.3", True),
        (["10.1.0.0/16", "fd00::/8"], "fd00::1", True),
        (["fe80::/10"], "fe80::1%eth0", True),
        # Public: permitted anyway, listed or not.
        (["127.0.0.0/8"], "8.8.8.8", False),
        (["8.8.8.0/24"], "8.8.8.8", False),
        (["127.0.0.0/8"], "2001:4860:4860::8888", False),
        # Not permitted at all.
        (["127.0.0.0/8"], "::1", False),
        (["10.1.0.0/16"], "10.2.0.1", False),
        # No list: nothing internal is reachable.
        ([], "127.0.0.1", False),
    ],
)
def test_allowed_by_list_means_reachable_only_through_allow_networks(
    allow: list[str], address: str, listed: bool
) -> None:
    policy = AddressPolicy(allow)
    parsed = parse_ip(address)
    assert parsed is not None
    assert policy.allowed_by_list(parsed) is listed
    assert policy.connected_to_listed(address) is listed


def test_a_peer_that_is_not_an_address_counts_as_listed_only_with_a_list() -> None:
    assert AddressPolicy(["127.0.0.0/8"]).connected_to_listed("not-an-address")
    assert not AddressPolicy().connected_to_listed("not-an-address")


def test_allowing_the_mapped_prefix_does_not_open_ipv4() -> None:
    policy = AddressPolicy(["::ffff:0:0/96"])
    assert not policy.permits(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not policy.permits(ipaddress.ip_address("::ffff:10.0.0.1"))


def test_allow_networks_match_scoped_addresses_without_their_zone() -> None:
    policy = AddressPolicy(["fe80::/10"])
    assert policy.permits(ipaddress.ip_address("fe80::1%eth0"))


def _info(host: str, port: int = 80) -> tuple[int, int, int, str, tuple[object, ...]]:
    if ":" in host:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "169.254.169.254",
        "fe80::1%lo",
        "64:ff9b::a9fe:a9fe",
        "localhost",  # a name where an address belongs: fail closed
        "",
    ],
)
def test_socket_factory_refuses_before_a_socket_exists(host: str) -> None:
    with pytest.raises(BlockedAddressError):
        AddressPolicy().socket_factory(_info(host))


def test_socket_factory_makes_a_nonblocking_socket_when_permitted() -> None:
    sock = AddressPolicy(["127.0.0.0/8"]).socket_factory(_info("127.0.0.1"))
    try:
        assert sock.family == socket.AF_INET and sock.getblocking() is False
    finally:
        sock.close()


# -- what the API says about a URL (no DNS) --------------------------------------

INTERNAL_URLS = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://0177.1/", "= 127.0.0.1"),
    ("http://0x7f000001/", "= 127.0.0.1"),
    ("http://2130706433/", "= 127.0.0.1"),
    ("http://127.000.000.001/", "= 127.0.0.1"),
    ("http://127.1:8080/", "loopback"),
    ("https://[::ffff:7f00:1]/", "IPv4-mapped 127.0.0.1"),
    ("https://[::ffff:a9fe:a9fe]/", "IPv4-mapped 169.254.169.254"),
    ("https://[64:ff9b::a9fe:a9fe]/", "NAT64"),
    ("https://[2002:a9fe:a9fe::]/", "6to4"),
    ("https://[2001::1]/", "Teredo"),
    ("https://[fe80::1%25eth0]/", "scoped"),
    ("https://[::1]:443/", "loopback"),
    ("https://[::]/", "unspecified"),
    ("http://0.0.0.0:9000/", "'this network'"),
    ("http://0/", "'this network'"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.1/", "private (RFC 1918)"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://224.0.0.1/", "multicast"),
    ("http://localhost/", "always means 127.0.0.1"),
    ("http://LOCALHOST./", "always means 127.0.0.1"),
    ("http://api.localhost:3000/", "always means 127.0.0.1"),
    ("http://metadata.google.internal/computeMetadata/v1/", "169.254.169.254"),
    (
        "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",
        "loopback",
    ),  # full-width digits: yarl (and aiohttp) fold them
    ("http://127\u30020\u30020\u30021/", "loopback"),  # ideographic full stops, likewise
    ("http://%31%32%37.0.0.1/", "loopback"),
]

PUBLIC_URLS = [
    "https://crm.example.com/hook",
    "https://8.8.8.8/hook",
    "https://[2606:4700:4700::1111]/hook",
    "http://localhost.example.com/",  # only *.localhost is reserved, not localhost.*
    "https://metadata.example.com/",
    "https://deadbeef.example/",
]


@pytest.mark.parametrize(("url", "why"), INTERNAL_URLS)
def test_destination_problem_names_the_reason(url: str, why: str) -> None:
    problem = destination_problem(url, AddressPolicy())
    assert problem is not None and why in problem, problem
    assert "allow_networks" in problem


@pytest.mark.parametrize("url", PUBLIC_URLS)
def test_destination_problem_passes_public_urls(url: str) -> None:
    assert destination_problem(url, AddressPolicy()) is None


def test_allow_networks_lift_the_api_check_too() -> None:
    loopback = AddressPolicy(["127.0.0.0/8", "::1/128"])
    assert destination_problem("http://127.0.0.1:9000/", loopback) is None
    assert destination_problem("http://[::1]:9000/", loopback) is None
    assert destination_problem("http://localhost:9000/", loopback) is None
    assert destination_problem("http://[::ffff:127.0.0.1]:9000/", loopback) is None
    # ... but a notation aiohttp will not connect to is still worth a 400.
    problem = destination_problem("http://2130706433:9000/", loopback)
    assert problem is not None and "write it as 127.0.0.1" in problem
    assert destination_problem("http://10.0.0.1/", loopback) is not None


def test_validation_raises_a_url_error_on_create_and_update() -> None:
    body = {"name": "n", "url": "http://0x7f000001/", "events": ["*"]}
    with pytest.raises(ValidationError) as created:
        validate_new_webhook(body)
    assert created.value.field == "url" and "loopback" in created.value.message
    with pytest.raises(ValidationError) as updated:
        validate_webhook_update({"url": "http://[::ffff:a9fe:a9fe]/"})
    assert updated.value.field == "url" and "169.254.169.254" in updated.value.message
    allowed = validate_new_webhook(
        {**body, "url": "http://127.0.0.1:9/"}, allow_networks=["127.0.0.0/8"]
    )
    assert allowed.url == "http://127.0.0.1:9/"
