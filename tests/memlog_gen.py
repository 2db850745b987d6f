"""Synthetic memory logs for the memlog tests: a leak, a traffic hump, restarts, noise, junk.

Lines are produced lazily (a generator) so a week of one-second samples never sits in a list.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from streambot.memlog import END, IDLE, PERIODIC, START, STARTUP_TASK, STREAMING, format_line

T0 = datetime(2025, 11, 10, 0, 0, 0)


@dataclass
class Scenario:
    days: float = 4.0
    interval_s: int = 120
    baseline_mb: float = 200.0
    leak_mb_per_day: float = 0.0
    noise_mb: float = 2.0
    #: (start hour from T0, length in hours, extra MB, streams): streams are open meanwhile
    humps: list[tuple[float, float, float, int]] = field(default_factory=list)
    #: one-off rise of idle RSS that then stays (start hour, MB)
    steps: list[tuple[float, float]] = field(default_factory=list)
    #: hours from T0 at which the process restarts (RSS back to baseline)
    restarts: list[float] = field(default_factory=list)
    #: write a Startup marker at restarts (False: only a gap and the RSS drop show it)
    markers: bool = True
    restart_gap_s: int = 30
    #: a "Backup" job every this many hours, growing RSS by backup_mb while it runs
    backup_every_h: float = 6.0
    backup_mb: float = 30.0
    seed: int = 1


def lines(s: Scenario) -> Iterator[str]:
    rng = random.Random(s.seed)
    end = T0 + timedelta(days=s.days)
    at = T0
    born = T0  # start of the current process lifetime
    restarts = sorted(T0 + timedelta(hours=h) for h in s.restarts)
    next_backup = T0 + timedelta(hours=s.backup_every_h / 2)
    backup_until: datetime | None = None

    def line(kind: str, task: str, rss: float, streams: int, change: float | None = None) -> str:
        return format_line(
            at,
            kind,
            task,
            rss_mb=rss,
            vms_mb=rss * 2.5,
            available_mb=4000.0,
            free_percent=50.0,
            streams=streams,
            change_mb=change,
        )

    if s.markers:
        yield line(START, STARTUP_TASK, s.baseline_mb * 0.6, 0)
        yield line(END, STARTUP_TASK, s.baseline_mb, 0, change=s.baseline_mb * 0.4)
    while at < end:
        if restarts and at >= restarts[0]:
            restarts.pop(0)
            at += timedelta(seconds=s.restart_gap_s)
            born = at
            backup_until = None
            if s.markers:
                yield line(START, STARTUP_TASK, s.baseline_mb * 0.6, 0)
                yield line(END, STARTUP_TASK, s.baseline_mb, 0, change=s.baseline_mb * 0.4)
        hours = (at - T0).total_seconds() / 3600
        age_days = (at - born).total_seconds() / 86400
        rss = s.baseline_mb + s.leak_mb_per_day * age_days + rng.gauss(0, s.noise_mb)
        rss += sum(mb for h, mb in s.steps if hours >= h and born <= T0 + timedelta(hours=h))
        streams = 0
        for start, length, extra, n in s.humps:
            if start <= hours < start + length:
                rss += extra
                streams = n
        task = STREAMING if streams else IDLE
        if s.backup_every_h and backup_until is None and at >= next_backup:
            backup_until = at + timedelta(minutes=10)
            next_backup = at + timedelta(hours=s.backup_every_h)
            yield line(START, "Backup", rss, streams)
        if backup_until is not None:
            rss += s.backup_mb
            task = "Backup"
            if at >= backup_until:
                yield line(END, "Backup", rss, streams, change=s.backup_mb)
                backup_until = None
                task = STREAMING if streams else IDLE
                rss -= s.backup_mb
        yield line(PERIODIC, task, max(rss, 1.0), streams)
        at += timedelta(seconds=s.interval_s)


def write_days(s: Scenario, folder: Path, junk: bool = False) -> list[Path]:
    """Write ``memory_YYYYMMDD.log`` files as the writer would; return them in date order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    current = None
    fh = None
    try:
        for i, text in enumerate(lines(s)):
            day = text[:10].replace("-", "")
            if day != current:
                if fh is not None:
                    fh.close()
                path = folder / f"memory_{day}.log"
                paths.append(path)
                fh = path.open("a", encoding="utf-8")
                current = day
            assert fh is not None
            fh.write(text + "\n")
            if junk and i % 997 == 5:
                fh.write(text[: len(text) // 2] + "\n")  # a line cut short by a crash
                fh.write("\ufeffnote from the operator: disk was full\n")
    finally:
        if fh is not None:
            fh.close()
    return paths
