"""Tests for utils.memory_monitor: injected clock and sampler, files under tmp_path, no sleeps."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from utils.memory_monitor import (
    IDLE,
    LogLine,
    MemoryLog,
    MemorySample,
    format_summary,
    main,
    parse_line,
    psutil_sample,
    summarise,
)

SAMPLE_LOG = Path(__file__).parent / "data" / "memory_sample.log"

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
        f"2025-11-16 08:30:00 >>> TASK START [Name] {TAIL}",
        f"2025-11-16 08:31:10 <<< TASK END [Name] {TAIL}",
        f"2025-11-16 08:32:00 --- PERIODIC [Idle] {TAIL}",
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
    assert read_lines(day1) == [f"2025-11-16 23:59:30 --- PERIODIC [Idle] {TAIL}"]
    assert read_lines(day2) == [f"2025-11-17 00:00:10 --- PERIODIC [Idle] {TAIL}"]


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
        LogLine(clock.now, kind, "Odd [name] | x", 245.3, 512.1, 1024.5, 50.2)
        for kind in (">>>", "---", "<<<")
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


def sample_lines() -> list[LogLine]:
    """Parsed lines of the committed sample log, junk skipped."""
    text = SAMPLE_LOG.read_text(encoding="utf-8")
    return [p for p in map(parse_line, text.splitlines()) if p is not None]


def test_sample_log_parses_with_junk_skipped() -> None:
    """The sample holds 55 valid lines among a truncated line, a blank and a note."""
    assert len(SAMPLE_LOG.read_text(encoding="utf-8").splitlines()) == 58
    assert len(sample_lines()) == 55


def test_summarise_sample_peaks() -> None:
    """The top 10 peaks of the sample are the backup and nested report lines, highest first."""
    peaks = summarise(sample_lines()).peaks
    assert [(p.at.strftime("%m-%d %H:%M"), p.kind, p.task, p.rss_mb) for p in peaks] == [
        ("11-17 09:58", "<<<", "Backup", 421.9),
        ("11-16 09:52", "<<<", "Backup", 405.2),
        ("11-17 09:50", "---", "Backup", 398.7),
        ("11-17 09:47", "<<<", "StatsReport", 380.3),
        ("11-16 09:45", "---", "Backup", 377.9),
        ("11-17 09:45", "---", "StatsReport", 371.4),
        ("11-17 09:40", ">>>", "StatsReport", 352.0),
        ("11-17 09:30", "---", "Backup", 330.6),
        ("11-16 09:30", "---", "Backup", 318.4),
        ("11-17 14:03", "<<<", "StatsReport", 263.1),
    ]


def test_summarise_sample_per_task() -> None:
    """Per-task counts include start, end and periodic lines; avg and max match hand sums."""
    tasks = {t.task: t for t in summarise(sample_lines()).tasks}
    assert set(tasks) == {"Backup", "StatsReport", "CleanupCache", "Idle"}
    expected = {
        "Backup": (8, 2745.7 / 8, 421.9),
        "StatsReport": (7, 2130.8 / 7, 380.3),
        "CleanupCache": (4, 1003.4 / 4, 256.8),
        "Idle": (36, 250.686111, 262.9),
    }
    for name, (count, avg, peak) in expected.items():
        stats = tasks[name]
        assert (stats.count, stats.max_rss_mb) == (count, peak), name
        assert stats.avg_rss_mb == pytest.approx(avg, abs=1e-4), name


def test_summarise_sample_flags_only_rising_day() -> None:
    """2025-11-16 idle RSS climbs about 7% and is flagged; the flat 2025-11-17 is not."""
    days = {d.day: d for d in summarise(sample_lines()).days}
    rising, flat = days[date(2025, 11, 16)], days[date(2025, 11, 17)]
    assert (len(rising.idle_rss_mb), len(flat.idle_rss_mb)) == (18, 18)
    assert (rising.first_third_median, rising.last_third_median) == pytest.approx((242.1, 259.25))
    assert (flat.first_third_median, flat.last_third_median) == pytest.approx((250.95, 250.85))
    assert [d.day for d in days.values() if d.rising] == [date(2025, 11, 16)]


def at(hour: int, minute: int = 0, day: int = 16) -> datetime:
    """Timestamp on a fixed November 2025 day."""
    return datetime(2025, 11, day, hour, minute)


def idle(when: datetime, rss: float) -> LogLine:
    """An Idle periodic line with the given RSS."""
    return LogLine(when, "---", IDLE, rss, 512.0, 1000.0, 50.0)


@pytest.mark.parametrize(
    ("values", "rising"),
    [
        ([100, 100, 100, 106, 106, 106], True),  # +6% over six samples
        ([100, 100, 100, 105, 105, 105], False),  # exactly +5% is not "more than"
        ([100, 101, 104, 106, 107], False),  # too few samples, however steep
        ([100, 100, 300, 100, 100, 100], False),  # a spike in the middle does not count
        ([106, 106, 106, 100, 100, 100], False),  # falling
    ],
)
def test_rising_rule(values: list[float], rising: bool) -> None:
    """The rule needs six samples and a last-third median more than 5% above the first."""
    (trend,) = summarise([idle(at(8 + i), v) for i, v in enumerate(values)]).days
    assert trend.rising is rising


def test_rising_rule_uses_time_order_and_ignores_busy_lines() -> None:
    """Idle samples are ordered by time, and task or start/end lines never enter the trend."""
    lines = [idle(at(8 + i), v) for i, v in reversed(list(enumerate([100, 100, 100, 110, 110])))]
    lines.append(LogLine(at(7), "---", "Backup", 50.0, 512.0, 1000.0, 50.0))
    lines.append(LogLine(at(7), ">>>", IDLE, 50.0, 512.0, 1000.0, 50.0))
    lines.append(idle(at(20), 110))
    (trend,) = summarise(lines).days
    assert trend.idle_rss_mb == (100, 100, 100, 110, 110, 110)
    assert trend.rising is True


def test_summarise_top_limits_and_ties_keep_input_order() -> None:
    """top bounds the peaks; equal RSS keeps the earlier line first."""
    lines = [idle(at(8), 10), idle(at(9), 30), idle(at(10), 30), idle(at(11), 20)]
    peaks = summarise(lines, top=2).peaks
    assert [p.at.hour for p in peaks] == [9, 10]
    assert summarise(lines, top=0).peaks == ()


def test_format_summary_sample_text() -> None:
    """The text output has the three titled tables and marks only the rising day."""
    text = format_summary(summarise(sample_lines()))
    for title in ("Top 10 RSS peaks", "Per task", "Idle RSS trend by day"):
        assert f"\n{title}\n" in text
    trend_rows = [line for line in text.splitlines() if line.startswith("2025-11-1")]
    assert len(trend_rows) == 2
    assert trend_rows[0].endswith("RISING")
    assert "+7.1%" in trend_rows[0]
    assert trend_rows[1].endswith("+0.0%  flat")
    rows = [line.split() for line in text.splitlines()]
    assert ["1", "2025-11-17", "09:58:03", "<<<", "Backup", "421.9"] in rows
    assert ["Backup", "8", "343.2", "421.9"] in rows
    assert ["Idle", "36", "250.7", "262.9"] in rows


def test_format_summary_empty() -> None:
    """An empty input renders placeholders instead of failing."""
    text = format_summary(summarise([]))
    assert text.count("(no samples)") == 3


# --------------------------------------------------------------------------- CLI


def test_main_prints_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """main() on the sample prints the summary, notes skipped junk on stderr and returns 0."""
    assert main([str(SAMPLE_LOG)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("Parsed 55 lines\n")
    assert captured.err == "memlog: skipped 2 unparseable lines\n"


def test_main_missing_file_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file gives exit status 2 and a single-line message, with no traceback."""
    missing = tmp_path / "nope.log"
    assert main([str(SAMPLE_LOG), str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"memlog: cannot read {missing}: ")
    assert "Traceback" not in captured.err


def test_main_directory_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Passing a directory is an unreadable file, not a crash."""
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("memlog: cannot read ")


def test_main_without_files_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No arguments prints usage and returns 2."""
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
