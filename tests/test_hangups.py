"""Hang-ups and cut streams over a raw socket (issue 16 items 1 and 2).

A viewer that goes away is routine: whichever way it goes (reset or close, while the server waits
on back-pressure), it is counted as a client disconnect, logged at most at DEBUG, and everything
is released. A stream the server must cut mid-body ends in a connection reset, never in a clean
end of stream short of Content-Length (which clients that ignore the length keep as a complete file).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import struct
import termios

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from streambot.simulator import SyntheticContent
from streambot.simulator.world import World, build_world
from streambot.units import MIB

from .helpers import Serve, Served, eventually, quiescent


def errors(app: Served, kind: str) -> float:
    """One sample of /metrics' streambot_errors_total."""
    for family in text_string_to_metric_families(app.services.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "streambot_errors_total" and sample.labels == {"kind": kind}:
                return sample.value
    return 0.0


def metric(app: Served, name: str) -> float:
    for family in text_string_to_metric_families(app.services.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise KeyError(name)


def handlers(app: Served) -> list[web.RequestHandler]:
    server = app.runner.server
    assert server is not None
    return list(server.connections)


async def raw_get(app: Served, path: str) -> tuple[socket.socket, bytes]:
    """A GET on a small-buffered raw socket; returns it and the response head."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", app.port))
    await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    return sock, head


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_hang_up_while_the_server_waits_on_back_pressure(
    world: World, serve: Serve, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """Observed: a reset during the drain raised ConnectionError (not ConnectionResetError),
    escaped the route as an ERROR traceback and was not counted as a disconnect."""
    caplog.set_level(logging.DEBUG)
    _f, msg_id = world.store(SyntheticContent(32 * MIB, seed=2), name="movie.mp4")
    app = await serve(world)
    sock, head = await raw_get(app, app.path(msg_id, "movie.mp4"))
    assert head.startswith(b"HTTP/1.1 200")
    # The viewer reads nothing more: the server fills the socket buffers and waits.
    await eventually(lambda: any(h.writing_paused for h in handlers(app)))
    assert len(app.services.registry) == 1
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()

    await eventually(lambda: quiescent(app))
    await eventually(lambda: errors(app, "client_disconnect") == 1)
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG and r.name != "aiohttp.access"]
    assert [r for r in loud if r.exc_info or r.levelno >= logging.WARNING] == []
    assert any("hung up" in r.getMessage() for r in caplog.records)


async def test_a_stream_cut_mid_body_resets_the_connection(world: World, serve: Serve) -> None:
    """Observed: a cut stream ended with a clean FIN short of Content-Length. It must be a reset."""
    _f, msg_id = world.store(SyntheticContent(50_003, seed=3), name="f.bin")
    app = await serve(world, stream_block_size_kib=4)
    world.telegram.inject("upload.GetFile", code=400, message="FILE_ID_INVALID", skip=6)
    sock, head = await raw_get(app, app.path(msg_id, "f.bin"))
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\nContent-Length: 50003\r\n" in head
    loop = asyncio.get_running_loop()
    received = 0

    async def read_to_end() -> None:
        nonlocal received
        async with asyncio.timeout(10):
            while data := await loop.sock_recv(sock, 65536):
                received += len(data)

    with pytest.raises(ConnectionResetError):
        await read_to_end()
    sock.close()
    assert received < 50_003
    await eventually(lambda: quiescent(app))


def unsent(sock_fd: int) -> int:
    """Bytes in a TCP socket's send queue not yet acknowledged by the peer (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock_fd, termios.TIOCOUTQ, b"\0" * 4))[0]


def unread(sock_fd: int) -> int:
    """Bytes waiting in a TCP socket's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock_fd, termios.FIONREAD, b"\0" * 4))[0]


async def test_billing_counts_bytes_written_to_the_socket(world: World, serve: Serve) -> None:
    """Billing counts the bytes the kernel accepted (nginx's $bytes_sent), not the bytes handed to
    the web server: a viewer that stalls and hangs up is billed within a slice of what left the
    process. Observed: the block in flight when the viewer stalled (up to 1 MiB that partly
    reached the socket) was never billed, and bytes still queued in the process were."""
    _f, msg_id = world.store(SyntheticContent(32 * MIB, seed=2), name="movie.mp4")
    app = await serve(world)
    sock, head = await raw_get(app, app.path(msg_id, "movie.mp4"))
    loop = asyncio.get_running_loop()
    received = len(head.split(b"\r\n\r\n", 1)[1])
    while received < 100_000:
        received += len(await loop.sock_recv(sock, 65536))
    await eventually(lambda: any(h.writing_paused for h in handlers(app)))
    [tracked] = app.services.registry.streams()
    [handler] = handlers(app)
    assert handler.transport is not None
    server_fd = handler.transport.get_extra_info("socket").fileno()
    # Nothing moves while the viewer does not read: every body byte that left the process is
    # read, waiting in the viewer's receive queue, or in the server's send queue.
    accepted = received + unread(sock.fileno()) + unsent(server_fd)
    billed = tracked.bytes_sent
    assert accepted - 2 * 65536 <= billed <= accepted, (billed, accepted)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    await eventually(lambda: quiescent(app))
    assert tracked.bytes_sent == billed  # nothing more is billed after the hang-up
    assert metric(app, "streambot_bytes_sent_total") == billed


async def test_hang_up_before_a_head_answer_is_a_counted_disconnect(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """A viewer that resets while the file is looked up (HEAD: no stream) is a disconnect too.

    The lookup costs one simulated round trip of 300 ms, so the reset lands before the answer.
    """
    caplog.set_level(logging.DEBUG)
    world = build_world(rtt=0.3)
    _f, msg_id = world.store(SyntheticContent(1000, seed=5), name="a.bin")
    app = await serve(world)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", app.port))
    await loop.sock_sendall(
        sock, f"HEAD {app.path(msg_id, 'a.bin')} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    await eventually(lambda: len(handlers(app)) == 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    await eventually(lambda: errors(app, "client_disconnect") == 1, timeout=10)
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]
