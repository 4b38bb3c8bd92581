"""Whose address the rate limit keys on: X-Forwarded-For only as far as configured proxy hops vouch for it."""

from __future__ import annotations

import ipaddress

import pytest

from livenexus_console.proxies import (
    MAX_FORWARDED_ENTRIES,
    client_address,
    forwarded_entries,
    parse_ip,
    parse_networks,
    rate_key,
)

PROXIES = parse_networks("10.0.0.0/8, 192.168.1.5")


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def xff(*headers: str) -> list[str]:
    return forwarded_entries(headers)


def test_without_configured_proxies_the_header_is_ignored() -> None:
    assert client_address("198.51.100.1", xff("203.0.113.9")) == ip("198.51.100.1")
    assert client_address(None, xff("203.0.113.9")) is None


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        # Through one trusted proxy: the entry it appended is the client.
        ("10.0.0.2", "203.0.113.1", "203.0.113.1"),
        # The client prepends made-up hops: they are left of the real one and never reached.
        ("10.0.0.2", "198.51.100.7, 203.0.113.1", "203.0.113.1"),
        ("10.0.0.2", "1.1.1.1, 2.2.2.2, 203.0.113.1", "203.0.113.1"),
        # Two trusted proxies in a row: skip both.
        ("10.0.0.2", "203.0.113.1, 192.168.1.5", "203.0.113.1"),
        # A client that claims to be a trusted proxy itself only gets as far as the next real entry.
        ("10.0.0.2", "10.1.1.1, 203.0.113.1", "203.0.113.1"),
        # Direct connection from an untrusted peer: the header counts for nothing.
        ("198.51.100.1", "203.0.113.1", "198.51.100.1"),
        # A trusted peer passing garbage on: the last address a trusted proxy wrote.
        ("10.0.0.2", "203.0.113.1, not-an-ip", "10.0.0.2"),
        ("10.0.0.2", "", "10.0.0.2"),
        # Ports and IPv6 forms proxies write.
        ("10.0.0.2", "203.0.113.1:51234", "203.0.113.1"),
        ("10.0.0.2", "[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:10.0.0.2", "203.0.113.1", "203.0.113.1"),
    ],
)
def test_trusted_cidrs(peer: str, header: str, client: str) -> None:
    assert client_address(peer, xff(header), PROXIES) == ip(client)


def test_several_headers_are_one_chain() -> None:
    assert client_address("10.0.0.2", xff("198.51.100.7", "203.0.113.1"), PROXIES) == ip("203.0.113.1")


@pytest.mark.parametrize(
    ("header", "hops", "client"),
    [
        ("203.0.113.1", 1, "203.0.113.1"),
        ("198.51.100.7, 203.0.113.1", 1, "203.0.113.1"),  # the leftmost entry is the client's own claim
        ("198.51.100.7, 203.0.113.1, 10.0.0.9", 2, "203.0.113.1"),
        ("203.0.113.1", 2, "192.0.2.10"),  # fewer entries than proxies: it did not come through them all
        ("junk", 1, "192.0.2.10"),
    ],
)
def test_hop_count(header: str, hops: int, client: str) -> None:
    assert client_address("192.0.2.10", xff(header), hops=hops) == ip(client)


def test_a_padded_header_is_bounded() -> None:
    padded = ", ".join(f"198.51.{i // 256}.{i % 256}" for i in range(5000))
    entries = xff(padded + ", 203.0.113.1")
    assert len(entries) == MAX_FORWARDED_ENTRIES and entries[-1] == "203.0.113.1"
    assert client_address("10.0.0.2", entries, PROXIES) == ip("203.0.113.1")


def test_ipv6_clients_are_one_key_per_64() -> None:
    a, b = rate_key(ip("2001:db8:1:2::1")), rate_key(ip("2001:db8:1:2:ffff::9"))
    assert a == b == "2001:db8:1:2::/64"
    assert rate_key(ip("2001:db8:1:3::1")) != a
    assert rate_key(ip("203.0.113.1")) == "203.0.113.1" and rate_key(None) == "unknown"


def test_parsing() -> None:
    assert parse_ip(" 203.0.113.1 ") == ip("203.0.113.1")
    assert parse_ip("unknown") is None and parse_ip("") is None and parse_ip("1.2.3.4:x:y") is None
    assert parse_networks(["", " 10.0.0.0/8 "]) == (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(ValueError, match="nope"):
        parse_networks("10.0.0.0/8,nope")
