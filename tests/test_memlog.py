"""``memlog``: per-task changes, peak episodes, restarts and the leak rule, on generated logs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streambot import memlog
from streambot.memlog import (
    END,
    IDLE,
    PERIODIC,
    START,
    LogLine,
    Summariser,
    format_line,
    format_report,
    parse_line,
    run,
)

from .helpers import cli_env
from .memlog_gen import T0, Scenario, lines, write_days

ROOT = Path(__file__).resolve().parent.parent
OLD_SAMPLE = Path(__file__).parent / "data" / "memory_sample.log"


def summary(scenario: Scenario) -> memlog.Report:
    s = Summariser()
    for text in lines(scenario):
        s.feed_text(text)
    return s.report()


def line(at: datetime, kind: str, task: str, rss: float, streams: int = 0) -> LogLine:
    return LogLine(at, kind, task, rss, 2 * rss, 1000.0, 50.0, streams)


# --------------------------------------------------------------------------- the line format


def test_format_and_parse_round_trip_with_streams_and_change() -> None:
    text = format_line(
        T0,
        END,
        "gc + report",
        rss_mb=250.04,
        vms_mb=512.1,
        available_mb=1020.0,
        free_percent=50.0,
        streams=3,
        change_mb=-4.66,
    )
    assert text == (
        "2025-11-10 00:00:00 <<< TASK END [gc + report] | RSS:  250.0 MB | VMS:  512.1 MB | "
        "System Available: 1020.0 MB (50.0% free) | Streams: 3 | Change: -4.7 MB"
    )
    parsed = parse_line(text)
    assert parsed is not None
    assert (parsed.task, parsed.rss_mb, parsed.streams, parsed.change_mb) == (
        "gc + report",
        250.0,
        3,
        -4.7,
    )


def test_old_lines_and_unknown_fields_still_parse() -> None:
    """Lines written before Streams/Change existed, and a field added later, parse."""
    old = (
        "2025-11-16 08:30:00 --- PERIODIC [Idle] | RSS:  245.3 MB | VMS:  512.1 MB | "
        "System Available: 1024.5 MB (50.2% free)"
    )
    parsed = parse_line(old)
    assert parsed is not None
    assert (parsed.streams, parsed.change_mb) == (None, None)
    newer = parse_line(old + " | Streams: 2 | Threads: 9")
    assert newer is not None
    assert newer.streams == 2


@given(st.text(max_size=300))
def test_any_text_is_a_line_or_skipped_never_an_error(text: str) -> None:
    s = Summariser()
    s.feed_text(text)
    s.report()


# --------------------------------------------------------------------------- tasks and episodes


def test_per_task_typical_is_the_median_and_worst_the_largest_increase() -> None:
    s = Summariser()
    at = T0
    for change in (1.0, 2.0, 3.0, 50.0, -10.0):
        s.feed(line(at, START, "Backup", 200.0))
        at += timedelta(seconds=30)
        s.feed(line(at, END, "Backup", 200.0 + change))
        at += timedelta(minutes=10)
    s.feed(line(at, START, "Backup", 200.0))  # never ends: the log stops here
    (backup,) = s.report().tasks
    assert (backup.runs, backup.typical_change_mb, backup.worst_change_mb) == (5, 2.0, 50.0)
    assert backup.worst_at == "2025-11-10 00:32:00"
    assert (backup.typical_seconds, backup.longest_seconds, backup.unfinished) == (30, 30, 1)


def test_an_end_whose_start_is_in_another_file_uses_its_change_field() -> None:
    s = Summariser()
    s.feed_text(
        format_line(
            T0, END, "Nightly", rss_mb=300, vms_mb=1, available_mb=1, free_percent=1,
            streams=0, change_mb=12.5,
        )
    )  # fmt: skip
    (task,) = s.report().tasks
    assert (task.runs, task.typical_change_mb) == (1, 12.5)


def test_one_spike_over_many_lines_is_one_episode() -> None:
    """Ten lines of the same spike and a second, later spike: two episodes, biggest first."""
    s = Summariser()
    at = T0
    for i in range(24 * 30):  # 12 h at 1 line a minute
        rss = 200.0
        if 100 <= i < 110:
            rss = 300.0 + i  # one spike, ten lines
        if 500 <= i < 503:
            rss = 260.0
        s.feed(line(at, PERIODIC, IDLE if rss == 200 else "Backup", rss))
        at += timedelta(minutes=1)
    episodes = s.report().episodes
    assert [(e.start, e.end, e.peak_mb, e.tasks) for e in episodes] == [
        ("2025-11-10 01:40:00", "2025-11-10 01:49:00", 409.0, ("Backup",)),
        ("2025-11-10 08:20:00", "2025-11-10 08:22:00", 260.0, ("Backup",)),
    ]
    assert episodes[0].baseline_mb == 200.0


def test_a_traffic_hump_is_an_episode_with_its_streams() -> None:
    report = summary(Scenario(days=3, humps=[(30, 8, 150, 12)]))
    top = report.episodes[0]
    assert (top.start[:13], top.max_streams) == ("2025-11-11 06", 12)
    assert top.peak_mb > 340
    assert 190 < top.baseline_mb < 210


# --------------------------------------------------------------------------- restarts and leaks


def test_restarts_are_found_by_marker_and_by_gap_with_a_drop() -> None:
    marked = summary(Scenario(days=3, restarts=[20, 50]))
    assert marked.restarts == 2
    assert {r.reason for r in marked.restart_list} == {"start-up marker"}
    unmarked = summary(
        Scenario(days=3, leak_mb_per_day=40, restarts=[30], markers=False, restart_gap_s=1800)
    )
    assert unmarked.restarts == 1
    assert unmarked.restart_list[0].reason.startswith("32 min gap and RSS fell")
    assert unmarked.gaps == 1


@pytest.mark.parametrize(
    ("name", "scenario", "verdict"),
    [
        ("flat", Scenario(), "no leak"),
        ("steady leak", Scenario(leak_mb_per_day=20), "leak"),
        ("leak reset by restarts", Scenario(days=7, leak_mb_per_day=15, restarts=[40, 100]), "leak"),
        # Short lifetimes: each restart hides the growth from a per-day view; pairs within a
        # lifetime still see it.
        ("leak, restart every 10 h", Scenario(days=3, leak_mb_per_day=20,
                                              restarts=[10, 20, 30, 40, 50, 60]), "leak"),
        ("restarts, no leak", Scenario(days=5, restarts=[20, 50, 80]), "no leak"),
        ("traffic hump", Scenario(humps=[(30, 8, 150, 12)]), "no leak"),
        # The same hump in a log whose lines carry no stream count (all "Idle")
        ("hump in idle lines", Scenario(humps=[(30, 8, 150, 0)]), "no leak"),
        ("hump at the very end", Scenario(days=3, humps=[(50, 22, 120, 0)]), "no leak"),
        ("one step up, then flat", Scenario(days=5, steps=[(36, 40)]), "no leak"),
        ("noisy flat", Scenario(days=4, noise_mb=15), "no leak"),
        ("too short", Scenario(days=0.3, leak_mb_per_day=200), "not enough data"),
    ],
)  # fmt: skip
def test_leak_rule(name: str, scenario: Scenario, verdict: str) -> None:
    leak = summary(scenario).leak
    assert leak.verdict == verdict, (name, leak.explanation)


def test_leak_figures_are_stated() -> None:
    leak = summary(Scenario(leak_mb_per_day=20)).leak
    assert leak.slope_mb_per_day == pytest.approx(20, abs=1.5)
    assert leak.threshold_mb_per_day == 5.0
    assert "Theil-Sen" in leak.rule


# --------------------------------------------------------------------------- input and output


def test_memory_is_bounded_whatever_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """A day of 1 s samples with a small bucket bound: the chart series is coarsened, the
    span heap and open-run stacks stay within their bounds, figures are still right."""
    monkeypatch.setattr(memlog, "MAX_BUCKETS", 100)
    monkeypatch.setattr(memlog, "MAX_SPANS_KEPT", 5)
    s = Summariser()
    scenario = Scenario(days=1, interval_s=1, leak_mb_per_day=30, backup_every_h=0.5)
    for text in lines(scenario):
        s.feed_text(text)
    series = s.chart_series()
    assert len(series["buckets"]) <= 100
    assert len(series["spans"]) == 5
    report = s.report()
    assert report.lines > 86_400
    backup = next(t for t in report.tasks if t.task == "Backup")
    assert (backup.runs, backup.typical_change_mb) == (48, 30.0)
    assert report.leak.verdict == "leak"


def test_folder_with_junk_gaps_and_several_files(tmp_path: Path) -> None:
    paths = write_days(Scenario(days=3, restarts=[30]), tmp_path / "logs", junk=True)
    (tmp_path / "logs" / "notes.txt").write_text("not a log\n")
    out, err = io.StringIO(), io.StringIO()
    assert run([tmp_path / "logs"], as_json=True, chart=None, out=out, err=err) == 0
    report = json.loads(out.getvalue())
    assert report["files"] == [str(p) for p in paths]
    assert len(paths) == 3
    assert report["skipped"] > 0
    assert report["restarts"] == 1
    assert report["leak"]["verdict"] == "no leak"
    assert {"tasks", "episodes", "days", "leak", "restart_list"} <= set(report)


def test_the_old_sample_log_still_summarises() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run([OLD_SAMPLE], as_json=False, chart=None, out=out, err=err) == 0
    text = out.getvalue()
    assert text.startswith("55 lines from 1 file(s), 2025-11-16 08:00:00 .. ")
    assert "(2 unparseable skipped)" in text
    assert "Backup" in text
    # Day one climbs 240 -> 263 MB, day two holds at 250: growth that did not continue.
    assert "Leak check: NO LEAK" in text


@pytest.mark.parametrize("make", ["missing", "empty folder"])
def test_nothing_to_read_is_exit_2(tmp_path: Path, make: str) -> None:
    target = tmp_path / "nope"
    if make == "empty folder":
        target.mkdir()
    out, err = io.StringIO(), io.StringIO()
    assert run([target], as_json=False, chart=None, out=out, err=err) == 2
    assert out.getvalue() == ""
    assert err.getvalue().count("\n") == 1
    assert str(target) in err.getvalue()


def test_format_report_of_nothing() -> None:
    out = io.StringIO()
    format_report(Summariser().report(), out)
    assert "(no task lines)" in out.getvalue()
    assert "NOT ENOUGH DATA" in out.getvalue()


def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_days(Scenario(days=3, restarts=[30], humps=[(40, 5, 150, 8)]), tmp_path / "logs")
    chart = tmp_path / "memory.png"
    out, err = io.StringIO(), io.StringIO()
    assert run([tmp_path / "logs"], as_json=False, chart=chart, out=out, err=err) == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 10_000


def test_cli_defaults_to_log_dir_from_config_env(tmp_path: Path) -> None:
    """`memlog` with no argument reads LOG_DIR's memory_*.log, as config.env sets it."""
    write_days(Scenario(days=1), tmp_path / "var" / "mylogs")
    (tmp_path / "config.env").write_text("LOG_DIR=var/mylogs\n")
    result = subprocess.run(
        [sys.executable, "-m", "streambot", "memlog"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "from 1 file(s)" in result.stdout
    assert "Leak check:" in result.stdout
