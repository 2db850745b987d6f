"""The memory log's line format, and ``memlog``: the summary an operator reads after a week.

``utils.memory_monitor.MemoryLog`` writes one line per check to ``LOG_DIR/memory_YYYYMMDD.log``
with :func:`format_line`::

    2025-11-16 08:30:00 >>> TASK START [Backup] | RSS:  245.3 MB | VMS:  512.1 MB | System Available: 1024.5 MB (50.2% free) | Streams: 0
    2025-11-16 08:31:10 <<< TASK END [Backup] | RSS:  250.0 MB | VMS:  512.1 MB | System Available: 1020.0 MB (50.0% free) | Streams: 0 | Change: +4.7 MB
    2025-11-16 08:32:00 --- PERIODIC [Idle] | RSS:  246.0 MB | VMS:  512.1 MB | System Available: 1022.0 MB (50.1% free) | Streams: 0

``Idle`` means no scheduled job ran and no stream was open; a periodic line written while
streams were open but no job ran says ``Streaming``. Lines written before ``Streams``/``Change``
existed (and any later ``| Key: value`` field) still parse.

The summariser answers the questions the log exists for: which job makes RSS grow (typical and
worst START->END change per task), when RSS peaked (peaks grouped into episodes, not ten lines
of one spike), and whether there is a leak (a robust trend over idle samples, per process
lifetime, so restarts and traffic humps do not fake one). It reads its input once, line by
line, and keeps only bounded aggregates, so a week of one-second samples needs a few MB.
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "CHANGE_FIELD",
    "END",
    "IDLE",
    "PERIODIC",
    "START",
    "STARTUP_TASK",
    "STREAMING",
    "Episode",
    "LeakVerdict",
    "LogLine",
    "Report",
    "Summariser",
    "format_line",
    "format_report",
    "input_files",
    "parse_line",
    "summarise_files",
]

START = ">>>"
END = "<<<"
PERIODIC = "---"
#: Periodic task name when no job runs and no stream is open.
IDLE = "Idle"
#: Periodic task name when no job runs but streams are open.
STREAMING = "Streaming"
#: The application marks each process start with a task of this name (a restart marker).
STARTUP_TASK = "Startup"
#: ...and each clean stop with this one; the next line belongs to a new process.
SHUTDOWN_TASK = "Shutdown"
CHANGE_FIELD = "Change"
STREAMS_FIELD = "Streams"

LABELS = {START: "TASK START", END: "TASK END", PERIODIC: "PERIODIC"}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
FILE_GLOB = "memory_*.log"

# ---- thresholds (stated in the report, and here with the reason for each)
#: A pause this long without lines is reported as a gap; with RSS down by RESTART_DROP it is
#: counted as a restart even without a start-up marker (logs of a crash, or of other writers).
GAP_SECONDS = 600.0
RESTART_DROP = 0.15
#: Episodes: RSS above the local baseline by max(EPISODE_MIN_MB, EPISODE_MIN_SHARE of it). The
#: baseline is the 20th percentile of the minima of the (downsampled) samples within
#: +-EPISODE_WINDOW in the same process lifetime: low enough that a hump of up to half a day
#: does not become its own baseline, local enough to follow a slow drift.
EPISODE_WINDOW = timedelta(hours=24)
EPISODE_BASE_QUANTILE = 0.2
EPISODE_MIN_MB = 20.0
EPISODE_MIN_SHARE = 0.10
#: Leak rule, over hourly medians of idle samples, pairs taken only within one process lifetime:
#: Theil-Sen slope >= max(LEAK_MIN_MB_PER_DAY, LEAK_MIN_SHARE_PER_DAY of the idle baseline),
#: the later half of each lifetime still rising at half that rate (a one-off step after a
#: traffic hump is a high-water mark, not a leak), >= LEAK_MIN_POSITIVE of the pairs rising,
#: and at least LEAK_MIN_HOURS of idle coverage.
LEAK_MIN_MB_PER_DAY = 5.0
LEAK_MIN_SHARE_PER_DAY = 0.02
LEAK_MIN_POSITIVE = 0.65
LEAK_MIN_HOURS = 12.0
#: Bounds that keep memory flat whatever the input size.
MAX_TASKS = 200
MAX_OPEN_RUNS = 64
MAX_BUCKETS = 4000
MAX_RESTARTS_KEPT = 200
MAX_SPANS_KEPT = 400
MAX_PAIRS = 200_000

_TENTH = 10  # RSS values are kept as integer tenths of a MB in counters

_LINE_RE = re.compile(
    r"(?P<at>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) "
    r"(?P<kind>>>>|<<<|---) (?P<label>TASK START|TASK END|PERIODIC) "
    r"\[(?P<task>.*?)\] \| "
    r"RSS:\s*(?P<rss>\d+(?:\.\d+)?) MB \| "
    r"VMS:\s*(?P<vms>\d+(?:\.\d+)?) MB \| "
    r"System Available:\s*(?P<avail>\d+(?:\.\d+)?) MB "
    r"\((?P<free>\d+(?:\.\d+)?)% free\)"
    r"(?P<extra>(?: \| [^|]*)*)"
)
_STREAMS_RE = re.compile(r"\| Streams:\s*(\d+)")
_CHANGE_RE = re.compile(r"\| Change:\s*([+-]?\d+(?:\.\d+)?) MB")


# --------------------------------------------------------------------------- the line format


@dataclass(frozen=True, slots=True)
class LogLine:
    """One parsed memory-log line (figures in MB, i.e. MiB)."""

    at: datetime
    kind: str  # START | END | PERIODIC
    task: str
    rss_mb: float
    vms_mb: float = 0.0
    available_mb: float = 0.0
    free_percent: float = 0.0
    streams: int | None = None  # None: written before the field existed
    change_mb: float | None = None  # END lines: RSS change since the matching START


def format_line(
    at: datetime,
    kind: str,
    task: str,
    *,
    rss_mb: float,
    vms_mb: float,
    available_mb: float,
    free_percent: float,
    streams: int,
    change_mb: float | None = None,
) -> str:
    """Render one line (without newline) exactly as the summariser parses it."""
    text = (
        f"{at.strftime(TIME_FORMAT)} {kind} {LABELS[kind]} [{task}] | "
        f"RSS: {rss_mb:6.1f} MB | VMS: {vms_mb:6.1f} MB | "
        f"System Available: {available_mb:.1f} MB ({free_percent:.1f}% free) | "
        f"{STREAMS_FIELD}: {streams}"
    )
    if change_mb is not None:
        text += f" | {CHANGE_FIELD}: {change_mb:+.1f} MB"
    return text


def parse_line(text: str) -> LogLine | None:
    """Parse one line; None for anything else (a crash-truncated line, a BOM, a pasted note)."""
    match = _LINE_RE.fullmatch(text.strip().lstrip("\ufeff"))
    if match is None or LABELS[match["kind"]] != match["label"]:
        return None
    stamp = match["at"]
    try:  # slicing is ~10x faster than strptime, which matters at 600,000 lines
        at = datetime(
            int(stamp[0:4]),
            int(stamp[5:7]),
            int(stamp[8:10]),
            int(stamp[11:13]),
            int(stamp[14:16]),
            int(stamp[17:19]),
        )
    except ValueError:  # the shape matched but e.g. month 13
        return None
    extra = match["extra"]
    streams = change = None
    if extra:
        if found := _STREAMS_RE.search(extra):
            streams = int(found[1])
        if found := _CHANGE_RE.search(extra):
            change = float(found[1])
    return LogLine(
        at=at,
        kind=match["kind"],
        task=match["task"],
        rss_mb=float(match["rss"]),
        vms_mb=float(match["vms"]),
        available_mb=float(match["avail"]),
        free_percent=float(match["free"]),
        streams=streams,
        change_mb=change,
    )


def is_idle(line: LogLine) -> bool:
    """A periodic line with no job and no stream (old lines without a count: by name only)."""
    return line.kind == PERIODIC and line.task == IDLE and not line.streams


# --------------------------------------------------------------------------- report types


@dataclass(frozen=True, slots=True)
class TaskFigures:
    """START->END RSS change of one task's runs."""

    task: str
    runs: int
    typical_change_mb: float | None  # median
    worst_change_mb: float | None  # largest increase
    worst_at: str | None
    typical_seconds: float | None
    longest_seconds: float | None
    unfinished: int  # a START whose END never came (the process stopped during the task)


@dataclass(frozen=True, slots=True)
class Episode:
    """A stretch of time with RSS above its local baseline."""

    start: str
    end: str
    peak_mb: float
    peak_at: str
    baseline_mb: float
    tasks: tuple[str, ...]
    max_streams: int | None


@dataclass(frozen=True, slots=True)
class Restart:
    at: str
    reason: str


@dataclass(frozen=True, slots=True)
class DayFigures:
    day: str
    idle_samples: int
    idle_min_mb: float | None
    idle_median_mb: float | None
    idle_max_mb: float | None
    peak_mb: float


@dataclass(frozen=True, slots=True)
class LeakVerdict:
    """``verdict``: "leak", "no leak", "step" (rose once, then held) or "not enough data"."""

    verdict: str
    explanation: str
    slope_mb_per_day: float | None
    late_slope_mb_per_day: float | None
    rising_pairs: float | None
    idle_hours: float
    baseline_mb: float | None
    threshold_mb_per_day: float | None
    rule: str


@dataclass(frozen=True, slots=True)
class Report:
    files: tuple[str, ...]
    lines: int
    skipped: int
    first: str | None
    last: str | None
    peak_mb: float | None
    peak_at: str | None
    restarts: int
    restart_list: tuple[Restart, ...]
    gaps: int
    tasks: tuple[TaskFigures, ...]
    episodes: tuple[Episode, ...]
    days: tuple[DayFigures, ...]
    leak: LeakVerdict

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


# --------------------------------------------------------------------------- aggregation helpers


def _counter_median(counts: Counter[int]) -> float | None:
    """Median of values stored as integer tenths with multiplicities."""
    total = sum(counts.values())
    if not total:
        return None
    lo_rank, hi_rank = (total - 1) // 2, total // 2
    seen = 0
    lo = hi = None
    for value in sorted(counts):
        seen += counts[value]
        if lo is None and seen > lo_rank:
            lo = value
        if seen > hi_rank:
            hi = value
            break
    assert lo is not None
    assert hi is not None
    return (lo + hi) / 2 / _TENTH


def _stamp(at: datetime | None) -> str | None:
    return None if at is None else at.strftime(TIME_FORMAT)


@dataclass(slots=True)
class _TaskAcc:
    open_runs: list[tuple[datetime, float]] = field(default_factory=list)
    runs: int = 0
    changes: Counter[int] = field(default_factory=Counter)
    durations: Counter[int] = field(default_factory=Counter)
    worst: float | None = None
    worst_at: datetime | None = None
    unfinished: int = 0


@dataclass(slots=True)
class _Bucket:
    """Downsampled RSS for charts and episodes: one per time slot and process lifetime."""

    index: int
    segment: int
    first: datetime
    last: datetime
    n: int
    low: float
    high: float
    high_at: datetime
    total: float
    streams: int | None
    tasks: tuple[str, ...]

    def merge(self, other: _Bucket) -> None:
        self.last = other.last
        self.n += other.n
        self.low = min(self.low, other.low)
        if other.high > self.high:
            self.high, self.high_at = other.high, other.high_at
        self.total += other.total
        if other.streams is not None:
            self.streams = max(self.streams or 0, other.streams)
        self.tasks = _add_tasks(self.tasks, other.tasks)


def _add_tasks(have: tuple[str, ...], new: Iterable[str]) -> tuple[str, ...]:
    out = list(have)
    for name in new:
        if name not in out and len(out) < 4:
            out.append(name)
    return tuple(out)


@dataclass(slots=True)
class _Segment:
    """One process lifetime: idle medians per hour for the leak rule."""

    hour: int | None = None
    hour_counts: Counter[int] = field(default_factory=Counter)
    points: list[tuple[float, float]] = field(default_factory=list)  # (epoch s, median MB)

    def add_idle(self, at: datetime, rss: float) -> None:
        hour = int(at.timestamp() // 3600)
        if hour != self.hour:
            self.close_hour()
            self.hour = hour
        self.hour_counts[round(rss * _TENTH)] += 1

    def close_hour(self) -> None:
        if self.hour is not None and self.hour_counts:
            median = _counter_median(self.hour_counts)
            assert median is not None
            self.points.append((self.hour * 3600 + 1800.0, median))
        self.hour_counts = Counter()
        self.hour = None


# --------------------------------------------------------------------------- the summariser


class Summariser:
    """Feed lines in file order with :meth:`feed`; :meth:`report` at the end. Bounded memory."""

    def __init__(self) -> None:
        self.files: list[str] = []
        self.lines = 0
        self.skipped = 0
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.peak: tuple[float, datetime] | None = None
        self.restarts: list[tuple[datetime, str]] = []
        self.restart_count = 0
        self.gaps = 0
        self._prev: LogLine | None = None
        self._tasks: dict[str, _TaskAcc] = {}
        self._segment_id = 0
        self._segments: list[_Segment] = [_Segment()]
        self._days: dict[date, tuple[Counter[int], list[float]]] = {}
        self._width = 60  # bucket width in seconds, doubled whenever MAX_BUCKETS is reached
        self._buckets: list[_Bucket] = []
        # Longest task spans for the chart: min-heap of (seconds, seq, start, end, name).
        self._spans: list[tuple[float, int, datetime, datetime, str]] = []
        self._seq = 0

    # ---- input
    def feed_text(self, raw: str) -> None:
        line = parse_line(raw)
        if line is None:
            if raw.strip():
                self.skipped += 1
            return
        self.feed(line)

    def feed(self, line: LogLine) -> None:
        self.lines += 1
        self._seq += 1
        prev = self._prev
        if prev is not None:  # a log that begins with a start-up marker has nothing to split
            self._detect_restart(prev, line)
        self._prev = line
        if self.first is None or line.at < self.first:
            self.first = line.at
        if self.last is None or line.at > self.last:
            self.last = line.at
        if self.peak is None or line.rss_mb > self.peak[0]:
            self.peak = (line.rss_mb, line.at)
        self._task(line)
        day = self._days.get(line.at.date())
        if day is None:
            day = self._days[line.at.date()] = (Counter(), [line.rss_mb])
        day[1][0] = max(day[1][0], line.rss_mb)
        if is_idle(line):
            day[0][round(line.rss_mb * _TENTH)] += 1
            self._segments[-1].add_idle(line.at, line.rss_mb)
        self._bucket(line)

    def _detect_restart(self, prev: LogLine, line: LogLine) -> None:
        gap = (line.at - prev.at).total_seconds()
        reason = None
        if line.kind == START and line.task == STARTUP_TASK:
            reason = "start-up marker"
        elif prev.kind == END and prev.task == SHUTDOWN_TASK:
            reason = "line after a clean shutdown"
        elif gap < -GAP_SECONDS:
            reason = "time went backwards"
        elif gap > GAP_SECONDS and line.rss_mb < prev.rss_mb * (1 - RESTART_DROP):
            reason = f"{gap / 60:.0f} min gap and RSS fell {1 - line.rss_mb / prev.rss_mb:.0%}"
        if gap > GAP_SECONDS:
            self.gaps += 1
        if reason is None:
            return
        self.restart_count += 1
        if len(self.restarts) < MAX_RESTARTS_KEPT:
            self.restarts.append((line.at, reason))
        for acc in self._tasks.values():  # runs cut short by the stop
            acc.unfinished += len(acc.open_runs)
            acc.open_runs.clear()
        self._segments[-1].close_hour()
        self._segments.append(_Segment())
        self._segment_id += 1

    def _task_acc(self, name: str) -> _TaskAcc:
        acc = self._tasks.get(name)
        if acc is None:
            if len(self._tasks) >= MAX_TASKS:
                name = "(other tasks)"
                acc = self._tasks.get(name)
            if acc is None:
                acc = self._tasks[name] = _TaskAcc()
        return acc

    def _task(self, line: LogLine) -> None:
        if line.kind == PERIODIC:
            return
        acc = self._task_acc(line.task)
        if line.kind == START:
            if len(acc.open_runs) >= MAX_OPEN_RUNS:
                acc.open_runs.pop(0)
                acc.unfinished += 1
            acc.open_runs.append((line.at, line.rss_mb))
            return
        started = acc.open_runs.pop() if acc.open_runs else None
        if started is not None:
            change = line.rss_mb - started[1]
            seconds = max(0.0, (line.at - started[0]).total_seconds())
            acc.durations[round(seconds)] += 1
            self._span(started[0], line.at, line.task)
        elif line.change_mb is not None:  # the START is in a file we were not given
            change = line.change_mb
        else:
            return
        if line.change_mb is not None:
            change = line.change_mb  # the writer's own figure: exact, not rounded twice
        acc.runs += 1
        acc.changes[round(change * _TENTH)] += 1
        if acc.worst is None or change > acc.worst:
            acc.worst, acc.worst_at = change, line.at

    def _span(self, start: datetime, end: datetime, name: str) -> None:
        item = ((end - start).total_seconds(), self._seq, start, end, name)
        if len(self._spans) < MAX_SPANS_KEPT:
            heapq.heappush(self._spans, item)
        else:
            heapq.heappushpop(self._spans, item)

    def _bucket(self, line: LogLine) -> None:
        index = int(line.at.timestamp() // self._width)
        tasks = () if line.task in (IDLE, STREAMING) else (line.task,)
        last = self._buckets[-1] if self._buckets else None
        if last is not None and last.index == index and last.segment == self._segment_id:
            last.merge(
                _Bucket(
                    index, self._segment_id, line.at, line.at, 1, line.rss_mb, line.rss_mb,
                    line.at, line.rss_mb, line.streams, tasks,
                )
            )  # fmt: skip
            return
        self._buckets.append(
            _Bucket(
                index, self._segment_id, line.at, line.at, 1, line.rss_mb, line.rss_mb,
                line.at, line.rss_mb, line.streams, tasks,
            )
        )  # fmt: skip
        if len(self._buckets) > MAX_BUCKETS:
            self._coarsen()

    def _coarsen(self) -> None:
        self._width *= 2
        merged: list[_Bucket] = []
        for bucket in self._buckets:
            bucket.index = int(bucket.first.timestamp() // self._width)
            last = merged[-1] if merged else None
            if last is not None and last.index == bucket.index and last.segment == bucket.segment:
                last.merge(bucket)
            else:
                merged.append(bucket)
        self._buckets = merged

    # ---- output
    def report(self) -> Report:
        self._segments[-1].close_hour()
        tasks = []
        for name, acc in self._tasks.items():
            typical = _counter_median(acc.changes)
            seconds = _counter_median(Counter({k * _TENTH: v for k, v in acc.durations.items()}))
            tasks.append(
                TaskFigures(
                    task=name,
                    runs=acc.runs,
                    typical_change_mb=typical,
                    worst_change_mb=None if acc.worst is None else round(acc.worst, 1),
                    worst_at=_stamp(acc.worst_at),
                    typical_seconds=seconds,
                    longest_seconds=float(max(acc.durations)) if acc.durations else None,
                    unfinished=acc.unfinished + len(acc.open_runs),
                )
            )
        tasks.sort(key=lambda t: (-(t.worst_change_mb or -math.inf), t.task))
        days = []
        for day, (counts, peak) in sorted(self._days.items()):
            days.append(
                DayFigures(
                    day=day.isoformat(),
                    idle_samples=sum(counts.values()),
                    idle_min_mb=min(counts) / _TENTH if counts else None,
                    idle_median_mb=_counter_median(counts),
                    idle_max_mb=max(counts) / _TENTH if counts else None,
                    peak_mb=peak[0],
                )
            )
        return Report(
            files=tuple(self.files),
            lines=self.lines,
            skipped=self.skipped,
            first=_stamp(self.first),
            last=_stamp(self.last),
            peak_mb=None if self.peak is None else self.peak[0],
            peak_at=None if self.peak is None else _stamp(self.peak[1]),
            restarts=self.restart_count,
            restart_list=tuple(Restart(_stamp(at) or "", why) for at, why in self.restarts),
            gaps=self.gaps,
            tasks=tuple(tasks),
            episodes=tuple(self.episodes()),
            days=tuple(days),
            leak=leak_verdict([s.points for s in self._segments]),
        )

    def episodes(self, top: int = 10) -> list[Episode]:
        """Runs of buckets whose peak is above the local baseline, largest excess first."""
        buckets = self._buckets
        found: list[tuple[float, Episode]] = []
        current: list[tuple[_Bucket, float]] = []

        def close() -> None:
            if not current:
                return
            peak_bucket, base = max(current, key=lambda item: item[0].high)
            tasks: tuple[str, ...] = ()
            streams: int | None = None
            for bucket, _ in current:
                tasks = _add_tasks(tasks, bucket.tasks)
                if bucket.streams is not None:
                    streams = max(streams or 0, bucket.streams)
            episode = Episode(
                start=_stamp(current[0][0].first) or "",
                end=_stamp(current[-1][0].last) or "",
                peak_mb=peak_bucket.high,
                peak_at=_stamp(peak_bucket.high_at) or "",
                baseline_mb=round(base, 1),
                tasks=tasks,
                max_streams=streams,
            )
            found.append((peak_bucket.high - base, episode))
            current.clear()

        # Sliding window of bucket minima (sorted) over +-EPISODE_WINDOW of the same lifetime.
        window = EPISODE_WINDOW.total_seconds()
        lows: list[float] = []
        lo = hi = 0  # buckets[lo:hi] are in ``lows``
        for bucket in buckets:
            t = bucket.first.timestamp()
            while hi < len(buckets) and (
                buckets[hi].segment == bucket.segment
                and buckets[hi].first.timestamp() - t <= window
            ):
                bisect.insort(lows, buckets[hi].low)
                hi += 1
            while (
                buckets[lo].segment != bucket.segment or t - buckets[lo].first.timestamp() > window
            ):
                del lows[bisect.bisect_left(lows, buckets[lo].low)]
                lo += 1
            base = lows[int(len(lows) * EPISODE_BASE_QUANTILE)]
            above = bucket.high > base + max(EPISODE_MIN_MB, EPISODE_MIN_SHARE * base)
            if current and (not above or current[-1][0].segment != bucket.segment):
                close()
            if above:
                current.append((bucket, base))
        close()
        found.sort(key=lambda item: -item[0])
        return [episode for _, episode in found[:top]]

    def chart_series(self) -> dict[str, Any]:
        """Downsampled RSS, the longest task spans and the restarts, for :mod:`streambot.memlog_chart`."""
        return {
            "buckets": [
                (b.first, b.last, b.low, b.total / b.n, b.high, b.segment) for b in self._buckets
            ],
            "spans": sorted((start, end, name) for _, _, start, end, name in self._spans),
            "restarts": list(self.restarts),
        }


# --------------------------------------------------------------------------- the leak rule


def _pair_slopes(points: Sequence[tuple[float, float]], budget: int) -> Iterator[float]:
    """Slopes in MB/day of point pairs at least an hour apart (every ``step``-th i if too many)."""
    n = len(points)
    step = max(1, math.ceil(n * (n - 1) / 2 / max(1, budget)))
    for i in range(0, n, step):
        t_i, v_i = points[i]
        for j in range(i + 1, n):
            t_j, v_j = points[j]
            if t_j - t_i >= 3600:
                yield (v_j - v_i) / ((t_j - t_i) / 86400)


def theil_sen(segments: Sequence[Sequence[tuple[float, float]]]) -> tuple[float, float] | None:
    """Median pairwise slope (MB/day) pooled over segments, and the share of rising pairs."""
    slopes: list[float] = []
    for points in segments:
        slopes.extend(_pair_slopes(points, MAX_PAIRS // max(1, len(segments))))
    if not slopes:
        return None
    rising = sum(1 for s in slopes if s > 0) / len(slopes)
    return statistics.median(slopes), rising


def leak_verdict(segments: Sequence[Sequence[tuple[float, float]]]) -> LeakVerdict:
    """Judge the hourly idle medians of each process lifetime (see the LEAK_* constants)."""
    rule = (
        f"leak: idle RSS (hourly medians, pairs within one process lifetime) rises by at least "
        f"max({LEAK_MIN_MB_PER_DAY:g} MB, {LEAK_MIN_SHARE_PER_DAY:.0%} of the idle baseline) per "
        f"day (Theil-Sen), still at half that rate in the later half of each lifetime, in at "
        f"least {LEAK_MIN_POSITIVE:.0%} of pairs, over at least {LEAK_MIN_HOURS:g} h of idle samples"
    )
    usable = [list(points) for points in segments if len(points) >= 2]
    hours = sum((p[-1][0] - p[0][0]) / 3600 for p in usable)
    values = [v for points in segments for _, v in points]
    baseline = statistics.median(values) if values else None

    def verdict(kind: str, text: str, **figures: float | None) -> LeakVerdict:
        def figure(name: str) -> float | None:
            value = figures.get(name)
            return None if value is None else round(value, 3)

        return LeakVerdict(
            verdict=kind,
            explanation=text,
            slope_mb_per_day=figure("slope_mb_per_day"),
            late_slope_mb_per_day=figure("late_slope_mb_per_day"),
            rising_pairs=figure("rising_pairs"),
            idle_hours=round(hours, 1),
            baseline_mb=baseline,
            threshold_mb_per_day=figure("threshold_mb_per_day"),
            rule=rule,
        )

    if hours < LEAK_MIN_HOURS or baseline is None:
        return verdict(
            "not enough data",
            f"{hours:.1f} h of idle samples; the leak rule needs {LEAK_MIN_HOURS:g} h",
        )
    whole = theil_sen(usable)
    assert whole is not None
    slope, rising = whole
    threshold = max(LEAK_MIN_MB_PER_DAY, LEAK_MIN_SHARE_PER_DAY * baseline)
    late_parts = []
    for points in usable:
        middle = (points[0][0] + points[-1][0]) / 2
        late_parts.append([p for p in points if p[0] >= middle])
    late = theil_sen(late_parts)
    late_slope = late[0] if late else None
    figures = {
        "slope_mb_per_day": slope,
        "late_slope_mb_per_day": late_slope,
        "rising_pairs": rising,
        "threshold_mb_per_day": threshold,
    }
    if slope < threshold or rising < LEAK_MIN_POSITIVE:
        return verdict(
            "no leak",
            f"idle RSS trend {slope:+.1f} MB/day (threshold {threshold:.1f}), "
            f"{rising:.0%} of pairs rising",
            **figures,
        )
    if late_slope is not None and late_slope < threshold / 2:
        return verdict(
            "step",
            f"idle RSS rose ({slope:+.1f} MB/day overall) but the later half of each lifetime "
            f"is flat ({late_slope:+.1f} MB/day): a high-water mark after load, not a steady leak",
            **figures,
        )
    return verdict(
        "leak",
        f"idle RSS grows {slope:+.1f} MB/day (threshold {threshold:.1f}; later half "
        f"{(late_slope or 0):+.1f}), {rising:.0%} of pairs rising",
        **figures,
    )


# --------------------------------------------------------------------------- files and text


def input_files(paths: Sequence[Path]) -> list[Path]:
    """Files to read: each file as given, each folder's ``memory_*.log`` by name (date) order.

    Raises ``FileNotFoundError`` for a path that does not exist.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.glob(FILE_GLOB) if p.is_file()))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(2, "no such file or folder", str(path))
    return files


def summarise_files(files: Sequence[Path], summariser: Summariser | None = None) -> Summariser:
    """Stream every file through one summariser (OSError propagates to the caller)."""
    summariser = summariser or Summariser()
    for path in files:
        summariser.files.append(str(path))
        with path.open(encoding="utf-8", errors="replace") as fh:
            for raw in fh:
                summariser.feed_text(raw)
    return summariser


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [render(headers), *(render(row) for row in rows)]


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def format_report(report: Report, out: TextIO) -> None:
    """Plain-text tables for a terminal or a bug report."""
    w = out.write
    span = f", {report.first} .. {report.last}" if report.first else ""
    w(f"{report.lines} lines from {len(report.files)} file(s){span}")
    w(f" ({report.skipped} unparseable skipped)\n" if report.skipped else "\n")
    if report.peak_mb is not None:
        w(f"Highest RSS {report.peak_mb:.1f} MB at {report.peak_at}\n")
    w(f"Restarts: {report.restarts}")
    w(f"; gaps over {GAP_SECONDS / 60:.0f} min: {report.gaps}\n")
    for restart in report.restart_list[:20]:
        w(f"  {restart.at}  {restart.reason}\n")

    w("\nTasks: RSS change from START to END (MB)\n")
    if report.tasks:
        rows = [
            [
                t.task,
                str(t.runs),
                _num(t.typical_change_mb, "+.1f"),
                _num(t.worst_change_mb, "+.1f"),
                t.worst_at or "-",
                _num(t.typical_seconds, ".0f"),
                _num(t.longest_seconds, ".0f"),
                str(t.unfinished),
            ]
            for t in report.tasks
        ]
        headers = ["Task", "Runs", "Typical", "Worst", "Worst at", "Typical s", "Longest s"]
        for line in _table([*headers, "Unfinished"], rows, numeric={1, 2, 3, 5, 6, 7}):
            w(line + "\n")
    else:
        w("(no task lines)\n")

    w("\nRSS episodes (above the local baseline), largest first\n")
    if report.episodes:
        rows = [
            [
                str(i),
                e.start,
                e.end[11:] if e.end[:10] == e.start[:10] else e.end,
                _num(e.peak_mb),
                e.peak_at[11:],
                _num(e.baseline_mb),
                ", ".join(e.tasks) or "-",
                _num(e.max_streams, "d"),
            ]
            for i, e in enumerate(report.episodes, 1)
        ]
        headers = ["#", "From", "To", "Peak MB", "Peak at", "Baseline", "Tasks", "Streams"]
        for line in _table(headers, rows, numeric={0, 3, 5, 7}):
            w(line + "\n")
    else:
        w("(none)\n")

    w("\nIdle RSS by day (no job, no stream)\n")
    if report.days:
        rows = [
            [
                d.day,
                str(d.idle_samples),
                _num(d.idle_min_mb),
                _num(d.idle_median_mb),
                _num(d.idle_max_mb),
                _num(d.peak_mb),
            ]
            for d in report.days
        ]
        headers = ["Day", "Idle samples", "Min MB", "Median MB", "Max MB", "Peak MB (all)"]
        for line in _table(headers, rows, numeric={1, 2, 3, 4, 5}):
            w(line + "\n")
    else:
        w("(no samples)\n")

    leak = report.leak
    w(f"\nLeak check: {leak.verdict.upper()}: {leak.explanation}\n")
    w(f"Rule: {leak.rule}.\n")


def run(
    paths: Sequence[Path], *, as_json: bool, chart: Path | None, out: TextIO, err: TextIO
) -> int:
    """``memlog``: 0 on success; 2 when no log is found or one cannot be read; 3 when the
    chart was asked for but matplotlib is missing (the text summary is printed first)."""
    if not paths:
        paths = [default_log_dir()]
    try:
        files = input_files(paths)
    except FileNotFoundError as exc:
        err.write(f"memlog: cannot read {exc.filename}: {exc.strerror}\n")
        return 2
    if not files:
        shown = ", ".join(str(p) for p in paths)
        err.write(f"memlog: no {FILE_GLOB} files in {shown}\n")
        return 2
    try:
        summariser = summarise_files(files)
    except OSError as exc:
        err.write(f"memlog: cannot read {exc.filename}: {exc.strerror or exc}\n")
        return 2
    report = summariser.report()
    if as_json:
        out.write(report.to_json() + "\n")
    else:
        format_report(report, out)
    if chart is not None:
        try:
            from streambot.memlog_chart import draw
        except ImportError:
            err.write("memlog: --chart needs matplotlib: pip install 'streambot[chart]'\n")
            return 3
        try:
            draw(summariser.chart_series(), report, chart)
        except OSError as exc:
            err.write(f"memlog: cannot write {chart}: {exc.strerror or exc}\n")
            return 2
        err.write(f"memlog: chart written to {chart}\n")
    return 0


def default_log_dir() -> Path:
    """LOG_DIR from config.env/the environment when they are valid enough to say, else ./logs."""
    from streambot.config import ConfigError, Settings

    try:
        return Settings.load(require_telegram=False).log_dir
    except ConfigError:
        return Path("logs")
