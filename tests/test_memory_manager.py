"""Tests for utils.memory_manager: levels, hysteresis, alerts, GC, loop lag, the report text.

The psutil process and the system-memory reader are injected (``FakeProcess``/``fake_system``), so
RSS is set directly; nothing else is faked.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from routes.errors import refusal_for
from streambot.errors import ServiceBusy
from streambot.heap import TrimResult
from utils.memory_manager import (
    GC_MIN_INTERVAL,
    MIB,
    CacheRow,
    ClientRow,
    GcResult,
    JobRow,
    MemoryFigures,
    MemoryLevel,
    MemoryManager,
    ReportData,
    format_report,
)

from .clock import ManualClock
from .helpers import FakeProcess


def fake_system(total: int = 4096 * MIB, available: int = 1024 * MIB) -> Callable[[], Any]:
    return lambda: SimpleNamespace(total=total, available=available)


class Alerts:
    """An async notifier that records what it was asked to send."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.event = asyncio.Event()

    async def __call__(self, text: str) -> int:
        self.texts.append(text)
        self.event.set()
        return 1


def make(rss_mb: float = 10, **kw: Any) -> tuple[MemoryManager, FakeProcess]:
    process = FakeProcess(rss=int(rss_mb * MIB))
    kw.setdefault("limit_mb", 100)
    kw.setdefault("system", fake_system())
    return MemoryManager(process=process, **kw), process


class TestLevels:
    def test_levels_follow_percentages_of_the_limit(self) -> None:
        """With a 100 MB limit, 79.9 MB is ok, 80 MB warning and 95 MB critical."""
        manager, _ = make()
        assert manager.level_of(int(79.9 * MIB)) is MemoryLevel.OK
        assert manager.level_of(80 * MIB) is MemoryLevel.WARNING
        assert manager.level_of(int(94.9 * MIB)) is MemoryLevel.WARNING
        assert manager.level_of(95 * MIB) is MemoryLevel.CRITICAL

    def test_zero_limit_means_the_machines_memory(self) -> None:
        """MEMORY_LIMIT_MB=0 takes the system's total memory as the limit."""
        manager, _ = make(limit_mb=0, system=fake_system(total=2000 * MIB))
        assert manager.limit == 2000 * MIB
        assert manager.thresholds() == (1600 * MIB, 1900 * MIB)

    @pytest.mark.parametrize(("warning", "critical"), [(95, 80), (80, 80), (0, 50), (50, 101)])
    def test_inconsistent_levels_are_rejected(self, warning: float, critical: float) -> None:
        """Warning must be above 0 and below critical, critical at most 100."""
        with pytest.raises(ValueError, match="warning_percent"):
            make(warning_percent=warning, critical_percent=critical)

    def test_sample_reads_process_and_system(self) -> None:
        """sample() reports the injected process and system figures."""
        manager, _ = make(rss_mb=64, system=fake_system(total=4000 * MIB, available=1000 * MIB))
        figures = manager.sample()
        assert figures.rss == 64 * MIB
        assert figures.vms == 900 * MIB
        assert figures.process_percent == 2.5
        assert figures.threads == 9
        assert figures.system_available == 1000 * MIB
        assert figures.system_free_percent == pytest.approx(25.0)

    def test_real_process_sample(self) -> None:
        """Without injection the manager reads this very process through psutil."""
        manager = MemoryManager(limit_mb=0)
        figures = manager.sample()
        assert figures.rss > 0
        assert figures.vms >= figures.rss
        assert figures.threads >= 1
        assert manager.limit > 0


class TestShedding:
    async def test_critical_sheds_until_below_warning(self) -> None:
        """At critical new downloads get 503 + Retry-After; at warning still; below warning never."""
        manager, process = make(rss_mb=50, retry_after=42)
        await manager.admit(1)  # ok: admitted
        process.rss = 96 * MIB
        with pytest.raises(ServiceBusy) as exc:
            await manager.admit(1)
        assert refusal_for(exc.value).status == 503
        assert exc.value.retry_after == 42
        process.rss = 85 * MIB  # fell to warning: hysteresis keeps shedding
        with pytest.raises(ServiceBusy):
            await manager.admit(1)
        process.rss = int(79.5 * MIB)
        await manager.admit(1)
        assert manager.shedding is False
        assert manager.shed_requests == 2

    async def test_warning_alone_does_not_shed(self) -> None:
        """Rising to the warning level (not critical) admits downloads."""
        manager, _ = make(rss_mb=90)
        await manager.admit(1)
        assert manager.shedding is False

    async def test_admins_told_and_log_written_once_per_incident(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Many refused requests in one incident make one alert and one log line; a new incident another."""
        alerts = Alerts()
        manager, process = make(rss_mb=97, notify=alerts)
        caplog.set_level(logging.WARNING, logger="utils.memory_manager")
        for _ in range(5):
            with pytest.raises(ServiceBusy):
                await manager.admit(1)
        await manager.close()
        assert len(alerts.texts) == 1
        assert "Memory critical" in alerts.texts[0]
        assert "97 MB of 100 MB" in alerts.texts[0]
        critical_lines = [r for r in caplog.records if "Memory critical" in r.getMessage()]
        assert len(critical_lines) == 1

        process.rss = 10 * MIB
        await manager.check()
        recovered = [r for r in caplog.records if "back below the warning" in r.getMessage()]
        assert len(recovered) == 1

        process.rss = 99 * MIB
        assert await manager.check() is MemoryLevel.CRITICAL
        await manager.close()
        assert len(alerts.texts) == 2
        assert manager.incidents == 2

    async def test_failing_notifier_is_logged_not_raised(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An alert that cannot be sent is logged; the request still gets its 503."""

        async def broken(text: str) -> None:
            raise OSError("network down")

        manager, _ = make(rss_mb=99, notify=broken)
        with pytest.raises(ServiceBusy):
            await manager.admit(1)
        await manager.close()
        assert any("memory alert to admins failed" in r.getMessage() for r in caplog.records)


class Garbage:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


class TestGc:
    async def test_collect_reports_objects_and_rss_freed(self) -> None:
        """collect() counts the unreachable cycles it found and the RSS difference."""
        manager, process = make()
        process.queued = [200 * MIB, 150 * MIB]  # before, after
        gc.collect()
        for _ in range(100):
            Garbage()
        result = await manager.collect("test")
        assert result.collected >= 100
        assert result.freed == 50 * MIB
        assert result.reason == "test"
        assert manager.last_gc is result

    async def test_freed_is_never_negative(self) -> None:
        """RSS that grew during a collection counts as nothing freed."""
        manager, process = make()
        process.queued = [100 * MIB, 110 * MIB]
        assert (await manager.collect()).freed == 0

    async def test_check_collects_above_threshold_at_most_every_interval(self) -> None:
        """Above GC_THRESHOLD_MB a check collects, but not again within GC_MIN_INTERVAL."""
        clock = ManualClock()
        manager, process = make(rss_mb=30, gc_threshold_mb=40, clock=clock)
        await manager.check()
        assert manager.last_gc is None
        process.rss = 45 * MIB
        await manager.check()
        first = manager.last_gc
        assert first is not None
        assert first.reason == "threshold"
        clock.now += GC_MIN_INTERVAL - 1
        await manager.check()
        assert manager.last_gc is first
        clock.now += 1
        await manager.check()
        assert manager.last_gc is not first

    async def test_threshold_zero_never_collects(self) -> None:
        """GC_THRESHOLD_MB=0 turns threshold collections off."""
        manager, _ = make(rss_mb=99, gc_threshold_mb=0)
        await manager.check()
        assert manager.last_gc is None


class TestLoopLag:
    async def test_lag_measures_a_blocked_loop(self) -> None:
        """A callback that blocks the loop for 50 ms shows up as at least 50 ms of lag."""
        manager, _ = make()
        loop = asyncio.get_running_loop()
        loop.call_soon(time.sleep, 0.05)
        lag = await manager.loop_lag()
        assert lag >= 0.05
        assert manager.last_lag == lag

    async def test_idle_loop_lag_is_a_small_number(self) -> None:
        """On an idle loop the measurement is a non-negative float (no busy wait involved)."""
        manager, _ = make()
        lag = await manager.loop_lag()
        assert lag >= 0.0


def report_data(**changes: Any) -> ReportData:
    now = datetime(2025, 11, 16, 8, 30, 0)
    base = ReportData(
        figures=MemoryFigures(
            rss=int(245.3 * MIB),
            vms=int(512.1 * MIB),
            process_percent=6.1,
            system_total=4096 * MIB,
            system_available=int(1024.5 * MIB),
            threads=12,
            tasks=45,
        ),
        level=MemoryLevel.OK,
        shedding=False,
        limit=1024 * MIB,
        loop_lag=0.0004,
        uptime=2 * 86400 + 3 * 3600 + 14 * 60,
        active_streams=3,
        clients=[
            ClientRow("@streambot_demo_bot", True, "healthy", 2, 0),
            ClientRow("@streambot_worker1_bot", False, "restarting", 1, 2),
        ],
        healthy=1,
        caches=[CacheRow("File info", 12, 1024), CacheRow("Logger keys", 40, 1000)],
        jobs=[
            JobRow("fleet check", now + timedelta(seconds=25)),
            JobRow("gc + report", now + timedelta(minutes=30)),
        ],
        last_gc=GcResult(
            at=now.timestamp() - 60,
            reason="scheduled",
            collected=1234,
            rss_before=300 * MIB,
            rss_after=int(296.9 * MIB),
            duration=0.012,
        ),
        now=now,
    )
    for key, value in changes.items():
        object.__setattr__(base, key, value)
    return base


class TestReportFormat:
    def test_report_is_plain_short_aligned_lines(self) -> None:
        """Plain text (no markup to be misparsed), no line longer than 36 columns, values aligned."""
        text = format_report(report_data())
        assert "`" not in text
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= 36
        block = lines[2:12]
        starts = {line.index(line.split("  ", 1)[1].strip()) for line in block}
        assert len(starts) == 1, block

    def test_report_content(self) -> None:
        """Every figure the admins asked for is in the text, in readable units."""
        text = format_report(report_data())
        for expected in (
            "StreamBot memory: OK",
            "In RAM (RSS)  245.3 MB",
            "Virtual       512.1 MB",
            "Share         6.1 % of RAM",
            "Limit         1024.0 MB (24 % used)",
            "Machine free  1024.5 MB (25 %)",
            "Loop delay    0.4 ms",
            "Threads       12",
            "Async tasks   45",
            "Streams       3",
            "Uptime        2d 3h 14m",
            "Levels (of the limit)",
            "Warning   80 % = 819.2 MB",
            "  refusing stops below it",
            "Critical  95 % = 972.8 MB",
            "  new downloads get 503,",
            "  admins get one message",
            "Clients 1/2 healthy",
            "@streambot_demo_bot (main)",
            "  healthy, 2 streams",
            "@streambot_worker1_bot",
            "  restarting, 1 stream, 2 restarts",
            "File info    12 / 1024",
            "Logger keys  40 / 1000",
            "fleet check  08:30:25  in 25s",
            "gc + report  09:00:00  in 30m 0s",
            "  1234 objects, 3.1 MB freed, 12 ms",
        ):
            assert expected in text, expected

    def test_the_last_heap_trim_is_shown_when_there_was_one(self) -> None:
        """After the streams drained, the trim's give-back reads like the GC's."""
        assert "heap trim" not in format_report(report_data())
        at = datetime(2025, 11, 16, 8, 29, 0).timestamp()
        trim = TrimResult(at, True, 150 * MIB, int(102.5 * MIB), 0.004)
        lines = format_report(report_data(last_trim=trim)).splitlines()
        i = next(i for i, line in enumerate(lines) if line.startswith("Last heap trim 08:29:00"))
        assert lines[i + 1] == "  47.5 MB given back, 4 ms"
        assert max(len(line) for line in lines) <= 36

    def test_shedding_and_missing_pieces(self) -> None:
        """Shedding is shown on the first line; no GC yet and no logger filter read plainly."""
        text = format_report(
            report_data(
                shedding=True,
                level=MemoryLevel.CRITICAL,
                last_gc=None,
                caches=[CacheRow("File info", 12, 1024)],
            )
        )
        assert "StreamBot memory: CRITICAL  (downloads paused)" in text
        assert "Last GC: not yet" in text
        assert "Logger keys" not in text
