"""One TCP connection as a wire: an ordered byte stream with a bandwidth cap, a delay and faults.

Telegram's answers to every request on a connection share one pipe. So the cap is per connection,
not per request: a 1 MiB answer queued behind seven others waits for them (head-of-line blocking),
which is what collapses a real media connection under load. Each direction gets half of the RTT
as propagation delay, on every packet (handshake, pings and acks included).

Outgoing bytes go through two stages, so transmission and propagation overlap as on a real link:
the *pacer* releases chunks at the connection's rate (a token bucket with a one-chunk burst) and the
*delay line* hands each chunk to the socket ``rtt/2`` after it was released. Faults act on these
stages: *stall* freezes delivery for N seconds, *drip* slows the pacer to a trickle, *blackhole*
stops reading and delivering for good (the socket stays open), *reset* is an abortive close (RST).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
from dataclasses import dataclass

from streambot.units import MIB

#: Chunk the pacer releases at a time; small enough that a capped link trickles, not bursts.
CHUNK = 16 * 1024
#: Lateness of the pacer's timer a backlogged link may catch up on (its burst, in seconds of line time).
MAX_LAG = 0.02
#: Bytes per second of a dripping connection.
DRIP_RATE = 8 * 1024


@dataclass(slots=True)
class Limits:
    """Shared by every connection of a server; changes apply to bytes not yet released."""

    rtt_ms: float = 0.0
    bandwidth_mib_s: float = 0.0  # 0 = unlimited

    @property
    def one_way(self) -> float:
        return self.rtt_ms / 2000.0

    @property
    def rate(self) -> float | None:
        return self.bandwidth_mib_s * MIB if self.bandwidth_mib_s > 0 else None


class Link:
    """Outgoing half of one connection, plus the fault switches its reader also obeys."""

    def __init__(
        self, writer: asyncio.StreamWriter, limits: Limits, *, max_buffered: int = 64 * MIB
    ) -> None:
        self._writer = writer
        self._limits = limits
        self._max_buffered = max_buffered
        self._buffered = 0
        self._room = asyncio.Event()
        self._room.set()
        self._outbox: collections.deque[tuple[float, bytes]] = collections.deque()
        self._outbox_ready = asyncio.Event()
        self._line: collections.deque[tuple[float, bytes]] = collections.deque()
        self._line_ready = asyncio.Event()
        self._stall_until = 0.0
        self._drip_until: float | None = None  # None: not dripping; inf: until closed
        self.blackholed = False
        self.closed = asyncio.Event()
        self.bytes_sent = 0
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._pace()), loop.create_task(self._deliver())]

    # ---------------------------------------------------------------- sending
    async def send(self, data: bytes) -> None:
        """Queue one packet; waits while the connection already holds ``max_buffered`` bytes."""
        while self._buffered >= self._max_buffered and not self.closed.is_set():
            self._room.clear()
            await self._room.wait()
        if self.closed.is_set() or self.blackholed:
            return
        now = asyncio.get_running_loop().time()
        self._buffered += len(data)
        for i in range(0, len(data), CHUNK):
            self._outbox.append((now, data[i : i + CHUNK]))
        self._outbox_ready.set()

    def _rate(self, now: float) -> float | None:
        if self._drip_until is not None:
            if now < self._drip_until:
                return DRIP_RATE
            self._drip_until = None
        return self._limits.rate

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        free_at = 0.0
        while True:
            while not self._outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
            queued_at, chunk = self._outbox.popleft()
            now = loop.time()
            rate = self._rate(now)
            if rate:
                # A late timer must not cost the link its capacity: a backlogged link keeps its
                # schedule and catches up on up to MAX_LAG of lateness (a token bucket with that
                # burst); resetting the schedule to "now" made 4 capped connections in one busy
                # server process deliver 9 of their 16 MiB/s each.
                start = max(now - MAX_LAG, free_at, queued_at)
                free_at = start + len(chunk) / rate
                if free_at > now:
                    await asyncio.sleep(free_at - now)
                released = free_at
            else:
                released = max(now, queued_at)
            self._line.append((released + self._limits.one_way, chunk))
            self._line_ready.set()

    async def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._line:
                self._line_ready.clear()
                await self._line_ready.wait()
            due, chunk = self._line[0]
            wait = max(due, self._stall_until) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # a stall may have started meanwhile
            if self.blackholed:
                await self.closed.wait()
                return
            self._line.popleft()
            try:
                self._writer.write(chunk)
                await self._writer.drain()
            except (ConnectionError, RuntimeError):
                self.close()
                return
            self.bytes_sent += len(chunk)
            self._buffered -= len(chunk)
            if self._buffered < self._max_buffered:
                self._room.set()

    async def delay_incoming(self, arrived: float) -> None:
        """Hold a client packet until its half of the RTT has passed (order is kept by the caller)."""
        wait = arrived + self._limits.one_way - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

    # ---------------------------------------------------------------- faults
    def stall(self, seconds: float) -> None:
        """Deliver nothing for ``seconds`` (bytes keep queueing), then carry on."""
        self._stall_until = asyncio.get_running_loop().time() + seconds

    def drip(self, seconds: float | None) -> None:
        """Trickle at :data:`DRIP_RATE` for ``seconds`` (``None``: until the connection ends)."""
        now = asyncio.get_running_loop().time()
        self._drip_until = float("inf") if seconds is None else now + seconds

    def blackhole(self) -> None:
        """Stop reading and answering; the socket stays open until the client gives up."""
        self.blackholed = True
        self._line_ready.set()

    def reset(self) -> None:
        """Abortive close: SO_LINGER 0 makes the kernel send RST instead of FIN."""
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()
        self.close()

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self._room.set()
        for task in self._tasks:
            task.cancel()
        if not self._writer.is_closing():
            self._writer.close()

    async def wait_closed(self) -> None:
        self.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
