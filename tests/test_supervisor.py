"""Tests for streambot.supervisor on the simulator: every transition, backoff, reset, and streams.

The simulator's ``set_offline`` makes every request of a bot fail like a dropped connection;
``inject("Ping", ...)`` fails only the health check while downloads keep working. The backoff
sleep is a gate the test opens, and the clock is a number the test moves.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from streambot.backoff import Backoff
from streambot.fleet import ClientState
from streambot.simulator import SyntheticContent
from streambot.simulator.content import synthetic_bytes
from streambot.simulator.world import World, build_world
from streambot.supervisor import Supervisor

from .clock import ManualClock
from .helpers import Running, StartApp

H, U, R, F = (
    ClientState.HEALTHY,
    ClientState.UNHEALTHY,
    ClientState.RESTARTING,
    ClientState.FAILED,
)
MIB = 1024 * 1024


class Gate:
    """The supervisor's backoff sleep: records each delay and returns once the test opens it."""

    def __init__(self, *, opened: bool = False) -> None:
        self.delays: list[float] = []
        self.entered = asyncio.Event()
        self._open = asyncio.Event()
        if opened:
            self._open.set()

    def open(self) -> None:
        self._open.set()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.entered.set()
        await self._open.wait()


@pytest.fixture
def world() -> World:
    """A main bot and one worker."""
    return build_world(workers=1)


@pytest.fixture
async def running(world: World, start_app: StartApp) -> Running:
    # The app's own scheduled health check must not race the supervisor under test.
    return await start_app(world, supervisor_check_interval_seconds=3600, stream_retries=0)


@pytest.fixture
async def supervisors() -> AsyncIterator[list[Supervisor]]:
    made: list[Supervisor] = []
    yield made
    for sup in made:
        await sup.close()


def make_supervisor(
    running: Running,
    made: list[Supervisor],
    gate: Gate,
    clock: ManualClock | None = None,
    **kw: Any,
) -> Supervisor:
    kw.setdefault("max_restarts", 5)
    kw.setdefault("reset_after", 600)
    kw.setdefault("drain_timeout", 30)
    services = running.services
    sup = Supervisor(
        services.fleet,
        channel_id=running.settings.bin_channel,
        check_timeout=5,
        start_timeout=10,
        backoff=Backoff(1.0, jitter=0),
        notify=services.notify,
        registry=services.registry,
        clock=clock or ManualClock(10_000.0),
        sleep=gate,
        **kw,
    )
    made.append(sup)
    return sup


def transitions(sup: Supervisor, name: str) -> list[tuple[ClientState, ClientState]]:
    return [(t.old, t.new) for t in sup.history if t.client == name]


class TestBackoff:
    def test_doubles_up_to_the_maximum(self) -> None:
        """Without jitter the delays are base, 2 x base, 4 x base ... capped at the maximum."""
        backoff = Backoff(5, maximum=30, jitter=0)
        assert [backoff.delay(n) for n in range(1, 6)] == [5, 10, 20, 30, 30]

    def test_jitter_stays_within_its_fraction(self) -> None:
        """With 10 % jitter every delay is within ±10 % of the plain one."""
        backoff = Backoff(10, jitter=0.1, rng=random.Random(7))
        for _ in range(100):
            assert 9.0 <= backoff.delay(1) <= 11.0

    @pytest.mark.parametrize(
        "kw", [{"base": -1}, {"base": 1, "factor": 0.5}, {"base": 10, "maximum": 5}]
    )
    def test_bad_parameters_are_refused(self, kw: dict[str, float]) -> None:
        """Negative, shrinking or self-contradicting backoffs raise ValueError."""
        base = kw.pop("base")
        with pytest.raises(ValueError, match="need base"):
            Backoff(base, **kw)

    def test_attempts_are_one_based(self) -> None:
        """Attempt 0 is a caller bug."""
        with pytest.raises(ValueError, match="1-based"):
            Backoff(1).delay(0)


class TestTransitions:
    async def test_unhealthy_client_leaves_pool_restarts_and_returns(
        self, world: World, running: Running, supervisors: list[Supervisor]
    ) -> None:
        """HEALTHY -> UNHEALTHY (out of the pool) -> RESTARTING -> HEALTHY once the network is back."""
        fleet = running.services.fleet
        worker = fleet.clients[1]
        gate = Gate()
        sup = make_supervisor(running, supervisors, gate)
        assert await sup.check_all() == {fleet.main.name: H, worker.name: H}

        world.telegram.set_offline(world.workers[0])
        states = await sup.check_all()
        assert states[worker.name] is U
        assert worker not in fleet.available()
        assert [fleet.pick() for _ in range(3)] == [fleet.main] * 3
        await gate.entered.wait()
        assert worker.state is U  # waiting out the backoff, not restarting yet

        world.telegram.set_offline(world.workers[0], False)
        gate.open()
        await sup.wait_for(lambda: worker.state is H)
        assert transitions(sup, worker.name) == [(H, U), (U, R), (R, H)]
        assert gate.delays == [1.0]
        assert worker.restarts == 1
        assert worker in fleet.available()
        # The restarted client really works: it resolves a stored file on its own.
        _, msg_id = world.store(SyntheticContent(4096, seed=1), name="a.bin")
        await running.services.catalog.location(worker, msg_id, refresh=True)
        assert (await sup.check_all())[worker.name] is H

    async def test_failed_after_max_restarts_and_admins_told(
        self, world: World, running: Running, supervisors: list[Supervisor]
    ) -> None:
        """A client that stays offline is FAILED after max_restarts attempts and admins get one message."""
        tg = world.telegram
        await tg.send_user_message(world.admin, world.main_bot, text="/start")
        await tg.wait_replies(world.admin, 1)
        fleet = running.services.fleet
        worker = fleet.clients[1]
        gate = Gate(opened=True)
        sup = make_supervisor(running, supervisors, gate, max_restarts=3)

        tg.set_offline(world.workers[0])
        await sup.check_all()
        await sup.wait_for(lambda: worker.state is F)
        assert transitions(sup, worker.name) == [
            (H, U),
            (U, R),
            (R, U),
            (U, R),
            (R, U),
            (U, R),
            (R, U),
            (U, F),
        ]
        assert gate.delays == [1.0, 2.0, 4.0]
        assert worker not in fleet.available()
        replies = await tg.wait_replies(world.admin, 2)
        assert len(replies) == 2
        alert = replies[1].text
        assert worker.label() in alert
        assert "failed" in alert
        assert "3 restarts" in alert

        # FAILED is final: later checks neither ping nor restart it.
        pings = tg.count("Ping", worker.name)
        assert (await sup.check_all())[worker.name] is F
        assert sup.restarting() == []
        assert tg.count("Ping", worker.name) == pings
        assert fleet.main.state is H

    async def test_restart_count_resets_after_a_healthy_period(
        self, world: World, running: Running, supervisors: list[Supervisor]
    ) -> None:
        """A client healthy for reset_after seconds gets its restart count back to zero."""
        fleet = running.services.fleet
        worker = fleet.clients[1]
        gate = Gate()
        clock = ManualClock(10_000.0)
        sup = make_supervisor(running, supervisors, gate, clock, reset_after=600)

        world.telegram.set_offline(world.workers[0])
        await sup.check_all()
        await gate.entered.wait()
        world.telegram.set_offline(world.workers[0], False)
        gate.open()
        await sup.wait_for(lambda: worker.state is H)
        assert worker.restarts == 1

        clock.now += 599
        await sup.check_all()
        assert worker.restarts == 1
        clock.now += 1
        await sup.check_all()
        assert worker.restarts == 0

    async def test_failed_attempt_goes_back_to_unhealthy_then_recovers(
        self, world: World, running: Running, supervisors: list[Supervisor]
    ) -> None:
        """An attempt while still offline fails fast; the next one after recovery succeeds."""
        fleet = running.services.fleet
        worker = fleet.clients[1]
        gate = Gate(opened=True)
        sup = make_supervisor(running, supervisors, gate, max_restarts=10)
        world.telegram.set_offline(world.workers[0])
        await sup.check_all()
        await sup.wait_for(lambda: len(gate.delays) >= 2)
        world.telegram.set_offline(world.workers[0], False)
        await sup.wait_for(lambda: worker.state is H)
        pairs = transitions(sup, worker.name)
        assert pairs[:4] == [(H, U), (U, R), (R, U), (U, R)]
        assert pairs[-1] == (R, H)
        assert "probe" in worker.last_error or worker.last_error == ""


class TestStreams:
    async def test_stream_moves_when_its_client_goes_offline(
        self, world: World, running: Running, supervisors: list[Supervisor]
    ) -> None:
        """A stream on a client that goes offline completes byte-exact through the other client."""
        size = 24 * MIB + 123
        _f, msg_id = world.store(SyntheticContent(size, seed=5), name="big.bin")
        fleet = running.services.fleet
        main, worker = fleet.clients
        gate = Gate()
        sup = make_supervisor(running, supervisors, gate)

        resp = await running.client.get(running.dl_path(msg_id, "big.bin"))
        assert resp.status == 200
        head = await resp.content.readexactly(256 * 1024)
        assert main.active_streams == 1

        world.telegram.set_offline(world.main_bot)
        assert (await sup.check_all())[main.name] is U
        rest = await resp.read()
        assert head + rest == synthetic_bytes(5, 0, size)
        assert world.telegram.count("upload.GetFile", worker.name) > 0

        world.telegram.set_offline(world.main_bot, False)
        gate.open()
        await sup.wait_for(lambda: main.state is H)

    async def test_restart_waits_for_a_running_stream(
        self, world: World, running: Running, supervisors: list[Supervisor]
    ) -> None:
        """A client that fails only its ping is not stopped under its stream: the stream ends first."""
        size = 24 * MIB + 7
        _, msg_id = world.store(SyntheticContent(size, seed=6), name="big.bin")
        tg = world.telegram
        fleet = running.services.fleet
        main, worker = fleet.clients
        gate = Gate(opened=True)
        sup = make_supervisor(running, supervisors, gate)

        resp = await running.client.get(running.dl_path(msg_id, "big.bin"))
        head = await resp.content.readexactly(256 * 1024)
        tg.inject("Ping", kind="oserror", bot=world.main_bot)
        # The gate is open, so the restart may already be under way when check_all returns.
        assert (await sup.check_all())[main.name] in (U, R)
        await sup.wait_for(lambda: main.state is R)
        assert main.client.is_connected
        assert main.active_streams == 1

        rest = await resp.read()
        assert head + rest == synthetic_bytes(6, 0, size)
        await sup.wait_for(lambda: main.state is H)
        assert transitions(sup, main.name) == [(H, U), (U, R), (R, H)]
        assert tg.count("upload.GetFile", worker.name) == 0

        # The main bot's handlers survived its restart.
        await tg.send_user_message(world.admin, world.main_bot, text="/help")
        replies = await tg.wait_replies(world.admin, 1)
        assert "Send me a file" in replies[-1].text

    async def test_stream_still_on_client_after_drain_deadline_is_cut_not_shortened(
        self, world: World, running: Running, supervisors: list[Supervisor]
    ) -> None:
        """After the drain deadline the stream is aborted: the client sees an incomplete body, never a short one."""
        size = 24 * MIB
        _, msg_id = world.store(SyntheticContent(size, seed=8), name="big.bin")
        main = running.services.fleet.main
        gate = Gate(opened=True)
        sup = make_supervisor(running, supervisors, gate, drain_timeout=0.2)

        resp = await running.client.get(running.dl_path(msg_id, "big.bin"))
        assert resp.headers["Content-Length"] == str(size)
        await resp.content.readexactly(64 * 1024)
        world.telegram.inject("Ping", kind="oserror", bot=world.main_bot)
        await sup.check_all()
        await sup.wait_for(lambda: main.state is H)
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
        assert len(running.services.registry) == 0


async def test_close_cancels_restarts_in_progress(
    world: World, running: Running, supervisors: list[Supervisor]
) -> None:
    """Closing the supervisor cancels a pending restart; later checks start nothing."""
    worker = running.services.fleet.clients[1]
    gate = Gate()
    sup = make_supervisor(running, supervisors, gate)
    world.telegram.set_offline(world.workers[0])
    await sup.check_all()
    await gate.entered.wait()
    assert sup.restarting() == [worker.name]
    await sup.close()
    assert sup.restarting() == []
    await sup.check_all()
    assert sup.restarting() == []
    assert worker.state is U


async def test_history_is_bounded_as_configured(world: World, start_app: StartApp) -> None:
    """SUPERVISOR_HISTORY_LIMIT bounds the transitions the running app's supervisor keeps."""
    app = await start_app(world, supervisor_history_limit=2)
    supervisor = app.services.supervisor
    assert supervisor is not None
    assert supervisor.history.maxlen == 2
