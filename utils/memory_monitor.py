"""Daily memory log for long-running tasks: the writer.

StreamBot runs for weeks on small VPSes; the question we keep needing answered is "which job
makes RSS grow, and does idle RSS creep up over days?". ``MemoryLog`` writes one line per
check to ``LOG_DIR/memory_YYYYMMDD.log`` in the format owned by :mod:`streambot.memlog`
(which also reads it back: ``python -m streambot memlog``): ``>>>`` task start, ``<<<`` task
end with the RSS change since its start, ``---`` periodic with the active task, ``Streaming``
when only streams are running, or ``Idle``; every line carries the number of open streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType

import psutil

from streambot.memlog import END, IDLE, PERIODIC, START, STREAMING, format_line
from streambot.units import MIB

__all__ = ["IDLE", "STREAMING", "MemoryLog", "MemorySample", "TaskSpan", "psutil_sample"]

logger = logging.getLogger(__name__)

_FILE_RE = re.compile(r"memory_(\d{8})\.log")

#: Bound on the stack of active task names. Real nesting is a handful deep; the bound only
#: matters when callers use mark_start without mark_end, which would otherwise leak.
MAX_ACTIVE_TASKS = 256


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


# --------------------------------------------------------------------------- writer


@dataclass(slots=True)
class _Pending:
    """A line waiting for the writer: what to log, and whom to wake once it is on disk."""

    at: datetime
    kind: str
    task: str
    streams: int
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
        active_streams: Callable[[], int] = lambda: 0,
    ) -> None:
        if max_line_queue < 1:
            raise ValueError(f"max_line_queue must be >= 1, got {max_line_queue!r}")
        self._dir = Path(log_dir)
        self._sampler = sampler
        self._now = now
        self._executor = executor
        self._max_line_queue = max_line_queue
        self._streams = active_streams
        # RSS at each open START, per task name (writer side only: batches run one at a
        # time), so the END line can carry the change. Bounded like ``_active``.
        self._start_rss: dict[str, list[float]] = {}
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
        """Name periodic lines would carry now: the most recently started active task,
        else ``Streaming`` while streams are open, else ``Idle`` (no job, no stream)."""
        return self._task_for(self._streams())

    def _task_for(self, streams: int) -> str:
        if self._active:
            return self._active[-1]
        return STREAMING if streams > 0 else IDLE

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
        """Write a ``---`` line naming the active task, ``Streaming`` or ``Idle``."""
        streams = self._streams()  # read once: the name and the count must agree
        await self._record(PERIODIC, self._task_for(streams), streams)

    def task(self, name: str) -> TaskSpan:
        """Async context manager / decorator writing ``>>>`` then ``<<<`` around the body."""
        return TaskSpan(self, name)

    async def flush(self) -> None:
        """Wait until every queued line is on disk (for shutdown after cancelled callers)."""
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.wait([writer])

    async def _record(self, kind: str, task: str, streams: int | None = None) -> None:
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
        # The stream count is read here, on the loop: the registry is not thread-safe.
        if streams is None:
            streams = self._streams()
        self._queue.append(_Pending(self._now(), kind, task, streams, done))
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
            entries = [(p.at, p.kind, p.task, p.streams) for p in batch]
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

    def _write_batch(self, entries: list[tuple[datetime, str, str, int]]) -> None:
        """Executor side: sample, format and append; lines grouped per day file."""
        by_path: dict[Path, list[str]] = {}
        for at, kind, task, streams in entries:
            try:
                sample = self._sampler()
            except (OSError, psutil.Error) as exc:
                logger.warning("memory log: cannot sample memory for %s %s: %s", kind, task, exc)
                continue
            change = self._change(kind, task, sample.rss_mb)
            line = format_line(
                at,
                kind,
                task,
                rss_mb=sample.rss_mb,
                vms_mb=sample.vms_mb,
                available_mb=sample.available_mb,
                free_percent=sample.free_percent,
                streams=streams,
                change_mb=change,
            )
            by_path.setdefault(self.path_for(at.date()), []).append(line + "\n")
        for path, lines in by_path.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as fh:
                    fh.write("".join(lines))
            except OSError as exc:
                logger.warning("memory log: cannot write %d lines to %s: %s", len(lines), path, exc)

    def _change(self, kind: str, task: str, rss_mb: float) -> float | None:
        """Remember RSS at a START; at the matching END return the change since (else None)."""
        if kind == START:
            stack = self._start_rss.setdefault(task, [])
            stack.append(rss_mb)
            if len(stack) > MAX_ACTIVE_TASKS:
                stack.pop(0)
            if len(self._start_rss) > MAX_ACTIVE_TASKS:  # names that never end
                del self._start_rss[next(iter(self._start_rss))]
            return None
        if kind == END:
            open_runs = self._start_rss.get(task)
            if open_runs:
                started = open_runs.pop()
                if not open_runs:
                    del self._start_rss[task]
                return rss_mb - started
        return None

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
