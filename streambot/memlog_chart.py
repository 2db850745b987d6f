"""``memlog --chart FILE.png``: RSS over time with task spans and restarts marked.

matplotlib is an optional extra (``pip install 'streambot[chart]'``): the bot itself never
draws, and a server install should not pull in a plotting stack it does not use. Importing this
module without matplotlib raises ImportError, which the CLI turns into a one-line hint.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import matplotlib.dates as mdates
import matplotlib.pyplot as plt

if TYPE_CHECKING:  # memlog imports this module lazily; a type-only import keeps it one-way
    from streambot.memlog import Report

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # as in the report (memlog.TIME_FORMAT, not imported: no cycle)

_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#edc948", "#76b7b2", "#ff9da7")


def draw(series: dict[str, Any], report: Report, path: Path) -> None:
    """Write the chart to ``path`` (PNG, or any format matplotlib knows from the suffix)."""
    matplotlib.use("Agg")  # files only, never a window: servers have no display
    fig, ax = plt.subplots(figsize=(12, 5), dpi=100)
    try:
        buckets = series["buckets"]
        # One line per process lifetime, so a restart is a break, not a slanted line.
        by_segment: dict[int, list[Any]] = {}
        for bucket in buckets:
            by_segment.setdefault(bucket[5], []).append(bucket)
        for index, rows in enumerate(by_segment.values()):
            times = [row[0] for row in rows]
            ax.fill_between(
                times,
                [row[2] for row in rows],
                [row[4] for row in rows],
                color="#9ecae1",
                alpha=0.5,
                linewidth=0,
                label="RSS min-max" if index == 0 else None,
            )
            ax.plot(
                times,
                [row[3] for row in rows],
                color="#08519c",
                linewidth=1,
                label="RSS mean" if index == 0 else None,
            )
        colours: dict[str, str] = {}
        for start, end, name in series["spans"]:
            colour = colours.setdefault(name, _COLOURS[len(colours) % len(_COLOURS)])
            ax.axvspan(
                start,
                end,
                color=colour,
                alpha=0.25,
                linewidth=0,
                label=name if name not in ax.get_legend_handles_labels()[1] else None,
            )
        for number, (at, _reason) in enumerate(series["restarts"]):
            ax.axvline(
                at,
                color="#d62728",
                linestyle="--",
                linewidth=1,
                label="restart" if number == 0 else None,
            )
        first, last = (buckets[0][0], buckets[-1][1]) if buckets else (None, None)
        spread = (last - first).total_seconds() if first and last else 0.0
        labelled: list[datetime] = []
        for episode in report.episodes[:5]:
            x = datetime.strptime(episode.peak_at, TIME_FORMAT)
            # Labels closer than 4% of the time axis would print on top of each other.
            if any(abs((x - other).total_seconds()) < 0.04 * spread for other in labelled):
                continue
            labelled.append(x)
            ax.annotate(
                f"{episode.peak_mb:.0f} MB",
                xy=(x, episode.peak_mb),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
        leak = report.leak
        ax.set_title(f"Memory log: {report.first} .. {report.last}  (leak check: {leak.verdict})")
        ax.set_ylabel("RSS (MB)")
        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(loc="upper left", fontsize=8, ncol=4)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
