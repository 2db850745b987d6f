"""The prefetching GetFile streamer: requests in flight, the shared budget, and fault recovery.

Faults are injected into the simulator mid-body (``skip=K`` lets K requests through first) and the
outcome is checked through real HTTP: a byte-exact body, or a connection the client sees fail,
never a short body that looks complete.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streambot.budget import InflightBudget, crowded_block
from streambot.fleet import FleetClient
from streambot.simulator import SyntheticContent
from streambot.simulator.world import World, build_world
from streambot.units import MIB

from .clock import VirtualTime
from .helpers import ABORTED, SMALL_BLOCKS, Running, StartApp, eventually, expected, quiescent

# Every test here also checks that no GetFile broke Telegram's rules (conftest).
pytestmark = pytest.mark.usefixtures("telegram_rules")


#: For tests about what happens when there is no other client to move to (or that count one
#: client's sessions): they run on a fleet of one only.
ONE_CLIENT = pytest.mark.parametrize("fleet_size", [1], ids=["1client"])


@pytest.fixture
def world(fleet_world: World) -> World:
    """Every test here that takes ``world`` runs on a fleet of one client and of three."""
    return fleet_world


BLOCK = 4096
BLOCKS = 24
SIZE = BLOCKS * BLOCK - 123  # the last block is partial
SEED = 21


async def start_with_file(
    world: World, start_app: StartApp, size: int = SIZE, **overrides: Any
) -> tuple[Running, str]:
    _f, msg_id = world.store(SyntheticContent(size, seed=SEED), name="f.bin")
    app = await start_app(world, **{**SMALL_BLOCKS, **overrides})
    return app, app.dl_path(msg_id, "f.bin")


async def get_exact(app: Running, path: str, size: int = SIZE) -> None:
    resp = await app.client.get(path)
    assert resp.status == 200
    assert await resp.read() == expected(SEED, 0, size - 1)


async def get_aborted(app: Running, path: str) -> None:
    """The response starts (200) but the client sees the transfer fail, not a short body."""
    resp = await app.client.get(path)
    assert resp.status == 200
    with pytest.raises(ABORTED):
        await resp.read()


def client(app: Running, index: int) -> FleetClient:
    return app.services.fleet.clients[index]


# ----------------------------------------------------------------------------- prefetch


@pytest.mark.parametrize("prefetch", [1, 4, 8])
async def test_prefetch_keeps_n_requests_in_flight(
    world: World, start_app: StartApp, prefetch: int
) -> None:
    """With STREAM_PREFETCH=N exactly N GetFile requests are in flight at once, bytes in order."""
    app, path = await start_with_file(world, start_app, stream_prefetch=prefetch)
    world.telegram.rtt = 0.01
    await get_exact(app, path)
    assert world.telegram.max_inflight["upload.GetFile"] == prefetch
    offsets = [c.offset for c in world.telegram.getfile_calls()]
    assert offsets == [i * BLOCK for i in range(BLOCKS)]  # each block asked once, in order


@pytest.mark.parametrize("start", [1, 2, 8])
async def test_a_viewer_who_leaves_after_one_chunk_costs_prefetch_start_requests(
    world: World, start_app: StartApp, start: int
) -> None:
    """The window starts at STREAM_PREFETCH_START, so a probe-and-hang-up wastes little."""
    size = 32 * 65536
    _f, msg_id = world.store(SyntheticContent(size, seed=SEED), name="f.bin")
    app = await start_app(
        world, stream_block_size_kib=64, stream_prefetch=8, stream_prefetch_start=start
    )
    world.telegram.rtt = 0.005
    info = await app.services.catalog.info(msg_id)
    probe = app.services.streamer.stream(info, 0, size - 1)
    assert bytes(await anext(probe)) == expected(SEED, 0, 65535)
    await probe.aclose()
    assert world.telegram.count("upload.GetFile") == start
    assert quiescent(app)

    # A viewer who stays reaches the full window and asks for each block once.
    before = world.telegram.count("upload.GetFile")
    await get_exact(app, app.dl_path(msg_id, "f.bin"), size)
    assert world.telegram.count("upload.GetFile") - before == 32
    assert world.telegram.max_inflight["upload.GetFile"] == 8


async def read_one_block_and_hang_up(app: Running, path: str, block: int) -> None:
    """A raw HTTP/1.1 viewer: ask for the whole file, read one block of body, close."""
    url = app.client.make_url(path)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(await reader.readexactly(block)) == block
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("block_kib", [64, 1024])
async def test_read_ahead_does_not_outrun_a_viewer_who_hangs_up(
    world: World, start_app: StartApp, block_kib: int
) -> None:
    """A viewer that reads one block and hangs up costs about what a sequential peer's costs
    (2 GetFile: the block and the next one), not a doubled window: the window grows only with
    blocks that left the socket. A viewer who stays still gets the full window."""
    block = block_kib * 1024
    size = 32 * block
    _f, msg_id = world.store(SyntheticContent(size, seed=SEED), name="f.bin")
    app = await start_app(
        world, stream_block_size_kib=block_kib, stream_prefetch=8, stream_prefetch_start=1
    )
    world.telegram.rtt = 0.02
    path = app.dl_path(msg_id, "f.bin")
    viewers = 8
    for _ in range(viewers):
        await read_one_block_and_hang_up(app, path, block)
        await eventually(lambda: quiescent(app))
    per_viewer = world.telegram.count("upload.GetFile") / viewers
    assert per_viewer <= 2.5, per_viewer

    before = world.telegram.count("upload.GetFile")
    await get_exact(app, path, size)
    assert world.telegram.count("upload.GetFile") - before == 32
    assert world.telegram.max_inflight["upload.GetFile"] == 8


async def test_prefetch_1_is_strictly_sequential(world: World, start_app: StartApp) -> None:
    """STREAM_PREFETCH=1 never has two GetFile requests in flight, even across several ranges."""
    app, path = await start_with_file(world, start_app, stream_prefetch=1)
    world.telegram.rtt = 0.005
    resp = await app.client.get(path, headers={"Range": "bytes=0-9000,50000-60000"})
    assert resp.status == 206
    await resp.read()
    assert world.telegram.max_inflight["upload.GetFile"] == 1
    offsets = [c.offset or 0 for c in world.telegram.getfile_calls()]
    assert offsets == sorted(offsets)


async def test_tiny_budget_shrinks_windows_and_never_deadlocks(
    world: World, start_app: StartApp
) -> None:
    """Many streams under a 1 MiB budget of 16 KiB blocks all finish byte-exact within budget."""
    size = 40 * 16384 + 99
    app, path = await start_with_file(
        world,
        start_app,
        size=size,
        stream_block_size_kib=16,
        stream_prefetch=8,
        stream_memory_budget_mb=1,
        max_streams=30,  # 30 full blocks fit: every stream keeps its 16 KiB blocks
    )
    world.telegram.rtt = 0.002
    budget = app.services.budget
    await asyncio.gather(*(get_exact(app, path, size) for _ in range(30)))
    assert budget.peak <= budget.total
    # 30 streams x 8 blocks x 16 KiB would be 3.75 MiB; at most 64 blocks fit in 1 MiB.
    assert world.telegram.max_inflight["upload.GetFile"] <= budget.total // 16384
    assert quiescent(app)


async def test_budget_of_one_block_serialises_streams_in_half_blocks(
    world: World, start_app: StartApp
) -> None:
    """A 1 MiB budget for 6 streams of 1 MiB blocks: crowded from the start, they take turns
    in 512 KiB blocks (two fit) and all complete."""
    size = 3 * MIB + 5
    _f, msg_id = world.store(SyntheticContent(size, seed=SEED), name="big.bin")
    app = await start_app(world, stream_memory_budget_mb=1, stream_prefetch=4, max_streams=6)
    path = app.dl_path(msg_id)
    await asyncio.gather(*(get_exact(app, path, size) for _ in range(6)))
    assert world.telegram.max_inflight["upload.GetFile"] <= 2
    assert max(c.limit or 0 for c in world.telegram.getfile_calls()) == MIB // 2
    assert app.services.budget.peak <= MIB
    assert quiescent(app)


async def test_streams_that_start_on_a_crowded_server_use_half_blocks(
    world: World, start_app: StartApp
) -> None:
    """Full blocks while every stream that may still come has room for a half block; then halves.

    Budget 3 MiB, MAX_STREAMS 4, 1 MiB blocks: two streams fit whole blocks with two half blocks
    to spare, the third and fourth get 512 KiB. The bytes stay exact and the floors fit.
    """
    size = 2 * MIB + 77
    _f, msg_id = world.store(SyntheticContent(size, seed=SEED), name="big.bin")
    app = await start_app(world, stream_memory_budget_mb=3, stream_prefetch=2, max_streams=4)
    path = app.dl_path(msg_id)
    world.telegram.rtt = 0.01
    await get_exact(app, path, size)  # alone: whole blocks (and a 4 KiB tail) only
    assert MIB // 2 not in {c.limit for c in world.telegram.getfile_calls()}
    await asyncio.gather(*(get_exact(app, path, size) for _ in range(4)))
    limits = {c.limit for c in world.telegram.getfile_calls()}
    assert {MIB, MIB // 2} <= limits
    assert app.services.budget.peak <= app.services.budget.total
    assert app.services.budget.floors == 0
    assert quiescent(app)


@pytest.mark.parametrize(
    ("total_mib", "streams", "chosen_kib"),
    [
        (3, 4, [1024, 1024, 512, 512]),  # 1 + 1 + 0.5 + 0.5 = 3
        (4, 4, [1024, 1024, 1024, 1024]),
        (2, 4, [512, 512, 512, 512]),  # exactly the crowded floor
        (160, 250, [1024] * 70 + [512] * 180),  # the defaults: 70 + 90 = 160 MiB
    ],
)
def test_block_size_per_stream_keeps_every_admitted_stream_one_block(
    total_mib: int, streams: int, chosen_kib: list[int]
) -> None:
    budget = InflightBudget(total_mib * MIB, streams=streams)
    assert [budget.open_stream(MIB) // 1024 for _ in range(streams)] == chosen_kib
    assert budget.floors <= budget.total


@given(
    st.integers(min_value=1, max_value=64),
    st.sampled_from([4096, 65536, 512 * 1024, MIB]),
    st.lists(st.booleans(), max_size=200),
)
def test_floors_always_leave_room_for_the_streams_still_to_come(
    streams: int, block: int, opens: list[bool]
) -> None:
    """Whenever MAX_STREAMS crowded blocks fit (the config check), any open/close order keeps
    the floors held plus one crowded block per free slot within the budget."""
    total = max(MIB, streams * crowded_block(block))
    budget = InflightBudget(total, streams=streams)
    held: list[int] = []
    for do_open in opens:
        if do_open and len(held) < streams:
            held.append(budget.open_stream(block))
        elif held:
            budget.close_stream(held.pop(0))
        free = streams - len(held)
        assert budget.floors == sum(held)
        assert budget.floors + free * crowded_block(block) <= budget.total


async def test_paused_streams_shed_prefetch_so_a_new_stream_starts(
    world: World, start_app: StartApp
) -> None:
    """Two paused consumers holding the whole budget give back prefetch for a third to start."""
    size = 64 * 65536
    _f, msg_id = world.store(SyntheticContent(size, seed=SEED), name="f.bin")
    app = await start_app(
        world,
        stream_block_size_kib=64,
        stream_prefetch=8,
        stream_prefetch_start=8,  # full windows from the first block
        stream_memory_budget_mb=1,
        max_streams=3,  # room for three whole 64 KiB blocks: no stream is crowded
    )
    streamer, budget = app.services.streamer, app.services.budget
    info = await app.services.catalog.info(msg_id)
    streams = [streamer.stream(info, 0, size - 1) for _ in range(3)]
    received: list[list[bytes]] = [[], [], []]
    for i in (0, 1):  # each consumer takes one chunk and pauses: its prefetch completes
        received[i].append(bytes(await anext(streams[i])))
        await eventually(lambda: world.telegram.inflight["upload.GetFile"] == 0)
    assert budget.used == budget.total  # 2 x (1 chunk + 7 prefetched) x 64 KiB = 1 MiB
    received[2].append(bytes(await asyncio.wait_for(anext(streams[2]), 5)))
    assert budget.shed_blocks > 0
    for i, stream in enumerate(streams):
        received[i].extend([bytes(chunk) async for chunk in stream])
        assert b"".join(received[i]) == expected(SEED, 0, size - 1)
    assert budget.peak <= budget.total
    assert quiescent(app)


async def test_budget_window_is_a_fair_share() -> None:
    """Each active stream's window is its prefetch, shrunk to a fair share, never below one."""
    budget = InflightBudget(8 * MIB)
    budget.active_streams = 1
    assert budget.window(4, MIB) == 4
    budget.active_streams = 4
    assert budget.window(4, MIB) == 2
    budget.active_streams = 100
    assert budget.window(4, MIB) == 1


async def test_budget_waiters_are_served_in_order_and_cancellation_returns_budget() -> None:
    """acquire() waits first-come first-served; a cancelled waiter leaves nothing held."""
    budget = InflightBudget(2 * MIB)
    await budget.acquire(2 * MIB)
    first = asyncio.create_task(budget.acquire(MIB))
    second = asyncio.create_task(budget.acquire(MIB))
    third = asyncio.create_task(budget.acquire(MIB))
    await asyncio.sleep(0)
    assert not budget.try_acquire(1)  # waiters go first
    second.cancel()
    budget.release(2 * MIB)
    await asyncio.wait_for(asyncio.gather(first, third), 1)
    assert second.cancelled()
    assert budget.used == 2 * MIB
    budget.release(2 * MIB)
    assert budget.used == 0


# ----------------------------------------------------------------------------- faults


async def test_expired_reference_mid_stream_refetches_and_resumes(
    world: World, start_app: StartApp
) -> None:
    """FILE_REFERENCE_EXPIRED mid-body re-fetches the message and the body stays byte-exact."""
    app, path = await start_with_file(world, start_app)
    await app.client.head(path)  # warm the catalog: only the refresh should ask again
    before = world.telegram.count("channels.GetMessages")
    world.telegram.inject("upload.GetFile", code=400, message="FILE_REFERENCE_EXPIRED", skip=6)
    await get_exact(app, path)
    assert world.telegram.count("channels.GetMessages") == before + 1


async def test_really_expired_reference_is_refreshed(world: World, start_app: StartApp) -> None:
    """A cached location whose reference Telegram has since expired is refreshed transparently."""
    f, msg_id = world.store(SyntheticContent(SIZE, seed=SEED), name="f.bin")
    app = await start_app(world, **SMALL_BLOCKS)
    path = app.dl_path(msg_id)
    await get_exact(app, path)
    before = world.telegram.count("channels.GetMessages")
    world.telegram.expire_file_reference(f.media_id)
    await get_exact(app, path)
    await get_exact(app, path)  # the refreshed location is cached
    assert world.telegram.count("channels.GetMessages") == before + 1


async def test_long_floodwait_moves_stream_to_another_client(start_app: StartApp) -> None:
    """A FloodWait above the threshold moves the stream to the other client, byte-exact."""
    world = build_world(workers=1)
    app, path = await start_with_file(world, start_app)
    main, worker = client(app, 0), client(app, 1)
    world.telegram.flood_wait(30, skip=5, bot=world.main_bot)
    await get_exact(app, path)
    assert app.services.fleet.in_cooldown(main)
    assert not app.services.fleet.in_cooldown(worker)
    by_client = [c.client for c in world.telegram.getfile_calls()]
    assert by_client[0] == main.name
    assert by_client[-1] == worker.name
    assert world.telegram.count("channels.GetMessages", worker.name) >= 1
    # New streams avoid the cooling client.
    world.telegram.calls.clear()
    await get_exact(app, path)
    assert {c.client for c in world.telegram.getfile_calls()} == {worker.name}
    assert quiescent(app)


async def test_short_floodwait_is_waited_out_in_place(world: World, start_app: StartApp) -> None:
    """A FloodWait within STREAM_FLOOD_SLEEP_SECONDS is slept through on the same client."""
    time = VirtualTime()
    app, path = await start_with_file(world, start_app, stream_flood_sleep_seconds=2.0, time=time)
    await app.client.head(path)
    before = world.telegram.count("channels.GetMessages")
    world.telegram.flood_wait(1, skip=5)
    await get_exact(app, path)
    assert time.slept == [1.0]  # waited out in place, in virtual seconds
    assert not app.services.fleet.in_cooldown(client(app, 0))
    assert world.telegram.count("channels.GetMessages") == before  # no failover, no refresh
    assert max(c.offset or 0 for c in world.telegram.getfile_calls()) == (BLOCKS - 1) * BLOCK


@ONE_CLIENT
async def test_long_floodwait_with_one_client_waits_then_resumes(
    world: World, start_app: StartApp
) -> None:
    """With no other client, a FloodWait over the threshold is waited out and the body completes."""
    time = VirtualTime()
    app, path = await start_with_file(world, start_app, stream_flood_sleep_seconds=0.5, time=time)
    world.telegram.flood_wait(1, skip=5)
    await get_exact(app, path)
    # The client cooled down for the FloodWait; the stream waited for it, not in place.
    assert sum(time.slept) == pytest.approx(1.0, abs=0.06)
    assert quiescent(app)


@ONE_CLIENT
async def test_floodwait_beyond_max_wait_aborts(world: World, start_app: StartApp) -> None:
    """A FloodWait longer than STREAM_MAX_WAIT_SECONDS with one client cuts the connection."""
    app, path = await start_with_file(world, start_app, stream_max_wait_seconds=1.0)
    world.telegram.flood_wait(30, skip=5)
    await get_aborted(app, path)
    await eventually(lambda: quiescent(app))


@pytest.mark.parametrize("kind", ["drop", "oserror"])
async def test_network_errors_are_retried(world: World, start_app: StartApp, kind: str) -> None:
    """A dropped answer or a connection reset mid-body is retried and the body is byte-exact."""
    time = VirtualTime()
    app, path = await start_with_file(world, start_app, time=time)
    world.telegram.inject("upload.GetFile", kind=kind, skip=5, times=2)  # type: ignore[arg-type]
    await get_exact(app, path)
    # The shared Backoff, per block: base, then doubled; with prefetch the two faults may hit
    # two blocks in flight (each waits the base) or one block twice.
    assert time.slept in ([0.25, 0.25], [0.25, 0.5])
    assert quiescent(app)


@pytest.mark.parametrize("kind", ["bad_msg", "cdn_redirect"])
async def test_odd_getfile_answers_are_asked_again(
    world: World, start_app: StartApp, kind: str
) -> None:
    """In-process too, a bad_msg_notification or a fileCdnRedirect answer to GetFile mid-body is
    asked again (never an aborted stream) and the body is byte-exact."""
    app, path = await start_with_file(world, start_app, time=VirtualTime())
    world.telegram.inject("upload.GetFile", kind=kind, skip=5, times=2)  # type: ignore[arg-type]
    await get_exact(app, path)
    assert not world.telegram.faults
    assert quiescent(app)


async def test_persistent_network_failure_aborts(world: World, start_app: StartApp) -> None:
    """When the network keeps failing mid-body the connection is cut after bounded retries."""
    app, path = await start_with_file(world, start_app, stream_retries=1)
    world.telegram.inject("upload.GetFile", kind="oserror", skip=5, times=10_000)
    await get_aborted(app, path)
    await eventually(lambda: quiescent(app))


async def test_network_failure_on_every_client_aborts(start_app: StartApp) -> None:
    """With two clients both failing, the stream gives up (bounded) instead of ping-ponging."""
    world = build_world(workers=1)
    app, path = await start_with_file(world, start_app, stream_retries=0)
    world.telegram.inject("upload.GetFile", kind="oserror", skip=5, times=10_000)
    await get_aborted(app, path)
    await eventually(lambda: quiescent(app))


async def test_rpc_error_mid_stream_aborts_the_connection(
    world: World, start_app: StartApp
) -> None:
    """An unrecoverable Telegram error mid-body aborts the connection, never a short 200."""
    app, path = await start_with_file(world, start_app)
    world.telegram.inject("upload.GetFile", code=400, message="FILE_ID_INVALID", skip=6)
    await get_aborted(app, path)
    await eventually(lambda: quiescent(app))
    # The connection pool recovered: the next request is served normally.
    await get_exact(app, path)


async def test_aborted_range_response_is_not_short(world: World, start_app: StartApp) -> None:
    """A 206 whose stream fails mid-body is aborted too, whether single-part or multipart."""
    app, path = await start_with_file(world, start_app)
    for header in ("bytes=100-", "bytes=0-10,8000-"):
        world.telegram.inject("upload.GetFile", code=400, message="FILE_ID_INVALID", skip=4)
        resp = await app.client.get(path, headers={"Range": header})
        assert resp.status == 206
        with pytest.raises(ABORTED):
            await resp.read()


@ONE_CLIENT
@pytest.mark.parametrize(
    "fault",
    [
        {"code": 400, "message": "FILE_ID_INVALID"},
        {"code": 420, "message": "FLOOD_WAIT_30"},
    ],
)
async def test_error_on_first_block_is_a_clean_502(
    world: World, start_app: StartApp, fault: dict[str, Any]
) -> None:
    """When the very first block fails, the viewer gets a 502 with Retry-After, not a cut body."""
    app, path = await start_with_file(world, start_app, stream_max_wait_seconds=1.0)
    world.telegram.inject("upload.GetFile", **fault)
    resp = await app.client.get(path)
    assert resp.status == 502
    assert resp.headers["Retry-After"].isdigit()
    assert await resp.text() == "Telegram did not answer; try again shortly.\n"
    await eventually(lambda: quiescent(app))


@ONE_CLIENT
async def test_offline_client_gives_502(world: World, start_app: StartApp) -> None:
    """An unreachable only client (file info cached) answers 502, not a hang or a 500."""
    app, path = await start_with_file(world, start_app, stream_retries=0)
    await get_exact(app, path)
    world.telegram.set_offline(world.main_bot)
    resp = await app.client.get(path)
    assert resp.status == 502
    assert "Retry-After" in resp.headers
    world.telegram.set_offline(world.main_bot, False)
    await get_exact(app, path)


async def test_file_on_another_dc_is_read_there(world: World, start_app: StartApp) -> None:
    """A file stored on DC 4 is read through a media session on DC 4."""
    f, msg_id = world.store(SyntheticContent(SIZE, seed=SEED), name="f.bin")
    f.dc_id = 4
    app = await start_app(world, **SMALL_BLOCKS)
    await get_exact(app, app.dl_path(msg_id))
    calls = world.telegram.getfile_calls()
    assert {(c.dc_id, c.is_media) for c in calls} == {(4, True)}


async def test_file_migrate_mid_life_follows_the_file(world: World, start_app: StartApp) -> None:
    """FILE_MIGRATE_4 on a cached location moves to DC 4, byte-exact, and is remembered."""
    f, msg_id = world.store(SyntheticContent(SIZE, seed=SEED), name="f.bin")
    app = await start_app(world, **SMALL_BLOCKS)
    path = app.dl_path(msg_id)
    await get_exact(app, path)
    f.dc_id = 4  # Telegram moved the file; our cached location still says DC 2
    world.telegram.calls.clear()
    await get_exact(app, path)
    assert world.telegram.getfile_calls()[0].dc_id == 2
    assert world.telegram.getfile_calls()[-1].dc_id == 4
    world.telegram.calls.clear()
    await get_exact(app, path)
    assert {c.dc_id for c in world.telegram.getfile_calls()} == {4}


@ONE_CLIENT
async def test_concurrent_streams_open_one_media_session_per_dc(
    world: World, start_app: StartApp
) -> None:
    """Streams starting together on a new DC share one media session instead of leaking several."""
    f, msg_id = world.store(SyntheticContent(SIZE, seed=SEED), name="f.bin")
    f.dc_id = 4
    app = await start_app(world, **SMALL_BLOCKS)
    await app.client.head(app.dl_path(msg_id))
    imports = world.telegram.count("auth.ImportAuthorization")
    path = app.dl_path(msg_id)
    await asyncio.gather(*(get_exact(app, path) for _ in range(6)))
    # One key for DC 4, imported once, on the first media connection of the pool.
    assert world.telegram.count("auth.ImportAuthorization") == imports + 1


async def test_stream_cancelled_while_its_media_session_opens_stops_and_the_session_is_kept(
    world: World, start_app: StartApp
) -> None:
    """Cancelling a stream during session set-up ends it at once; the set-up it began is finished
    in the background, not abandoned half-way, and serves the next stream."""
    f, msg_id = world.store(SyntheticContent(SIZE, seed=SEED), name="f.bin")
    f.dc_id = 4
    app = await start_app(world, **SMALL_BLOCKS)
    info = await app.services.catalog.info(msg_id)
    world.telegram.rtt = 0.05  # session set-up takes several round trips
    first = asyncio.create_task(anext(app.services.streamer.stream(info, 0, SIZE - 1)))
    await eventually(lambda: world.telegram.count("auth.ExportAuthorization") > 0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert app.services.budget.active_streams == 0
    assert all(fc.active_streams == 0 for fc in app.services.fleet.clients)

    # The set-up completes on its own: DC 4's key, imported once on its first media connection.
    await eventually(lambda: world.telegram.count("auth.ImportAuthorization") == 1)
    await get_exact(app, app.dl_path(msg_id))
    assert world.telegram.count("auth.ImportAuthorization") == 1  # reused, not set up again
    assert quiescent(app)


async def test_junk_instead_of_a_handshake_for_a_new_dc_is_a_502_not_a_500(
    world: World, start_app: StartApp
) -> None:
    """A media session whose key exchange gets junk back fails the request cleanly (502)."""
    f, msg_id = world.store(SyntheticContent(SIZE, seed=SEED), name="f.bin")
    f.dc_id = 4  # a DC no session exists for yet
    app = await start_app(world, **SMALL_BLOCKS, stream_max_wait_seconds=0)
    world.telegram.garbled_handshake = True
    resp = await app.client.get(app.dl_path(msg_id))
    assert resp.status == 502
    assert resp.headers["Retry-After"]
    assert (await resp.text()).strip() == "Telegram did not answer; try again shortly."
    assert quiescent(app)

    world.telegram.garbled_handshake = False  # the network is fixed: the same link works
    await get_exact(app, app.dl_path(msg_id))
