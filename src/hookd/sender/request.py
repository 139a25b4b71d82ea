"""A webhook request before it goes out: its URL parsed once, its headers vetted.

Both transports (``sender.h1client`` and ``sender.aio``) send what this
module made: the same request target, the same Host, the same default
headers, and the same refusal of header names the client owns and of
header values that carry control characters.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any, Final
from urllib.parse import quote

from yarl import URL

from hookd.sender.addresses import literal_address

# Request headers the client owns: a caller's value would change framing or routing.
_RESERVED_REQUEST_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-connection",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters no header value may carry (RFC 9110 section 5.5: HTAB is
# the only one allowed).  A receiver or a proxy in between may cut a value at
# a NUL or take a VT, FF or lone CR for a line end: such a value is refused
# before anything is sent.
_VALUE_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# The same, as bytes to delete: a header block loses exactly its line ends
# (one CR and one LF per line) when no value holds one.  (UTF-8 never encodes
# a non-ASCII character with a byte below 0x80.)
_CONTROL_BYTES = bytes(range(9)) + bytes(range(10, 32)) + b"\x7f"
# RFC 3986 characters that may stand in a path or query as they are; anything
# else is percent-encoded (as UTF-8).  "%" is kept only as the start of an
# escape, so the URL's own escapes are sent exactly as written.
_TARGET_SAFE = "!$&'()*+,;=:@/?~-._%"
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


class InvalidURLError(ValueError):
    """The URL cannot be sent to (scheme, credentials, host, notation)."""


class Target:
    """What one webhook URL means for a request: parsed once, reused for every delivery.

    ``host`` is yarl's ``raw_host`` (IDNA-encoded, as the address policy's
    static check reads it); ``key`` is the pool key (scheme, host, port);
    ``prefix`` the request line and Host header; ``url`` the same target
    as an already-encoded URL, for a client that formats requests itself.
    """

    __slots__ = (
        "addr_infos",
        "host",
        "key",
        "port",
        "prefix",
        "server_hostname",
        "tls",
        "url",
    )

    def __init__(self, url: str) -> None:
        try:
            parsed = URL(url)
            raw = URL(url, encoded=True)
            port = parsed.port
        except (ValueError, UnicodeError) as exc:
            raise InvalidURLError(str(exc) or "cannot parse") from None
        scheme = parsed.scheme.lower()
        if scheme not in ("http", "https"):
            raise InvalidURLError(f"{url[:100]!r} is not an http:// or https:// URL")
        host = parsed.raw_host
        if not host or port is None:
            raise InvalidURLError(f"{url[:100]!r} has no host")
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise InvalidURLError("credentials in the URL are not sent")
        self.tls = scheme == "https"
        self.host = host
        self.port = port
        self.key = (scheme, host, port)
        # TLS names carry no trailing dot (certificates never do).
        self.server_hostname = host.rstrip(".")
        self.addr_infos = _literal_addr_infos(host, port)
        host_header = parsed.host_port_subcomponent or host
        request_target = _request_target(raw.raw_path, raw.raw_query_string)
        self.prefix = f"POST {request_target} HTTP/1.1\r\nHost: {host_header}\r\n"
        url_host = host_header
        if self.addr_infos is not None and literal_address(host) is not None:
            # A legacy IPv4 notation (0177.1) as the address it means, which
            # is what the own client connects to and what yarl accepts.
            address = self.addr_infos[0][4][0]
            url_host = f"[{address}]" if ":" in address else address
            if parsed.explicit_port:
                url_host = f"{url_host}:{port}"
        self.url = URL(f"{scheme}://{url_host}{request_target}", encoded=True)


def _literal_addr_infos(host: str, port: int) -> list[AddrInfo] | None:
    """Connect candidates for an IP-literal host (no DNS), or None for a name.

    Legacy IPv4 notations (``0177.1``, ``0x7f000001``) mean the address a
    resolver's ``inet_aton`` makes of them; we make it ourselves, so the
    policy judges that address and no resolver is asked about such a "name".
    """
    text = host.replace("%25", "%")  # a zone index, percent-encoded in the URL
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text)
    except ValueError:
        legacy = literal_address(host)
        if legacy is None:
            return None
        address = legacy
        text = str(legacy)
    if address.version == 6:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (text, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (text, port))]


def _request_target(path: str, query: str) -> str:
    target = path or "/"
    if query:
        target = f"{target}?{query}"
    return quote(_LONE_PERCENT.sub("%25", target), safe=_TARGET_SAFE)


class RequestBuilder:
    """Formats request heads; remembers which caller header names it has vetted."""

    __slots__ = ("_defaults", "_names", "_pairs")

    def __init__(self, user_agent: str) -> None:
        _check_value(user_agent)
        self._pairs = {
            "content-type": ("Content-Type", "application/json"),
            "user-agent": ("User-Agent", user_agent),
            "accept-encoding": ("Accept-Encoding", "gzip, deflate"),
        }
        self._defaults = {k: f"{name}: {value}\r\n" for k, (name, value) in self._pairs.items()}
        # name -> its lower-case form when it replaces a default, else "".
        self._names: dict[str, str] = {}

    def build(self, target: Target, body: bytes, headers: dict[str, str]) -> bytes:
        """The whole request as one bytes object; ValueError for an unsendable header."""
        replaced, caller = self._vet(headers)
        if replaced is None:
            defaults = "".join(self._defaults.values())
        else:
            defaults = "".join(v for k, v in self._defaults.items() if k not in replaced)
        length = f"Content-Length: {len(body)}\r\n\r\n"
        return b"".join(((target.prefix + defaults).encode(), caller, length.encode(), body))

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        """The defaults and ``headers``, vetted as :meth:`build` vets them, as a mapping
        (for a client that formats the head itself and adds Host and Content-Length)."""
        replaced = self._vet(headers)[0] or ()
        out = {name: value for k, (name, value) in self._pairs.items() if k not in replaced}
        out.update(headers)
        return out

    def _vet(self, headers: dict[str, str]) -> tuple[list[str] | None, bytes]:
        """(the defaults the caller replaces, the caller's header lines); ValueError
        for a name that is no token or is the client's own, or a value with a
        control character."""
        names = self._names
        replaced: list[str] | None = None
        for name in headers:
            override = names.get(name)
            if override is None:
                override = self._vet_name(name)
            if override:
                replaced = [override] if replaced is None else [*replaced, override]
        caller = "".join([f"{name}: {value}\r\n" for name, value in headers.items()]).encode()
        # One CR and one LF per line we wrote: any other control came from a value.
        if len(caller) - len(caller.translate(None, _CONTROL_BYTES)) != 2 * len(headers):
            raise ValueError("a header value contains a control character")
        return replaced, caller

    def _vet_name(self, name: str) -> str:
        lower = name.lower()
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name[:50]!r} is not a token")
        if lower in _RESERVED_REQUEST_HEADERS:
            raise ValueError(f"header {name} is set by the client itself")
        override = lower if lower in self._defaults else ""
        if len(self._names) < 1024:  # caller names are a handful; never grow unbounded
            self._names[name] = override
        return override


def _check_value(value: str) -> None:
    if _VALUE_CONTROLS.search(value) is not None:
        raise ValueError("a header value contains a control character")
