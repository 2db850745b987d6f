"""The cleanup scheduler: one APScheduler ``AsyncIOScheduler`` and the housekeeping jobs it runs.

Every job is a plain ``async def`` function of its dependencies, so a test calls it directly and
the scheduler only decides *when*. :class:`CleanupScheduler` adds what a months-long process needs
around APScheduler:

* ``max_instances=1``, ``coalesce=True`` and a misfire grace on every job: a slow run is never
  doubled, and a backlog after a suspended laptop or a stalled loop collapses into one run;
* a wrapper that logs a failing job (rate-limited through the smart logger's ``rate_key``) and
  never lets the exception reach APScheduler, so one broken job cannot stop the others;
* a shutdown that pauses the scheduler, waits for running jobs up to a deadline, cancels what is
  left, and only then shuts APScheduler down. (APScheduler 3's asyncio executor cancels running
  coroutine jobs in ``shutdown()`` whatever ``wait`` says, so waiting has to happen before it.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from streambot.botclaims import REFRESH_SECONDS
from utils.memory_manager import JobRow

if TYPE_CHECKING:
    from streambot.botclaims import BotClaims
    from streambot.catalog import Catalog
    from streambot.config import Settings
    from streambot.store import Store
    from streambot.supervisor import Supervisor
    from utils.memory_manager import GcResult, MemoryLevel, MemoryManager
    from utils.memory_monitor import MemoryLog
    from utils.smart_logger import SmartLogFilter
    from utils.stream_cleanup import StreamRegistry

__all__ = [
    "CleanupScheduler",
    "JobSpec",
    "JobStats",
    "check_fleet",
    "check_memory",
    "cleanup_bandwidth",
    "cleanup_logger_cache",
    "cleanup_memory_logs",
    "collect_garbage",
    "parse_daily_time",
    "standard_jobs",
    "sweep_file_cache",
    "sweep_stale_streams",
    "write_memory_line",
]

log = logging.getLogger(__name__)

JobFunc = Callable[[], Awaitable[object]]
#: ``MemoryLog.task``: an async context manager writing START/END lines around a job run.
Span = Callable[[str], AbstractAsyncContextManager[object]]


# --------------------------------------------------------------------------- job functions


async def cleanup_bandwidth(
    store: Store, keep_days: int, *, today: date | None = None, holder: str = ""
) -> int:
    """Delete bandwidth rows of UTC days more than ``keep_days`` before ``today``; returns how many.

    Every node schedules this job, but the rows are shared: the first node to claim the day's
    lease does it and the others skip it (a node that dies mid-way leaves it to tomorrow's run,
    which deletes the same cut-off and more).
    """
    today = today or datetime.now(UTC).date()
    if not await store.claim_job("bandwidth_cleanup", today.isoformat(), holder or node_name()):
        log.info("bandwidth cleanup for %s already claimed by another node", today)
        return 0
    cutoff = today - timedelta(days=keep_days)
    return await store.delete_bandwidth_before(cutoff.isoformat())


def node_name() -> str:
    """This process, as other nodes see it in the job leases."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def collect_garbage(manager: MemoryManager) -> GcResult:
    """The hourly GC and memory report line: collect, then log where memory stands."""
    result = await manager.collect("scheduled")
    figures = manager.sample()
    lag = await manager.loop_lag()
    log.info(
        "memory report: RSS %.1f MB, VMS %.1f MB, %.1f%% of RAM, system available %.1f MB, "
        "loop lag %.1f ms, %d threads, %d tasks, level %s",
        figures.rss / 2**20,
        figures.vms / 2**20,
        figures.process_percent,
        figures.system_available / 2**20,
        lag * 1000,
        figures.threads,
        figures.tasks,
        manager.level_of(figures.rss),
    )
    return result


async def check_memory(manager: MemoryManager) -> MemoryLevel:
    """Re-evaluate the memory level (alerts, shedding) and collect above the GC threshold."""
    return await manager.check()


async def sweep_stale_streams(registry: StreamRegistry, stale_after: float) -> int:
    """Cancel streams without progress for ``stale_after`` seconds; returns how many."""
    return registry.sweep(stale_after)


async def cleanup_logger_cache(log_filter: SmartLogFilter) -> int:
    """Forget rate-limit keys with nothing left to report; returns how many."""
    return log_filter.cleanup()


async def write_memory_line(memlog: MemoryLog) -> None:
    """Append one ``---`` line (the active task or ``Idle``) to today's memory log."""
    await memlog.periodic()


async def cleanup_memory_logs(memlog: MemoryLog, keep_days: int) -> list[Path]:
    """Delete memory-log files dated more than ``keep_days`` before today."""
    deleted = await memlog.cleanup_old(keep_days)
    if deleted:
        log.info("deleted %d old memory log file(s)", len(deleted))
    return deleted


async def check_fleet(supervisor: Supervisor) -> object:
    """Health-check every Telegram client (restarts happen in the supervisor's own tasks)."""
    return await supervisor.check_all()


async def sweep_file_cache(catalog: Catalog) -> int:
    """Drop long-stale file-info and location entries; returns how many."""
    return catalog.sweep()


# --------------------------------------------------------------------------- scheduler


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job: what to run (no arguments; bind them with a lambda) and when."""

    id: str
    name: str  # short, shown in /memory and as the task name in the memory log
    func: JobFunc
    trigger: BaseTrigger
    #: Wrap each run in memory-log START/END lines. Off only for the job that writes the
    #: periodic line itself: marking it would make every periodic line name it, never Idle.
    memory_logged: bool = True


@dataclass(slots=True)
class JobStats:
    runs: int = 0
    failures: int = 0
    last_error: str = ""
    last_duration: float = 0.0


class CleanupScheduler:
    """One ``AsyncIOScheduler`` running :class:`JobSpec` jobs through a failure-proof wrapper."""

    def __init__(
        self,
        *,
        misfire_grace: float = 60.0,
        shutdown_timeout: float = 10.0,
        timezone: tzinfo | None = None,
        span: Span | None = None,
    ) -> None:
        self._span = span
        self.misfire_grace = misfire_grace
        self.shutdown_timeout = shutdown_timeout
        self._timezone = timezone
        self._specs: dict[str, JobSpec] = {}
        self.stats: dict[str, JobStats] = {}
        self._running: set[asyncio.Task[object]] = set()
        self._scheduler: AsyncIOScheduler | None = None

    def add(self, spec: JobSpec) -> None:
        if spec.id in self._specs:
            raise ValueError(f"job {spec.id!r} is already registered")
        self._specs[spec.id] = spec
        self.stats[spec.id] = JobStats()
        if self._scheduler is not None:
            self._schedule(spec)

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    def start(self) -> None:
        """Create the scheduler on the running loop and schedule every job (call inside the loop)."""
        if self._scheduler is not None:
            raise RuntimeError("the scheduler is already started")
        options: dict[str, Any] = {"event_loop": asyncio.get_running_loop()}
        if self._timezone is not None:
            options["timezone"] = self._timezone
        self._scheduler = AsyncIOScheduler(**options)
        for spec in self._specs.values():
            self._schedule(spec)
        self._scheduler.start()

    def _schedule(self, spec: JobSpec) -> None:
        assert self._scheduler is not None
        self._scheduler.add_job(
            self.run,
            trigger=spec.trigger,
            args=[spec.id],
            id=spec.id,
            name=spec.name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, round(self.misfire_grace)),
            replace_existing=True,
        )

    async def run(self, job_id: str) -> bool:
        """Run one job now, as the scheduler does; True if it succeeded. Never raises its errors."""
        spec = self._specs[job_id]
        stats = self.stats[job_id]
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        started = time.perf_counter()
        span = self._span(spec.name) if self._span and spec.memory_logged else nullcontext()
        try:
            async with span:
                await spec.func()
        except Exception as exc:  # a failing job must never stop the scheduler
            stats.failures += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"
            # Keyed per job: a job failing every 30 s yields one line plus a count per window.
            log.error(
                "cleanup job %s failed: %s",
                job_id,
                stats.last_error,
                exc_info=exc,
                extra={"rate_key": f"cleanup-job-failed:{job_id}"},
            )
            return False
        finally:
            stats.runs += 1
            stats.last_duration = time.perf_counter() - started
            if task is not None:
                self._running.discard(task)
        return True

    def job(self, job_id: str) -> Job:
        """The APScheduler job (trigger, next run time); only while started."""
        if self._scheduler is None:
            raise RuntimeError("the scheduler is not started")
        job = self._scheduler.get_job(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def jobs(self) -> list[JobRow]:
        """Name and next run time of every job, soonest first (for /memory)."""
        if self._scheduler is None:
            return [JobRow(spec.name, None) for spec in self._specs.values()]
        rows = [JobRow(job.name, job.next_run_time) for job in self._scheduler.get_jobs()]
        far = datetime.max.replace(tzinfo=UTC)
        return sorted(rows, key=lambda row: row.next_run or far)

    async def shutdown(self) -> bool:
        """Stop scheduling, wait for running jobs up to ``shutdown_timeout``, cancel the rest.

        Returns True when every running job finished on its own.
        """
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return True
        scheduler.pause()
        clean = True
        running = set(self._running)
        if running:
            _, pending = await asyncio.wait(running, timeout=self.shutdown_timeout)
            if pending:
                clean = False
                log.warning(
                    "shutdown: cancelling %d cleanup job(s) still running after %.0fs",
                    len(pending),
                    self.shutdown_timeout,
                )
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
        scheduler.shutdown(wait=False)
        return clean


# --------------------------------------------------------------------------- the standard set

_DAILY_RE = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def parse_daily_time(text: str) -> tuple[int, int]:
    """Given "HH:MM" (24 h), return (hour, minute); ValueError otherwise."""
    match = _DAILY_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected HH:MM (24-hour), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def standard_jobs(
    settings: Settings,
    *,
    manager: MemoryManager,
    registry: StreamRegistry,
    catalog: Catalog,
    supervisor: Supervisor,
    memlog: MemoryLog,
    store: Store | None = None,
    bot_claims: BotClaims | None = None,
    log_filter: SmartLogFilter | None = None,
) -> list[JobSpec]:
    """The application's jobs with their triggers taken from ``settings``."""
    hour, minute = parse_daily_time(settings.daily_cleanup_at)

    def every(seconds: float) -> IntervalTrigger:
        return IntervalTrigger(seconds=seconds)

    jobs = [
        JobSpec(
            "fleet_health",
            "fleet check",
            lambda: check_fleet(supervisor),
            every(settings.supervisor_check_interval_seconds),
        ),
        JobSpec(
            "memory_check",
            "memory check",
            lambda: check_memory(manager),
            every(settings.memory_check_interval_seconds),
        ),
        JobSpec(
            "memory_log",
            "memory log",
            lambda: write_memory_line(memlog),
            every(settings.memory_log_interval_seconds),
            memory_logged=False,
        ),
        JobSpec(
            "stream_sweep",
            "stream sweep",
            lambda: sweep_stale_streams(registry, settings.stream_stall_seconds),
            every(settings.stream_sweep_interval_seconds),
        ),
        JobSpec(
            "file_cache_sweep",
            "file cache",
            lambda: sweep_file_cache(catalog),
            every(settings.cache_sweep_interval_seconds),
        ),
        JobSpec(
            "gc_report",
            "gc + report",
            lambda: collect_garbage(manager),
            every(settings.gc_interval_seconds),
        ),
        JobSpec(
            "memory_log_cleanup",
            "old memlogs",
            lambda: cleanup_memory_logs(memlog, settings.memory_log_keep_days),
            CronTrigger(hour=hour, minute=minute),
        ),
    ]
    if log_filter is not None:
        jobs.append(
            JobSpec(
                "logger_cache_cleanup",
                "logger cache",
                lambda: cleanup_logger_cache(log_filter),
                every(settings.log_cache_cleanup_interval_seconds),
            )
        )
    if bot_claims is not None:
        jobs.append(
            JobSpec(
                "bot_claims",
                "bot claims",
                bot_claims.refresh,
                every(REFRESH_SECONDS),
            )
        )
    if store is not None:
        jobs.append(
            JobSpec(
                "bandwidth_cleanup",
                "bandwidth",
                lambda: cleanup_bandwidth(store, settings.bandwidth_keep_days),
                CronTrigger(hour=hour, minute=minute),
            )
        )
    return jobs
