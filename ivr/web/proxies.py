"""The client's address behind reverse proxies, believed only from the proxies we trust.

X-Forwarded-For is a header any client can send. Werkzeug's ProxyFix believes the last N
entries whoever sent them, so a client that reaches the app directly picks its own address
with every request (and with it its own login throttle and rate limit). Here the header
is read only when the peer is a configured proxy (IVR_TRUSTED_PROXIES: addresses and
CIDRs), walking it from the right while the hop is a trusted proxy, like nginx's
`real_ip_recursive`; IVR_PROXIES, when set, bounds the number of hops walked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ivr.domain.config import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class ProxyConfigError(ConfigError):
    """IVR_TRUSTED_PROXIES holds something that is not an address or a network."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """Networks from a comma- or space-separated list of addresses and CIDRs."""
    networks = []
    for item in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ProxyConfigError(
                f"IVR_TRUSTED_PROXIES: {item!r} is not an IP address or network") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().split("%")[0])
    except ValueError:
        return None


def _trusted(address: str, networks: Iterable[Network]) -> bool:
    ip = _address(address)
    return ip is not None and any(ip in net for net in networks)


def client_address(peer: str, forwarded_for: str, networks: tuple[Network, ...],
                   max_hops: int | None = None) -> tuple[str, int]:
    """The client's address, and how many trusted proxies stood in between.

    The peer and each X-Forwarded-For entry, from the right, are taken as a proxy only while
    they are in `networks`; the first one that is not (or an unreadable entry's trusted
    neighbour) is the client.
    """
    hops, address = 0, peer
    chain = [part.strip() for part in forwarded_for.split(",") if part.strip()]
    while chain and _trusted(address, networks) and (max_hops is None or hops < max_hops):
        candidate = chain.pop()
        if _address(candidate) is None:
            break
        address, hops = candidate, hops + 1
    return address, hops


class TrustedProxies:
    """WSGI middleware: REMOTE_ADDR and the URL scheme from trusted proxies' headers only."""

    def __init__(self, app, networks: tuple[Network, ...], max_hops: int | None = None):
        self.app = app
        self.networks = networks
        self.max_hops = max_hops

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR") or ""
        if _trusted(peer, self.networks):
            environ["ivr.peer_addr"] = peer
            client, hops = client_address(peer, environ.get("HTTP_X_FORWARDED_FOR", ""),
                                          self.networks, self.max_hops)
            environ["REMOTE_ADDR"] = client
            protos = [p.strip().lower()
                      for p in environ.get("HTTP_X_FORWARDED_PROTO", "").split(",") if p.strip()]
            if protos:
                # The scheme the outermost trusted proxy was reached with.
                proto = protos[-min(max(hops, 1), len(protos))]
                if proto in ("http", "https"):
                    environ["wsgi.url_scheme"] = proto
        return self.app(environ, start_response)
