"""Streams that survive the real wire (issue 13), proven over the MTProto simulator.

The application runs exactly as ``run`` does (sessions on disk, login with the key exchange, the
real pyrogram ``Connection``/``Session``/crypto) against a :class:`WireTelegram` on loopback. Faults
are the simulator's wire faults (RST, black hole) and the world's RPC faults. Each test measures what
a viewer sees: the bytes, the status, the longest pause between two pieces of the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streambot import __main__ as main_module
from streambot import exitcodes
from streambot.app import create_app
from streambot.catalog import Catalog
from streambot.config import Settings
from streambot.fleet import ClientState
from streambot.sessionlock import SessionLock, SessionsLocked
from streambot.simulator import SyntheticContent
from streambot.simulator.wire.client import pointed_at
from streambot.simulator.wire.faults import WireFault
from streambot.simulator.wire.server import WireTelegram
from streambot.simulator.world import World, build_world, world_settings
from streambot.supervisor import Supervisor
from streambot.units import MIB
from tests.clock import ManualClock
from tests.helpers import LINK_SECRET, Running, eventually
from tests.wire_child import Child, child_server, scenario

StartWire = Callable[..., Awaitable[Running]]


@dataclasses.dataclass
class Wired:
    world: World
    server: WireTelegram


@contextlib.asynccontextmanager
async def wire_world(workers: int = 0, **limits: float) -> AsyncIterator[Wired]:
    world = build_world(workers=workers)
    server = WireTelegram(world.telegram, salt_period=0, **limits)
    await server.start()
    try:
        with pointed_at(server.dcs, server.rsa_public_pem, media_dcs=server.media_dcs):
            yield Wired(world, server)
    finally:
        await server.close()


@pytest.fixture
async def start_wire(tmp_path: Path) -> AsyncIterator[StartWire]:
    """The application, logged in over the wire; keyword arguments override settings."""
    running: list[Running] = []

    async def start(wired: Wired, **overrides: Any) -> Running:
        data_dir = tmp_path / f"data{len(running)}"
        settings = world_settings(Settings(), wired.world, data_dir=data_dir)
        settings = dataclasses.replace(settings, log_dir=tmp_path / "logs", **overrides)
        app = await create_app(settings, link_secret=LINK_SECRET)
        client = TestClient(TestServer(app))
        await client.start_server()
        r = Running(app, client, wired.world, settings)
        running.append(r)
        return r

    yield start
    for r in reversed(running):
        await r.client.close()


@dataclasses.dataclass
class Body:
    status: int
    digest: str
    size: int
    max_gap: float
    elapsed: float


async def download(app: Running, path: str) -> Body:
    """GET ``path`` and read the body as a player would; the longest pause between pieces."""
    started = time.monotonic()
    h = hashlib.sha256()
    size = 0
    max_gap = 0.0
    resp = await app.client.get(path)
    last = time.monotonic()
    try:
        async for piece in resp.content.iter_any():
            now = time.monotonic()
            max_gap = max(max_gap, now - last)
            last = now
            h.update(piece)
            size += len(piece)
    except Exception:  # a cut connection: the size tells
        pass
    return Body(resp.status, h.hexdigest(), size, max_gap, time.monotonic() - started)


def digest_of(content: SyntheticContent) -> str:
    h = hashlib.sha256()
    for offset in range(0, content.size, 4 * MIB):
        h.update(content.read_sync(offset, min(4 * MIB, content.size - offset)))
    return h.hexdigest()


async def test_rst_mid_download_with_one_client_is_byte_exact_without_a_long_pause(
    start_wire: StartWire,
) -> None:
    """Item 1: a reset media connection fails its requests at once; they go out on a fresh one."""
    async with wire_world() as wired:
        content = SyntheticContent(64 * MIB, seed=131)
        _f, msg_id = wired.world.store(content, name="big.bin")
        app = await start_wire(wired)
        wired.server.add_wire_fault(
            WireFault.make("rst", bot=wired.world.main_bot.bot_id, dc=2, after=20)
        )
        body = await download(app, app.dl_path(msg_id))
        assert body.status == 200
        assert body.size == content.size
        assert body.digest == digest_of(content)
        assert wired.server.stats()["counters"]["wire_fault_rst"] == 1
        assert body.max_gap <= 3.0, f"longest pause {body.max_gap:.2f}s"
        print(f"RST 64 MiB one client: max gap {body.max_gap:.2f}s, {body.elapsed:.1f}s")


async def test_black_hole_on_one_bot_continues_from_the_other(start_wire: StartWire) -> None:
    """Item 1: a silent connection is given up after the liveness window; the other bot serves."""
    async with wire_world(workers=1) as wired:
        content = SyntheticContent(24 * MIB, seed=132)
        _f, msg_id = wired.world.store(content, name="hole.bin")
        app = await start_wire(wired)
        fleet = app.services.fleet
        assert [fc.state for fc in fleet.clients] == [ClientState.HEALTHY] * 2
        # Every connection of the main bot on DC 2 goes silent from its 5th answer on.
        wired.server.add_wire_fault(
            WireFault.make("blackhole", bot=wired.world.main_bot.bot_id, dc=2, after=4, count=None)
        )
        body = await download(app, app.dl_path(msg_id))
        assert body.status == 200
        assert body.size == content.size
        assert body.digest == digest_of(content)
        assert body.max_gap <= 5.0, f"longest pause {body.max_gap:.2f}s"
        assert app.services.fleet.clients[1].total_streams >= 1
        print(f"black hole, 2 bots: max gap {body.max_gap:.2f}s, {body.elapsed:.1f}s")


@contextlib.asynccontextmanager
async def child_app(
    tmp_path: Path, world: World, child: Child, **overrides: Any
) -> AsyncIterator[Running]:
    """The application pointed at a simulator in a child process (honest CPU and timing)."""
    settings = world_settings(Settings(), world, data_dir=tmp_path / "data")
    settings = dataclasses.replace(settings, log_dir=tmp_path / "logs", **overrides)
    with pointed_at(child.dcs, child.info["pem"], media_dcs=child.media_dcs):
        app = await create_app(settings, link_secret=LINK_SECRET)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            yield Running(app, client, world, settings)
        finally:
            await client.close()


async def test_eight_downloads_on_capped_connections_neither_abort_nor_collapse(
    tmp_path: Path,
) -> None:
    """Item 2: 8 concurrent downloads from one bot, 16 MiB/s per connection: no abort, no short
    body, every byte exact, and each connection's awaited bytes stayed within the bound.

    The issue's figure (8 x 48 MiB, aggregate against what the connections allow) is a speed
    figure: run with HOL_SIZE_MIB=48 and -s to print it; the suite runs a smaller size.
    """
    streams, per_conn = 8, float(os.environ.get("HOL_BW", "16"))
    size_mib = int(os.environ.get("HOL_SIZE_MIB", "8"))
    conns = int(os.environ.get("HOL_CONNS", "4"))
    world, stored = scenario(0, streams, size_mib)
    async with (
        child_server(0, streams, size_mib, bandwidth=per_conn) as child,
        child_app(tmp_path, world, child, media_connections=conns) as app,
    ):
        media = app.services.media
        cap = app.settings.media_awaited_kib * 1024
        started = time.monotonic()
        bodies = await asyncio.gather(*(download(app, app.dl_path(msg_id)) for msg_id, _ in stored))
        elapsed = time.monotonic() - started
        pools = media.stats()
    assert [b.status for b in bodies] == [200] * streams
    assert [b.size for b in bodies] == [size_mib * MIB] * streams  # 0 short, 0 aborted
    assert [b.digest for b in bodies] == [digest_of(c) for _, c in stored]
    assert [0 < p["peak_awaited_bytes"] <= cap for p in pools] == [True]
    assert [p["awaited_bytes"] for p in pools] == [0]  # every reservation released once
    assert [p["connections"] for p in pools] == [conns]
    aggregate = streams * size_mib / elapsed
    allowed = conns * per_conn
    print(
        f"HOL: {streams} x {size_mib} MiB, {conns} conn(s) at {per_conn:g} MiB/s: {elapsed:.1f}s = "
        f"{aggregate:.1f} MiB/s ({aggregate / allowed:.0%} of {allowed:.0f}); max gap "
        f"{max(b.max_gap for b in bodies):.2f}s; pools {pools}"
    )


async def test_export_flood_wait_leaves_nothing_cached_and_the_next_download_works(
    start_wire: StartWire,
) -> None:
    """Item 3: a FloodWait on auth.ExportAuthorization for a foreign-DC file; no session with an
    unauthorized key is kept, and the next download succeeds without any restart."""
    async with wire_world() as wired:
        content = SyntheticContent(3 * MIB + 17, seed=133)
        f, msg_id = wired.world.store(content, name="far.bin")
        f.dc_id = 4
        app = await start_wire(wired)
        wired.world.telegram.flood_wait(2, method="auth.ExportAuthorization")
        first = await download(app, app.dl_path(msg_id))
        assert first.status == 502  # the only client cannot serve it yet: a clean 502
        assert wired.world.telegram.count("auth.ImportAuthorization") == 0
        second = await download(app, app.dl_path(msg_id))
        assert second.status == 200
        assert second.digest == digest_of(content)
        counters = wired.server.stats()["counters"]
        assert counters.get("auth_key_unregistered", 0) == 0  # never asked on a poisoned key
        assert wired.world.telegram.count("auth.ImportAuthorization") == 1
        assert app.services.fleet.main.restarts == 0


async def test_auth_key_unregistered_on_a_media_session_rebuilds_it(
    start_wire: StartWire,
) -> None:
    """Item 3: Telegram forgets a foreign DC's authorization mid-stream (401 on GetFile): the pool
    drops its sessions and key, makes and imports a new one, and the body stays byte-exact."""
    async with wire_world() as wired:
        content = SyntheticContent(12 * MIB, seed=134)
        f, msg_id = wired.world.store(content, name="far2.bin")
        f.dc_id = 4
        app = await start_wire(wired)
        assert (await download(app, app.dl_path(msg_id))).status == 200
        for key in wired.server._keys.values():  # Telegram revokes DC 4's binding
            if key.dc == 4:
                key.bot_id = None
        body = await download(app, app.dl_path(msg_id))
        assert body.status == 200
        assert body.digest == digest_of(content)
        assert wired.server.stats()["counters"]["auth_key_unregistered"] >= 1
        assert wired.world.telegram.count("auth.ImportAuthorization") == 2


async def test_a_failure_while_preparing_moves_the_stream_to_another_bot(
    start_wire: StartWire,
) -> None:
    """Item 4: the main bot's export FloodWaits; the worker serves from the first byte and the
    main bot is cooled down for the FloodWait's length."""
    async with wire_world(workers=1) as wired:
        content = SyntheticContent(2 * MIB + 5, seed=135)
        f, msg_id = wired.world.store(content, name="far3.bin")
        f.dc_id = 4
        app = await start_wire(wired)
        main, worker = app.services.fleet.clients
        wired.world.telegram.flood_wait(
            3600, method="auth.ExportAuthorization", bot=wired.world.main_bot
        )
        body = await download(app, app.dl_path(msg_id))
        assert body.status == 200
        assert body.digest == digest_of(content)
        assert worker.total_streams == 1
        assert app.services.fleet.cooldown_left(main) > 3000


async def test_503_and_timeouts_from_telegram_are_retried_not_aborted(
    start_wire: StartWire,
) -> None:
    """Item 4: -503 Timeout answers on GetFile are asked again; the body is complete."""
    async with wire_world() as wired:
        content = SyntheticContent(4 * MIB, seed=136)
        _f, msg_id = wired.world.store(content, name="t.bin")
        app = await start_wire(wired)
        wired.world.telegram.inject("upload.GetFile", code=-503, message="Timeout", times=2)
        body = await download(app, app.dl_path(msg_id))
        assert body.status == 200
        assert body.digest == digest_of(content)


@pytest.mark.parametrize("code", [16, 17, 32, 33])
async def test_bad_msg_notifications_on_get_file_are_resent_not_aborted(
    start_wire: StartWire, code: int
) -> None:
    """Item 4: Telegram refuses GetFile messages with a real bad_msg_notification (msg_id too
    low/high, seq_no too low/high) for their msg_id, mid-stream; they are sent again and the body
    is byte-exact."""
    async with wire_world() as wired:
        content = SyntheticContent(4 * MIB + 77, seed=142)
        _f, msg_id = wired.world.store(content, name="bm.bin")
        app = await start_wire(wired)
        wired.world.telegram.inject("upload.GetFile", kind="bad_msg", code=code, times=3, skip=1)
        body = await download(app, app.dl_path(msg_id))
        assert body.status == 200
        assert body.digest == digest_of(content)
        assert wired.server.counters["bad_msg_faults"] == 3  # sent as notifications, on the wire
        assert not wired.world.telegram.faults  # every one of them fired


async def test_file_cdn_redirect_answers_are_asked_again_not_aborted(
    start_wire: StartWire,
) -> None:
    """Item 4: GetFile answered with upload.fileCdnRedirect (StreamBot never asks for CDN files),
    first at the start and again mid-stream: asked again, the body is byte-exact."""
    async with wire_world() as wired:
        content = SyntheticContent(5 * MIB + 3, seed=143)
        _f, msg_id = wired.world.store(content, name="cdn.bin")
        app = await start_wire(wired)
        telegram = wired.world.telegram
        telegram.inject("upload.GetFile", kind="cdn_redirect", times=2)
        telegram.inject("upload.GetFile", kind="cdn_redirect", times=2, skip=4)
        body = await download(app, app.dl_path(msg_id))
        assert body.status == 200
        assert body.digest == digest_of(content)
        assert not telegram.faults  # all four redirects were answered
        # Six 1 MiB blocks, plus one more request per redirect.
        assert telegram.count("upload.GetFile") == 6 + 4


async def test_a_flood_wait_on_a_background_refresh_cools_the_bot_and_another_refreshes(
    start_wire: StartWire,
) -> None:
    """Item 4: the stale-while-revalidate refresh of a file's info hits a FloodWait on the main
    bot; that bot is cooled down for the wait and the worker refreshes the entry."""
    async with wire_world(workers=1) as wired:
        f, msg_id = wired.world.store(SyntheticContent(10, seed=144), name="old.txt")
        app = await start_wire(wired)
        fleet = app.services.fleet
        main, _worker = fleet.clients
        clock = ManualClock()
        catalog = Catalog(fleet, wired.world.channel_id, ttl=60, clock=clock)
        try:
            assert (await catalog.info(msg_id)).name == "old.txt"
            f.name = "new.txt"  # Telegram now says something else
            clock.now += 61
            telegram = wired.world.telegram
            telegram.flood_wait(3600, method="channels.GetMessages", bot=wired.world.main_bot)
            worker_asked = telegram.bot_counts[
                ("channels.GetMessages", wired.world.workers[0].bot_id)
            ]
            assert (await catalog.info(msg_id)).name == "old.txt"  # stale, served at once

            def refreshed() -> bool:
                cached = catalog.info_cache.get(msg_id)
                return cached is not None and cached[1]

            await eventually(refreshed, timeout=30)
            assert (await catalog.info(msg_id)).name == "new.txt"
            assert not telegram.faults  # the main bot was asked and got the FloodWait
            assert fleet.cooldown_left(main) > 3000
            key = ("channels.GetMessages", wired.world.workers[0].bot_id)
            assert telegram.bot_counts[key] > worker_asked
        finally:
            await catalog.close()


async def test_a_duplicated_main_key_is_moved_aside_and_the_bot_logs_in_again(
    start_wire: StartWire, tmp_path: Path
) -> None:
    """Item 5: AUTH_KEY_DUPLICATED at start: the session file is moved aside, the bot logs in
    again once and the admins are told."""
    async with wire_world() as wired:
        content = SyntheticContent(MIB + 1, seed=137)
        _f, msg_id = wired.world.store(content, name="d.bin")
        first = await start_wire(wired, supervisor_backoff_seconds=0.1)
        # The admin has talked to the bot, so it may write to them (Telegram's rule for bots).
        await wired.world.telegram.send_user_message(
            wired.world.admin, wired.world.main_bot, text="/start"
        )
        await wired.world.telegram.wait_replies(wired.world.admin, 1, 5.0)
        await first.client.close()  # stops the app; its session file stays
        for key in wired.server._keys.values():  # Telegram saw the key twice: it is dead
            if key.bot_id == wired.world.main_bot.bot_id and key.dc == 2:
                key.dead = True
        data_dir = first.settings.data_dir
        settings = dataclasses.replace(first.settings)
        app = await create_app(settings, link_secret=LINK_SECRET)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            running = Running(app, client, wired.world, settings)
            assert running.services.fleet.main.state is ClientState.HEALTHY
            assert list((data_dir / "sessions").glob("*.session.dead-*"))
            body = await download(running, running.dl_path(msg_id))
            assert body.digest == digest_of(content)
            replies = await wired.world.telegram.wait_replies(wired.world.admin, 2, 5.0)
            assert any("AUTH_KEY_DUPLICATED" in r.text for r in replies)
        finally:
            await client.close()


def test_a_second_holder_of_the_sessions_folder_is_refused_with_the_first_ones_pid(
    tmp_path: Path,
) -> None:
    """Item 5: one process per DATA_DIR/sessions; the refusal names the holder and the fix."""
    first = SessionLock(tmp_path)
    first.acquire()
    second = SessionLock(tmp_path)  # another open file description: flock conflicts like a process
    with pytest.raises(SessionsLocked) as refused:
        second.acquire()
    message = str(refused.value)
    assert f"process {os.getpid()}" in message
    assert "DATA_DIR" in message
    assert (tmp_path / ".lock").stat().st_mode & 0o777 == 0o600
    first.release()
    second.acquire()  # released: the next one gets it
    second.release()


async def test_run_refuses_a_data_dir_another_process_holds(tmp_path: Path) -> None:
    """Item 5, end to end: a real second ``python -m streambot run`` on the same DATA_DIR stops
    at once with one sentence naming the holder."""
    sessions = tmp_path / "data" / "sessions"
    sessions.mkdir(parents=True)
    holder = SessionLock(sessions)
    holder.acquire()
    env_file = tmp_path / "config.env"
    env_file.write_text(
        "API_ID=1\nAPI_HASH=" + "0" * 32 + "\nBOT_TOKEN=123456:" + "A" * 35 + "\n"
        "BIN_CHANNEL=-1001234567890\nBASE_URL=https://files.example.com\n"
        f"DATA_DIR={tmp_path / 'data'}\nLOG_DIR={tmp_path / 'logs'}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streambot",
        "--env-file",
        str(env_file),
        "run",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    holder.release()
    text = err.decode()
    assert proc.returncode == exitcodes.STARTUP, text
    assert f"process {os.getpid()} is already running StreamBot" in text
    assert "Traceback" not in text


async def test_login_flood_wait_ends_run_with_its_own_status_and_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 6: FloodWait on auth.ImportBotAuthorization at start: exit status LOGIN_FLOOD_WAIT and
    one sentence saying how long and that restarting sooner makes it longer."""
    async with wire_world() as wired:
        wired.world.telegram.flood_wait(2838, method="auth.ImportBotAuthorization")
        settings = world_settings(Settings(), wired.world, data_dir=tmp_path / "data", port=0)
        settings = dataclasses.replace(settings, log_dir=tmp_path / "logs")
        status = await main_module._run(settings)
    err = capsys.readouterr().err
    assert status == exitcodes.LOGIN_FLOOD_WAIT
    assert "wait 2838s (47 min)" in err
    assert "restarting sooner makes the wait longer" in err
    assert err.count("\n") == 1


async def test_a_worker_in_login_flood_wait_stays_out_until_the_wait_passed(
    start_wire: StartWire,
) -> None:
    """Item 6: a worker whose login FloodWaits is left out of the pool, and the supervisor's first
    restart attempt is scheduled no sooner than the wait."""
    async with wire_world(workers=1) as wired:
        # The main bot logs in first; the second login (the worker's) gets the FloodWait.
        wired.world.telegram.flood_wait(600, method="auth.ImportBotAuthorization", skip=1)
        app = await start_wire(wired)
        fleet = app.services.fleet
        worker = fleet.clients[1]
        assert worker.state is ClientState.UNHEALTHY
        assert worker not in fleet.available()
        assert 590 < fleet.cooldown_left(worker) <= 600
        waits: list[float] = []

        async def record(seconds: float) -> None:
            waits.append(seconds)
            raise asyncio.CancelledError  # stop the restart loop at its first wait

        supervisor = Supervisor(fleet, channel_id=wired.world.channel_id, sleep=record)
        await supervisor.check(worker)
        restart = supervisor._restarts[worker.name]
        with contextlib.suppress(asyncio.CancelledError):
            await restart
        await supervisor.close()
        assert len(waits) == 1
        assert waits[0] >= 590


async def test_a_bot_whose_connections_keep_dying_is_cooled_down(start_wire: StartWire) -> None:
    """Item 1: every media connection of the main bot is reset after its first answers. Each new
    stream starts on the main bot (least busy, first) and moves on when its connection dies; after
    three deaths in the window the main bot is cooled down and new streams avoid it."""
    async with wire_world(workers=1) as wired:
        content = SyntheticContent(3 * MIB, seed=138)
        _f, msg_id = wired.world.store(content, name="flaky.bin")
        app = await start_wire(wired)
        main, worker = app.services.fleet.clients
        wired.server.add_wire_fault(
            WireFault.make(
                "rst", bot=wired.world.main_bot.bot_id, dc=2, media=True, after=1, count=None
            )
        )
        bodies = [await download(app, app.dl_path(msg_id)) for _ in range(4)]
        assert [b.digest for b in bodies] == [digest_of(content)] * 4
        assert app.services.fleet.in_cooldown(main)
        assert worker.total_streams == 4  # each stream finished on the worker
        # Not hammered: one reset per attempt, no reconnect loop, and none once it cooled down.
        assert wired.server.stats()["counters"]["wire_fault_rst"] <= 3


async def test_an_answer_for_an_abandoned_request_is_dropped_and_counted_once(
    start_wire: StartWire,
) -> None:
    """Item 2: a stall longer than the request timeout (but shorter than the liveness window):
    the requests are abandoned and asked again; their answers still arrive later and are dropped,
    their bytes freed exactly once (nothing stays awaited), and the body is byte-exact."""
    async with wire_world() as wired:
        content = SyntheticContent(12 * MIB, seed=139)
        _f, msg_id = wired.world.store(content, name="late.bin")
        # One connection, so the stalled answers are GetFile answers (not a new connection's
        # InitConnection) and the retries must wait for the room the abandoned ones hold.
        app = await start_wire(
            wired,
            media_request_timeout_seconds=1.0,
            media_liveness_seconds=6.0,
            media_connections=1,
        )
        wired.server.add_wire_fault(
            WireFault.make(
                "stall", bot=wired.world.main_bot.bot_id, dc=2, media=True, after=4, seconds=2.5
            )
        )
        body = await download(app, app.dl_path(msg_id))
        assert body.status == 200
        assert body.digest == digest_of(content)
        # The abandoned answers are still on the stalled connection: they arrive when the stall
        # ends, and only then is their room given back.
        media = app.services.media
        await eventually(lambda: media.stats()[0]["awaited_bytes"] == 0, timeout=10)
        [pool] = media.stats()
        assert pool["late_answers"] >= 1
        assert pool["awaited_bytes"] == 0
        assert pool["lost_requests"] == 0  # the connection itself never died


async def test_the_health_check_drops_a_dead_media_connection_before_a_viewer_meets_it(
    start_wire: StartWire,
) -> None:
    """Item 3: the supervisor's check pings media connections too; an idle one that went silent
    is dropped there, and the next download opens a fresh one instead of waiting out silence."""
    async with wire_world() as wired:
        content = SyntheticContent(2 * MIB, seed=140)
        _f, msg_id = wired.world.store(content, name="idle.bin")
        app = await start_wire(wired, supervisor_check_timeout_seconds=1.0)
        assert (await download(app, app.dl_path(msg_id))).status == 200
        media_conns = [c for c in wired.server._conns if c.media]
        assert media_conns
        for conn in media_conns:  # Telegram's side goes silent; the sockets stay open
            conn.link.blackhole()
        supervisor = app.services.supervisor
        await supervisor.check_all()
        assert supervisor.media_dropped == len(media_conns)
        assert app.services.fleet.main.state is ClientState.HEALTHY
        body = await download(app, app.dl_path(msg_id))
        assert body.digest == digest_of(content)
        assert body.max_gap < app.settings.media_liveness_seconds  # no silence waited out


async def test_a_get_messages_flood_wait_moves_the_lookup_and_the_stream_to_another_bot(
    start_wire: StartWire,
) -> None:
    """Item 4: the main bot's channels.GetMessages FloodWaits for an hour; the worker looks the
    file up and serves it from the first byte, and the main bot is cooled down for the wait."""
    async with wire_world(workers=1) as wired:
        content = SyntheticContent(2 * MIB + 9, seed=141)
        _f, msg_id = wired.world.store(content, name="gm.bin")
        app = await start_wire(wired)
        main, worker = app.services.fleet.clients
        wired.world.telegram.flood_wait(
            3600, method="channels.GetMessages", bot=wired.world.main_bot, times=5
        )
        body = await download(app, app.dl_path(msg_id))
        assert body.status == 200
        assert body.digest == digest_of(content)
        # Neither slept through the hour nor waited out the lookup timeout.
        assert body.elapsed < app.services.catalog.lookup_timeout
        assert worker.total_streams == 1
        assert app.services.fleet.cooldown_left(main) > 3000
