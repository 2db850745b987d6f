"""The benchmark harness runs end to end (no figure is asserted) and its demo option parses sizes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.procs import free_port
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


def test_wire_section_renders_each_figure_with_in_process_beside_it() -> None:
    """`--telegram wire` results pair each wire figure with the in-process one for the same
    configuration, and give the CPU bill against the AES-IGE + SHA-256 floor."""
    from bench import report

    def stream(telegram: str, prefetch: int, rate: float) -> dict[str, object]:
        return {
            "rtt_ms": 50,
            "telegram": telegram,
            "prefetch": prefetch,
            "mib_per_s": rate,
            "server_cpu_share": 0.5,
            "server_cpu_wait_share": 0.1,
        }

    def ttfb(telegram: str, dc: int, cold: float) -> dict[str, object]:
        return {
            "rtt_ms": 50,
            "telegram": telegram,
            "prefetch": 8,
            "file_dc": dc,
            "home_dc": 2,
            "cold_ms": cold,
            "warm_ms_median": 60.0,
            "warm_ms_max": 70.0,
        }

    def level(telegram: str, rss_after: dict[str, float]) -> dict[str, object]:
        return {
            "streams": 250,
            "telegram": telegram,
            "rtt_ms": 50,
            "prefetch": 8,
            "streams_started": 250,
            "aggregate_mib_per_s": 100.0,
            "per_stream_mib_per_s": 0.4,
            "start_rss_mib": 99.0,
            "peak_rss_mib": 300.0,
            "rss_after_mib": rss_after,
            "server_cpu_share": 0.9,
            "server_cpu_wait_share": 0.2,
            "simulator_cpu_share": 0.8 if telegram == "wire" else None,
            "client_cpu_share": 0.1,
            "statuses": {"206": 500},
            "client_errors": 0,
        }

    wire = {
        "file_gib": 1.0,
        "floor": {"aes_ige_s_per_gib": 4.6, "sha256_s_per_gib": 0.54, "floor_s_per_gib": 5.14},
        "cpu_per_gib": {
            "bytes": 256 << 20,
            "repeats": 2,
            "rows": [
                {
                    "telegram": "wire",
                    "cpu_s_per_gib": 7.5,
                    "times_floor": 1.46,
                    "simulator_cpu_s_per_gib": 7.9,
                    "mib_per_s": 76.1,
                    "client_cpu_share": 0.02,
                },
                {
                    "telegram": "inproc",
                    "cpu_s_per_gib": 0.54,
                    "times_floor": 0.11,
                    "simulator_cpu_s_per_gib": None,
                    "mib_per_s": 1368.1,
                    "client_cpu_share": 0.3,
                },
            ],
        },
        "ttfb": [
            ttfb("wire", 2, 339.0),
            ttfb("wire", 4, 720.0),
            ttfb("inproc", 2, 160.0),
            ttfb("inproc", 4, 264.0),
        ],
        "hangups": [
            {
                "telegram": "wire",
                "rtt_ms": 50,
                "viewers": 50,
                "read_bytes": 1 << 20,
                "getfile_requests": 100.0,
                "getfile_per_viewer": 2.0,
                "statuses": {"206": 50},
                "client_errors": 0,
                "settled": True,
            }
        ],
        "single_stream": [stream("wire", 8, 37.5), stream("inproc", 8, 125.0)],
        "concurrency": [level("wire", {"10": 160.0, "60": 120.0}), level("inproc", {"10": 150.0})],
    }
    text = report.render({"wire": wire})
    rows = [line.split() for line in text.splitlines()]
    assert "floor = TgCrypto AES-256-IGE 4.6 + SHA-256 0.54 = 5.14 s/GiB" in text
    assert ["wire", "7.5", "1.46", "7.9", "76.1", "2%"] in rows
    assert ["in-process", "0.54", "0.11", "-", "1,368.1", "30%"] in rows
    assert ["2", "(home)", "339.0", "60.0", "70.0", "160.0", "60.0", "70.0"] in rows
    assert ["4", "(foreign)", "720.0", "60.0", "70.0", "264.0", "60.0", "70.0"] in rows
    assert ["wire", "50", "100.0", "2", "206:50", "0", "True"] in rows
    assert ["50", "8", "37.5", "50%", "10%", "125.0", "50%", "0.3"] in rows
    # A delay measured in only one mode leaves a dash in the other's row.
    assert "RSS 60 s after" in text
    assert [
        "250",
        "wire",
        "250",
        "100.0",
        "0.4",
        "99.0",
        "300.0",
        "160.0",
        "120.0",
        "90%",
        "20%",
        "80%",
        "10%",
        "206:500",
        "0",
    ] in rows
    assert [
        "250",
        "in-process",
        "250",
        "100.0",
        "0.4",
        "99.0",
        "300.0",
        "150.0",
        "-",
        "90%",
        "20%",
        "-",
        "10%",
        "206:500",
        "0",
    ] in rows


@pytest.mark.parametrize(
    ("cpu", "floor", "ratio"),
    [(7.5, 5.0, 1.5), (5.14, 5.14, 1.0), (None, 5.0, None), (7.5, None, None), (7.5, 0.0, None)],
)
def test_floor_ratio_is_wire_cpu_over_the_floor_or_none(
    cpu: float | None, floor: float | None, ratio: float | None
) -> None:
    """Wire CPU s/GiB ÷ (AES-IGE + SHA-256): unknown (no TgCrypto, no figure) stays None."""
    from bench.scenarios import floor_ratio

    assert floor_ratio(cpu, floor) == ratio


def test_wire_demos_start_in_groups_that_keep_every_prefetch_once() -> None:
    """Prefetch values split into groups of at most N demos, in order, none lost or repeated."""
    from bench.wire import chunks

    assert chunks([1, 2, 4, 8, 16], 3) == [(1, 2, 4), (8, 16)]
    assert chunks([1, 8], 3) == [(1, 8)]
    assert chunks([1, 2], 1) == [(1,), (2,)]
    assert chunks([], 3) == []


def test_free_port_is_bindable_and_outside_the_ephemeral_range() -> None:
    """Servers under test get ports the kernel never hands to outgoing connections.

    A port inside the ephemeral range can become some loopback connection's source port between
    the probe and the server's bind; that made CI fail once with "Address already in use".
    """
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    if low <= 10_000 and high >= 65_535:
        pytest.skip(f"the ephemeral range {low}-{high} leaves no other port (bind(0) is used)")
    for _ in range(50):
        port = free_port()
        assert not low <= port <= high
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
