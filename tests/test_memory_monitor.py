"""Tests for utils.memory_monitor: injected clock and sampler, files under tmp_path, no sleeps."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from streambot.memlog import LogLine, parse_line
from utils.memory_monitor import IDLE, STREAMING, MemoryLog, MemorySample, psutil_sample

FIXED = MemorySample(rss_mb=245.3, vms_mb=512.1, available_mb=1024.5, free_percent=50.2)
TAIL = "| RSS:  245.3 MB | VMS:  512.1 MB | System Available: 1024.5 MB (50.2% free)"


class FakeClock:
    """Wall clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        """Move forward by a timedelta given as keyword arguments."""
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> FakeClock:
    """Clock starting at the moment used in the format examples."""
    return FakeClock(datetime(2025, 11, 16, 8, 30, 0))


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    """A multi-thread executor, so ordering is not an accident of a single worker."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


@pytest.fixture
def memlog(tmp_path: Path, clock: FakeClock, executor: ThreadPoolExecutor) -> MemoryLog:
    """MemoryLog writing fixed figures into a not-yet-existing directory."""
    return MemoryLog(tmp_path / "logs", sampler=lambda: FIXED, now=clock, executor=executor)


def read_lines(path: Path) -> list[str]:
    """Lines of a log file without newlines."""
    return path.read_text(encoding="utf-8").splitlines()


# --------------------------------------------------------------------------- writer


async def test_exact_line_format_for_each_kind(memlog: MemoryLog, clock: FakeClock) -> None:
    """Start, end and periodic lines match the documented format character for character."""
    await memlog.mark_start("Name")
    clock.advance(seconds=70)
    await memlog.mark_end("Name")
    clock.advance(seconds=50)
    await memlog.periodic()
    assert read_lines(memlog.path_for(date(2025, 11, 16))) == [
        f"2025-11-16 08:30:00 >>> TASK START [Name] {TAIL} | Streams: 0",
        f"2025-11-16 08:31:10 <<< TASK END [Name] {TAIL} | Streams: 0 | Change: +0.0 MB",
        f"2025-11-16 08:32:00 --- PERIODIC [Idle] {TAIL} | Streams: 0",
    ]


async def test_end_line_carries_rss_change_and_lines_carry_streams(
    tmp_path: Path, clock: FakeClock
) -> None:
    """END reports RSS minus its START's RSS (nested runs pair up); every line has the stream
    count; a periodic line with streams but no job says Streaming, Idle only with neither."""
    rss = iter([100.0, 110.0, 112.5, 150.0, 104.0, 104.0])
    streams = iter([0, 0, 3, 3, 3, 0])
    log = MemoryLog(
        tmp_path,
        sampler=lambda: MemorySample(next(rss), 500.0, 1000.0, 50.0),
        now=clock,
        active_streams=lambda: next(streams),
    )
    await log.mark_start("Backup")  # 100.0, streams 0
    await log.mark_start("Backup")  # 110.0 (a second run of the same job)
    await log.mark_end("Backup")  # 112.5: the inner run, +2.5
    await log.mark_end("Backup")  # 150.0: the outer run, +50.0
    # active_task consults the stream count too, so read it where the writer does
    await log.periodic()  # streams 3 -> Streaming
    await log.periodic()  # streams 0 -> Idle
    lines = [parse_line(text) for text in read_lines(log.path_for(clock.now.date()))]
    assert [(ln.kind, ln.task, ln.streams, ln.change_mb) for ln in lines if ln] == [
        (">>>", "Backup", 0, None),
        (">>>", "Backup", 0, None),
        ("<<<", "Backup", 3, 2.5),
        ("<<<", "Backup", 3, 50.0),
        ("---", STREAMING, 3, None),
        ("---", IDLE, 0, None),
    ]


def test_path_for_names_file_by_date(tmp_path: Path) -> None:
    """path_for builds memory_YYYYMMDD.log inside the log dir."""
    log = MemoryLog(tmp_path, sampler=lambda: FIXED)
    assert log.path_for(date(2025, 1, 2)) == tmp_path / "memory_20250102.log"


async def test_log_dir_created_on_first_write(memlog: MemoryLog) -> None:
    """The directory does not exist until the first line is written."""
    assert not memlog.log_dir.exists()
    await memlog.periodic()
    assert memlog.log_dir.is_dir()


async def test_context_manager_writes_end_when_body_raises(
    memlog: MemoryLog, clock: FakeClock
) -> None:
    """The <<< line is written even if the body raises, and the exception propagates."""

    async def failing() -> None:
        async with memlog.task("Backup"):
            clock.advance(seconds=5)
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await failing()
    parsed = [parse_line(line) for line in read_lines(memlog.path_for(clock.now.date()))]
    assert [(p.kind, p.task) for p in parsed if p is not None] == [
        (">>>", "Backup"),
        ("<<<", "Backup"),
    ]
    assert memlog.active_task == IDLE


async def test_context_manager_writes_end_when_cancelled(memlog: MemoryLog) -> None:
    """Cancelling the task inside the block still writes the <<< line."""
    entered = asyncio.Event()

    async def job() -> None:
        async with memlog.task("Slow"):
            entered.set()
            await asyncio.Event().wait()  # never set: only cancellation ends this

    runner = asyncio.create_task(job())
    await entered.wait()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    await memlog.flush()
    kinds = [line.split()[2] for line in read_lines(memlog.path_for(date(2025, 11, 16)))]
    assert kinds == [">>>", "<<<"]


async def test_decorator_form(memlog: MemoryLog) -> None:
    """@log.task wraps an async function, keeps its name and result, and logs both ends."""

    @memlog.task("Report")
    async def report(x: int) -> int:
        """Doubles x."""
        assert memlog.active_task == "Report"
        return x * 2

    assert report.__name__ == "report"
    assert await report(21) == 42
    assert await report(1) == 2
    lines = read_lines(memlog.path_for(date(2025, 11, 16)))
    assert [line.split(" [")[0][20:] for line in lines] == [
        ">>> TASK START",
        "<<< TASK END",
        ">>> TASK START",
        "<<< TASK END",
    ]
    assert all("[Report]" in line for line in lines)


async def test_periodic_shows_active_task_then_idle(memlog: MemoryLog) -> None:
    """Periodic lines name the most recently started active task, then fall back, then Idle."""
    await memlog.mark_start("Backup")
    await memlog.periodic()
    await memlog.mark_start("Stats")
    await memlog.periodic()
    await memlog.mark_end("Stats")
    await memlog.periodic()
    await memlog.mark_end("Backup")
    await memlog.periodic()
    periodic = [
        line.split("[")[1].split("]")[0]
        for line in read_lines(memlog.path_for(date(2025, 11, 16)))
        if " --- " in line
    ]
    assert periodic == ["Backup", "Stats", "Backup", "Idle"]


async def test_daily_file_switch_at_midnight(memlog: MemoryLog, clock: FakeClock) -> None:
    """Lines before and after midnight go to two files named by their local date."""
    clock.now = datetime(2025, 11, 16, 23, 59, 30)
    await memlog.periodic()
    clock.advance(seconds=40)
    await memlog.periodic()
    day1, day2 = memlog.path_for(date(2025, 11, 16)), memlog.path_for(date(2025, 11, 17))
    assert sorted(p.name for p in memlog.log_dir.iterdir()) == [
        "memory_20251116.log",
        "memory_20251117.log",
    ]
    assert read_lines(day1) == [f"2025-11-16 23:59:30 --- PERIODIC [Idle] {TAIL} | Streams: 0"]
    assert read_lines(day2) == [f"2025-11-17 00:00:10 --- PERIODIC [Idle] {TAIL} | Streams: 0"]


async def test_concurrent_writes_keep_call_order(memlog: MemoryLog, clock: FakeClock) -> None:
    """Many concurrent marks on a multi-thread executor are written in call order."""
    names = [f"T{i:03d}" for i in range(200)]
    await asyncio.gather(*(memlog.mark_start(name) for name in names))
    written = [
        line.split("[")[1].split("]")[0] for line in read_lines(memlog.path_for(clock.now.date()))
    ]
    assert written == names


async def test_full_queue_drops_and_counts(tmp_path: Path, clock: FakeClock) -> None:
    """Lines beyond max_line_queue are dropped and counted instead of queued without bound."""
    log = MemoryLog(tmp_path, sampler=lambda: FIXED, now=clock, max_line_queue=2)
    # All six calls run before the writer task gets its first turn: two fit, four are dropped.
    await asyncio.gather(*(log.periodic() for _ in range(6)))
    assert log.dropped_lines == 4
    assert len(read_lines(log.path_for(clock.now.date()))) == 2
    # Once drained, the queue accepts lines again.
    await log.periodic()
    assert len(read_lines(log.path_for(clock.now.date()))) == 3


async def test_write_error_is_logged_not_raised(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An unwritable log dir logs a warning and does not fail the measured task."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")
    log = MemoryLog(blocker / "logs", sampler=lambda: FIXED, now=clock)
    async with log.task("Backup"):
        pass
    assert "cannot write" in caplog.text


async def test_newline_in_task_name_stays_one_line(tmp_path: Path, clock: FakeClock) -> None:
    """A task name with a newline is flattened so one check stays one parseable line."""
    await MemoryLog(tmp_path, sampler=lambda: FIXED, now=clock).mark_start("a\nb")
    (line,) = read_lines(tmp_path / "memory_20251116.log")
    parsed = parse_line(line)
    assert parsed is not None
    assert parsed.task == "a b"


def test_psutil_sample_reports_plausible_figures() -> None:
    """The real sampler returns positive RSS/VMS and a free percentage within 0..100."""
    sample = psutil_sample()
    assert sample.rss_mb > 0
    assert sample.vms_mb >= sample.rss_mb
    assert sample.available_mb > 0
    assert 0 < sample.free_percent <= 100


# --------------------------------------------------------------------------- cleanup


async def test_cleanup_old_deletes_only_old_dated_files(
    memlog: MemoryLog, clock: FakeClock
) -> None:
    """Files dated before the cutoff go; newer ones, junk names and other files stay."""
    clock.now = datetime(2025, 11, 16, 3, 0)
    log_dir = memlog.log_dir
    log_dir.mkdir()
    old = [log_dir / "memory_20251101.log", log_dir / "memory_20251108.log"]
    kept = [
        log_dir / "memory_20251109.log",  # exactly keep_days old: kept
        log_dir / "memory_20251116.log",
        log_dir / "memory_20251399.log",  # right shape, not a date
        log_dir / "memory_20251101.log.gz",
        log_dir / "bot.log",
        log_dir / "notes_20200101.log",
    ]
    for path in old + kept:
        path.write_text("x\n", encoding="utf-8")
    # mtime must not matter: make an old-named file look brand new and a new one ancient.
    os.utime(old[0], (clock.now.timestamp(), clock.now.timestamp()))
    os.utime(kept[0], (0, 0))
    deleted = await memlog.cleanup_old(keep_days=7)
    assert deleted == old
    assert sorted(log_dir.iterdir()) == sorted(kept)


async def test_cleanup_old_missing_dir_returns_empty(memlog: MemoryLog) -> None:
    """Cleaning a log dir that was never created is a no-op."""
    assert await memlog.cleanup_old(keep_days=0) == []


async def test_cleanup_old_rejects_negative_keep_days(memlog: MemoryLog) -> None:
    """A negative retention would delete today's file, so it is refused."""
    with pytest.raises(ValueError, match="keep_days"):
        await memlog.cleanup_old(keep_days=-1)


# --------------------------------------------------------------------------- parsing


async def test_parse_line_round_trips_written_lines(memlog: MemoryLog, clock: FakeClock) -> None:
    """Every line MemoryLog writes parses back to the same time, kind, task and figures."""
    await memlog.mark_start("Odd [name] | x")
    await memlog.periodic()
    await memlog.mark_end("Odd [name] | x")
    parsed = [parse_line(line) for line in read_lines(memlog.path_for(clock.now.date()))]
    assert parsed == [
        LogLine(clock.now, kind, "Odd [name] | x", 245.3, 512.1, 1024.5, 50.2, 0, change)
        for kind, change in ((">>>", None), ("---", None), ("<<<", 0.0))
    ]


def test_parse_line_handles_wide_numbers() -> None:
    """RSS above 9999.9 MB (no padding left) still parses."""
    line = (
        "2025-11-16 08:30:00 --- PERIODIC [Idle] | RSS: 12345.6 MB | VMS: 99999.0 MB"
        " | System Available: 80.0 MB (0.5% free)\n"
    )
    parsed = parse_line(line)
    assert parsed is not None
    assert (parsed.rss_mb, parsed.vms_mb, parsed.free_percent) == (12345.6, 99999.0, 0.5)


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "Traceback (most recent call last):",
        "2025-11-16 18:10:00 --- PERIODIC [Idle] | RSS:  26",
        f"2025-13-16 08:30:00 --- PERIODIC [Idle] {TAIL}",
        f"2025-11-16 08:30:00 >>> PERIODIC [Idle] {TAIL}",
        f"2025-11-16 08:30:00 *** PERIODIC [Idle] {TAIL}",
        f"garbage 2025-11-16 08:30:00 --- PERIODIC [Idle] {TAIL}",
    ],
)
def test_parse_line_returns_none_for_junk(junk: str) -> None:
    """Truncated, malformed or mislabelled lines yield None instead of raising."""
    assert parse_line(junk) is None


# --------------------------------------------------------------------------- summary
