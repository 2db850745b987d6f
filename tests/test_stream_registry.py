"""The tracked-stream registry: every streaming response is in it while it streams and gone after.

Covers every exit (completion, error, client disconnect, cancellation by the sweep), the sweep's
staleness rule with an injected clock, and storms: hundreds of viewers hanging up at once, and
thousands of aborted streams, leave no stream, task, client load or budget behind.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import pytest

from streambot.simulator import SyntheticContent
from streambot.simulator.world import World
from streambot.units import MIB
from utils.stream_cleanup import RegistryFull, StreamRegistry

from .clock import ManualClock
from .helpers import ABORTED, Running, StartApp, eventually, expected, quiescent

# Every test here also checks that no GetFile broke Telegram's rules (conftest).
pytestmark = pytest.mark.usefixtures("telegram_rules")

BIG = 512 * MIB  # synthetic: nothing is allocated; far larger than any socket buffer


def track(registry: StreamRegistry, n: int = 1) -> Any:
    return registry.track(message_id=n, file_name="f", start=0, end=9, remote="1.2.3.4")


async def metric(app: Running, name: str) -> float:
    resp = await app.client.get("/metrics")
    for line in (await resp.text()).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


# ----------------------------------------------------------------------------- the registry alone


async def test_sweep_cancels_only_streams_without_recent_progress() -> None:
    """With an injected clock, the sweep cancels the stalled stream and leaves the live one."""
    clock = ManualClock()
    registry = StreamRegistry(clock=clock)
    stalled_in, live_in = asyncio.Event(), asyncio.Event()
    release = asyncio.Event()

    async def serve(entered: asyncio.Event, n: int) -> None:
        async with track(registry, n):
            entered.set()
            await release.wait()

    stalled = asyncio.create_task(serve(stalled_in, 1))
    live = asyncio.create_task(serve(live_in, 2))
    await stalled_in.wait()
    await live_in.wait()
    clock.now += 200
    live_stream = next(s for s in registry.streams() if s.message_id == 2)
    registry.progress(live_stream, 10)
    clock.now += 200  # stalled: 400 s without progress; live: 200 s
    assert registry.sweep(stale_after=300) == 1
    with pytest.raises(asyncio.CancelledError):
        await stalled
    assert [s.message_id for s in registry.streams()] == [2]
    assert registry.swept == 1
    release.set()
    await live
    assert len(registry) == 0
    assert await registry.wait_idle(0.1)


async def test_stream_is_removed_on_error_and_limit_is_enforced() -> None:
    """An exception inside track() unregisters the stream; past the limit, track() refuses."""
    registry = StreamRegistry(limit=1)

    async def failing() -> None:
        async with track(registry):
            assert len(registry) == 1
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await failing()
    assert len(registry) == 0
    async with track(registry):
        with pytest.raises(RegistryFull):
            async with track(registry, 2):
                pass
    assert len(registry) == 0


async def test_cancel_all_cuts_every_stream() -> None:
    """cancel_all() (shutdown) cancels every serving task and waits until the registry is empty."""
    registry = StreamRegistry()
    started = asyncio.Semaphore(0)

    async def serve(n: int) -> None:
        async with track(registry, n):
            started.release()
            await asyncio.Event().wait()

    tasks = [asyncio.create_task(serve(n)) for n in range(5)]
    for _ in tasks:
        await started.acquire()
    assert await registry.cancel_all(timeout=1) == 5
    assert len(registry) == 0
    assert all(t.cancelled() for t in tasks)


# ----------------------------------------------------------------------------- through HTTP


async def test_stream_is_registered_while_streaming_and_removed_after(
    world: World, start_app: StartApp
) -> None:
    """A streaming response is in the registry (and /metrics) while it streams, and gone after."""
    _f, msg_id = world.store(SyntheticContent(BIG, seed=3), name="big.mkv")
    app = await start_app(world)
    registry = app.services.registry
    resp = await app.client.get(app.dl_path(msg_id), headers={"Range": "bytes=1000-"})
    assert resp.status == 206
    assert await resp.content.readexactly(MIB) == expected(3, 1000, 1000 + MIB - 1)
    # The client stopped reading a 512 MiB body: the server cannot have finished it.
    [stream] = registry.streams()
    assert (stream.message_id, stream.start, stream.end) == (msg_id, 1000, BIG - 1)
    assert stream.file_name == "big.mkv"
    assert stream.client == app.services.fleet.main.name
    assert stream.bytes_sent >= MIB
    assert stream.remote == "127.0.0.1"
    assert registry.snapshot()[0]["range"] == f"1000-{BIG - 1}"
    assert await metric(app, "streambot_active_streams") == 1
    resp.close()  # the viewer hangs up
    assert await registry.wait_idle(1.0)
    assert await metric(app, "streambot_active_streams") == 0
    await eventually(lambda: quiescent(app))


async def test_completed_and_failed_streams_are_removed(world: World, start_app: StartApp) -> None:
    """Completion and a mid-stream Telegram failure both unregister the stream."""
    _f, msg_id = world.store(SyntheticContent(300_000, seed=3), name="f.bin")
    app = await start_app(world, stream_block_size_kib=16)
    path = app.dl_path(msg_id)
    resp = await app.client.get(path)
    assert await resp.read() == expected(3, 0, 299_999)
    assert len(app.services.registry) == 0
    world.telegram.inject("upload.GetFile", code=400, message="FILE_ID_INVALID", skip=3)
    resp = await app.client.get(path)
    with pytest.raises(ABORTED):
        await resp.read()
    assert await app.services.registry.wait_idle(1.0)
    assert app.services.registry.completed == 2
    await eventually(lambda: quiescent(app))


async def test_sweep_cancels_a_stalled_stream_before_its_first_byte(
    world: World, start_app: StartApp
) -> None:
    """A stream stuck on Telegram is cancelled by the sweep: its GetFile requests and entry go."""
    _f, msg_id = world.store(SyntheticContent(10 * MIB, seed=3), name="f.bin")
    app = await start_app(world)
    path = app.dl_path(msg_id)
    resp = await app.client.get(path, headers={"Range": "bytes=0-0"})  # opens the media session
    assert await resp.read() == expected(3, 0, 0)
    world.telegram.rtt = 3600  # Telegram stops answering
    request = asyncio.create_task(app.client.get(path))
    registry = app.services.registry
    await eventually(
        lambda: world.telegram.inflight["upload.GetFile"] == app.settings.stream_prefetch_start
    )
    assert len(registry) == 1
    assert registry.sweep(stale_after=0.0) == 1
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await request
    assert await registry.wait_idle(1.0)
    await eventually(lambda: world.telegram.inflight["upload.GetFile"] == 0)
    await eventually(lambda: quiescent(app))


async def test_sweep_cancels_a_stream_mid_body(world: World, start_app: StartApp) -> None:
    """A stream whose viewer stopped reading is cut by the sweep; the client sees a failed body."""
    _f, msg_id = world.store(SyntheticContent(BIG, seed=3), name="f.bin")
    app = await start_app(world)
    resp = await app.client.get(app.dl_path(msg_id))
    assert await resp.content.readexactly(MIB) == expected(3, 0, MIB - 1)
    assert app.services.registry.sweep(stale_after=0.0) == 1
    with pytest.raises(ABORTED):
        await resp.read()
    assert await app.services.registry.wait_idle(1.0)
    await eventually(lambda: quiescent(app))


# ----------------------------------------------------------------------------- storms


async def test_disconnect_storm_leaves_nothing_behind(world: World, start_app: StartApp) -> None:
    """200 viewers each read 1 MiB, pause together, then hang up: nothing is left behind."""
    viewers = 200
    _f, msg_id = world.store(SyntheticContent(BIG, seed=4), name="movie.mp4")
    app = await start_app(world, stream_block_size_kib=256, stream_memory_budget_mb=64)
    url = app.client.make_url(app.dl_path(msg_id, "movie.mp4"))
    registry, budget = app.services.registry, app.services.budget
    baseline = asyncio.all_tasks()
    everyone_read = asyncio.Barrier(viewers + 1)
    hang_up = asyncio.Event()

    async def viewer(session: aiohttp.ClientSession, i: int) -> None:
        first = i * 4099
        async with session.get(url, headers={"Range": f"bytes={first}-"}) as resp:
            assert resp.status == 206
            assert await resp.content.readexactly(MIB) == expected(4, first, first + MIB - 1)
            await everyone_read.wait()
            await hang_up.wait()
        # Leaving the block releases the connection unread: with force_close it is closed.

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(viewer(session, i)) for i in range(viewers)]
        async with asyncio.timeout(60):
            await everyone_read.wait()
        assert len(registry) == viewers
        assert budget.used <= budget.total
        hang_up.set()
        await asyncio.gather(*tasks)
        assert await registry.wait_idle(1.0)
    await eventually(lambda: quiescent(app))
    current = asyncio.current_task()
    await eventually(lambda: not (asyncio.all_tasks() - baseline - {current}))
    assert world.telegram.inflight["upload.GetFile"] == 0
    assert budget.peak <= budget.total


async def test_thousands_of_aborted_streams_leave_all_load_counts_at_zero(
    world: World, start_app: StartApp
) -> None:
    """2000 streams cut by hang-ups, first-block and mid-body faults leave every count at zero."""
    size = 6 * 4096 + 1
    _f, msg_id = world.store(SyntheticContent(size, seed=6), name="f.bin")
    _f, big_id = world.store(SyntheticContent(BIG, seed=6), name="big.bin")
    app = await start_app(world, stream_block_size_kib=4, stream_retries=0)
    small, big = app.client.make_url(app.dl_path(msg_id)), app.client.make_url(app.dl_path(big_id))
    rng = random.Random(1)
    outcomes = {"complete": 0, "502": 0, "aborted": 0, "hung_up": 0}

    async def viewer(session: aiohttp.ClientSession, i: int) -> None:
        url = big if i % 2 else small
        async with session.get(url) as resp:
            if resp.status == 502:
                outcomes["502"] += 1
                return
            assert resp.status == 200
            if url is big:
                try:
                    await resp.content.readexactly(rng.randrange(1, 40_000))
                except (asyncio.IncompleteReadError, *ABORTED):
                    outcomes["aborted"] += 1
                    return
                outcomes["hung_up"] += 1  # leaving the block closes the unread response
                return
            if resp.status == 502:
                outcomes["502"] += 1
                return
            try:
                body = await resp.read()
            except ABORTED:
                outcomes["aborted"] += 1
                return
            assert body == expected(6, 0, size - 1)  # never a short body
            outcomes["complete"] += 1

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for batch in range(20):
            world.telegram.inject(
                "upload.GetFile", code=400, message="FILE_ID_INVALID", skip=rng.randrange(0, 200)
            )
            await asyncio.gather(*(viewer(session, batch * 100 + i) for i in range(100)))
            world.telegram.faults.clear()
    assert sum(outcomes.values()) == 2000
    assert outcomes["hung_up"] > 500
    assert outcomes["aborted"] > 0
    assert outcomes["502"] > 0
    assert await app.services.registry.wait_idle(2.0)
    await eventually(lambda: quiescent(app))
    assert world.telegram.inflight["upload.GetFile"] == 0
