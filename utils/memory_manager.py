"""The memory manager: memory figures, garbage collection, pressure levels, load shedding, /memory.

StreamBot runs for months on hosts with a few hundred MB to spare, where the kernel's OOM killer is
the only thing that acts when memory runs out, and it acts by killing the process. This module acts
first:

* it reads the process's RSS/VMS and the system's available memory (psutil), the event loop's lag,
  thread and task counts;
* it runs ``gc.collect()`` when RSS passes ``GC_THRESHOLD_MB`` (and hourly from the scheduler) and
  records how many objects and how much RSS that freed;
* against ``MEMORY_LIMIT_MB`` (0: the machine's total memory) RSS is *ok*, *warning* (default 80 %)
  or *critical* (default 95 %). At critical it starts **shedding**: new downloads get 503 with
  Retry-After (running ones continue), until RSS falls back *below the warning level*. The gap
  between the two levels is the hysteresis that stops it flapping on and off around one line.
  Each such incident is logged once and told to the admins once;
* it renders the admin's ``/memory`` report.

The psutil process and the system-memory reader are injected, so tests set RSS directly.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import psutil

from streambot.admission import Admitted
from streambot.errors import ServiceBusy
from streambot.heap import TrimResult
from streambot.notify import Notify
from streambot.units import MIB

if TYPE_CHECKING:
    from streambot.fleet import Fleet

__all__ = [
    "ClientRow",
    "GcResult",
    "JobRow",
    "MemoryFigures",
    "MemoryLevel",
    "MemoryManager",
    "ReportData",
    "ReportSources",
    "format_report",
]

log = logging.getLogger(__name__)

#: Shortest gap between two threshold-triggered collections: above the threshold every check
#: would otherwise collect, and a full collection of a large heap is not free.
GC_MIN_INTERVAL = 300.0


class ProcessProbe(Protocol):
    """The part of ``psutil.Process`` the manager reads (a test passes an object with set values)."""

    def memory_info(self) -> Any: ...

    def memory_percent(self) -> float: ...

    def num_threads(self) -> int: ...


class MemoryLevel(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class MemoryFigures:
    """One reading of process and system memory, in bytes and percent."""

    rss: int
    vms: int
    process_percent: float
    system_total: int
    system_available: int
    threads: int
    tasks: int

    @property
    def system_free_percent(self) -> float:
        return self.system_available / self.system_total * 100 if self.system_total else 0.0


@dataclass(frozen=True, slots=True)
class GcResult:
    """What one ``gc.collect()`` did."""

    at: float  # wall-clock time.time()
    reason: str
    collected: int  # unreachable objects found, as gc.collect() reports
    rss_before: int
    rss_after: int
    duration: float

    @property
    def freed(self) -> int:
        """RSS given back; 0 when RSS grew meanwhile (the allocator keeps freed pages often)."""
        return max(0, self.rss_before - self.rss_after)


class MemoryManager:
    """Reads memory, decides the pressure level, sheds new downloads at critical, runs the GC."""

    def __init__(
        self,
        *,
        limit_mb: float = 0,
        warning_percent: float = 80.0,
        critical_percent: float = 95.0,
        gc_threshold_mb: float = 0,
        retry_after: float = 30.0,
        notify: Notify | None = None,
        process: ProcessProbe | None = None,
        system: Callable[[], Any] = psutil.virtual_memory,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < warning_percent < critical_percent <= 100:
            raise ValueError(
                "need 0 < warning_percent < critical_percent <= 100, got "
                f"{warning_percent!r} and {critical_percent!r}"
            )
        if limit_mb < 0 or gc_threshold_mb < 0:
            raise ValueError("limit_mb and gc_threshold_mb must be >= 0")
        self.warning_percent = warning_percent
        self.critical_percent = critical_percent
        self.gc_threshold = int(gc_threshold_mb * MIB)
        self.retry_after = retry_after
        #: The psutil process read for every figure; replaceable (tests set RSS through it).
        self.process: ProcessProbe = process if process is not None else psutil.Process()
        self._system = system
        self._notify = notify
        self._wall = wall_clock
        self._clock = clock
        # The machine's total memory does not change while we run: read it once, not per request.
        self._limit = int(limit_mb * MIB) if limit_mb else int(system().total)
        self._limit_set = bool(limit_mb)
        self.shedding = False
        self.incidents = 0
        self.shed_requests = 0
        self.last_gc: GcResult | None = None
        self.last_lag: float | None = None
        self._last_gc_at: float | None = None
        self._notifications: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ figures
    @property
    def limit(self) -> int:
        """The memory limit in bytes that the levels are percentages of."""
        return self._limit

    def thresholds(self) -> tuple[int, int]:
        """The warning and critical RSS in bytes."""
        return (
            int(self._limit * self.warning_percent / 100),
            int(self._limit * self.critical_percent / 100),
        )

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def sample(self) -> MemoryFigures:
        """Read every figure now (a few /proc reads; cheap enough for each report and check)."""
        info = self.process.memory_info()
        vm = self._system()
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # no running loop (called from a plain function in a test)
            tasks = 0
        return MemoryFigures(
            rss=int(info.rss),
            vms=int(info.vms),
            process_percent=float(self.process.memory_percent()),
            system_total=int(vm.total),
            system_available=int(vm.available),
            threads=int(self.process.num_threads()),
            tasks=tasks,
        )

    def level_of(self, rss: int) -> MemoryLevel:
        warning, critical = self.thresholds()
        if rss >= critical:
            return MemoryLevel.CRITICAL
        if rss >= warning:
            return MemoryLevel.WARNING
        return MemoryLevel.OK

    async def loop_lag(self) -> float:
        """Seconds between asking the loop to run a callback and it running: how busy it is.

        One ``call_soon`` round trip waits behind everything already queued, so the delay is the
        lag a new request would see. Nothing busy-waits here.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[float] = loop.create_future()
        started = loop.time()

        def answer() -> None:
            if not done.done():
                done.set_result(loop.time())

        loop.call_soon(answer)
        lag = max(0.0, await done - started)
        self.last_lag = lag
        return lag

    # ------------------------------------------------------------------ pressure and shedding
    def evaluate(self, rss: int) -> MemoryLevel:
        """Update the shedding state for ``rss`` and return its level.

        Shedding starts at critical and stops only below warning (hysteresis). The start of an
        incident is logged once and told to the admins once; its end is logged once.
        """
        level = self.level_of(rss)
        if not self.shedding and level is MemoryLevel.CRITICAL:
            self.shedding = True
            self.incidents += 1
            warning = self.thresholds()[0]
            text = (
                f"Memory critical: RSS {rss / MIB:.0f} MB of {self._limit / MIB:.0f} MB "
                f"(critical at {self.critical_percent:g} %). New downloads are refused with 503 "
                f"until RSS is below {warning / MIB:.0f} MB; running downloads continue."
            )
            log.warning("%s", text)
            self._tell_admins(text)
        elif self.shedding and level is MemoryLevel.OK:
            self.shedding = False
            log.warning(
                "memory back below the warning level (RSS %.0f MB): accepting downloads again",
                rss / MIB,
            )
        return level

    async def admit(self, message_id: int) -> Admitted:
        """Admission check of new downloads: raise ``ServiceBusy`` (503) while shedding.

        Reads RSS on every call (one /proc read): a scheduled check alone would notice a spike
        only minutes later, after the downloads that caused it were admitted.
        """
        self.evaluate(self.rss())
        if self.shedding:
            self.shed_requests += 1
            raise ServiceBusy(
                "The server is low on memory; please try again shortly.", self.retry_after
            )
        return Admitted()

    async def check(self) -> MemoryLevel:
        """The scheduled check: evaluate the level, and collect garbage above the GC threshold."""
        level = self.evaluate(self.rss())
        if self.gc_threshold and self.rss() >= self.gc_threshold:
            now = self._clock()
            if self._last_gc_at is None or now - self._last_gc_at >= GC_MIN_INTERVAL:
                await self.collect("threshold")
                level = self.evaluate(self.rss())
        return level

    async def collect(self, reason: str = "scheduled") -> GcResult:
        """Run a full ``gc.collect()`` and record objects found and RSS freed.

        It runs on the loop thread on purpose: the collector holds the GIL for its whole run, so
        moving it to a worker thread would stall the loop just the same while adding a hop.
        """
        before = self.rss()
        started = time.perf_counter()
        collected = gc.collect()
        duration = time.perf_counter() - started
        after = self.rss()
        result = GcResult(self._wall(), reason, collected, before, after, duration)
        self.last_gc = result
        self._last_gc_at = self._clock()
        log.info(
            "gc (%s): %d objects, RSS %.1f -> %.1f MB (%.1f MB freed) in %.0f ms",
            reason,
            collected,
            before / MIB,
            after / MIB,
            result.freed / MIB,
            duration * 1000,
        )
        return result

    def _tell_admins(self, text: str) -> None:
        notify = self._notify
        if notify is None:
            return

        async def send() -> None:
            await notify(text)

        # In the background: the request that crossed the line gets its 503 at once, not after
        # a Telegram round trip. The task is kept so it is neither collected nor lost at close.
        task = asyncio.get_running_loop().create_task(send(), name="memory-alert")
        self._notifications.add(task)
        task.add_done_callback(self._notification_done)

    def _notification_done(self, task: asyncio.Task[Any]) -> None:
        self._notifications.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("memory alert to admins failed: %s", exc)

    async def close(self, timeout: float = 5.0) -> None:
        """Let alerts in flight be delivered (bounded), then cancel what is left."""
        tasks = set(self._notifications)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    # ------------------------------------------------------------------ /memory
    async def report(self, sources: ReportSources) -> str:
        """The text of ``/memory``, read now from this manager and ``sources``."""
        figures = self.sample()
        lag = await self.loop_lag()
        fleet = sources.fleet
        data = ReportData(
            figures=figures,
            level=self.level_of(figures.rss),
            shedding=self.shedding,
            limit=self._limit,
            limit_set=self._limit_set,
            warning_percent=self.warning_percent,
            critical_percent=self.critical_percent,
            loop_lag=lag,
            uptime=max(0.0, self._wall() - sources.started_at),
            active_streams=sources.active_streams(),
            clients=[
                ClientRow(
                    label=fc.label(),
                    main=fc.is_main,
                    state=str(fc.state),
                    active=fc.active_streams,
                    restarts=fc.restarts,
                )
                for fc in fleet.clients
            ],
            healthy=fleet.healthy_count(),
            caches=list(sources.caches()),
            jobs=list(sources.jobs()),
            last_gc=self.last_gc,
            last_trim=sources.last_trim(),
            now=datetime.fromtimestamp(self._wall()),
        )
        return format_report(data)


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class ClientRow:
    label: str
    main: bool
    state: str
    active: int
    restarts: int


@dataclass(frozen=True, slots=True)
class JobRow:
    name: str
    next_run: datetime | None  # None: paused or not scheduled


class CacheRow(NamedTuple):
    """One bounded cache as the report shows it: how full against its configured limit."""

    label: str
    entries: int
    limit: int


@dataclass(slots=True)
class ReportSources:
    """Where the report reads what the memory manager does not own; read at report time."""

    fleet: Fleet
    started_at: float  # wall clock
    active_streams: Callable[[], int]
    # (label, entries, limit) of each bounded in-memory cache, e.g. ("File info", 12, 1024).
    caches: Callable[[], Sequence[CacheRow]] = lambda: ()
    jobs: Callable[[], Sequence[JobRow]] = lambda: ()
    last_trim: Callable[[], TrimResult | None] = lambda: None


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything :func:`format_report` prints (a pure function of this)."""

    figures: MemoryFigures
    level: MemoryLevel
    shedding: bool
    limit: int
    loop_lag: float | None
    uptime: float
    active_streams: int
    clients: list[ClientRow]
    healthy: int
    caches: list[CacheRow]
    jobs: list[JobRow]
    last_gc: GcResult | None
    now: datetime  # local time the report was made
    limit_set: bool = True  # False: MEMORY_LIMIT_MB=0, the limit is the machine's RAM
    warning_percent: float = 80.0
    critical_percent: float = 95.0
    last_trim: TrimResult | None = None  # the heap trim after the streams last drained


def _mb(n: float) -> str:
    return f"{n / MIB:.1f} MB"


def _duration(seconds: float) -> str:
    """Render 93784 s as "1d 2h 3m" and 42 s as "42s": short, for a phone screen."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s"
    return f"{s}s"


def _rows(pairs: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(label) for label, _ in pairs)
    return [f"{label.ljust(width)}  {value}".rstrip() for label, value in pairs]


def format_report(data: ReportData) -> str:
    """Render the /memory report: short aligned lines (about 34 columns) for a phone, sent
    as a Markdown code block so Telegram shows it in a monospace font."""
    f = data.figures
    warning_note = "  (downloads paused)" if data.shedding else ""
    lines = [f"StreamBot memory: {data.level.value.upper()}{warning_note}", ""]
    lag = "-" if data.loop_lag is None else f"{data.loop_lag * 1000:.1f} ms"
    used = f"{f.rss / data.limit * 100:.0f} % used"
    limit = f"{_mb(data.limit)} ({used})" if data.limit_set else "no limit set (machine RAM)"
    lines += _rows(
        [
            ("In RAM (RSS)", _mb(f.rss)),
            ("Virtual", _mb(f.vms)),
            ("Share", f"{f.process_percent:.1f} % of RAM"),
            ("Limit", limit),
            ("Machine free", f"{_mb(f.system_available)} ({f.system_free_percent:.0f} %)"),
            ("Loop delay", lag),
            ("Threads", str(f.threads)),
            ("Async tasks", str(f.tasks)),
            ("Streams", str(data.active_streams)),
            ("Uptime", _duration(data.uptime)),
        ]
    )
    # What each level means, in the same units: an admin reading "WARNING" should not need the
    # README to know what happens next.
    base = "of the limit" if data.limit_set else "of machine RAM"
    warning = data.limit * data.warning_percent / 100
    critical = data.limit * data.critical_percent / 100
    lines += [
        "",
        f"Levels ({base})",
        f"Warning   {data.warning_percent:g} % = {_mb(warning)}",
        "  refusing stops below it",
        f"Critical  {data.critical_percent:g} % = {_mb(critical)}",
        "  new downloads get 503,",
        "  admins get one message",
    ]
    lines += ["", f"Clients {data.healthy}/{len(data.clients)} healthy"]
    for c in data.clients:
        role = " (main)" if c.main else ""
        restarts = f", {c.restarts} restarts" if c.restarts else ""
        streams = "stream" if c.active == 1 else "streams"
        lines.append(f"{c.label}{role}")
        lines.append(f"  {c.state}, {c.active} {streams}{restarts}")
    if data.caches:
        caches = [(c.label, f"{c.entries} / {c.limit}") for c in data.caches]
        lines += ["", "Caches", *_rows(caches)]
    zone = data.now.astimezone().tzname() or "local"
    if data.jobs:
        lines += ["", f"Jobs (next run, {zone})"]
        pairs = []
        for job in data.jobs:
            if job.next_run is None:
                pairs.append((job.name, "paused"))
                continue
            at = job.next_run.astimezone()  # naive is taken as local time, like data.now
            wait = max(0.0, (at - data.now.astimezone()).total_seconds())
            pairs.append((job.name, f"{at:%H:%M:%S}  in {_duration(wait)}"))
        lines += _rows(pairs)
    lines.append("")
    gc_result = data.last_gc
    if gc_result is None:
        lines.append("Last GC: not yet")
    else:
        at = datetime.fromtimestamp(gc_result.at)
        lines.append(f"Last GC {at:%H:%M:%S} {zone} ({gc_result.reason})")
        lines.append(
            f"  {gc_result.collected} objects, {_mb(gc_result.freed)} freed, "
            f"{gc_result.duration * 1000:.0f} ms"
        )
    trim = data.last_trim
    if trim is not None:
        at = datetime.fromtimestamp(trim.at)
        lines.append(f"Last heap trim {at:%H:%M:%S} {zone}")
        lines.append(f"  {_mb(trim.freed)} given back, {trim.duration * 1000:.0f} ms")
    # Plain text: the bot shows it monospace (a "pre" entity) so the columns stay aligned.
    return "\n".join(lines)
