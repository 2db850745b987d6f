"""The in-flight byte budget: how much memory all streams together may hold in fetched blocks.

Kept apart from the streamer because it is shared state with its own fairness rules (first come,
first served; a fair window per stream; shedding prefetch of paused streams), tested on its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable

from streambot.units import MIB

__all__ = ["InflightBudget", "crowded_block"]


def crowded_block(block: int) -> int:
    """The block size of a stream that starts while memory is short: half of ``block``.

    Every stream may always hold one block, however slow its viewer (see :meth:`open_stream`), so
    the block size, not the budget, sets the memory of a crowded server: 250 viewers at 1 MiB
    each need 250 MiB before anything is prefetched. Half a block halves that floor and is still
    a valid ``upload.GetFile`` size (4 KiB multiple dividing 1 MiB); 4 KiB cannot be halved.
    """
    return max(4096, block // 2)


class InflightBudget:
    """A byte budget shared by every stream's in-flight and buffered blocks.

    ``acquire`` is first-come first-served, so a stream waiting for its only block is not starved by
    streams that already have several. ``window`` gives each active stream a fair share.

    A stream whose viewer stopped reading (a paused player: TCP backpressure) would otherwise keep
    its whole prefetch window forever, and enough of them would leave new viewers waiting for a
    first block that never comes. So when someone has to wait, the budget asks every registered
    stream to *shed* prefetched blocks above its fair share (see :meth:`register`); a stream then
    holds at most about one block while paused, and fetches the shed blocks again when it resumes.
    """

    def __init__(self, total_bytes: int, *, streams: int = 1) -> None:
        if total_bytes < MIB:
            raise ValueError("the stream memory budget must be at least 1 MiB")
        self.total = total_bytes
        self.streams = streams  # MAX_STREAMS: the most streams that may hold a block at once
        self.used = 0
        self.active_streams = 0
        # One block per active stream: what each may hold however slow its viewer is.
        self.floors = 0
        self.peak = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        # One per active stream (bounded by the streams), called when a waiter cannot be served.
        self._shedders: set[Callable[[], None]] = set()
        self.shed_blocks = 0

    def register(self, shed: Callable[[], None]) -> None:
        """Add a stream's ``shed`` callback: it releases prefetched blocks above the fair window."""
        self._shedders.add(shed)

    def unregister(self, shed: Callable[[], None]) -> None:
        self._shedders.discard(shed)

    def open_stream(self, block: int) -> int:
        """Count a stream in and choose its block size: ``block``, or :func:`crowded_block`.

        A stream gets the full block while the floors of the streams already running, its own,
        and the crowded floor of every stream that may still be admitted all fit in the budget;
        otherwise it gets the crowded block. So a quiet server streams in large blocks (fewer
        requests, and a viewer who hangs up costs a whole block at most) and a full one still
        has room for the one block every admitted stream needs.
        """
        small = crowded_block(block)
        later = max(0, self.streams - self.active_streams - 1) * small
        size = block if self.floors + block + later <= self.total else small
        self.active_streams += 1
        self.floors += size
        return size

    def close_stream(self, block: int) -> None:
        """Count out a stream opened with :meth:`open_stream`, which chose ``block``."""
        self.active_streams -= 1
        self.floors -= block

    def window(self, prefetch: int, block: int) -> int:
        """Blocks a stream may hold: its prefetch, shrunk to a fair share, never below one."""
        share = self.total // (block * max(1, self.active_streams))
        return max(1, min(prefetch, share))

    def try_acquire(self, n: int) -> bool:
        if self._waiters or self.used + n > self.total:
            return False
        self._take(n)
        return True

    async def acquire(self, n: int) -> None:
        if self.try_acquire(n):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        self._reclaim()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled: give it back
            else:
                # _wake may already have dropped our cancelled entry from the head.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._wake()
            raise

    def release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _reclaim(self) -> None:
        """Ask streams to give back prefetch above their fair share while someone waits."""
        for shed in list(self._shedders):
            if not self._waiters:
                return
            shed()

    def _take(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            # A block larger than the whole budget still proceeds once nothing else is held.
            if self.used + n > self.total and self.used > 0:
                return
            self._waiters.popleft()
            self._take(n)
            fut.set_result(None)
