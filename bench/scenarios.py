"""The measurements, each against servers that :mod:`bench.procs` started.

Each function returns plain data (dicts of numbers) for the table, the JSON and the chart; none
asserts a figure. Sizes and repetitions come from the caller's plan, so ``--quick`` runs the same
code on smaller inputs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.procs import (
    BenchError,
    Finished,
    Sampler,
    Server,
    python_env,
    run_measured,
    scrape,
    wait_for,
)

MIB = 1 << 20
GIB = 1 << 30
FETCH_TIMEOUT = 300.0


@dataclass(frozen=True, slots=True)
class Fetch:
    """One range download as the load generator saw it."""

    status: int
    bytes: int
    ttfb: float  # seconds to the first byte of the answer
    total: float  # seconds to the last byte
    client_cpu: float
    client_wall: float

    @property
    def rate(self) -> float:
        return self.bytes / self.total if self.total > 0 else 0.0


class RangeFetcher:
    """Single range downloads, one process each: curl when installed, else bench.loadclient."""

    def __init__(self) -> None:
        self.curl = shutil.which("curl")

    @property
    def name(self) -> str:
        if self.curl is None:
            return "bench.loadclient get (Python asyncio; curl not installed)"
        out = subprocess.run(
            [self.curl, "--version"], capture_output=True, text=True, check=False, timeout=10
        )
        return out.stdout.split(" (")[0] or "curl"

    def fetch(self, url: str, start: int, end: int) -> Fetch:
        if self.curl is not None:
            fin = run_measured(
                [
                    self.curl,
                    "--silent",
                    "--show-error",
                    "--output",
                    "/dev/null",
                    "--range",
                    f"{start}-{end}",
                    "--write-out",
                    "%{http_code} %{size_download} %{time_starttransfer} %{time_total}",
                    url,
                ],
                timeout=FETCH_TIMEOUT,
            )
            if fin.returncode != 0:
                raise BenchError(f"curl failed ({fin.returncode}): {fin.stderr.strip()}")
            status, size, ttfb, total = fin.stdout.split()
            return Fetch(int(status), int(size), float(ttfb), float(total), fin.cpu, fin.wall)
        fin, r = loadclient("get", url, timeout=FETCH_TIMEOUT, start=start, end=end)
        return Fetch(
            r["status"], r["bytes"], r["time_starttransfer"], r["time_total"], fin.cpu, fin.wall
        )


def base_of(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def metric(base: str, name: str) -> float | None:
    return scrape(base).get(name)


def wait_idle(base: str, timeout: float) -> bool:
    """Wait until the server tracks no stream (aborted ones are unregistered asynchronously)."""
    return wait_for(lambda: metric(base, "streambot_active_streams") == 0, timeout=timeout)


# ---------------------------------------------------------------------- single stream


def stream_length(
    fetcher: RangeFetcher, url: str, size: int, *, seconds: float, probe_bytes: int
) -> int:
    """Bytes that one download of ``url`` moves in about ``seconds``, from probes.

    A short probe under-rates a server whose request window is still opening (slow start:
    STREAM_PREFETCH_START), so probes double in length until they stop getting faster, last
    ``seconds`` themselves, or cover the file.
    """
    best = 0.0
    length = min(size, probe_bytes)
    while True:
        rate = fetcher.fetch(url, 0, length - 1).rate
        settled = rate < best * 1.1
        best = max(best, rate)
        if settled or length >= size or length >= rate * seconds:
            return int(min(size, max(probe_bytes, best * seconds)))
        length = min(size, length * 2)


@dataclass(frozen=True, slots=True)
class StreamSample:
    rate: float  # bytes per second
    server_cpu_share: float
    server_cpu_wait_share: float
    client_cpu_share: float


def stream_sample(fetcher: RangeFetcher, server: Server, url: str, length: int) -> StreamSample:
    """One download of the first ``length`` bytes, with the server's CPU use while it ran."""
    cpu0, wait0 = server.cpu_seconds(), server.cpu_wait_seconds()
    f = fetcher.fetch(url, 0, length - 1)
    cpu, wait = server.cpu_seconds() - cpu0, server.cpu_wait_seconds() - wait0
    if f.status != 206 or f.bytes != length:
        raise BenchError(f"expected 206 with {length} bytes, got {f.status} with {f.bytes}")
    return StreamSample(f.rate, cpu / f.total, wait / f.total, f.client_cpu / f.client_wall)


def summarize(length: int, samples: list[StreamSample]) -> dict[str, Any]:
    """The median sample (by throughput) stands for the configuration; all rates are kept."""
    mid = sorted(samples, key=lambda x: x.rate)[len(samples) // 2]
    return {
        "bytes": length,
        "mib_per_s": round(mid.rate / MIB, 1),
        "samples_mib_per_s": [round(x.rate / MIB, 1) for x in samples],
        "server_cpu_share": round(mid.server_cpu_share, 3),
        "server_cpu_wait_share": round(mid.server_cpu_wait_share, 3),
        "client_cpu_share": round(mid.client_cpu_share, 3),
    }


# ---------------------------------------------------------------------- time to first byte


def time_to_first_byte(
    fetcher: RangeFetcher, url: str, size: int, *, repeats: int
) -> dict[str, Any]:
    """TTFB of 1 MiB ranges starting mid-file: the first is cold (file info not cached yet)."""
    middle = size // 2 + 12345  # deliberately not block-aligned
    cold = fetcher.fetch(url, middle, middle + MIB - 1)
    warm = []
    for k in range(1, repeats + 1):
        start = middle + k * (7 * MIB + 4099)
        warm.append(fetcher.fetch(url, start, start + MIB - 1).ttfb * 1000)
    return {
        "offset": middle,
        "cold_ms": round(cold.ttfb * 1000, 2),
        "warm_ms_median": round(statistics.median(warm), 2),
        "warm_ms_min": round(min(warm), 2),
        "warm_ms_max": round(max(warm), 2),
    }


# ---------------------------------------------------------------------- concurrency


class RssSampler(Sampler):
    """Samples a process's RSS in a thread: the peak when /proc's VmHWM cannot be reset."""

    def __init__(self, server: Server, interval: float = 0.02) -> None:
        super().__init__("rss-sampler", interval)
        self._server = server
        self.peak = 0

    def sample(self) -> bool:
        try:
            self.peak = max(self.peak, self._server.rss())
        except (psutil.Error, OSError):  # the process is gone; the run reports that itself
            return False
        return True


class RssAfter:
    """A server's RSS at fixed delays after a load ended, read in a thread.

    The caller can load another server meanwhile (the wire section interleaves two), and the
    marks are still read on time; ``join`` waits for the last one.
    """

    def __init__(self, server: Server, delays: Sequence[float]) -> None:
        self._server = server
        self._delays = sorted(delays)
        self._t0 = time.monotonic()
        self.mib: dict[str, float | None] = {}
        self._thread = threading.Thread(target=self._run, name="rss-after", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for d in self._delays:
            time.sleep(max(0.0, self._t0 + d - time.monotonic()))
            try:
                self.mib[f"{d:g}"] = round(self._server.rss() / MIB, 1)
            except (psutil.Error, OSError):  # the process is gone; the run reports that itself
                self.mib[f"{d:g}"] = None

    def join(self) -> dict[str, float | None]:
        self._thread.join()
        return self.mib


def loadclient(
    mode: str, url: str, *, timeout: float, **options: float
) -> tuple[Finished, dict[str, Any]]:
    """``python -m bench.loadclient MODE URL --option value ...``: its JSON answer and its CPU.

    Each keyword is one option (``range_bytes=`` is ``--range-bytes``). A load generator that
    fails stops the run: its figures would be wrong, not merely low.
    """
    cmd = [sys.executable, "-m", "bench.loadclient", mode, url]
    for name, value in options.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    fin = run_measured(cmd, timeout=timeout, env=python_env())
    if fin.returncode != 0:
        raise BenchError(f"bench.loadclient {mode} failed: {fin.stderr.strip()[-800:]}")
    answer: dict[str, Any] = json.loads(fin.stdout)
    return fin, answer


def streams_timeout(seconds: float, ramp: float) -> float:
    """How long a ``streams`` load may take: its ramp and window, plus time to stop."""
    return seconds + ramp + 120


def concurrent_streams(
    server: Server,
    url: str,
    size: int,
    *,
    levels: tuple[int, ...],
    range_bytes: int,
    seconds: float,
    rss_after_s: Sequence[float] = (),
) -> list[dict[str, Any]]:
    """Aggregate throughput and memory with N streams running at once, for each N in ``levels``.

    With ``rss_after_s``, each row also has the RSS that many seconds after its load ended
    (``rss_after_mib``), read before the next level starts.
    """
    base = base_of(url)
    rows = []
    wait_idle(base, timeout=30)
    fresh = server.rss()  # allocators keep what earlier levels freed: compare with the start
    for n in levels:
        r = stream_level(
            server, url, size, streams=n, range_bytes=range_bytes, seconds=seconds, fresh=fresh
        )
        if rss_after_s:
            r["rss_after_mib"] = RssAfter(server, rss_after_s).join()
        rows.append(r)
    return rows


def stream_level(
    server: Server,
    url: str,
    size: int,
    *,
    streams: int,
    range_bytes: int,
    seconds: float,
    fresh: int,
    simulator: bool = False,
) -> dict[str, Any]:
    """One concurrency level: ``streams`` viewers for ``seconds`` once the server is idle.

    ``fresh`` is the server's RSS before any load (the allocator keeps what earlier levels
    freed, so memory per stream is measured against it). ``simulator``: also the CPU share of
    the server's child processes (the wire demo's simulator).
    """
    n = streams
    base = base_of(url)
    wait_idle(base, timeout=60)
    idle = server.rss()
    hwm = server.reset_peak_rss()
    cpu0, wait0 = server.cpu_seconds(), server.cpu_wait_seconds()
    sim0 = server.children_cpu_seconds() if simulator else 0.0
    ramp = max(0.2, n / 200)  # about 200 connects per second
    with RssSampler(server).running() as sampler:
        fin, r = loadclient(
            "streams",
            url,
            timeout=streams_timeout(seconds, ramp),
            size=size,
            streams=n,
            range_bytes=range_bytes,
            duration=seconds,
            ramp=ramp,
        )
    cpu, wait = server.cpu_seconds() - cpu0, server.cpu_wait_seconds() - wait0
    sim = server.children_cpu_seconds() - sim0 if simulator else None
    peak = max(sampler.peak, server.peak_rss() if hwm else 0)
    return {
        "streams": n,
        "streams_started": r["streams_started"],
        "aggregate_mib_per_s": round(r["bytes"] / r["seconds"] / MIB, 1),
        "per_stream_mib_per_s": round(r["bytes"] / r["seconds"] / MIB / n, 2),
        "start_rss_mib": round(fresh / MIB, 1),
        "idle_rss_mib": round(idle / MIB, 1),
        "peak_rss_mib": round(peak / MIB, 1),
        "rss_per_stream_kib": round(max(0, peak - fresh) / n / 1024, 1),
        "server_cpu_share": round(cpu / fin.wall, 3),
        "server_cpu_wait_share": round(wait / fin.wall, 3),
        "client_cpu_share": round(fin.cpu_share, 3),
        "statuses": r["statuses"],
        "client_errors": r["errors"],
        "simulator_cpu_share": None if sim is None else round(sim / fin.wall, 3),
    }


_WRK_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def wrk_streams(
    wrk: str, server: Server, url: str, *, streams: int, range_bytes: int, seconds: float
) -> dict[str, Any]:
    """The same load from wrk (C): a cross-check that our Python load generator is not the limit.

    wrk opens every connection at once and repeats one range per connection; its figure includes
    the ramp-up, so it reads slightly lower than the steady-state window.
    """
    cpu0 = server.cpu_seconds()
    fin = run_measured(
        [
            wrk,
            "--threads",
            str(min(2, streams)),
            "--connections",
            str(streams),
            "--duration",
            f"{seconds:g}s",
            "--timeout",
            "60s",
            "--header",
            f"Range: bytes=0-{range_bytes - 1}",
            url,
        ],
        timeout=seconds + 120,
    )
    cpu = server.cpu_seconds() - cpu0
    match = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", fin.stdout)
    if fin.returncode != 0 or match is None:
        raise BenchError(f"wrk failed: {(fin.stdout + fin.stderr).strip()[-500:]}")
    errors = re.search(r"Socket errors: (.*)", fin.stdout)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", fin.stdout)
    return {
        "aggregate_mib_per_s": round(float(match[1]) * _WRK_UNITS[match[2]] / MIB, 1),
        "server_cpu_share": round(cpu / fin.wall, 3),
        "client_cpu_share": round(fin.cpu_share, 3),
        "socket_errors": errors[1].strip() if errors else None,
        "non_2xx": int(non_2xx[1]) if non_2xx else 0,
    }


# ---------------------------------------------------------------------- CPU per GiB


def write_same_bytes(path: Path, size: int, seed: int) -> None:
    """A local file holding exactly the bytes of the demo's synthetic file with ``seed``."""
    from streambot.simulator.content import synthetic_bytes

    chunk = 8 * MIB
    with path.open("wb") as f:
        for offset in range(0, size, chunk):
            f.write(synthetic_bytes(seed, offset, min(chunk, size - offset)))


def cpu_per_gib(
    fetcher: RangeFetcher, server: Server, url: str, size: int, *, repeats: int
) -> dict[str, Any]:
    """Server CPU seconds per GiB sent, downloading the whole file ``repeats`` times."""
    fetcher.fetch(url, 0, min(size, MIB) - 1)  # warm: file info cached, sessions open
    cpu0 = server.cpu_seconds()
    sent = 0
    elapsed = 0.0
    client_cpu = 0.0
    client_wall = 0.0
    for _ in range(repeats):
        f = fetcher.fetch(url, 0, size - 1)
        if f.bytes != size:
            raise BenchError(f"{server.name}: got {f.bytes} of {size} bytes")
        sent += f.bytes
        elapsed += f.total
        client_cpu += f.client_cpu
        client_wall += f.client_wall
    cpu = server.cpu_seconds() - cpu0
    return {
        "bytes": sent,
        "cpu_seconds": round(cpu, 3),
        "cpu_s_per_gib": round(cpu / (sent / GIB), 3),
        "mib_per_s": round(sent / elapsed / MIB, 1),
        "client_cpu_share": round(client_cpu / client_wall, 3),
    }


def same_bytes(a: str, b: str, start: int, length: int) -> bool:
    """Whether two servers answer one range with identical bytes (a few MiB, read here)."""
    bodies = []
    for url in (a, b):
        request = urllib.request.Request(
            url, headers={"Range": f"bytes={start}-{start + length - 1}"}
        )
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as resp:
            bodies.append(resp.read())
    return bodies[0] == bodies[1] and len(bodies[0]) == length


def _best_cost(work: Callable[[], object], *, rounds: int = 32, tries: int = 5) -> float:
    """CPU seconds per GiB of ``work`` on 1 MiB, the best of ``tries`` timings of ``rounds``
    calls: a floor, so the least disturbed try (other processes, frequency changes) stands."""
    best = float("inf")
    for _ in range(tries):
        t0 = time.process_time()
        for _ in range(rounds):
            work()
        best = min(best, time.process_time() - t0)
    return round(best / (rounds * MIB / GIB), 3)


def mtproto_decrypt_cost() -> float | None:
    """CPU seconds per GiB of AES-256-IGE decryption (TgCrypto), which the simulator skips."""
    try:
        import tgcrypto
    except ImportError:
        return None
    data = bytes(MIB)
    key, iv = bytes(range(32)), bytes(range(32, 64))
    return _best_cost(lambda: tgcrypto.ige256_decrypt(data, key, iv))


def sha256_cost() -> float:
    """CPU seconds per GiB of SHA-256 (hashlib): MTProto 2.0 checks msg_key over every plaintext."""
    data = bytes(MIB)
    return _best_cost(lambda: hashlib.sha256(data).digest())


def mtproto_floor() -> dict[str, float | None]:
    """The physical floor of receiving a GiB over MTProto on this CPU: decrypt + msg_key check."""
    aes = mtproto_decrypt_cost()
    sha = sha256_cost()
    return {
        "aes_ige_s_per_gib": aes,
        "sha256_s_per_gib": sha,
        "floor_s_per_gib": None if aes is None else round(aes + sha, 3),
    }


def floor_ratio(cpu_s_per_gib: float | None, floor_s_per_gib: float | None) -> float | None:
    """How many times the floor a measured CPU cost per GiB is (None when either is unknown)."""
    if cpu_s_per_gib is None or not floor_s_per_gib:
        return None
    return round(cpu_s_per_gib / floor_s_per_gib, 2)


# ---------------------------------------------------------------------- GetFile per viewer


def getfile_requests(base: str) -> float:
    """The GetFile requests the server has sent Telegram so far, over every bot and DC."""
    return sum(
        v
        for k, v in scrape(base).items()
        if k.startswith("streambot_telegram_requests_total") and "upload.GetFile" in k
    )


def hangup_viewers(url: str, size: int, *, count: int, read_bytes: int) -> dict[str, Any]:
    """GetFile requests per viewer who reads ``read_bytes`` from a block boundary and hangs up.

    The viewers come one after another (``bench.loadclient hangup``); requests are counted from
    the server's /metrics once it tracks no stream, so every read-ahead request is included.
    """
    base = base_of(url)
    wait_idle(base, timeout=60)
    before = getfile_requests(base)
    _, r = loadclient("hangup", url, timeout=600, size=size, count=count, read_bytes=read_bytes)
    settled = wait_idle(base, timeout=60)  # requests are counted when sent: none after idle
    requests = getfile_requests(base) - before
    return {
        "viewers": r["viewers"],
        "read_bytes": read_bytes,
        "getfile_requests": requests,
        "getfile_per_viewer": round(requests / max(1, r["viewers"]), 2),
        "statuses": r["statuses"],
        "client_errors": r["errors"],
        "settled": settled,
    }


# ---------------------------------------------------------------------- leak check


def aborted_downloads(
    server: Server,
    url: str,
    size: int,
    *,
    count: int,
    batches: int,
    warmup: int,
    concurrency: int,
) -> dict[str, Any]:
    """RSS and open asyncio tasks before, during and after ``count`` abandoned downloads."""
    base = base_of(url)

    def aborts(n: int) -> dict[str, Any]:
        fin, result = loadclient(
            "abort", url, timeout=600, size=size, count=n, concurrency=concurrency
        )
        result["client_cpu_share"] = round(fin.cpu_share, 3)
        return result

    def snapshot(done: int, idle: bool) -> dict[str, Any]:
        m = scrape(base)
        return {
            "aborted": done,
            "rss_mib": round(server.rss() / MIB, 1),
            "asyncio_tasks": m.get("streambot_asyncio_tasks"),
            "active_streams": m.get("streambot_active_streams"),
            "settled": idle,
        }

    aborts(warmup)  # first-use allocations (sessions, caches, pools) are not leaks
    before = snapshot(0, wait_idle(base, timeout=30))
    requests_before = getfile_requests(base)
    series = [before]
    statuses: dict[str, int] = {}
    errors = 0
    done = 0
    client_share = 0.0
    per_batch = max(1, count // batches)
    while done < count:
        n = min(per_batch, count - done)
        r = aborts(n)
        done += n
        errors += r["errors"]
        client_share = max(client_share, r["client_cpu_share"])
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
        series.append(snapshot(done, wait_idle(base, timeout=30)))
    after = series[-1]
    requests = getfile_requests(base) - requests_before
    # Allocators keep freed memory for reuse, so RSS first climbs to a plateau; a leak keeps
    # climbing. The second half of the run shows which.
    half = series[len(series) // 2]
    return {
        "aborted": done,
        "warmup": warmup,
        "rss_before_mib": before["rss_mib"],
        "rss_after_mib": after["rss_mib"],
        "rss_growth_kib_per_1000": round(
            (after["rss_mib"] - before["rss_mib"]) * 1024 / (done / 1000), 1
        ),
        "second_half_growth_kib_per_1000": round(
            (after["rss_mib"] - half["rss_mib"])
            * 1024
            / max(1e-9, (done - half["aborted"]) / 1000),
            1,
        ),
        # Telegram work a viewer who leaves early costs: the prefetch window already in flight.
        "getfile_per_abort": round(requests / done, 2),
        "tasks_before": before["asyncio_tasks"],
        "tasks_after": after["asyncio_tasks"],
        "active_streams_after": after["active_streams"],
        "statuses": statuses,
        "client_errors": errors,
        "client_cpu_share": client_share,
        "series": series,
    }
