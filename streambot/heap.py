"""The C heap under Python: its figures, and giving freed memory back once the streams have drained.

Every 1 MiB block a stream moves is a C allocation several times over (the packet joined from the
socket, its decryption, the TL-parsed ``bytes``). glibc serves allocations that large from its
heaps, not from ``mmap``, once the first one was freed (its mmap threshold adapts upwards), and it
gives a heap's freed pages back to the kernel only from the very top of the heap. kurigram decrypts
on one thread per connection and glibc gives each thread its own arena, so after a busy minute the
freed blocks sit in many arenas, each holding its high-water mark: measured over the wire, RSS stayed
about 50-75 MiB above its idle level after 100-250 streams ended, while the allocator's own figures
showed the memory freed (mallinfo2: ~40 MiB in use against 26 before; 50-210 MiB free but held).

What an operator expects is that a process whose downloads have all ended shrinks back. So when
the last stream ends and no new one starts for a short quiet period, :class:`HeapTrimmer` calls
``malloc_trim(0)``, which returns every whole free page of every arena (``madvise(DONTNEED)``), not
just the top. It runs then and only then: between bursts, never while streaming (the pages would
just be faulted in again), once per drain. The call walks every arena under its lock
and takes milliseconds on a large heap, so it runs in a worker thread (ctypes releases the GIL), not
on the event loop.

The arenas themselves multiply what is held: glibc allows eight per core and gives each new thread
one, and every arena keeps its own free blocks. :meth:`Heap.limit_arenas` caps them
(``mallopt(M_ARENA_MAX)``, as the ``MALLOC_ARENA_MAX`` variable would) at start-up; the threads then
share them. Measured over the wire, 100 streams at 50 ms: peak RSS 298 -> 262 MiB with two arenas,
7.76 -> 7.45 CPU s/GiB (almost every allocation is made holding the GIL anyway, so the arena locks
are hardly contended). A fixed mmap threshold (every block its own mapping, given back on free)
was tried and rejected: it cut the same load's throughput from about 135 to 52 MiB/s.

Measured trims take 5-16 ms for 50-210 MiB given back; after 250 streams over the wire RSS went
from 428 MiB at the peak to 119 MiB (100.6 before the load) instead of staying at 167.

Off glibc (musl, macOS) the functions are missing: every call here is then a no-op and the figures
are ``None``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import psutil

from streambot.units import MIB

__all__ = ["Heap", "HeapFigures", "HeapTrimmer", "TrimResult"]

log = logging.getLogger(__name__)


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33+): every field a ``size_t``, summed over all arenas."""

    _fields_ = (
        ("arena", ctypes.c_size_t),  # bytes the heaps took from the system (not mmap'd blocks)
        ("ordblks", ctypes.c_size_t),
        ("smblks", ctypes.c_size_t),
        ("hblks", ctypes.c_size_t),
        ("hblkhd", ctypes.c_size_t),  # bytes in mmap'd blocks
        ("usmblks", ctypes.c_size_t),
        ("fsmblks", ctypes.c_size_t),
        ("uordblks", ctypes.c_size_t),  # bytes in use in the heaps
        ("fordblks", ctypes.c_size_t),  # bytes free in the heaps (held, resident or not)
        ("keepcost", ctypes.c_size_t),
    )


@dataclass(frozen=True, slots=True)
class HeapFigures:
    """The allocator's own account, in bytes."""

    in_use: int  # allocated in the heaps (uordblks)
    free: int  # freed but kept by the heaps (fordblks); pages already trimmed still count
    mmapped: int  # large blocks served by mmap (hblkhd), returned on free


@dataclass(frozen=True, slots=True)
class TrimResult:
    """What one ``malloc_trim(0)`` did."""

    at: float  # wall-clock time.time()
    released: bool  # glibc's answer: some memory went back to the system
    rss_before: int
    rss_after: int
    duration: float  # seconds the call took (in its worker thread)

    @property
    def freed(self) -> int:
        """RSS given back (0 when RSS grew meanwhile)."""
        return max(0, self.rss_before - self.rss_after)


class Heap:
    """The C library's allocator calls, looked up once; no-ops where the library lacks them."""

    def __init__(self, libc_name: str | None = None) -> None:
        name = libc_name if libc_name is not None else ctypes.util.find_library("c")
        self._trim: Callable[[int], int] | None = None
        self._mallinfo2: Callable[[], _MallInfo2] | None = None
        self._mallopt: Callable[[int, int], int] | None = None
        try:
            libc = ctypes.CDLL(name)
        except OSError:
            return
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None:
            trim.argtypes = [ctypes.c_size_t]
            trim.restype = ctypes.c_int
            self._trim = trim
        info = getattr(libc, "mallinfo2", None)
        if info is not None:
            info.argtypes = []
            info.restype = _MallInfo2
            self._mallinfo2 = info
        opt = getattr(libc, "mallopt", None)
        if opt is not None:
            opt.argtypes = [ctypes.c_int, ctypes.c_int]
            opt.restype = ctypes.c_int
            self._mallopt = opt

    @property
    def can_trim(self) -> bool:
        return self._trim is not None

    def figures(self) -> HeapFigures | None:
        """The allocator's figures now, or None off glibc (2.33+)."""
        if self._mallinfo2 is None:
            return None
        m = self._mallinfo2()
        return HeapFigures(in_use=m.uordblks, free=m.fordblks, mmapped=m.hblkhd)

    def trim(self) -> bool:
        """``malloc_trim(0)``: True if memory went back to the system. Blocks for its duration
        (milliseconds on a large heap) without holding the GIL: call it from a worker thread."""
        return bool(self._trim(0)) if self._trim is not None else False

    def set_arena_max(self, arenas: int) -> bool:
        """``mallopt(M_ARENA_MAX, arenas)``; True if the allocator took it. Only arenas created
        after the call are limited, so call it at start-up, before threads allocate."""
        m_arena_max = -8  # <malloc.h>
        return bool(self._mallopt(m_arena_max, arenas)) if self._mallopt is not None else False

    def limit_arenas(self, arenas: int, environ: Mapping[str, str]) -> bool:
        """Cap the arenas at ``arenas`` (0: glibc's own default) unless the operator set
        ``MALLOC_ARENA_MAX`` (or glibc tunables) themselves, which then win. True if capped."""
        if arenas <= 0 or "MALLOC_ARENA_MAX" in environ or "GLIBC_TUNABLES" in environ:
            return False
        return self.set_arena_max(arenas)


class HeapTrimmer:
    """Trims the heap once the streams have drained and stayed drained for ``quiet`` seconds."""

    def __init__(
        self,
        heap: Heap,
        *,
        quiet: float,
        active_streams: Callable[[], int],
        wait_idle: Callable[[float], Awaitable[bool]],
        span: Callable[[str], AbstractAsyncContextManager[None]] | None = None,
        rss: Callable[[], int] | None = None,
        on_trim: Callable[[TrimResult], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``wait_idle(timeout)`` answers whether no stream runs within ``timeout`` seconds (the
        registry's); ``span`` brackets each trim in the memory log; ``on_trim`` hears each result
        (the /metrics counters); ``sleep`` waits out the quiet period (tests step through it)."""
        self.heap = heap
        self.quiet = quiet
        self._active = active_streams
        self._wait_idle = wait_idle
        self._span = span
        self._rss = rss if rss is not None else _own_rss
        self._wall = wall_clock
        self._on_trim = on_trim
        self._sleep = sleep
        self.trims = 0
        self.released_bytes = 0  # RSS given back by the trims, summed
        self.last: TrimResult | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.quiet > 0 and self.heap.can_trim

    def start(self, seen: Callable[[], int]) -> None:
        """Watch for drained streams; ``seen()`` counts streams ever finished (it changing during
        the quiet period means a burst is still going on)."""
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(seen), name="heap-trim")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, seen: Callable[[], int]) -> None:
        trimmed_at = seen()  # nothing to give back before the first stream has ended
        while True:
            if not await self._wait_idle(self.quiet):
                continue  # streams are running
            mark = seen()
            await self._sleep(self.quiet)
            if mark == trimmed_at or self._active() or seen() != mark:
                # Nothing ended since the last trim, or streams came and went during the quiet
                # period: a burst is still going on, and trimming now would only cost page faults.
                continue
            try:
                await self.trim()
            except Exception:  # never let one failed call end the watch
                log.exception("heap trim failed")
            trimmed_at = seen()

    async def trim(self) -> TrimResult:
        """Trim now (in a worker thread), record and log what it gave back."""
        before = self._rss()
        started = time.perf_counter()
        if self._span is not None:
            async with self._span("Heap trim"):
                released = await asyncio.to_thread(self.heap.trim)
        else:
            released = await asyncio.to_thread(self.heap.trim)
        duration = time.perf_counter() - started
        after = self._rss()
        result = TrimResult(self._wall(), released, before, after, duration)
        self.last = result
        self.trims += 1
        self.released_bytes += result.freed
        if self._on_trim is not None:
            self._on_trim(result)
        log.info(
            "heap trim after the streams drained: RSS %.1f -> %.1f MB in %.0f ms",
            before / MIB,
            after / MIB,
            duration * 1000,
        )
        return result


def _own_rss() -> int:
    return int(psutil.Process().memory_info().rss)
