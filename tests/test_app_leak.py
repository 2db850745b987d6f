"""Building and closing the whole application leaks nothing: open files and threads stay flat.

Each cycle builds the app on a fresh simulated world (a fleet of two clients, a store, the
memory log, the scheduler), serves one download through it and closes it, as tests and a
restarting process do. Twenty cycles after a warm-up must not leave more file descriptors or
threads than one would (Datasette's test_fd_leak does the same for its app).
"""

from __future__ import annotations

import dataclasses
import gc
import threading
from pathlib import Path

import psutil
from aiohttp.test_utils import TestClient, TestServer

from streambot.app import create_app
from streambot.config import Settings
from streambot.simulator import SyntheticContent
from streambot.simulator.world import build_world, world_settings

from .helpers import LINK_SECRET, Running, expected

CYCLES = 20


async def one_cycle(tmp_path: Path, n: int) -> None:
    world = build_world(workers=1)
    _, message_id = world.store(SyntheticContent(20_000, seed=n), name="f.bin")
    settings = world_settings(Settings(), world, data_dir=tmp_path / f"data{n}")
    settings = dataclasses.replace(settings, log_dir=tmp_path / "logs", stream_block_size_kib=4)
    app = await create_app(settings, link_secret=LINK_SECRET, simulator=world.telegram)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        running = Running(app, client, world, settings)
        resp = await client.get(running.dl_path(message_id, "f.bin"))
        assert await resp.read() == expected(n, 0, 19_999)
    finally:
        await client.close()


# The event loop's default executor starts its threads lazily, one more whenever all are busy, up
# to its fixed bound; on a loaded machine it may add one mid-test. A bounded pool growing towards
# its bound is not a leak, so its threads are not counted (every other thread is).
_DEFAULT_EXECUTOR_PREFIX = "asyncio_"


def footprint(process: psutil.Process) -> tuple[int, list[str]]:
    gc.collect()
    names = sorted(
        t.name for t in threading.enumerate() if not t.name.startswith(_DEFAULT_EXECUTOR_PREFIX)
    )
    return process.num_fds(), names


async def test_building_and_closing_the_app_leaks_no_fds_or_threads(tmp_path: Path) -> None:
    """After a warm-up, 20 build/serve/close cycles leave file descriptors and threads flat."""
    process = psutil.Process()
    for n in range(2):  # warm-up: lazily created pools (asyncio's default executor) fill up
        await one_cycle(tmp_path, n)
    fds_before, threads_before = footprint(process)
    for n in range(2, 2 + CYCLES):
        await one_cycle(tmp_path, n)
    fds_after, threads_after = footprint(process)
    assert fds_after <= fds_before, f"{fds_after - fds_before} fds leaked over {CYCLES} cycles"
    assert len(threads_after) <= len(threads_before), f"threads {threads_before} -> {threads_after}"
