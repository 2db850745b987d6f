"""Fleet selection: least-loaded, DC tie-break, FloodWait cooldowns, and load spread over real streams."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from streambot.app import create_app
from streambot.config import Settings
from streambot.fleet import ClientState, Fleet, FleetStartError, NoClientAvailable, session_name
from streambot.simulator import SyntheticContent
from streambot.simulator.world import build_world, world_settings
from streambot.transport import LinearAbridged

from .clock import ManualClock
from .helpers import LINK_SECRET, StartApp


def make_fleet(tmp_path, n: int, clock: ManualClock) -> Fleet:
    fleet = Fleet.build(
        api_id=1,
        api_hash="0" * 32,
        bot_token="1000:" + "a" * 35,
        worker_tokens=[f"{1000 + i}:" + "b" * 35 for i in range(1, n)],
        session_dir=tmp_path / "sessions",
        clock=clock,
    )
    for i, fc in enumerate(fleet.clients):
        fleet.mark_healthy(fc)
        fc.home_dc = 2 if i == 0 else 4
    return fleet


async def test_pick_prefers_least_loaded_then_file_dc(tmp_path) -> None:
    """The client with the fewest streams wins; on a tie the one on the file's DC wins."""
    fleet = make_fleet(tmp_path, 3, ManualClock())
    main, w1, w2 = fleet.clients
    assert fleet.pick(dc_id=4) is w1
    assert fleet.pick(dc_id=2) is main
    main.active_streams = 1
    w1.active_streams = 1
    assert fleet.pick(dc_id=2) is w2


async def test_floodwait_cooldown_excludes_client_until_it_ends(tmp_path) -> None:
    """A client put into FloodWait receives no new streams until its cooldown has passed."""
    clock = ManualClock()
    fleet = make_fleet(tmp_path, 2, clock)
    main, worker = fleet.clients
    fleet.cool_down(main, 30)
    picks = set()
    for _ in range(10):
        with fleet.lease() as fc:
            picks.add(fc.name)
    assert picks == {worker.name}
    fleet.cool_down(worker, 10)
    with pytest.raises(NoClientAvailable) as err:
        fleet.pick()
    assert err.value.retry_after == pytest.approx(10)
    clock.now += 10.5
    assert fleet.pick() is worker
    clock.now += 20
    assert fleet.pick() is main


async def test_unhealthy_and_no_access_clients_are_never_picked(tmp_path) -> None:
    """Only healthy clients are in the selection pool."""
    fleet = make_fleet(tmp_path, 3, ManualClock())
    main, w1, w2 = fleet.clients
    fleet.mark_unhealthy(main, "ping timeout")
    w1.state = ClientState.NO_ACCESS
    assert {fleet.pick().name for _ in range(5)} == {w2.name}


async def test_lease_releases_on_every_exit_path(tmp_path) -> None:
    """A lease gives its count back on success, on error and on cancellation."""
    fleet = make_fleet(tmp_path, 1, ManualClock())

    async def hold(fail: bool) -> None:
        with fleet.lease():
            await asyncio.sleep(0 if fail else 3600)
            if fail:
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await hold(True)
    task = asyncio.create_task(hold(False))
    await asyncio.sleep(0)
    assert fleet.main.active_streams == 1
    assert not fleet.main.idle.is_set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fleet.main.active_streams == 0
    assert fleet.main.idle.is_set()  # a draining supervisor wakes up
    assert fleet.main.total_streams == 2


async def test_idle_is_set_only_when_the_last_stream_leaves(tmp_path) -> None:
    fleet = make_fleet(tmp_path, 1, ManualClock())
    fc = fleet.main
    assert fc.idle.is_set()
    assert fleet.acquire() is fleet.acquire() is fc
    fleet.release(fc)
    assert (fc.active_streams, fc.idle.is_set()) == (1, False)
    fleet.release(fc)
    assert (fc.active_streams, fc.idle.is_set()) == (0, True)


def test_session_name_never_contains_the_token_secret() -> None:
    """Session files are named by bot id only."""
    assert session_name("123456:SECRETPART", is_main=True) == "main-123456"
    assert "SECRET" not in session_name("123456:SECRETPART", is_main=False)


async def test_hundred_streams_spread_evenly_over_three_clients(start_app: StartApp) -> None:
    """100 concurrent downloads are spread over 3 healthy clients within ±1 of even."""
    world = build_world(workers=2)
    world.telegram.rtt = 0.02
    _, msg_id = world.store(SyntheticContent(8 * 1024 * 1024, seed=5), name="big.bin")
    app = await start_app(world, stream_prefetch=1, stream_block_size_kib=64)
    path = app.dl_path(msg_id, "big.bin")
    registry = app.services.registry
    url = app.client.make_url(path)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        responses = await asyncio.gather(*(session.get(url) for _ in range(100)))
        try:
            for r in responses:
                assert r.status == 200
                await r.content.readexactly(1)
            loads = sorted(fc.active_streams for fc in app.services.fleet.clients)
            assert len(registry) == 100
            assert sum(loads) == 100
            assert loads[-1] - loads[0] <= 1
        finally:
            for r in responses:
                r.close()
    assert await registry.wait_idle(5)
    assert [fc.active_streams for fc in app.services.fleet.clients] == [0, 0, 0]


async def test_unreadable_answer_from_telegram_fails_start_up_with_a_reason(tmp_path) -> None:
    """Junk instead of Telegram (an intercepting proxy) stops start-up with a readable reason."""

    world = build_world(workers=0)
    world.telegram.garbled_handshake = True
    settings = world_settings(
        Settings(log_dir=tmp_path / "logs"), world, data_dir=tmp_path / "data"
    )
    app = await create_app(settings, link_secret=LINK_SECRET, simulator=world.telegram)
    runner = web.AppRunner(app)
    try:
        with pytest.raises(FleetStartError) as failed:
            await runner.setup()
    finally:
        await runner.cleanup()
    message = str(failed.value)
    assert message.startswith("the main bot could not start: Telegram's answer could not be read")
    assert "proxy or firewall" in message
    assert world.telegram.count("auth.ImportBotAuthorization") == 0


async def test_every_client_reads_with_the_linear_transport_and_workers_get_one_handler(
    tmp_path,
) -> None:
    """Downloads go through LinearAbridged; a worker never gets updates, so it keeps one
    handler task and thread instead of the main bot's pool (a 50-bot fleet stays small)."""
    fleet = Fleet.build(
        api_id=1,
        api_hash="0" * 32,
        bot_token="1000:" + "a" * 35,
        worker_tokens=["1001:" + "b" * 35, "1002:" + "c" * 35],
        session_dir=tmp_path / "sessions",
        workers=4,
    )
    assert [fc.client.protocol_factory for fc in fleet.clients] == [LinearAbridged] * 3
    assert [fc.client.workers for fc in fleet.clients] == [4, 1, 1]
    assert [fc.client.no_updates for fc in fleet.clients] == [False, True, True]
