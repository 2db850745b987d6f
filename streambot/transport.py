"""The TCP transport every client uses: kurigram's abridged framing with a linear packet reader.

kurigram's ``TCP._recv_from_socket`` builds each packet with ``data += chunk``. For a 1 MiB
``upload.File`` answer that arrives in many reads this copies the packet again and again
(quadratic in the number of reads), on the event loop with the GIL held, and every stream of
the process waits behind it. Its ``StreamReader`` also keeps the default 64 KiB limit, so the
socket is paused and resumed (two ``epoll_ctl`` calls) every 128 KiB of a 1 MiB answer.

:class:`LinearAbridged` changes only those two things, through the hook kurigram offers for it
(``Client(protocol_factory=...)``): the direct connection opens with a buffer that holds a whole
block, and a packet is collected as a list of chunks joined once. The framing, the timeouts
(``TCP.TIMEOUT`` of silence per read, then ``None`` as kurigram's callers expect), proxies and
obfuscation stay kurigram's own code paths.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Final

from pyrogram.connection.transport import TCPAbridged

__all__ = ["READ_BUFFER_BYTES", "LinearAbridged"]

logger = logging.getLogger(__name__)

#: How much the socket may hold unread before asyncio pauses it: a 1 MiB block plus framing and
#: one more answer in flight, so a block never waits on a pause/resume round. asyncio pauses
#: at twice its ``limit``, hence half of this is passed.
READ_BUFFER_BYTES: Final = 4 << 20


class LinearAbridged(TCPAbridged):
    """TCP-abridged whose reads cost one copy per packet instead of one per chunk."""

    async def _connect_via_direct(
        self, destination: tuple[str, int], *, family: int | None = None
    ) -> None:
        host, port = destination
        if family is None:
            family = socket.AF_INET6 if self.ipv6 else socket.AF_INET
        logger.debug("connecting to %s:%s", host, port)
        self.reader, self.writer = await asyncio.open_connection(
            host=host, port=port, family=family, limit=READ_BUFFER_BYTES // 2
        )
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            self._enable_keepalive(sock)

    async def _recv_from_socket(self, length: int) -> bytes | None:
        reader = self.reader
        if reader is None:
            return None
        chunks: list[bytes] = []
        received = 0
        while received < length:
            try:
                # Silence, not the whole packet, is bounded: a slow but live link still works.
                async with asyncio.timeout(self.TIMEOUT):
                    chunk = await reader.read(length - received)
            except (TimeoutError, OSError):
                return None
            if not chunk:
                return None  # closed by the peer mid-packet
            chunks.append(chunk)
            received += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
