"""The address check every fetch makes, over the forms an attacker writes an address in (the
job-level attacks are in test_fetch_attacks.py; these are the forms a test host cannot serve)."""

from __future__ import annotations

import pytest

from engine.inside import Fetcher


def fetcher(*allowed: str) -> Fetcher:
    return Fetcher(roots=[], allowed=list(allowed), seconds=1, min_rate=1)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.255.0.9", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped
        ("::127.0.0.1", "an unspecified or IPv4-compatible address"),
        ("2002:7f00:1::", "a loopback address"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "a private address"),  # NAT64 of 10.0.0.1
        ("0.0.0.0", "an unspecified address"),  # noqa: S104 - an address checked, not bound
        ("::", "an unspecified or IPv4-compatible address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1%2", "a link-local address"),
        ("fd00:ec2::254", "a private address"),
        ("172.31.255.255", "a private address"),
        ("192.168.0.1", "a private address"),
        ("100.100.100.200", "a carrier-grade NAT address"),
        ("224.0.0.251", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("255.255.255.255", "a reserved address"),
    ],
)
def test_an_address_no_fetch_may_reach_is_named_for_what_it_is(address: str, why: str) -> None:
    assert fetcher().forbidden(address) == why


@pytest.mark.parametrize("address", ["203.0.113.7", "2001:db8::1", "8.8.8.8"])
def test_other_addresses_may_be_reached(address: str) -> None:
    assert fetcher().forbidden(address) == ""


def test_allow_networks_opens_exactly_the_networks_it_lists() -> None:
    on_premises = fetcher("10.1.0.0/16")
    assert on_premises.forbidden("10.1.2.3") == ""
    assert on_premises.forbidden("::ffff:10.1.2.3") == ""
    assert on_premises.forbidden("10.2.0.1") == "a private address"
    assert on_premises.forbidden("127.0.0.1") == "a loopback address"
