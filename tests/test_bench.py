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
