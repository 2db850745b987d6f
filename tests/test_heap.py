"""The heap trimmer: when it trims (only after the streams drained and stayed drained), what it
reports, and that it is harmless where the C library has no glibc calls.

The registry is the real one; the quiet period is stepped by the test (each wait of the trimmer is
a future the test resolves), so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from streambot.heap import Heap, HeapTrimmer, TrimResult
from streambot.metrics import Metrics
from utils.stream_cleanup import StreamRegistry

from .helpers import eventually


class SteppedSleep:
    """Each ``sleep`` call parks until the test lets it go: the test sees every quiet period."""

    def __init__(self) -> None:
        self.waits: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

    async def __call__(self, seconds: float) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.waits.put(done)
        await done

    async def next_quiet(self) -> asyncio.Future[None]:
        async with asyncio.timeout(5):
            return await self.waits.get()


@contextlib.asynccontextmanager
async def trimmer_on(
    registry: StreamRegistry, heap: Heap | None = None
) -> AsyncIterator[tuple[HeapTrimmer, SteppedSleep, list[TrimResult]]]:
    sleep = SteppedSleep()
    results: list[TrimResult] = []
    trimmer = HeapTrimmer(
        heap or Heap(),
        quiet=5.0,
        active_streams=lambda: len(registry),
        wait_idle=registry.wait_idle,
        on_trim=results.append,
        sleep=sleep,
    )
    trimmer.start(seen=lambda: registry.completed)
    try:
        yield trimmer, sleep, results
    finally:
        await trimmer.close()


def track(registry: StreamRegistry) -> contextlib.AbstractAsyncContextManager[object]:
    return registry.track(message_id=1, file_name="f", start=0, end=9, remote="127.0.0.1")


async def test_no_trim_before_any_stream_has_ended() -> None:
    registry = StreamRegistry()
    async with trimmer_on(registry) as (trimmer, sleep, results):
        for _ in range(3):
            (await sleep.next_quiet()).set_result(None)
        await sleep.next_quiet()  # the fourth quiet period began: three passed without a trim
        assert (trimmer.trims, results) == (0, [])


async def test_one_trim_after_the_last_stream_ends_and_the_quiet_period_passes() -> None:
    registry = StreamRegistry()
    async with trimmer_on(registry) as (trimmer, sleep, results):
        quiet = await sleep.next_quiet()
        async with track(registry), track(registry):
            quiet.set_result(None)  # streams ran during this period: no trim after it
        (await sleep.next_quiet()).set_result(None)  # both ended before it: quiet, so trim
        await eventually(lambda: bool(results))
        # Idle from here on: further quiet periods pass without another trim.
        for _ in range(3):
            (await sleep.next_quiet()).set_result(None)
        await sleep.next_quiet()
        assert trimmer.trims == 1
        (result,) = results
        assert trimmer.last is result
        assert result.duration >= 0
        assert min(result.rss_before, result.rss_after) > 0


async def test_streams_during_the_quiet_period_put_the_trim_off() -> None:
    registry = StreamRegistry()
    async with trimmer_on(registry) as (trimmer, sleep, results):
        quiet = await sleep.next_quiet()
        async with track(registry):
            pass
        quiet.set_result(None)
        quiet = await sleep.next_quiet()  # the first stream ended before this period
        async with track(registry):  # a new stream came and went within it
            pass
        quiet.set_result(None)
        quiet = await sleep.next_quiet()  # not trimmed: the burst was still going on
        assert trimmer.trims == 0
        quiet.set_result(None)  # this one was quiet
        await eventually(lambda: trimmer.trims == 1)
        assert len(results) == 1


async def test_off_glibc_everything_is_a_no_op() -> None:
    heap = Heap("libno-such-c-library.so.42")
    assert (heap.can_trim, heap.figures(), heap.trim(), heap.set_arena_max(2)) == (
        False,
        None,
        False,
        False,
    )
    trimmer = HeapTrimmer(heap, quiet=5.0, active_streams=lambda: 0, wait_idle=_idle)
    assert not trimmer.enabled
    trimmer.start(seen=lambda: 0)  # starts nothing
    await trimmer.close()
    metrics = Metrics()
    metrics.track_heap(heap.figures)
    assert b"streambot_heap_bytes{" not in metrics.render()


async def _idle(timeout: float) -> bool:
    return True


@pytest.mark.skipif(Heap().figures() is None, reason="needs glibc's mallinfo2")
def test_the_allocator_figures_and_the_metrics_agree_on_what_exists() -> None:
    heap = Heap()
    figures = heap.figures()
    assert figures is not None
    assert figures.in_use > 0
    metrics = Metrics()
    metrics.track_heap(heap.figures)
    metrics.count_heap_trim(TrimResult(0.0, True, 10 << 20, 4 << 20, 0.001))
    text = metrics.render().decode()
    for state in ("in_use", "free", "mmapped"):
        assert f'streambot_heap_bytes{{state="{state}"}}' in text
    assert "streambot_heap_trims_total 1.0" in text
    assert "streambot_heap_trim_freed_bytes_total 6.291456e+06" in text
    assert "streambot_heap_trim_seconds_total 0.001" in text


def test_the_arena_cap_yields_to_the_operators_own_setting() -> None:
    heap = Heap()
    assert not heap.limit_arenas(0, {})  # 0: glibc's default, nothing called
    assert not heap.limit_arenas(2, {"MALLOC_ARENA_MAX": "4"})
    assert not heap.limit_arenas(2, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})
    assert not Heap("libno-such-c-library.so.42").limit_arenas(2, {})
    if heap.figures() is not None:  # glibc: mallopt takes it
        assert heap.limit_arenas(2, {})
