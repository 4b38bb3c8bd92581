"""Who is the client: the socket peer, or an ``X-Forwarded-For`` entry vouched for by configured proxy hops.

Any client can send ``X-Forwarded-For`` with whatever it likes, so the header is read from the right (the
entries our own proxies appended) and only as far as trusted proxies vouch for it: with trusted CIDRs, while
the hop that wrote an entry is a trusted proxy; with a hop count, exactly that many entries from the right.
The leftmost entry, the one a client controls, is never taken on faith.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_FORWARDED_ENTRIES = 32
"""Only this many rightmost entries are looked at: a longer chain is a client padding the header."""

IPV6_RATE_PREFIX = 64
"""One IPv6 client usually holds a whole /64, so it is rate-limited as one key, not 2**64."""


def parse_ip(raw: str) -> IPAddress | None:
    """An address from a header entry (``1.2.3.4``, ``1.2.3.4:5678``, ``::1``, ``[::1]:80``), else None."""
    text = raw.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]  # IPv4 with a port
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_networks(raw: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, 192.168.1.5"`` → networks; raises ValueError naming the bad entry."""
    parts = raw.split(",") if isinstance(raw, str) else list(raw)
    nets: list[IPNetwork] = []
    for part in parts:
        text = part.strip()
        if not text:
            continue
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"invalid trusted proxy address or CIDR {text!r}") from exc
    return tuple(nets)


def forwarded_entries(headers: Iterable[str]) -> list[str]:
    """The hops of every ``X-Forwarded-For`` header in order (proxies may add a second header), bounded."""
    entries = [e.strip() for h in headers for e in h.split(",")]
    return [e for e in entries if e][-MAX_FORWARDED_ENTRIES:]


def _trusted(ip: IPAddress, nets: Sequence[IPNetwork]) -> bool:
    return any(ip.version == n.version and ip in n for n in nets)


def client_address(
    peer: str | None, forwarded: Sequence[str], trusted: Sequence[IPNetwork] = (), hops: int = 0
) -> IPAddress | None:
    """The client's address; None only when the socket peer itself is unknown (e.g. a Unix socket).

    ``forwarded`` are the header's entries, left to right. With ``trusted`` networks the peer must be one
    of them for the header to count at all; then entries are taken from the right while they are trusted
    proxies, and the first one that is not is the client. With ``hops`` (proxies in front of the service,
    none of which can be verified by address) the client is the ``hops``-th entry from the right; a shorter
    chain means the request did not come through all of them, so the peer is the client.
    """
    peer_ip = parse_ip(peer) if peer else None
    if peer_ip is None:
        return None
    if trusted:
        if not _trusted(peer_ip, trusted):
            return peer_ip
        current = peer_ip
        for raw in reversed(forwarded):
            ip = parse_ip(raw)
            if ip is None:
                # A trusted hop passed on something that is not an address: it was not written by a proxy,
                # so stop at the last address a trusted proxy did write.
                return current
            if not _trusted(ip, trusted):
                return ip
            current = ip
        return current
    if hops > 0 and len(forwarded) >= hops:
        return parse_ip(forwarded[-hops]) or peer_ip
    return peer_ip


def rate_key(ip: IPAddress | None) -> str:
    """The rate-limit key of a client: the address, or its /64 for IPv6."""
    if ip is None:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_RATE_PREFIX), strict=False))
    return str(ip)


def is_trusted_peer(peer: str | None, trusted: Sequence[IPNetwork]) -> bool:
    """True when the socket peer is one of the trusted proxies (only they may assert a user header)."""
    ip = parse_ip(peer) if peer else None
    return ip is not None and _trusted(ip, trusted)
