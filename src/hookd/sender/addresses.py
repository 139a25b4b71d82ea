"""The outbound address policy: which IP addresses hookd may connect to.

The check that counts runs on the exact address a socket is about to connect
to (``AddressPolicy.socket_factory``, which either of the sender's HTTP clients
calls for every new connection, ``sender.transport``), after DNS and whatever
notation the URL used, so IP literals in odd notations, DNS answers and DNS
rebinding between a webhook's creation and its delivery all meet the same rule.  Redirects are
never followed (either transport), so a receiver cannot bounce us inward either.

Two cheaper checks sit in front of it, for clearer answers rather than for
safety, both without DNS (:func:`static_refusal`): the API refuses URLs that
are *obviously* internal (:func:`destination_problem`), and the sender refuses
the same hosts before any DNS, because ``a.localhost`` may not resolve at all
and a legacy IPv4 notation such as ``0177.1`` is no name to ask a resolver
about: both would be retried as connection errors instead of ending as
``blocked``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCKED_MESSAGE = "blocked by the outbound address policy"

# Order matters only for the wording: the first match names the reason.
_V4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "'this network' (connecting to it reaches the local host)"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata lives at 169.254.169.254)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)

# IPv6 space that is local, special-purpose, or a tunnel that embeds an IPv4
# address (NAT64, 6to4, Teredo, SIIT, IPv4-compatible): a gateway on the path
# would carry such a packet into IPv4 space the rule above forbids, and
# ``ipaddress.is_global`` calls NAT64 and 6to4 global.  IPv4-mapped addresses
# (::ffff:0:0/96) are not listed: they *are* their IPv4 address and are judged
# as such.
_V6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("::ffff:0:0:0/96", "IPv4-translated (SIIT)"),
        ("64:ff9b::/96", "NAT64 (RFC 6052)"),
        ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
        ("100::/64", "discard-only"),
        ("2001::/32", "Teredo"),
        ("2001:db8::/32", "documentation"),
        ("2001::/23", "IETF protocol assignments"),
        ("2002::/16", "6to4"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "SRv6 segment identifiers"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)

# Names that always mean a local or metadata address, so the API can say so
# without DNS.  The connect-time check catches every other name.
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"}
)
_LOOPBACK = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))
_METADATA = (ipaddress.IPv4Address("169.254.169.254"),)

# What a resolver's inet_aton accepts as IPv4: 1-4 parts, each decimal, octal
# (leading 0) or hex (0x).  inet_aton itself is more lenient still (it stops at
# the first space: "127.1 foo" is 127.0.0.1), so the shape is checked first.
_LEGACY_V4 = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")


class BlockedAddressError(OSError):
    """Raised instead of connecting to an address the policy forbids."""


def parse_ip(text: str) -> IPAddress | None:
    """An IP address from a socket address (standard notation only), or None."""
    host = text.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host denotes without DNS, in any notation resolvers accept.

    Besides standard IPv4 and IPv6 (with a zone, raw or percent-encoded:
    ``fe80::1%25eth0``) this reads the legacy IPv4 forms ``getaddrinfo``
    still maps onto an address: ``0177.1``, ``0x7f000001``, ``2130706433``,
    ``127.000.000.001``.  ``None`` means a name (or not an address at all).
    """
    text = host.strip().strip("[]")
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]  # an absolute name: "127.0.0.1." resolves like "127.0.0.1"
    for candidate in (text, unquote(text)):
        try:
            return ipaddress.ip_address(candidate)
        except ValueError:
            pass
    if _LEGACY_V4.fullmatch(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why ``address`` is off limits (internal, special-purpose, a tunnel), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            inner = forbidden_reason(mapped)
            return None if inner is None else f"IPv4-mapped {mapped}, {inner}"
        if address.scope_id:
            return "scoped (a zone index means link-local)"
        for net6, why in _V6_RULES:
            if address in net6:
                return why
        if address.is_multicast:
            return "multicast"
        if not address.is_global:
            return "not globally routable"
        return None
    for net4, why in _V4_RULES:
        if address in net4:
            return why
    if not address.is_global:
        return "not globally routable"
    return None


def is_forbidden(address: IPAddress) -> bool:
    """Whether ``address`` is internal, special-purpose or a tunnel into such space."""
    return forbidden_reason(address) is not None


class AddressPolicy:
    """The forbidden ranges above, minus the operator's ``[delivery] allow_networks``."""

    def __init__(self, allow_networks: Iterable[str] = ()) -> None:
        self.allowed: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allow_networks
        )

    def _allowed(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            # Networks carry no zone; match the address itself.
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        return any(address.version == net.version and address in net for net in self.allowed)

    def refusal(self, address: IPAddress) -> str | None:
        """Why a connection to ``address`` is refused, or None if it is permitted."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # ::ffff:a.b.c.d is a.b.c.d on a dual-stack socket, for the allow
            # list too: allowing 127.0.0.0/8 allows ::ffff:127.0.0.1, and
            # allowing ::ffff:0:0/96 does not open all of IPv4.
            mapped = address.ipv4_mapped
            inner = self.refusal(mapped)
            return None if inner is None else f"IPv4-mapped {mapped}, {inner}"
        if self._allowed(address):
            return None
        return forbidden_reason(address)

    def permits(self, address: IPAddress) -> bool:
        return self.refusal(address) is None

    def allowed_by_list(self, address: IPAddress) -> bool:
        """Whether ``address`` is permitted only because ``allow_networks`` lists it."""
        return bool(self.allowed) and self.permits(address) and not _DEFAULT.permits(address)

    def connected_to_listed(self, host: str) -> bool:
        """:meth:`allowed_by_list` for the address a connection reached, as a string."""
        if not self.allowed:
            return False
        address = parse_ip(host)
        # Not an address we can judge: treat it as one the list let through.
        return address is None or self.allowed_by_list(address)

    def socket_factory(self, addr_info: Any) -> socket.socket:
        """The sender's connect hook: refuse, or make the socket.

        ``addr_info`` is the getaddrinfo-style tuple whose ``sockaddr`` the
        socket is connected to next, so this sees the final address whatever
        the URL said.  Anything that does not parse as an address fails closed.
        """
        family, type_, proto, _canonname, sockaddr = addr_info
        address = parse_ip(str(sockaddr[0]))
        if address is None or not self.permits(address):
            raise BlockedAddressError(BLOCKED_MESSAGE)
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setblocking(False)
        return sock


_DEFAULT = AddressPolicy()


def _named_addresses(host: str) -> tuple[IPAddress, ...]:
    name = host.lower().rstrip(".")
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return _LOOPBACK
    if name in _METADATA_NAMES:
        return _METADATA
    return ()


def static_refusal(host: str, policy: AddressPolicy) -> str | None:
    """Why ``host`` (as a URL writes it) is refused without any DNS, or None.

    An IP literal in any notation is judged as its address; a name that
    always means loopback or the metadata service is refused unless the
    policy permits one of its addresses.  Every other name is left to the
    connect-time check.
    """
    address = literal_address(host)
    if address is not None:
        why = policy.refusal(address)
        if why is None:
            return None
        shown = host if str(address) == host else f"{host} (= {address})"
        return f"host {shown} is {why}"
    named = _named_addresses(host)
    if named and not any(policy.permits(a) for a in named):
        return f"host {host} always means {named[0]}, {policy.refusal(named[0])}"
    return None


def destination_problem(url: str, policy: AddressPolicy) -> str | None:
    """Why ``url`` obviously leads somewhere the policy forbids, or None.

    No DNS (see :func:`static_refusal`).  Hosts are read the way the sender
    will read them (yarl: IDNA, full-width digits), raw and percent-decoded.
    """
    try:
        parsed = URL(url)
        hosts = {h for h in (parsed.raw_host, parsed.host) if h}
    except (ValueError, UnicodeError):
        return None  # not this check's business: URL validation says what is wrong
    for host in sorted(hosts):
        refusal = static_refusal(host, policy)
        if refusal is not None:
            return (
                f"{refusal}, which the outbound address policy blocks"
                " ([delivery] allow_networks can allow it)"
            )
        address = literal_address(host)
        if address is not None and address.version == 4 and not _is_dotted_quad(host):
            # Written as a plain address it means the same and reads unambiguously.
            return f"host {host} is a legacy IPv4 notation; write it as {address}"
    return None


def _is_dotted_quad(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True
