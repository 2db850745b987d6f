"""The benchmark harness runs end to end (no figure is asserted) and its demo option parses sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streambot.demo import SyntheticFile, parse_size
from streambot.simulator.content import synthetic_bytes

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("512K", 512 * 1024),
        ("24MiB", 24 << 20),
        ("1GiB", 1 << 30),
        ("2g", 2 << 30),
        (" 3 MB ", 3 << 20),
    ],
)
def test_parse_size_reads_binary_units(text: str, size: int) -> None:
    """Sizes of --synthetic files accept bytes and K/M/G/T binary units."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "x", "1.5G", "-1", "10 parsecs", "G"])
def test_parse_size_rejects_other_text(text: str) -> None:
    """Anything else is a ValueError (argparse turns it into a usage error)."""
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_synthetic_file_seed_follows_the_name() -> None:
    """The same name gives the same bytes in every run, so the benchmark can copy them to disk."""
    a, b = SyntheticFile.parse("1GiB:big.bin"), SyntheticFile.parse("4096:big.bin")
    assert (a.size, a.name) == (1 << 30, "big.bin")
    assert a.seed == b.seed != SyntheticFile.parse("1GiB:other.bin").seed
    assert SyntheticFile.parse("4096").name == "synthetic-4096.bin"
    assert synthetic_bytes(a.seed, 12345, 100) == synthetic_bytes(b.seed, 12345, 100)
    with pytest.raises(ValueError, match="file name"):
        SyntheticFile.parse("4096:../etc/passwd")
    with pytest.raises(ValueError, match="at least one byte"):
        SyntheticFile.parse("0:empty.bin")


def test_bench_quick_leak_section_runs_end_to_end(tmp_path: Path) -> None:
    """`python -m bench --quick --only leak` drives a real demo server and writes its results."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "leak", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    leak = results["leak"]
    assert leak["aborted"] == results["plan"]["aborts"]
    assert set(leak["statuses"]) == {"206"}  # every answered abort was a range answer
    assert leak["active_streams_after"] == 0  # each aborted stream left the registry
    assert leak["tasks_after"] is not None  # the server exposes streambot_asyncio_tasks
    assert results["machine"]["nproc"] >= 1
    assert "Leak check" in proc.stdout


def test_wire_comparison_renders_both_modes_side_by_side() -> None:
    """`--telegram wire` results print one row per mode and RTT, and the CPU bill of both processes."""
    from bench import report

    def stream(telegram: str, rtt: float, rate: float) -> dict[str, object]:
        return {
            "rtt_ms": rtt,
            "telegram": telegram,
            "prefetch": 8,
            "mib_per_s": rate,
            "server_cpu_share": 0.5,
            "server_cpu_wait_share": 0.1,
        }

    wire = {
        "file_gib": 1.0,
        "ceiling_mib": 512.0,
        "ceiling_repeats": 4,
        "single_stream": [stream("inproc", 50, 129.8), stream("wire", 50, 61.5)],
        "ttfb": [
            {"rtt_ms": 50, "telegram": "inproc", "cold_ms": 168.2, "warm_ms_median": 53.6},
            {"rtt_ms": 50, "telegram": "wire", "cold_ms": 612.0, "warm_ms_median": 58.1},
        ],
        "cpu_per_gib": [
            {
                "telegram": "inproc",
                "cpu_s_per_gib": 0.7,
                "simulator_cpu_s_per_gib": None,
                "mib_per_s": 1459.5,
                "client_cpu_share": 0.28,
            },
            {
                "telegram": "wire",
                "cpu_s_per_gib": 6.9,
                "simulator_cpu_s_per_gib": 7.7,
                "mib_per_s": 120.0,
                "client_cpu_share": 0.05,
            },
        ],
    }
    text = report.render({"wire": wire})
    assert "Telegram in-process vs on the wire" in text
    rows = [line.split() for line in text.splitlines()]
    assert ["50", "wire", "8", "61.5", "50%", "10%", "612.0", "58.1"] in rows
    assert ["wire", "6.9", "7.7", "120.0", "5%"] in rows
    assert ["inproc", "0.7", "-", "1,459.5", "28%"] in rows
