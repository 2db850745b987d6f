"""The admins' /memory report, asked for in Telegram through the simulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from streambot.simulator import SyntheticContent
from streambot.simulator.world import World
from utils.smart_logger import SmartLogFilter, install

from .helpers import Running, StartApp

MIB = 1024 * 1024


@pytest.fixture
def log_filter() -> Iterator[SmartLogFilter]:
    """A rate limiter on a root handler, as ``python -m streambot`` configures logging."""
    handler = logging.NullHandler()
    smart = install(handler, max_keys=1000)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield smart
    finally:
        root.removeHandler(handler)


async def ask(running: Running, text: str, user: object | None = None) -> str:
    world = running.world
    tg = world.telegram
    who = user or world.admin
    before = len(tg.replies(who))  # type: ignore[arg-type]
    await tg.send_user_message(who, world.main_bot, text=text)  # type: ignore[arg-type]
    replies = await tg.wait_replies(who, before + 1)  # type: ignore[arg-type]
    return replies[-1].text


async def test_memory_report_shows_every_figure(
    world: World, start_app: StartApp, log_filter: SmartLogFilter
) -> None:
    """/memory from an admin answers with memory, loop, streams, clients, caches, jobs and GC."""
    app = await start_app(world, cache_guard_limit=8800, cache_rate_limit_users=77)
    logging.getLogger("streambot.test").warning("one line for the logger cache")
    text = await ask(app, "/memory")
    lines = text.splitlines()
    assert lines[0] == "StreamBot memory: OK"
    labels = [line.split("  ")[0] for line in lines[2:12]]
    assert labels == [
        "In RAM (RSS)",
        "Virtual",
        "Share",
        "Limit",
        "Machine free",
        "Loop delay",
        "Threads",
        "Async tasks",
        "Streams",
        "Uptime",
    ]
    # MEMORY_LIMIT_MB=0 (the default): no invented limit, and what each level does.
    assert "Limit         no limit set (machine RAM)" in lines
    assert "Levels (of machine RAM)" in lines
    assert any(line.startswith("Warning   80 % = ") for line in lines)
    assert any(line.startswith("Critical  95 % = ") for line in lines)
    assert "  new downloads get 503," in lines
    zone = datetime.now().astimezone().tzname()
    assert f"Jobs (next run, {zone})" in lines
    rss_mb = float(lines[2].split()[3])
    assert 10 < rss_mb < 100_000
    assert lines[2].endswith(" MB")
    assert "Clients 1/1 healthy" in lines
    assert "@streambot_demo_bot (main)" in lines
    assert "  healthy, 0 streams" in lines
    assert any(line.startswith("File info    0 / 1024") for line in lines)
    assert any(line.startswith("Logger keys") and line.endswith("/ 1000") for line in lines)
    assert "Link facts   0 / 8800" in lines  # each bound as configured
    assert "Rate limits  0 / 77" in lines
    for job in ("fleet check", "memory check", "memory log", "gc + report", "bandwidth"):
        assert any(line.startswith(job) and " in " in line for line in lines), job
    assert "Last GC: not yet" in lines
    assert max(len(line) for line in lines) <= 40
    # Shown monospace: one "pre" entity, no Markdown fences in the text.
    assert "```" not in text
    assert app.world.telegram.replies(app.world.admin)[-1].entities == ("MessageEntityPre",)
    assert "secret" not in text.lower()


async def test_memory_report_follows_streams_and_gc(world: World, start_app: StartApp) -> None:
    """A running download shows as an active stream on its client; a GC shows its result."""
    size = 24 * MIB
    _, msg_id = world.store(SyntheticContent(size, seed=3), name="big.bin")
    app = await start_app(world)
    scheduler = app.services.scheduler
    assert scheduler is not None
    assert await scheduler.run("gc_report")
    resp = await app.client.get(app.dl_path(msg_id, "big.bin"))
    await resp.content.readexactly(64 * 1024)

    lines = (await ask(app, "/memory")).splitlines()
    assert "Streams       1" in lines
    assert "  healthy, 1 stream" in lines
    assert any(line.split() == ["File", "info", "1", "/", "1024"] for line in lines)
    assert any(line.split() == ["Link", "facts", "1", "/", "10000"] for line in lines)
    gc_line = lines[lines.index(next(ln for ln in lines if ln.startswith("Last GC"))) + 1]
    assert "objects" in gc_line
    assert "MB freed" in gc_line
    resp.close()


async def test_memory_report_is_for_admins_only(world: World, start_app: StartApp) -> None:
    """Anyone else gets a polite refusal and no figures."""
    app = await start_app(world)
    stranger = world.telegram.add_user("Mallory")
    text = await ask(app, "/memory", stranger)
    assert text == "Sorry, /memory is for admins only."


async def test_memory_log_queue_is_bounded_as_configured(world: World, start_app: StartApp) -> None:
    """MEMORY_LOG_QUEUE_LIMIT reaches the running app's memory log."""
    app = await start_app(world, memory_log_queue_limit=7)
    assert app.services.memlog is not None
    assert app.services.memlog.max_line_queue == 7
