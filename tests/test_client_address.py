"""The client address behind trusted proxies (issue 16 item 4): pure parsing, table-tested."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from routes.client_address import BadNetwork, client_address, parse_address, parse_networks

PROXIES = parse_networks("10.0.0.1, 192.168.0.0/16, ::1, fd00::/8")
XFF = "X-Forwarded-For"
FWD = "Forwarded"


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


@pytest.mark.parametrize(
    ("peer", "pairs", "header", "client"),
    [
        # Not from a trusted proxy: forwarding headers are ignored, whatever they say.
        ("203.0.113.9", [(XFF, "1.2.3.4")], XFF, "203.0.113.9"),
        ("203.0.113.9", [(FWD, "for=1.2.3.4")], FWD, "203.0.113.9"),
        ("10.0.0.2", [(XFF, "1.2.3.4")], XFF, "10.0.0.2"),  # next to a proxy is not a proxy
        # From a trusted proxy: the rightmost untrusted hop.
        ("10.0.0.1", [(XFF, "1.2.3.4")], XFF, "1.2.3.4"),
        ("10.0.0.1", [(XFF, "6.6.6.6, 1.2.3.4")], XFF, "1.2.3.4"),  # 6.6.6.6 is the client's lie
        ("10.0.0.1", [(XFF, "6.6.6.6, 1.2.3.4, 192.168.1.1")], XFF, "1.2.3.4"),  # proxy chain
        ("10.0.0.1", [(XFF, "6.6.6.6"), (XFF, "1.2.3.4")], XFF, "1.2.3.4"),  # repeated header
        ("10.0.0.1", [(XFF, " 1.2.3.4:5678 ")], XFF, "1.2.3.4"),  # with a port
        ("10.0.0.1", [(XFF, "[2001:db8::1]:443")], XFF, "2001:db8::1"),
        ("10.0.0.1", [(XFF, "2001:db8::1")], XFF, "2001:db8::1"),
        ("10.0.0.1", [(XFF, "::ffff:1.2.3.4")], XFF, "1.2.3.4"),  # IPv4-mapped
        ("::1", [(XFF, "1.2.3.4")], XFF, "1.2.3.4"),
        ("10.0.0.1", [(XFF, "192.168.0.5, 10.0.0.1")], XFF, "192.168.0.5"),  # all trusted
        # No header, empty header or junk: the nearest address we can vouch for.
        ("10.0.0.1", [], XFF, "10.0.0.1"),
        ("10.0.0.1", [(XFF, "")], XFF, "10.0.0.1"),
        ("10.0.0.1", [(XFF, "unknown")], XFF, "10.0.0.1"),
        ("10.0.0.1", [(XFF, "1.2.3.4, junk")], XFF, "10.0.0.1"),
        ("10.0.0.1", [(XFF, "junk, 192.168.0.7")], XFF, "192.168.0.7"),
        ("10.0.0.1", [(XFF, "999.1.1.1")], XFF, "10.0.0.1"),
        ("10.0.0.1", [(XFF, "[::1")], XFF, "10.0.0.1"),
        # Forwarded (RFC 7239).
        ("10.0.0.1", [(FWD, "for=1.2.3.4")], FWD, "1.2.3.4"),
        ("10.0.0.1", [(FWD, 'For="[2001:db8:cafe::17]:4711"')], FWD, "2001:db8:cafe::17"),
        ("10.0.0.1", [(FWD, "for=6.6.6.6, for=1.2.3.4;proto=https;by=10.0.0.1")], FWD, "1.2.3.4"),
        ("10.0.0.1", [(FWD, 'proto=https;for="1.2.3.4:80"')], FWD, "1.2.3.4"),
        ("10.0.0.1", [(FWD, 'for="a,b", for=1.2.3.4')], FWD, "1.2.3.4"),  # comma inside quotes
        ("10.0.0.1", [(FWD, "for=_hidden")], FWD, "10.0.0.1"),  # obfuscated: not an address
        ("10.0.0.1", [(FWD, "proto=https")], FWD, "10.0.0.1"),  # no for=
        # Only the header the proxy writes counts; the other may be the client's own.
        ("10.0.0.1", [(FWD, "for=6.6.6.6")], XFF, "10.0.0.1"),
        ("10.0.0.1", [(XFF, "6.6.6.6")], FWD, "10.0.0.1"),
        ("10.0.0.1", [(XFF, "1.2.3.4"), (FWD, "for=6.6.6.6")], XFF, "1.2.3.4"),
        # Peers that are not IP addresses (a Unix socket) are returned as they are.
        ("", [(XFF, "1.2.3.4")], XFF, ""),
        (None, [(XFF, "1.2.3.4")], XFF, ""),
    ],
)
def test_client_address(
    peer: str | None, pairs: list[tuple[str, str]], header: str, client: str
) -> None:
    assert client_address(peer, headers(*pairs), PROXIES, header) == client


def test_nothing_is_trusted_by_default() -> None:
    assert client_address("10.0.0.1", headers((XFF, "1.2.3.4")), ()) == "10.0.0.1"


@pytest.mark.parametrize(
    ("text", "count"), [("", 0), ("10.0.0.1", 1), ("10.0.0.0/8, ::1 172.16.0.0/12", 3)]
)
def test_parse_networks(text: str, count: int) -> None:
    assert len(parse_networks(text)) == count


@pytest.mark.parametrize("text", ["10.0.0", "example.com", "10.0.0.0/33", "1.2.3.4,x"])
def test_parse_networks_rejects_junk(text: str) -> None:
    with pytest.raises(BadNetwork):
        parse_networks(text)


@pytest.mark.parametrize(
    ("text", "address"),
    [("1.2.3.4", "1.2.3.4"), ("[::1]:80", "::1"), ("::1", "::1"), ('"1.2.3.4:9"', "1.2.3.4")],
)
def test_parse_address(text: str, address: str) -> None:
    assert str(parse_address(text)) == address


UNTRUSTED = st.ip_addresses(v=4).filter(lambda a: not any(a in n for n in PROXIES))
HEADER_TEXT = st.text(alphabet=st.sampled_from('0123456789.:,;[]"=forFOR abcdef_'), max_size=60)


@given(peer=UNTRUSTED, xff=HEADER_TEXT, fwd=HEADER_TEXT)
def test_untrusted_peer_is_always_the_client(
    peer: ipaddress.IPv4Address, xff: str, fwd: str
) -> None:
    for header in (XFF, FWD):
        got = client_address(str(peer), headers((XFF, xff), (FWD, fwd)), PROXIES, header)
        assert got == str(peer)


@given(xff=st.lists(st.ip_addresses(), max_size=5), junk=HEADER_TEXT)
def test_trusted_peer_gives_a_listed_address_or_itself(
    xff: list[ipaddress.IPv4Address | ipaddress.IPv6Address], junk: str
) -> None:
    """Whatever the header holds, the answer is the peer or an address the header listed."""
    chain = ", ".join([junk, *map(str, xff)])
    got = client_address("10.0.0.1", headers((XFF, chain)), PROXIES, XFF)
    listed = {str(parse_address(hop)) for hop in chain.split(",")}
    assert got == "10.0.0.1" or got in listed
