"""The outbound address policy: which IP addresses hookd may connect to.

The check runs on the exact address a socket is about to connect to (see
``AddressPolicy.socket_factory``), after DNS and whatever notation the URL used,
so IP literals in odd notations, DNS answers and DNS rebinding between a
webhook's creation and its delivery all meet the same rule.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCKED_MESSAGE = "blocked by the outbound address policy"

# IPv6 ranges that embed or route to IPv4 space (or are otherwise not a plain
# global unicast destination).  ``is_global`` calls some of these global.
_V6_FORBIDDEN = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # IPv4-compatible (deprecated) and the unspecified/loopback
        "::ffff:0:0/96",  # IPv4-mapped: judged by the embedded address instead
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b::/96",  # NAT64 well-known prefix
        "64:ff9b:1::/48",  # NAT64 local-use prefix
        "2002::/16",  # 6to4
        "2001::/32",  # Teredo
        "2001:db8::/32",  # documentation
        "100::/64",  # discard-only
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_V4_FORBIDDEN = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
    )
)


class BlockedAddressError(OSError):
    """Raised instead of connecting to an address the policy forbids."""


def parse_ip(text: str) -> IPAddress | None:
    """An IP address from a socket address or URL host, or None for a name."""
    host = text.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_forbidden(address: IPAddress) -> bool:
    """Whether ``address`` is internal, special-purpose or a tunnel into such space."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return is_forbidden(mapped)
        if address.scope_id:
            return True
        if any(address in net for net in _V6_FORBIDDEN):
            return True
        return not address.is_global or address.is_multicast
    if any(address in net for net in _V4_FORBIDDEN):
        return True
    return not address.is_global


class AddressPolicy:
    def __init__(self, allow_networks: Iterable[str] = ()) -> None:
        self.allowed: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allow_networks
        )

    def permits(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            if address.scope_id:
                candidates.append(ipaddress.IPv6Address(str(address).split("%", 1)[0]))
            if address.ipv4_mapped is not None:
                candidates.append(address.ipv4_mapped)
        for candidate in candidates:
            for net in self.allowed:
                if candidate.version == net.version and candidate in net:
                    return True
        return not is_forbidden(address)

    def socket_factory(self, addr_info: Any) -> socket.socket:
        """aiohttp ``TCPConnector(socket_factory=...)`` hook: refuse, or make the socket."""
        family, type_, proto, _canonname, sockaddr = addr_info
        host = sockaddr[0]
        address = parse_ip(str(host))
        if address is None or not self.permits(address):
            raise BlockedAddressError(BLOCKED_MESSAGE)
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setblocking(False)
        return sock
