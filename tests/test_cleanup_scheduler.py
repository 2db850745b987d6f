"""Tests for utils.cleanup_scheduler: each job function directly, the wrapper, shutdown, the wiring."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from streambot.catalog import Catalog, FileInfo
from streambot.fleet import Fleet
from streambot.simulator.world import World
from streambot.sqlite_store import SqliteStore
from streambot.store import Store
from utils.cleanup_scheduler import (
    CleanupScheduler,
    JobSpec,
    cleanup_bandwidth,
    cleanup_logger_cache,
    cleanup_memory_logs,
    collect_garbage,
    parse_daily_time,
    sweep_file_cache,
    sweep_stale_streams,
    write_memory_line,
)
from utils.memory_manager import MemoryManager
from utils.memory_monitor import MemoryLog, MemorySample
from utils.smart_logger import install
from utils.stream_cleanup import StreamRegistry

from .clock import ManualClock
from .helpers import StartApp

SAMPLE = MemorySample(rss_mb=100.0, vms_mb=200.0, available_mb=1000.0, free_percent=50.0)


class Records(logging.Handler):
    """Collects the records that pass its filters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await SqliteStore(tmp_path / "db.sqlite3").open()
    yield s
    await s.close()


@pytest.fixture
def job_log() -> Iterator[tuple[Records, ManualClock]]:
    """A rate-limited handler on this module's logger, as __main__ installs on the root."""
    handler = Records()
    clock = ManualClock()
    install(handler, window_seconds=60, clock=clock)
    logger = logging.getLogger("utils.cleanup_scheduler")
    logger.addHandler(handler)
    try:
        yield handler, clock
    finally:
        logger.removeHandler(handler)


# --------------------------------------------------------------------------- job functions


async def test_bandwidth_cleanup_keeps_the_last_days(store: Store) -> None:
    """Rows of days more than keep_days before today go; today and the kept days stay."""
    today = date(2025, 11, 16)
    days = [today - timedelta(days=n) for n in (0, 1, 30, 31, 90)]
    await store.add_bandwidth({(d.isoformat(), "global", ""): 100 for d in days})
    removed = await cleanup_bandwidth(store, 30, today=today)
    assert removed == 2
    kept = await store.bandwidth_total("global", "", "2000-01-01", today.isoformat())
    assert kept == 300


async def test_bandwidth_cleanup_runs_once_per_day_across_nodes(store: Store) -> None:
    """Every node schedules the job on the shared store; one claims the day, the others skip it."""
    today = date(2025, 11, 16)
    old = today - timedelta(days=40)
    await store.add_bandwidth({(old.isoformat(), "global", ""): 100})
    results = [await cleanup_bandwidth(store, 30, today=today, holder=f"node{i}") for i in range(3)]
    assert results == [1, 0, 0]
    # The next day is a new claim (and finds nothing old left).
    assert await cleanup_bandwidth(store, 30, today=today + timedelta(days=1), holder="node2") == 0
    await store.add_bandwidth({(old.isoformat(), "global", ""): 5})
    assert await cleanup_bandwidth(store, 30, today=today + timedelta(days=2), holder="node1") == 1


async def test_collect_garbage_logs_a_report_line(caplog: pytest.LogCaptureFixture) -> None:
    """The hourly job collects and writes one memory report line."""
    caplog.set_level(logging.INFO, logger="utils.cleanup_scheduler")
    manager = MemoryManager(limit_mb=0)
    result = await collect_garbage(manager)
    assert manager.last_gc is result
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("memory report")]
    assert len(lines) == 1
    assert "RSS" in lines[0]
    assert "loop lag" in lines[0]


async def test_stale_stream_sweep_cancels_only_stalled_streams() -> None:
    """Streams idle longer than the stall limit are cancelled; fresh ones keep running."""
    clock = ManualClock()
    registry = StreamRegistry(clock=clock)
    entered = [asyncio.Event(), asyncio.Event()]
    release = asyncio.Event()

    async def serve(i: int) -> str:
        try:
            async with registry.track(message_id=i, file_name="f", start=0, end=9, remote="x"):
                entered[i].set()
                await release.wait()
        except asyncio.CancelledError:
            return "cancelled"
        return "finished"

    stalled = asyncio.create_task(serve(0))
    await entered[0].wait()
    clock.now += 100
    fresh = asyncio.create_task(serve(1))
    await entered[1].wait()
    assert await sweep_stale_streams(registry, 60) == 1
    assert await stalled == "cancelled"
    release.set()
    assert await fresh == "finished"


async def test_logger_cache_cleanup_forgets_quiet_keys() -> None:
    """Keys whose window has passed with nothing suppressed are removed."""
    clock = ManualClock()
    smart = install(Records(), window_seconds=60, max_keys=10, clock=clock)
    for i in range(3):
        smart.filter(logging.makeLogRecord({"msg": f"message {i}", "name": "x"}))
    assert smart.size == 3
    clock.now += 61
    assert await cleanup_logger_cache(smart) == 3
    assert smart.size == 0


async def test_memory_line_is_written(tmp_path: Path) -> None:
    """The 2-minute job appends a periodic line to today's file."""
    now = datetime(2025, 11, 16, 8, 30, 0)
    memlog = MemoryLog(tmp_path, sampler=lambda: SAMPLE, now=lambda: now)
    await write_memory_line(memlog)
    text = (tmp_path / "memory_20251116.log").read_text()
    assert text.startswith("2025-11-16 08:30:00 --- PERIODIC [Idle] | RSS:  100.0 MB")


async def test_jobs_write_task_lines_and_the_memory_line_job_does_not(tmp_path: Path) -> None:
    """Each job run is a START/END pair named after the job (with the RSS change, also when
    the job fails); the job writing the periodic line is not wrapped, so it reads Idle."""
    from streambot.memlog import parse_line

    now = datetime(2025, 11, 16, 8, 30, 0)
    memlog = MemoryLog(tmp_path, sampler=lambda: SAMPLE, now=lambda: now)
    scheduler = CleanupScheduler(span=memlog.task)
    trigger = IntervalTrigger(hours=1)

    async def boom() -> None:
        raise RuntimeError("disk full")

    scheduler.add(JobSpec("gc", "gc + report", lambda: asyncio.sleep(0), trigger))
    scheduler.add(JobSpec("bad", "bandwidth", boom, trigger))
    scheduler.add(
        JobSpec("memory_log", "memory log", lambda: write_memory_line(memlog), trigger, False)
    )
    for job in ("gc", "bad", "memory_log"):
        await scheduler.run(job)
    lines = [parse_line(t) for t in (tmp_path / "memory_20251116.log").read_text().splitlines()]
    assert [(ln.kind, ln.task, ln.change_mb) for ln in lines if ln] == [
        (">>>", "gc + report", None),
        ("<<<", "gc + report", 0.0),
        (">>>", "bandwidth", None),
        ("<<<", "bandwidth", 0.0),
        ("---", "Idle", None),
    ]


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_memory_log_cleanup_deletes_old_files(tmp_path: Path) -> None:
    """Files dated more than keep_days before today are deleted, others stay."""
    now = datetime(2025, 11, 16, 8, 30, 0)
    for day in ("20251101", "20251108", "20251109", "20251116"):
        (tmp_path / f"memory_{day}.log").write_text("x\n")
    memlog = MemoryLog(tmp_path, sampler=lambda: SAMPLE, now=lambda: now)
    deleted = await cleanup_memory_logs(memlog, 7)
    assert [p.name for p in deleted] == ["memory_20251101.log", "memory_20251108.log"]
    assert _names(tmp_path) == [
        "memory_20251109.log",
        "memory_20251116.log",
    ]


async def test_file_cache_sweep_drops_long_stale_entries(tmp_path: Path) -> None:
    """Entries older than twice the TTL are swept; younger ones stay."""
    clock = ManualClock()
    fleet = Fleet.build(
        api_id=1,
        api_hash="0" * 32,
        bot_token="123456:" + "A" * 35,
        worker_tokens=(),
        session_dir=tmp_path,
    )
    catalog = Catalog(fleet, -1001234567890, limit=10, ttl=100, clock=clock)
    info = FileInfo(1, 10, "text/plain", "a.txt", "u", 2, datetime.now(UTC), "document")
    catalog.info_cache.put(1, info)
    clock.now += 150
    catalog.info_cache.put(2, info)
    clock.now += 60  # entry 1 is 210 s old (> 2 x TTL), entry 2 is 60 s old
    assert await sweep_file_cache(catalog) == 1
    assert catalog.info_cache.get(1) is None
    assert catalog.info_cache.get(2) is not None


def test_daily_time_parsing() -> None:
    """HH:MM in 24-hour form parses; anything else is refused."""
    assert parse_daily_time("04:00") == (4, 0)
    assert parse_daily_time("23:59") == (23, 59)
    for bad in ("24:00", "4", "04:60", "noon"):
        with pytest.raises(ValueError, match="HH:MM"):
            parse_daily_time(bad)


# --------------------------------------------------------------------------- the wrapper


async def test_failing_job_is_logged_rate_limited_and_counted(
    job_log: tuple[Records, ManualClock],
) -> None:
    """A job raising three times in a row logs one line (rate-limited) and counts three failures."""
    handler, _ = job_log
    scheduler = CleanupScheduler()

    async def boom() -> None:
        raise RuntimeError("disk on fire")

    scheduler.add(JobSpec("boom", "boom", boom, IntervalTrigger(hours=1)))
    results = [await scheduler.run("boom") for _ in range(3)]
    assert results == [False, False, False]
    assert scheduler.stats["boom"].failures == 3
    assert scheduler.stats["boom"].last_error == "RuntimeError: disk on fire"
    assert len(handler.records) == 1
    assert "cleanup job boom failed: RuntimeError: disk on fire" in handler.records[0].getMessage()


async def test_scheduler_keeps_running_after_a_job_fails() -> None:
    """After one job raises inside APScheduler, the scheduler still runs the next job."""
    scheduler = CleanupScheduler()
    failed = asyncio.Event()
    ticked = asyncio.Event()

    async def boom() -> None:
        failed.set()
        raise RuntimeError("boom")

    async def tick() -> None:
        ticked.set()

    scheduler.add(JobSpec("boom", "boom", boom, IntervalTrigger(hours=1)))
    scheduler.add(JobSpec("tick", "tick", tick, IntervalTrigger(hours=1)))
    scheduler.start()
    try:
        scheduler.job("boom").modify(next_run_time=datetime.now(UTC))
        async with asyncio.timeout(5):
            await failed.wait()
        scheduler.job("tick").modify(next_run_time=datetime.now(UTC))
        async with asyncio.timeout(5):
            await ticked.wait()
        assert scheduler.running
        assert scheduler.stats["boom"].failures == 1
        assert scheduler.stats["tick"].failures == 0
    finally:
        await scheduler.shutdown()


async def test_shutdown_waits_for_a_running_job() -> None:
    """Shutdown lets a running job finish (within the deadline) and reports a clean stop."""
    scheduler = CleanupScheduler(shutdown_timeout=10)
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[bool] = []

    async def slow() -> None:
        started.set()
        await release.wait()
        finished.append(True)

    scheduler.add(JobSpec("slow", "slow", slow, IntervalTrigger(hours=1)))
    scheduler.start()
    scheduler.job("slow").modify(next_run_time=datetime.now(UTC))
    async with asyncio.timeout(5):
        await started.wait()
    stopping = asyncio.create_task(scheduler.shutdown())
    await asyncio.sleep(0)
    assert not stopping.done()
    release.set()
    assert await stopping is True
    assert finished == [True]


async def test_shutdown_cancels_a_job_past_the_deadline() -> None:
    """A job still running at the deadline is cancelled and shutdown reports it."""
    scheduler = CleanupScheduler(shutdown_timeout=0.05)
    started = asyncio.Event()
    outcome: list[str] = []

    async def stuck() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    scheduler.add(JobSpec("stuck", "stuck", stuck, IntervalTrigger(hours=1)))
    scheduler.start()
    scheduler.job("stuck").modify(next_run_time=datetime.now(UTC))
    async with asyncio.timeout(5):
        await started.wait()
    assert await scheduler.shutdown() is False
    assert outcome == ["cancelled"]


def test_duplicate_job_ids_are_refused() -> None:
    """Registering the same job id twice is a programming error."""
    scheduler = CleanupScheduler()

    async def noop() -> None:
        return None

    scheduler.add(JobSpec("a", "a", noop, IntervalTrigger(hours=1)))
    with pytest.raises(ValueError, match="already registered"):
        scheduler.add(JobSpec("a", "a", noop, IntervalTrigger(hours=1)))


# --------------------------------------------------------------------------- wiring


def _seconds(trigger: object) -> float:
    assert isinstance(trigger, IntervalTrigger)
    return trigger.interval.total_seconds()


def _cron(trigger: object) -> tuple[str, str]:
    assert isinstance(trigger, CronTrigger)
    fields = {f.name: str(f) for f in trigger.fields}
    return fields["hour"], fields["minute"]


async def test_application_registers_every_job_with_configured_triggers(
    world: World, start_app: StartApp
) -> None:
    """The running app schedules every job with the interval from its settings and a next run time."""
    app = await start_app(
        world,
        supervisor_check_interval_seconds=31,
        memory_check_interval_seconds=32,
        memory_log_interval_seconds=121,
        stream_sweep_interval_seconds=601,
        cache_sweep_interval_seconds=901,
        gc_interval_seconds=3601,
        log_cache_cleanup_interval_seconds=1801,
        daily_cleanup_at="03:17",
        job_misfire_grace_seconds=45,
    )
    scheduler = app.services.scheduler
    assert scheduler is not None
    assert scheduler.running
    expected_intervals = {
        "fleet_health": 31,
        "memory_check": 32,
        "memory_log": 121,
        "stream_sweep": 601,
        "file_cache_sweep": 901,
        "gc_report": 3601,
    }
    for job_id, seconds in expected_intervals.items():
        job = scheduler.job(job_id)
        assert _seconds(job.trigger) == seconds, job_id
    for job_id in ("memory_log_cleanup", "bandwidth_cleanup"):
        assert _cron(scheduler.job(job_id).trigger) == ("3", "17")
    ids = {row.name for row in scheduler.jobs()}
    assert len(ids) >= 8
    now = datetime.now(UTC)
    for job_id in [*expected_intervals, "memory_log_cleanup", "bandwidth_cleanup"]:
        job = scheduler.job(job_id)
        assert job.max_instances == 1
        assert job.coalesce is True
        assert job.misfire_grace_time == 45
        assert job.next_run_time is not None
        assert job.next_run_time > now
        assert job.next_run_time - now <= timedelta(days=1)


async def test_logger_cache_job_is_registered_when_logging_has_a_filter(
    world: World, start_app: StartApp
) -> None:
    """With a rate limiter on a root handler (as __main__ sets up), its cleanup job is scheduled."""
    handler = Records()
    smart = install(handler, max_keys=50)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        app = await start_app(world, log_cache_cleanup_interval_seconds=1799)
    finally:
        root.removeHandler(handler)
    assert app.services.log_filter is smart
    scheduler = app.services.scheduler
    assert scheduler is not None
    assert _seconds(scheduler.job("logger_cache_cleanup").trigger) == 1799
    assert await scheduler.run("memory_log")
    lines = "".join(p.read_text() for p in app.settings.log_dir.glob("memory_*.log"))
    assert "--- PERIODIC [Idle]" in lines
