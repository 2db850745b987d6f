"""Shared fixtures: a simulated Telegram world and the real application running on it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import settings as hypothesis_settings

from streambot.app import create_app, make_runner, make_site
from streambot.config import Settings
from streambot.simulator.world import World, build_world, world_settings

from .clock import VirtualTime
from .helpers import (
    LINK_SECRET,
    Demo,
    Proc,
    Running,
    Serve,
    Served,
    Start,
    StartApp,
    rule_breaking_calls,
    spawn_streambot,
)
from .pg import pg_url  # noqa: F401  (the PostgreSQL fixture, for every module)

# Properties assert results, not speed (bench/ measures speed): a slow or busy CI machine
# must not fail a property because one example took longer than Hypothesis' 200 ms default.
hypothesis_settings.register_profile("streambot", deadline=None, print_blob=True)
hypothesis_settings.load_profile("streambot")


CHECKOUT_LOGS = Path(__file__).resolve().parent.parent / "logs"


def _logs_snapshot() -> dict[str, int]:
    if not CHECKOUT_LOGS.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in CHECKOUT_LOGS.iterdir()}


@pytest.fixture(autouse=True, scope="session")
def _checkout_logs_untouched() -> Iterator[None]:
    """Tests write logs under tmp_path only: the checkout's logs/ (an operator's, perhaps)
    must look the same after the session as before it."""
    before = _logs_snapshot()
    yield
    assert _logs_snapshot() == before, f"a test wrote into {CHECKOUT_LOGS}"


@pytest.fixture
def world() -> World:
    return build_world(workers=0)


@pytest.fixture(params=[1, 3], ids=["1client", "3clients"])
def fleet_size(request: pytest.FixtureRequest) -> int:
    """How many Telegram clients the fleet has: contract tests run on one and on three."""
    return int(request.param)


@pytest.fixture
def fleet_world(fleet_size: int) -> World:
    """A world whose fleet has ``fleet_size`` clients (the main bot plus workers)."""
    return build_world(workers=fleet_size - 1)


@pytest.fixture
def telegram_rules(world: World) -> Iterator[None]:
    """After the test: the simulator's log holds no GetFile that Telegram would reject.

    Modules that stream use it for every test: ``pytestmark = usefixtures("telegram_rules")``.
    """
    yield
    assert rule_breaking_calls(world) == []


@pytest.fixture
async def start_app(tmp_path: Path) -> AsyncIterator[StartApp]:
    """Start the application on a world; keyword arguments override settings.

    ``time=VirtualTime()`` runs the fleet's cooldowns and every retry wait on virtual time.
    """
    running: list[Running] = []

    async def start(world: World, *, time: VirtualTime | None = None, **overrides: Any) -> Running:
        data_dir = tmp_path / f"data{len(running)}"
        settings = world_settings(Settings(), world, data_dir=data_dir)
        # Every test client is 127.0.0.1, and most tests run many viewers: the per-client caps
        # stay out of their way unless a test sets them (tests/test_connections.py does).
        uncapped = {"max_streams_per_client": 1_000_000, "max_connections_per_client": 1_000_000}
        settings = dataclasses.replace(
            settings, log_dir=tmp_path / "logs", **{**uncapped, **overrides}
        )
        timing: dict[str, Any] = {"clock": time, "sleep": time.sleep} if time else {}
        app = await create_app(
            settings, link_secret=LINK_SECRET, simulator=world.telegram, **timing
        )
        client = TestClient(TestServer(app))
        await client.start_server()
        r = Running(app, client, world, settings)
        running.append(r)
        return r

    yield start
    for r in reversed(running):
        await r.client.close()


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """Start the application behind the production runner and site on a real port."""
    runners: list[web.AppRunner] = []

    async def start(world: World, **overrides: Any) -> Served:
        settings = world_settings(Settings(), world, data_dir=tmp_path / f"data{len(runners)}")
        settings = dataclasses.replace(settings, log_dir=tmp_path / "logs", **overrides)
        app = await create_app(settings, link_secret=LINK_SECRET, simulator=world.telegram)
        runner = make_runner(app)
        await runner.setup()
        runners.append(runner)
        site = make_site(runner, "127.0.0.1", 0)
        await site.start()
        return Served(app, runner, site.port)

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def start_demo(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Demo]]]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> Demo:
        stderr = tmp_path / f"demo{len(procs)}.stderr"
        proc = await spawn_streambot(tmp_path, stderr, "demo", *args)
        procs.append(proc)
        return Demo(proc, stderr)

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def start_streambot(tmp_path: Path) -> AsyncIterator[Start]:
    """Start ``python -m streambot ARGS`` in tmp_path; whatever still runs is killed at the end."""
    procs: list[Proc] = []

    async def start(*args: str) -> Proc:
        stderr = tmp_path / f"proc{len(procs)}.stderr"
        procs.append(Proc(await spawn_streambot(tmp_path, stderr, *args), stderr))
        return procs[-1]

    yield start
    for p in procs:
        if p.proc.returncode is None:
            p.proc.kill()
            await p.proc.wait()
