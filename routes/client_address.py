"""Who the client is: the peer address, or behind a trusted reverse proxy the address it forwarded.

Only a proxy listed in ``TRUSTED_PROXIES`` may say who the client is; from anyone else the
forwarding headers are ignored, or any viewer could pick an address to dodge per-client caps or
frame another one in the logs. Of the forwarded chain, the client is the rightmost address not
itself a trusted proxy (each proxy appends the address it saw, so everything left of the first
untrusted hop was written by someone we cannot believe). Only the header the proxy is set up to
write is read (``FORWARDED_HEADER``): a proxy that writes X-Forwarded-For passes a client's own
``Forwarded`` through untouched, so reading both would let the client choose.

The parsing is pure (:func:`client_address`); :func:`middleware` applies it to each request, and
:class:`AccessLogger` writes the same address into the access log.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware
from multidict import MultiMapping

from streambot import links

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

HEADERS = ("X-Forwarded-For", "Forwarded")

#: The client address of a request, set by :func:`middleware` on the request as aiohttp made it
#: (the one the access log is given) before the handler sees a copy with ``remote`` replaced.
CLIENT = web.RequestKey("client", str)

# A Forwarded element's ``for`` parameter: a token or a quoted string (RFC 7239 section 4).
_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)', re.IGNORECASE)


class BadNetwork(ValueError):
    """An entry of TRUSTED_PROXIES is neither an address nor a network."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.1, 192.168.0.0/16 ::1"`` as networks (an address is a /32 or /128)."""
    networks = []
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise BadNetwork(f"{item!r} is not an IP address or network") from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``)."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_chain(headers: MultiMapping[str], header: str) -> list[str]:
    """The hops a header lists, leftmost (farthest from us) first; repeated headers joined."""
    values = headers.getall(header, [])
    if header.lower() == "forwarded":
        hops = []
        for value in values:
            for element in _split_elements(value):
                match = _FOR.search(element)
                hops.append(match.group(1) if match else "")
        return hops
    return [hop.strip() for value in values for hop in value.split(",")]


def _split_elements(value: str) -> Iterable[str]:
    """Split a Forwarded value at commas outside quoted strings."""
    element: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            yield "".join(element)
            element = []
            continue
        element.append(ch)
    yield "".join(element)


def _trusted(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in net for net in networks)


def is_trusted(peer: str, networks: Sequence[Network]) -> bool:
    """Is ``peer`` (a connection's address) one of the trusted proxies?"""
    return bool(networks) and _trusted(parse_address(peer), networks)


def client_address(
    peer: str | None,
    headers: MultiMapping[str],
    trusted: Sequence[Network],
    header: str = "X-Forwarded-For",
) -> str:
    """The client's address as text: ``peer`` unless ``peer`` is a trusted proxy.

    Behind trusted proxies: walk the forwarded chain from the right past trusted hops; the first
    other hop is the client. A hop that is not an address (``unknown``, an obfuscated name,
    junk) ends the walk at the last address we could vouch for, so junk never becomes a client
    address; if every hop is trusted, the leftmost one is the client.
    """
    current = parse_address(peer) if peer else None
    if current is None or not _trusted(current, trusted):
        return peer or ""
    for hop in reversed(forwarded_chain(headers, header)):
        address = parse_address(hop)
        if address is None:
            break
        current = address
        if not _trusted(address, trusted):
            break
    return str(current)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(trusted: Sequence[Network], header: str) -> Middleware:
    """Give every handler ``request.remote`` = the client address (logs, caps, stream registry)."""

    @web.middleware
    async def resolve_client(request: web.Request, handler: Handler) -> web.StreamResponse:
        client = client_address(request.remote, request.headers, trusted, header)
        request[CLIENT] = client
        if client != request.remote:
            request = request.clone(remote=client)
        return await handler(request)

    return resolve_client


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log line, with the client address the middleware resolved and link
    tokens cut to a short prefix (:func:`streambot.links.redact`)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        client = request.get(CLIENT) or request.remote or "-"
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.3fs "%s"',
            client,
            request.method,
            links.redact(str(request.rel_url)),
            *request.version,
            response.status,
            response.body_length,
            time,
            request.headers.get("User-Agent", "-"),
        )


__all__ = [
    "CLIENT",
    "HEADERS",
    "AccessLogger",
    "BadNetwork",
    "client_address",
    "is_trusted",
    "middleware",
    "parse_address",
    "parse_networks",
]
