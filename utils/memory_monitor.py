"""Daily memory log for long-running tasks, and the ``memlog`` summariser that reads it back.

StreamBot runs for weeks on small VPSes; the question we keep needing answered is "which job
makes RSS grow, and does idle RSS creep up over a day?". ``MemoryLog`` writes one line per
check to ``LOG_DIR/memory_YYYYMMDD.log``::

    2025-11-16 08:30:00 >>> TASK START [Name] | RSS:  245.3 MB | VMS:  512.1 MB | System Available: 1024.5 MB (50.2% free)
    2025-11-16 08:31:10 <<< TASK END [Name] | RSS:  250.0 MB | VMS:  512.1 MB | System Available: 1020.0 MB (50.0% free)
    2025-11-16 08:32:00 --- PERIODIC [Idle] | RSS:  246.0 MB | VMS:  512.1 MB | System Available: 1022.0 MB (50.1% free)

and ``main`` (wired as ``python -m streambot memlog FILE...``) turns such files into top RSS
peaks, a per-task table and a per-day idle trend with a "RISING" flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import re
import statistics
import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType

import psutil

from streambot.units import MIB

__all__ = [
    "DayTrend",
    "LogLine",
    "MemoryLog",
    "MemorySample",
    "Summary",
    "TaskSpan",
    "TaskStats",
    "format_line",
    "format_summary",
    "main",
    "parse_line",
    "psutil_sample",
    "summarise",
]

logger = logging.getLogger(__name__)

START = ">>>"
END = "<<<"
PERIODIC = "---"
#: Task name written on periodic lines when no task is active.
IDLE = "Idle"

_LABELS = {START: "TASK START", END: "TASK END", PERIODIC: "PERIODIC"}
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_FILE_RE = re.compile(r"memory_(\d{8})\.log")

#: Bound on the stack of active task names. Real nesting is a handful deep; the bound only
#: matters when callers use mark_start without mark_end, which would otherwise leak.
MAX_ACTIVE_TASKS = 256

#: "Rising idle RSS" rule, see ``summarise``.
MIN_IDLE_SAMPLES = 6
RISING_THRESHOLD = 0.05

# Greedy task group so a name containing "]" still parses; the fixed " | RSS:" after it anchors
# the end. \s* after each label absorbs the %6.1f padding (and its absence above 9999.9 MB).
_LINE_RE = re.compile(
    r"(?P<at>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) "
    r"(?P<kind>>>>|<<<|---) (?P<label>TASK START|TASK END|PERIODIC) "
    r"\[(?P<task>.*)\] \| "
    r"RSS:\s*(?P<rss>\d+(?:\.\d+)?) MB \| "
    r"VMS:\s*(?P<vms>\d+(?:\.\d+)?) MB \| "
    r"System Available:\s*(?P<avail>\d+(?:\.\d+)?) MB "
    r"\((?P<free>\d+(?:\.\d+)?)% free\)"
)


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True, slots=True)
class MemorySample:
    """Memory figures for one check, in MB (MiB) and percent."""

    rss_mb: float
    vms_mb: float
    available_mb: float
    free_percent: float


def psutil_sample() -> MemorySample:
    """Read this process's RSS/VMS and the system's available memory.

    Raises ``psutil.Error`` (or ``OSError``) when /proc is unreadable; ``MemoryLog`` skips the
    line in that case rather than failing the task being measured.
    """
    info = psutil.Process().memory_info()
    vm = psutil.virtual_memory()
    return MemorySample(
        rss_mb=info.rss / MIB,
        vms_mb=info.vms / MIB,
        available_mb=vm.available / MIB,
        free_percent=vm.available / vm.total * 100 if vm.total else 0.0,
    )


def format_line(at: datetime, kind: str, task: str, sample: MemorySample) -> str:
    """Render one log line (without newline) in the exact on-disk format."""
    return (
        f"{at.strftime(_TIME_FORMAT)} {kind} {_LABELS[kind]} [{task}] | "
        f"RSS: {sample.rss_mb:6.1f} MB | VMS: {sample.vms_mb:6.1f} MB | "
        f"System Available: {sample.available_mb:.1f} MB ({sample.free_percent:.1f}% free)"
    )


# --------------------------------------------------------------------------- writer


@dataclass(slots=True)
class _Pending:
    """A line waiting for the writer: what to log, and whom to wake once it is on disk."""

    at: datetime
    kind: str
    task: str
    done: asyncio.Future[None]


class TaskSpan(contextlib.AsyncContextDecorator):
    """``async with log.task("Backup"):`` or ``@log.task("Backup")`` on an async function.

    Stateless apart from the log and the name, so one instance may be entered concurrently
    and reused as a decorator for every call.
    """

    def __init__(self, log: MemoryLog, name: str) -> None:
        self._log = log
        self._name = name

    async def __aenter__(self) -> None:
        await self._log.mark_start(self._name)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Runs for normal exit, exceptions and CancelledError alike. Awaiting here after a
        # cancellation is fine: the cancel request was already delivered to the body. The
        # write itself is shielded, so even a second cancel cannot lose the "<<<" line.
        await self._log.mark_end(self._name)


class MemoryLog:
    """Append memory checks to one file per local day, in call order, off the event loop.

    Writing: every line goes through a FIFO drained by a single writer task, which hands
    whole batches to the executor. One writer means lines keep call order even on a
    multi-thread executor, and batching means a burst costs one thread hop, not one each.
    Each batch opens the day's file in append mode and closes it again: at most a few lines
    a minute, so the open is free, there is no handle to leak or to switch at midnight, and
    a file removed by ``cleanup_old`` or an operator is simply recreated.

    ``mark_*``/``periodic`` return once their line is written (or was skipped), so a test or
    a shutdown path can rely on it. They never raise for I/O problems: a full disk must not
    fail the backup being measured, so ``OSError`` and sampler errors are logged and the
    line is skipped. When more than ``max_line_queue`` lines are waiting (a stalled disk),
    new lines are dropped and counted in ``dropped_lines`` instead of growing memory.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        sampler: Callable[[], MemorySample] = psutil_sample,
        now: Callable[[], datetime] = datetime.now,
        executor: Executor | None = None,
        max_line_queue: int = 1000,
    ) -> None:
        if max_line_queue < 1:
            raise ValueError(f"max_line_queue must be >= 1, got {max_line_queue!r}")
        self._dir = Path(log_dir)
        self._sampler = sampler
        self._now = now
        self._executor = executor
        self._max_line_queue = max_line_queue
        self._queue: deque[_Pending] = deque()
        self._writer: asyncio.Task[None] | None = None
        # Most recently started last; periodic lines name the last entry.
        self._active: list[str] = []
        self._dropped = 0
        self._dropping = False

    @property
    def log_dir(self) -> Path:
        """Directory holding the ``memory_YYYYMMDD.log`` files."""
        return self._dir

    @property
    def max_line_queue(self) -> int:
        """Lines that may wait for the disk before new ones are dropped."""
        return self._max_line_queue

    @property
    def dropped_lines(self) -> int:
        """Lines discarded because the write queue was full."""
        return self._dropped

    @property
    def active_task(self) -> str:
        """Name periodic lines would carry now: the most recently started active task."""
        return self._active[-1] if self._active else IDLE

    def path_for(self, day: date) -> Path:
        """File that holds the lines of ``day``."""
        return self._dir / f"memory_{day:%Y%m%d}.log"

    async def mark_start(self, name: str) -> None:
        """Write a ``>>>`` line and make ``name`` the task periodic lines report."""
        name = _clean_name(name)
        self._active.append(name)
        if len(self._active) > MAX_ACTIVE_TASKS:
            dropped = self._active.pop(0)
            logger.warning(
                "memory log: more than %d active tasks, forgetting %r (missing mark_end?)",
                MAX_ACTIVE_TASKS,
                dropped,
            )
        await self._record(START, name)

    async def mark_end(self, name: str) -> None:
        """Write a ``<<<`` line; periodic lines fall back to the previous active task."""
        name = _clean_name(name)
        # Remove the latest occurrence: with two concurrent runs of the same task, whichever
        # ends first leaves the other one still reported.
        for index in range(len(self._active) - 1, -1, -1):
            if self._active[index] == name:
                del self._active[index]
                break
        await self._record(END, name)

    async def periodic(self) -> None:
        """Write a ``---`` line naming the active task, or ``Idle``."""
        await self._record(PERIODIC, self.active_task)

    def task(self, name: str) -> TaskSpan:
        """Async context manager / decorator writing ``>>>`` then ``<<<`` around the body."""
        return TaskSpan(self, name)

    async def flush(self) -> None:
        """Wait until every queued line is on disk (for shutdown after cancelled callers)."""
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.wait([writer])

    async def _record(self, kind: str, task: str) -> None:
        loop = asyncio.get_running_loop()
        if len(self._queue) >= self._max_line_queue:
            self._dropped += 1
            if not self._dropping:
                self._dropping = True
                logger.warning(
                    "memory log: %d lines waiting for %s, dropping new lines until it drains",
                    len(self._queue),
                    self._dir,
                )
            return
        # Timestamp at call time: the line describes when the task started, not when the
        # executor got round to it.
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append(_Pending(self._now(), kind, task, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain(), name="memory-log-writer")
        # Shielded: a cancelled caller must not cancel the write (the "<<<" of a cancelled
        # task is exactly the line we want), nor let a later line overtake this one.
        await asyncio.shield(done)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = list(self._queue)
            self._queue.clear()
            entries = [(p.at, p.kind, p.task) for p in batch]
            job = loop.run_in_executor(self._executor, self._write_batch, entries)
            try:
                await asyncio.wait([job])
            finally:
                _settle(batch, job)
                if not job.done():
                    # The writer itself was cancelled (loop shutdown): nobody will write the
                    # rest, so release its waiters instead of leaving them hanging.
                    for pending in self._queue:
                        pending.done.cancel()
                    self._queue.clear()
        self._dropping = False

    def _write_batch(self, entries: list[tuple[datetime, str, str]]) -> None:
        """Executor side: sample, format and append; lines grouped per day file."""
        by_path: dict[Path, list[str]] = {}
        for at, kind, task in entries:
            try:
                sample = self._sampler()
            except (OSError, psutil.Error) as exc:
                logger.warning("memory log: cannot sample memory for %s %s: %s", kind, task, exc)
                continue
            by_path.setdefault(self.path_for(at.date()), []).append(
                format_line(at, kind, task, sample) + "\n"
            )
        for path, lines in by_path.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as fh:
                    fh.write("".join(lines))
            except OSError as exc:
                logger.warning("memory log: cannot write %d lines to %s: %s", len(lines), path, exc)

    async def cleanup_old(self, keep_days: int) -> list[Path]:
        """Delete ``memory_YYYYMMDD.log`` files dated more than ``keep_days`` before today.

        Age comes from the date in the name, not mtime: a copy or a late append must not
        make a file look new. ``keep_days=0`` keeps only today's file. Other files, and
        names that look right but hold no valid date, are left alone. Returns what was
        deleted, oldest first.
        """
        if keep_days < 0:
            raise ValueError(f"keep_days must be >= 0, got {keep_days!r}")
        cutoff = self._now().date() - timedelta(days=keep_days)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._delete_before, cutoff)

    def _delete_before(self, cutoff: date) -> list[Path]:
        try:
            candidates = list(self._dir.iterdir())
        except FileNotFoundError:
            return []
        deleted: list[Path] = []
        for path in sorted(candidates):
            match = _FILE_RE.fullmatch(path.name)
            if match is None:
                continue
            try:
                day = datetime.strptime(match.group(1), "%Y%m%d").date()
            except ValueError:
                continue
            if day >= cutoff:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue  # removed concurrently; the goal is reached either way
            except OSError as exc:
                logger.warning("memory log: cannot delete %s: %s", path, exc)
                continue
            deleted.append(path)
        return deleted


def _clean_name(name: str) -> str:
    """One check must stay one line: a newline in a task name would split it."""
    return name.replace("\r", " ").replace("\n", " ")


def _settle(batch: list[_Pending], job: asyncio.Future[None]) -> None:
    """Pass the executor job's outcome to every caller waiting on the batch."""
    for pending in batch:
        if pending.done.done():
            continue
        if not job.done() or job.cancelled():
            pending.done.cancel()
        elif (exc := job.exception()) is not None:
            pending.done.set_exception(exc)
        else:
            pending.done.set_result(None)


# --------------------------------------------------------------------------- summariser


@dataclass(frozen=True, slots=True)
class LogLine:
    """One parsed memory-log line."""

    at: datetime
    kind: str  # ">>>" | "<<<" | "---"
    task: str
    rss_mb: float
    vms_mb: float
    available_mb: float
    free_percent: float


@dataclass(frozen=True, slots=True)
class TaskStats:
    """RSS figures over every line (start, end, periodic) that names one task."""

    task: str
    count: int
    avg_rss_mb: float
    max_rss_mb: float


@dataclass(frozen=True, slots=True)
class DayTrend:
    """Idle RSS of one day, in time order, and whether it is judged to be rising."""

    day: date
    idle_rss_mb: tuple[float, ...]
    first_third_median: float | None
    last_third_median: float | None
    rising: bool

    @property
    def change_percent(self) -> float | None:
        """Last-third median relative to the first-third median, in percent."""
        if not self.first_third_median or self.last_third_median is None:
            return None
        return (self.last_third_median / self.first_third_median - 1) * 100


@dataclass(frozen=True, slots=True)
class Summary:
    """Everything ``format_summary`` prints."""

    top: int
    line_count: int
    peaks: tuple[LogLine, ...]
    tasks: tuple[TaskStats, ...]
    days: tuple[DayTrend, ...]


def parse_line(text: str) -> LogLine | None:
    """Parse one line as written by ``MemoryLog``; None for anything else.

    Log files collect junk (a line cut short by a crash, an editor's BOM, a pasted note), and
    the summary of the remaining lines is still worth having, so nothing here raises.
    """
    match = _LINE_RE.fullmatch(text.strip().lstrip("\ufeff"))
    if match is None:
        return None
    if _LABELS[match["kind"]] != match["label"]:
        return None
    try:
        at = datetime.strptime(match["at"], _TIME_FORMAT)
    except ValueError:  # shape matched but e.g. month 13
        return None
    return LogLine(
        at=at,
        kind=match["kind"],
        task=match["task"],
        rss_mb=float(match["rss"]),
        vms_mb=float(match["vms"]),
        available_mb=float(match["avail"]),
        free_percent=float(match["free"]),
    )


def _day_trend(day: date, idle: list[tuple[datetime, float]]) -> DayTrend:
    """Apply the rising rule to one day's idle samples (see ``summarise``)."""
    values = tuple(rss for _, rss in sorted(idle, key=lambda item: item[0]))
    if len(values) < MIN_IDLE_SAMPLES:
        return DayTrend(day, values, None, None, rising=False)
    third = len(values) // 3
    first = statistics.median(values[:third])
    last = statistics.median(values[-third:])
    rising = last > first * (1 + RISING_THRESHOLD)
    return DayTrend(day, values, first, last, rising=rising)


def summarise(lines: Iterable[LogLine], *, top: int = 10) -> Summary:
    """Reduce parsed lines to RSS peaks, per-task figures and per-day idle trends.

    Peaks: the ``top`` lines with the highest RSS, highest first; ties keep input order.

    Per task: every line naming the task counts, so a task's ``---`` lines (written while it
    was the active task) contribute alongside its ``>>>``/``<<<`` lines; ``Idle`` appears
    as a task of its own, which gives the idle baseline to compare against.

    Rising rule, per local day: take that day's ``---`` lines whose task is ``Idle`` in time
    order; with at least ``MIN_IDLE_SAMPLES`` (6) of them, compare the median of the first
    third with the median of the last third; the day is rising when the last exceeds the
    first by more than ``RISING_THRESHOLD`` (5%). Medians of thirds rather than first vs.
    last sample, so one GC pause or one spike at either end cannot flip the verdict, and a
    minimum sample count so a short day (restart at 23:00) is not judged on noise.

    Consumes ``lines`` once; memory is bounded by the heap of ``top`` peaks, one counter per
    task and the idle samples kept for the trend.
    """
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top!r}")
    # Min-heap of (rss, -seq, line): the root is the weakest peak; on equal RSS the later
    # line is weaker, so earlier peaks win ties.
    heap: list[tuple[float, int, LogLine]] = []
    totals: dict[str, list[float]] = {}  # task -> [count, sum, max]
    idle_by_day: dict[date, list[tuple[datetime, float]]] = {}
    count = 0
    for line in lines:
        count += 1
        if top:
            item = (line.rss_mb, -count, line)
            if len(heap) < top:
                heapq.heappush(heap, item)
            else:
                heapq.heappushpop(heap, item)
        acc = totals.setdefault(line.task, [0.0, 0.0, line.rss_mb])
        acc[0] += 1
        acc[1] += line.rss_mb
        acc[2] = max(acc[2], line.rss_mb)
        day_idle = idle_by_day.setdefault(line.at.date(), [])
        if line.kind == PERIODIC and line.task == IDLE:
            day_idle.append((line.at, line.rss_mb))
    peaks = tuple(item[2] for item in sorted(heap, key=lambda item: (-item[0], -item[1])))
    tasks = tuple(
        sorted(
            (
                TaskStats(task=name, count=int(n), avg_rss_mb=total / n, max_rss_mb=peak)
                for name, (n, total, peak) in totals.items()
            ),
            key=lambda stats: (-stats.max_rss_mb, stats.task),
        )
    )
    days = tuple(_day_trend(day, idle) for day, idle in sorted(idle_by_day.items()))
    return Summary(top=top, line_count=count, peaks=peaks, tasks=tasks, days=days)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> list[str]:
    """Align columns: text left, numbers right, two spaces between columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def render(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [render(headers), *(render(row) for row in rows)]


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_summary(summary: Summary) -> str:
    """Render the summary as three plain-text tables for a terminal or a bug report."""
    out: list[str] = [f"Parsed {summary.line_count} lines", ""]

    out.append(f"Top {summary.top} RSS peaks")
    if summary.peaks:
        rows = [
            [str(rank), line.at.strftime(_TIME_FORMAT), line.kind, line.task, _mb(line.rss_mb)]
            for rank, line in enumerate(summary.peaks, start=1)
        ]
        out += _table(["#", "Time", "Kind", "Task", "RSS MB"], rows, numeric={0, 4})
    else:
        out.append("(no samples)")
    out.append("")

    out.append("Per task")
    if summary.tasks:
        rows = [[t.task, str(t.count), _mb(t.avg_rss_mb), _mb(t.max_rss_mb)] for t in summary.tasks]
        out += _table(["Task", "Lines", "Avg RSS MB", "Max RSS MB"], rows, numeric={1, 2, 3})
    else:
        out.append("(no samples)")
    out.append("")

    out.append("Idle RSS trend by day")
    if summary.days:
        rows = []
        for trend in summary.days:
            idle = trend.idle_rss_mb
            change = trend.change_percent
            if trend.rising:
                verdict = "RISING"
            elif len(idle) < MIN_IDLE_SAMPLES:
                verdict = "too few samples"
            else:
                verdict = "flat"
            rows.append(
                [
                    trend.day.isoformat(),
                    str(len(idle)),
                    _mb(min(idle, default=None)),
                    _mb(max(idle, default=None)),
                    _mb(trend.first_third_median),
                    _mb(trend.last_third_median),
                    "-" if change is None else f"{round(change, 1) or 0.0:+.1f}%",  # no "-0.0%"
                    verdict,
                ]
            )
        headers = ["Day", "Idle", "Min MB", "Max MB", "1st third", "Last third", "Change", "Trend"]
        out += _table(headers, rows, numeric={1, 2, 3, 4, 5, 6})
        out.append(
            f"RISING: >= {MIN_IDLE_SAMPLES} idle samples and median of the last third more than "
            f"{RISING_THRESHOLD:.0%} above median of the first third."
        )
    else:
        out.append("(no samples)")
    return "\n".join(out)


def main(paths: Sequence[str]) -> int:
    """``memlog FILE [FILE...]``: print the summary of the given memory logs.

    Returns 0 on success and 2 (after a one-line message on stderr, no traceback) when no
    file is given or one cannot be read; nothing is printed to stdout in that case, so a
    partial summary is never mistaken for a full one.
    """
    if not paths:
        print("memlog: usage: memlog FILE [FILE...]", file=sys.stderr)
        return 2
    lines: list[LogLine] = []
    skipped = 0
    for name in paths:
        try:
            with open(name, encoding="utf-8", errors="replace") as fh:
                for raw in fh:
                    parsed = parse_line(raw)
                    if parsed is not None:
                        lines.append(parsed)
                    elif raw.strip():
                        skipped += 1
        except OSError as exc:
            print(f"memlog: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    if skipped:
        print(f"memlog: skipped {skipped} unparseable lines", file=sys.stderr)
    print(format_summary(summarise(lines)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
