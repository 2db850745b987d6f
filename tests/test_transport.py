"""LinearAbridged over real loopback sockets: the bytes kurigram's framing expects, its failure answers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from pyrogram.connection.transport import TCPAbridged

from streambot.transport import READ_BUFFER_BYTES, LinearAbridged

Peer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def frame(payload: bytes) -> bytes:
    """TCP-abridged framing of one packet (length in 4-byte words)."""
    words = len(payload) // 4
    head = bytes([words]) if words <= 126 else b"\x7f" + words.to_bytes(3, "little")
    return head + payload


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Peer], Awaitable[LinearAbridged]]]:
    """Start a loopback peer running ``peer`` and return a LinearAbridged connected to it."""
    servers: list[asyncio.Server] = []
    transports: list[LinearAbridged] = []

    async def start(peer: Peer) -> LinearAbridged:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                assert await reader.readexactly(1) == b"\xef"  # the abridged tag
                await peer(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        transport = LinearAbridged()
        transports.append(transport)
        await transport.connect(("127.0.0.1", port))
        return transport

    yield start
    for transport in transports:
        await transport.close()
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_packets_split_into_small_writes_arrive_whole_and_in_order(
    serve: Callable[[Peer], Awaitable[LinearAbridged]],
) -> None:
    packets = [os.urandom(8), os.urandom(1 << 20), os.urandom(4 * 300), os.urandom(1024 + 4096)]

    async def peer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        wire = b"".join(frame(p) for p in packets)
        for i in range(0, len(wire), 1448):  # one MSS at a time, as a slow link delivers
            writer.write(wire[i : i + 1448])
            await writer.drain()
        await writer.drain()

    transport = await serve(peer)
    assert [await transport.recv() for _ in packets] == packets


async def test_a_peer_that_closes_mid_packet_gives_none(
    serve: Callable[[Peer], Awaitable[LinearAbridged]],
) -> None:
    async def peer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(os.urandom(4096))[:2000])
        await writer.drain()
        writer.close()

    transport = await serve(peer)
    assert await transport.recv() is None


async def test_silence_longer_than_the_timeout_gives_none(
    serve: Callable[[Peer], Awaitable[LinearAbridged]],
) -> None:
    release = asyncio.Event()

    async def peer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(os.urandom(4096))[:100])  # then nothing: a black hole
        await writer.drain()
        await release.wait()

    transport = await serve(peer)
    transport.TIMEOUT = 0.2  # kurigram's per-read silence bound, shortened for the test
    try:
        assert await transport.recv() is None
    finally:
        release.set()


async def test_the_socket_buffer_holds_a_whole_block(
    serve: Callable[[Peer], Awaitable[LinearAbridged]],
) -> None:
    """A 1 MiB answer must not pause the socket (asyncio pauses at twice the reader limit)."""

    async def peer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0)

    transport = await serve(peer)
    assert transport.reader is not None
    assert isinstance(transport, TCPAbridged)
    assert READ_BUFFER_BYTES >= 2 * (1 << 20)
    assert transport.reader._limit * 2 == READ_BUFFER_BYTES
