"""How many body bytes written to a viewer's connection have not left this machine yet.

``response.write`` returns once bytes are in asyncio's buffer or the kernel's; neither means the
viewer took them. The streamer grows its read-ahead only with bytes the viewer took, so a player
that reads a little and hangs up does not make Telegram send blocks nobody reads.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios

__all__ = ["unsent_bytes"]

_INT = struct.Struct("i")


def unsent_bytes(transport: asyncio.BaseTransport | None) -> int | None:
    """Bytes still queued in asyncio and in the kernel send queue; None once the connection is gone.

    The kernel part is Linux's SIOCOUTQ (bytes not yet acknowledged by the peer); where it cannot
    be read only asyncio's own buffer counts.
    """
    if (
        transport is None
        or transport.is_closing()
        or not isinstance(transport, asyncio.WriteTransport)
    ):
        return None
    queued = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if isinstance(sock, socket.socket) and sock.fileno() >= 0:
        try:
            (kernel,) = _INT.unpack(fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(_INT.size)))
        except OSError:
            kernel = 0
        queued += max(0, kernel)
    return queued
