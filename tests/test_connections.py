"""Idle, slow and greedy clients over real sockets (issue 16 items 3 and 4).

The application runs behind the very runner and site the CLI uses (``make_runner``/``make_site``)
on a real port. Hostile clients and the normal viewer connect from different loopback addresses
(127.0.0.2, 127.0.0.3, ...: Linux routes all of 127/8 to ``lo``), because the caps are per address.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import pytest

from streambot.simulator import SyntheticContent
from streambot.simulator.world import World
from streambot.units import MIB

from .helpers import Serve, Served, eventually, expected

NORMAL = "127.0.0.9"  # the well-behaved viewer
HOSTILE = "127.0.0.2"
OTHER = "127.0.0.3"


def session(source: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))


async def closed_after(reader: asyncio.StreamReader, timeout: float) -> float:
    """Seconds until the server closes the connection (EOF or reset); fails after ``timeout``."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


# ----------------------------------------------------------------------------- idle and slow


async def test_idle_and_dribbling_connections_are_closed_while_a_viewer_downloads(
    world: World, serve: Serve
) -> None:
    """Silent sockets, header dribblers and idle keep-alives are closed after
    HTTP_KEEPALIVE_SECONDS (aiohttp's default held them 3,630 s); a normal viewer is unaffected."""
    keepalive = 1.0
    _f, msg_id = world.store(SyntheticContent(200_000, seed=3), name="clip.bin")
    served = await serve(world, http_keepalive_seconds=keepalive, max_connections_per_client=1000)

    async def silent() -> float:
        reader, writer = await served.connect(HOSTILE)
        try:
            return await closed_after(reader, keepalive + 5)
        finally:
            writer.close()

    async def dribbler() -> float:
        """Sends a request head one byte every 50 ms: it would need 4 s to finish."""
        reader, writer = await served.connect(OTHER)
        head = f"GET {served.path(msg_id)} HTTP/1.1\r\nHost: x\r\nX-Pad: {'a' * 40}\r\n\r\n"

        async def drip() -> None:
            try:
                for byte in head.encode():
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)
            except ConnectionError:
                pass  # closed by the server, as it should be

        dripping = asyncio.create_task(drip())
        try:
            return await closed_after(reader, keepalive + 5)
        finally:
            dripping.cancel()
            writer.close()

    async def idle_keep_alive() -> float:
        """One complete request and response, then nothing on the kept-alive connection."""
        reader, writer = await served.connect(HOSTILE)
        writer.write(f"HEAD {served.path(msg_id)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        try:
            return await closed_after(reader, keepalive + 5)
        finally:
            writer.close()

    async def viewer() -> None:
        async with session(NORMAL) as s:
            for _ in range(10):
                async with s.get(served.url(msg_id)) as resp:
                    assert resp.status == 200
                    assert await resp.read() == expected(3, 0, 199_999)

    hostile = [silent() for _ in range(40)] + [dribbler() for _ in range(10)]
    hostile += [idle_keep_alive() for _ in range(10)]
    *closed, _ = await asyncio.gather(*hostile, viewer())
    # Closed by the timer, not at once (which would mean refused) and not much later.
    assert min(closed) >= keepalive * 0.8
    assert max(closed) <= keepalive + 2.0


# ----------------------------------------------------------------------------- per-client caps


async def test_connections_per_client_address_are_capped(world: World, serve: Serve) -> None:
    """One address may hold MAX_CONNECTIONS_PER_CLIENT sockets; more get 503 + Retry-After and
    are closed; other addresses are not affected, and a freed slot is usable again."""
    _f, msg_id = world.store(SyntheticContent(1000, seed=5), name="a.bin")
    served = await serve(world, max_connections_per_client=5, http_keepalive_seconds=30)
    held = [await served.connect(HOSTILE) for _ in range(5)]
    await eventually(lambda: served.services.connections.open_from(HOSTILE) == 5)

    reader, writer = await served.connect(HOSTILE)
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nRetry-After: 5\r\n" in answer
    writer.close()
    assert served.services.connections.refused == 1

    async with session(OTHER) as s, s.get(served.url(msg_id)) as resp:
        assert resp.status == 200
        assert await resp.read() == expected(5, 0, 999)

    _r, first = held.pop()
    first.close()
    await eventually(lambda: served.services.connections.open_from(HOSTILE) == 4)
    async with session(HOSTILE) as s, s.get(served.url(msg_id)) as resp:
        assert resp.status == 200
    for _r, w in held:
        w.close()
    await eventually(lambda: served.services.connections.open_from(HOSTILE) == 0)


async def stalled_reader(served: Served, source: str, url: str, headers: dict[str, str]) -> Any:
    """A GET whose body is read a little and then not at all (a viewer paused forever)."""
    s = session(source)
    resp = await s.get(url, headers=headers)
    assert resp.status == 200
    await resp.content.readexactly(1000)
    return s, resp


async def test_streams_per_client_address_are_capped(world: World, serve: Serve) -> None:
    """Stalled readers from one address hold at most MAX_STREAMS_PER_CLIENT stream slots; the
    next gets 429 + Retry-After while other addresses still stream."""
    _f, msg_id = world.store(SyntheticContent(8 * MIB, seed=6), name="movie.mp4")
    served = await serve(world, max_streams_per_client=2, max_streams=10)
    url = served.url(msg_id, "movie.mp4")
    stalled = [await stalled_reader(served, HOSTILE, url, {}) for _ in range(2)]
    assert len(served.services.registry) == 2

    async with session(HOSTILE) as s, s.get(url) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "10"
    async with session(OTHER) as s, s.get(url, headers={"Range": "bytes=0-99999"}) as resp:
        assert resp.status == 206
        assert await resp.read() == expected(6, 0, 99_999)

    s0, r0 = stalled.pop()
    r0.close()
    await s0.close()
    await eventually(lambda: len(served.services.registry) == 1)
    async with session(HOSTILE) as s, s.get(url, headers={"Range": "bytes=5-9"}) as resp:
        assert resp.status == 206
        assert await resp.read() == expected(6, 5, 9)
    for s, r in stalled:
        r.close()
        await s.close()


# ----------------------------------------------------------------------------- trusted proxies


async def test_trusted_proxy_names_the_client_for_registry_caps_and_log(
    world: World, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """From a TRUSTED_PROXIES address, X-Forwarded-For is the client (stream list, per-client
    stream cap, access log, exempt from the connection cap); from anyone else it is ignored."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    _f, msg_id = world.store(SyntheticContent(8 * MIB, seed=7), name="movie.mp4")
    served = await serve(
        world,
        trusted_proxies=f"{HOSTILE}/32",
        max_streams_per_client=1,
        max_connections_per_client=2,
    )
    url = served.url(msg_id, "movie.mp4")
    a = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}
    b = {"X-Forwarded-For": "198.51.100.8"}
    # Two clients behind the proxy, one stream each (the cap is 1 per client), and a third
    # and fourth proxy connection although the connection cap is 2.
    stalled = [
        await stalled_reader(served, HOSTILE, url, a),
        await stalled_reader(served, HOSTILE, url, b),
    ]
    remotes = sorted(s["remote"] for s in served.services.registry.snapshot())
    assert remotes == ["198.51.100.7", "198.51.100.8"]
    async with session(HOSTILE) as s, s.get(url, headers=a) as resp:
        assert resp.status == 429  # 198.51.100.7 already streams
    # The same header from an address that is not a trusted proxy counts for that address.
    untrusted = await stalled_reader(served, OTHER, url, a)
    remotes = sorted(s["remote"] for s in served.services.registry.snapshot())
    assert remotes == [OTHER, "198.51.100.7", "198.51.100.8"]
    stalled.append(untrusted)
    for s, r in stalled:
        r.close()
        await s.close()
    await eventually(lambda: len(served.services.registry) == 0)
    logged = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any(m.startswith('198.51.100.7 "GET /dl/') and " 429 " in m for m in logged), logged
    assert any(m.startswith(f'{OTHER} "GET /dl/') for m in logged), logged
    assert not any(m.startswith("6.6.6.6") for m in logged)
