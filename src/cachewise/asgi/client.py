"""Who is the client?  The peer address of a connection, and ``X-Forwarded-For`` only when a trusted proxy says so.

The rule is the standard right-to-left walk (nginx's ``real_ip_recursive on``, Go's "rightmost untrusted"):

* the peer (``scope["client"]``) is the only address nobody can forge, so it is the answer unless it is a trusted
  proxy;
* when it is, ``X-Forwarded-For`` is read from the right: each entry was appended by the hop to its right, so the
  entries are skipped while they are trusted proxies, and the first untrusted one is the client;
* everything to the left of that entry was written by the client itself and is never believed;
* a malformed entry (not an IP address) ends the walk: nothing to its left can be trusted, so the answer is the last
  trusted hop reached (what nginx does) -- a malformed value is never used as an identity, and a spoofed header from
  an untrusted peer is never read at all;
* when every entry is a trusted proxy, the leftmost one is the answer.

Several ``X-Forwarded-For`` header lines are joined in order, as HTTP requires.  Entries may carry a port
(``1.2.3.4:5678``, ``[2001:db8::1]:443``); IPv4-mapped IPv6 addresses are reported as IPv4.  Nothing here talks to a
server: the functions are pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

__all__ = ["UNIX_PEER", "TrustedProxies", "client_ip", "parse_address"]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
ProxySpec: TypeAlias = str | IPAddress | IPNetwork

#: Put this in ``trusted_proxies`` to trust a peer without an address (a proxy talking over a unix socket, where
#: ``scope["client"]`` is None).  An address-less peer is otherwise reported as ``"unknown"``.
UNIX_PEER = "unix"
UNKNOWN = "unknown"
FORWARDED_FOR = b"x-forwarded-for"


def parse_address(text: str) -> IPAddress | None:
    """The IP address in ``text`` (an X-Forwarded-For entry or a peer host), or None when it is not one.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]`` and ``[2001:db8::1]:443``; zone ids
    (``fe80::1%eth0``) and anything else are refused.  IPv4-mapped IPv6 addresses come back as IPv4.
    """
    text = text.strip()
    if not text or len(text) > 64:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    if "%" in text:
        return None
    try:
        address: IPAddress = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """A parsed set of trusted proxy networks (addresses, CIDR blocks, or :data:`UNIX_PEER`).

    Parse once (the middleware does), then ask :meth:`__contains__` for each hop.  A bad entry is a configuration
    error, raised at once as ``ValueError`` -- not discovered at the first request.
    """

    __slots__ = ("networks", "unix")

    def __init__(self, proxies: Iterable[ProxySpec] = ()) -> None:
        networks: list[IPNetwork] = []
        unix = False
        if isinstance(proxies, str):
            proxies = [proxies]
        for spec in proxies:
            if isinstance(spec, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                networks.append(spec)
            elif isinstance(spec, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                networks.append(ipaddress.ip_network(spec))
            elif isinstance(spec, str) and spec.strip().lower() == UNIX_PEER:
                unix = True
            elif isinstance(spec, str):
                try:
                    networks.append(ipaddress.ip_network(spec.strip(), strict=False))
                except ValueError:
                    raise ValueError(f"trusted proxy {spec!r} is neither an IP address nor a CIDR network") from None
            else:
                raise ValueError(f"trusted proxy {spec!r} must be a str, an ip_address or an ip_network")
        self.networks: tuple[IPNetwork, ...] = tuple(networks)
        self.unix = unix

    @classmethod
    def of(cls, proxies: TrustedProxies | Iterable[ProxySpec]) -> TrustedProxies:
        return proxies if isinstance(proxies, TrustedProxies) else cls(proxies)

    def __bool__(self) -> bool:
        return bool(self.networks) or self.unix

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        return any(address.version == net.version and address in net for net in self.networks)

    def __repr__(self) -> str:
        items = [str(n) for n in self.networks] + ([UNIX_PEER] if self.unix else [])
        return f"TrustedProxies({items!r})"


def _forwarded_entries(headers: Iterable[Sequence[bytes]], header: bytes) -> list[str]:
    """Every entry of every ``header`` line, in order, blank entries dropped."""
    entries: list[str] = []
    for name, value in headers:
        if name.lower() == header:
            text = value.decode("latin-1")
            entries.extend(part.strip() for part in text.split(",") if part.strip())
    return entries


def client_ip(
    scope: Mapping[str, Any],
    trusted_proxies: TrustedProxies | Iterable[ProxySpec] = (),
    *,
    header: str = "x-forwarded-for",
) -> str:
    """The client's IP address for an ASGI ``scope`` (see the module docstring for the rule).

    ``trusted_proxies``: addresses or CIDR networks of the proxies in front of the application (strings,
    ``ipaddress`` objects, :data:`UNIX_PEER`, or a parsed :class:`TrustedProxies`).  With none (the default) the
    forwarded header is never read.  ``header``: the forwarded-for header your proxies write (lower case).
    """
    trusted = TrustedProxies.of(trusted_proxies)
    peer = scope.get("client")
    host = peer[0] if peer else None
    if host is None:
        if not trusted.unix:
            return UNKNOWN
        current: str = UNKNOWN
    else:
        address = parse_address(str(host))
        if address is None:  # a non-IP peer (a test client's name): it is its own identity, never trusted
            return str(host)
        current = str(address)
        if address not in trusted:
            return current
    for entry in reversed(_forwarded_entries(scope.get("headers") or (), header.lower().encode("latin-1"))):
        hop = parse_address(entry)
        if hop is None:  # malformed: nothing left of it is believable; keep the last trusted hop
            return current
        current = str(hop)
        if hop not in trusted:
            return current
    return current
