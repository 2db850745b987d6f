"""The ``wire`` section (``--telegram wire``): issue 14's figures with Telegram on the wire.

Every figure is measured on ``demo --telegram wire`` (the simulator is a child process speaking
MTProto over loopback TCP, so StreamBot's process pays for TCP, framing, AES-IGE decryption,
SHA-256 checks and TL parsing, and the simulator's own work is billed to the child) and, as a
second column labelled in-process, on ``demo --telegram inproc`` with the same settings. The two
modes run side by side and their loads are interleaved, so background load on the machine hits
both alike. On a 2-core machine a wire demo needs two busy processes, so at most
``WirePlan.wire_demos_at_once`` of them run at a time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench import scenarios
from bench.procs import Server, demo_server, read_links

MIB = scenarios.MIB
GIB = scenarios.GIB
MODES = ("wire", "inproc")  # the wire figure first; in-process is the second column
HOME_DC = 2  # the simulated bots' home DC

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class WirePlan:
    """Sizes of the wire section; the plan in ``bench/__main__.py`` holds a full and a quick one."""

    cpu_bytes: int = 256 * MIB  # CPU s/GiB: this many bytes of the big file ...
    cpu_repeats: int = 2  # ... this many times, at RTT 0
    ttfb_rtt_ms: float = 50
    ttfb_repeats: int = 5  # warm samples after the cold one
    foreign_dc: int = 4  # "cold, foreign DC": the files live here, the bots on DC 2
    hangups: int = 50  # viewers who read hangup_bytes and leave
    hangup_bytes: int = MIB
    rtts_ms: tuple[float, ...] = (20, 50, 100)
    prefetches: tuple[int, ...] = (1, 2, 4, 8, 16)  # plus the default, always added
    wire_demos_at_once: int = 3
    stream_seconds: float = 1.0
    stream_repeats: int = 3
    probe_bytes: int = 8 * MIB
    concurrency: tuple[int, ...] = (1, 10, 100, 250)
    concurrency_rtt_ms: float = 50
    concurrency_seconds: float = 6.0
    concurrency_range_bytes: int = 8 * MIB
    rss_after_s: tuple[float, ...] = (10,)  # after every level, before the next one
    rss_after_last_s: tuple[float, ...] = (10, 60)  # after the last level


def chunks(items: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """``items`` in consecutive groups of at most ``size``."""
    return [tuple(items[i : i + size]) for i in range(0, len(items), max(1, size))]


@dataclass(frozen=True, slots=True)
class DemoSpec:
    name: str
    telegram: str
    rtt_ms: float
    prefetch: int
    file_dc: int | None = None


class WireSection:
    """One run of the wire section; ``run()`` returns ``results["wire"]``."""

    def __init__(
        self,
        plan: WirePlan,
        *,
        workdir: Path,
        fetcher: scenarios.RangeFetcher,
        big: str,
        big_bytes: int,
        synthetic: Sequence[str],
        default_prefetch: int,
        say: Callable[[str], None],
    ) -> None:
        self.plan = plan
        self.workdir = workdir
        self.fetcher = fetcher
        self.big = big
        self.big_bytes = big_bytes
        self.synthetic = list(synthetic)
        self.p = default_prefetch
        self.say = say

    @contextlib.contextmanager
    def servers(self, specs: Mapping[K, DemoSpec]) -> Iterator[dict[K, tuple[Server, str]]]:
        """Demos started side by side (start-up is mostly imports); each with its big file's URL."""
        with contextlib.ExitStack() as stack:
            started = {}
            for key, spec in specs.items():
                server, links = demo_server(
                    spec.name,
                    self.workdir,
                    rtt_ms=spec.rtt_ms,
                    settings={"STREAM_PREFETCH": str(spec.prefetch)},
                    synthetic=self.synthetic,
                    telegram=spec.telegram,
                    file_dc=spec.file_dc,
                )
                stack.callback(server.stop)
                server.launch()
                started[key] = (server, links)

            # Runs first on exit (last in, first out): every server gets SIGTERM at once, then
            # each stop() above waits for its own, so a group stops in the time of its slowest.
            def terminate_all() -> None:
                for s, _ in started.values():
                    s.terminate()

            stack.callback(terminate_all)
            t0 = time.monotonic()
            for server, _ in started.values():
                server.wait_ready()
            self.say(f"{len(started)} demos ready in {time.monotonic() - t0:.1f} s")
            yield {
                k: (server, read_links(links)[self.big]) for k, (server, links) in started.items()
            }

    def run(self) -> dict[str, Any]:
        floor = scenarios.mtproto_floor()
        self.say(
            f"floor: AES-256-IGE {floor['aes_ige_s_per_gib']} + SHA-256 "
            f"{floor['sha256_s_per_gib']} = {floor['floor_s_per_gib']} CPU s/GiB"
        )
        cpu = self.cpu_per_gib(floor["floor_s_per_gib"])
        ttfb, hangups = self.ttfb_and_hangups()
        single = self.single_stream()
        concurrency = self.concurrency()
        return {
            "modes": list(MODES),
            "file_gib": self.big_bytes / GIB,
            "floor": floor,
            "cpu_per_gib": cpu,
            "ttfb": ttfb,
            "hangups": hangups,
            "single_stream": single,
            "concurrency": concurrency,
        }

    # ------------------------------------------------------------------ figures
    def cpu_per_gib(self, floor: float | None) -> dict[str, Any]:
        """StreamBot's CPU seconds per GiB at RTT 0 (CPU-bound), the simulator's beside it."""
        plan = self.plan
        specs = {m: DemoSpec(f"wire-cpu-{m}", m, 0, self.p) for m in MODES}
        rows = []
        with self.servers(specs) as started:
            for m, (server, url) in started.items():
                sim0 = server.children_cpu_seconds()
                r = scenarios.cpu_per_gib(
                    self.fetcher, server, url, plan.cpu_bytes, repeats=plan.cpu_repeats
                )
                sim = server.children_cpu_seconds() - sim0
                r["telegram"] = m
                # The simulator's process (wire only): Telegram's side of the bill.
                r["simulator_cpu_s_per_gib"] = (
                    round(sim / (r["bytes"] / GIB), 3) if m == "wire" else None
                )
                r["times_floor"] = scenarios.floor_ratio(r["cpu_s_per_gib"], floor)
                rows.append(r)
                self.say(
                    f"{m} CPU/GiB: {r['cpu_s_per_gib']} s (x{r['times_floor']} floor), "
                    f"simulator {r['simulator_cpu_s_per_gib']} s, {r['mib_per_s']} MiB/s"
                )
        return {"bytes": plan.cpu_bytes, "repeats": plan.cpu_repeats, "rows": rows}

    def ttfb_and_hangups(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Cold TTFB with the file on the home DC and on a foreign DC (fresh servers), warm TTFB;
        then GetFile requests per viewer who reads 1 MiB and hangs up, on the home servers."""
        plan = self.plan
        rtt = plan.ttfb_rtt_ms
        specs = {
            (m, dc): DemoSpec(
                f"wire-ttfb-{m}-dc{dc}",
                m,
                rtt,
                self.p,
                None if dc == HOME_DC else dc,
            )
            for m in MODES
            for dc in (HOME_DC, plan.foreign_dc)
        }
        ttfb = []
        hangups = []
        with self.servers(specs) as started:
            for (m, dc), (_server, url) in started.items():
                t = scenarios.time_to_first_byte(
                    self.fetcher, url, self.big_bytes, repeats=plan.ttfb_repeats
                )
                t.update(
                    telegram=m,
                    rtt_ms=rtt,
                    prefetch=self.p,
                    file_dc=dc,
                    home_dc=HOME_DC,
                    foreign=dc != HOME_DC,
                )
                ttfb.append(t)
                self.say(
                    f"{m} TTFB rtt {rtt:g} ms, file on DC {dc}: cold {t['cold_ms']} ms, "
                    f"warm {t['warm_ms_median']} ms"
                )
            for m in MODES:
                _server, url = started[(m, HOME_DC)]
                h = scenarios.hangup_viewers(
                    url, self.big_bytes, count=plan.hangups, read_bytes=plan.hangup_bytes
                )
                h.update(telegram=m, rtt_ms=rtt, prefetch=self.p)
                hangups.append(h)
                self.say(
                    f"{m}: {h['viewers']} viewers read {plan.hangup_bytes // 1024} KiB and hang "
                    f"up: {h['getfile_per_viewer']} GetFile each"
                )
        return ttfb, hangups

    def single_stream(self) -> list[dict[str, Any]]:
        """MiB/s of one stream per (rtt, prefetch), wire and in-process side by side."""
        plan = self.plan
        prefetches = sorted({*plan.prefetches, self.p})
        rows: list[dict[str, Any]] = []
        for rtt in plan.rtts_ms:
            for group in chunks(prefetches, plan.wire_demos_at_once):
                specs = {
                    (m, p): DemoSpec(f"wire-single-{m}-rtt{rtt:g}-p{p}", m, rtt, p)
                    for p in group
                    for m in MODES
                }
                with self.servers(specs) as started:
                    lengths = {
                        k: scenarios.stream_length(
                            self.fetcher,
                            url,
                            self.big_bytes,
                            seconds=plan.stream_seconds,
                            probe_bytes=plan.probe_bytes,
                        )
                        for k, (_, url) in started.items()
                    }
                    # Both modes of one prefetch download the same bytes: the longer of their
                    # probes. Sized from its own probes alone, the wire's first download (its
                    # media connections still opening, a round trip each at 100 ms) came out
                    # short and every later one was mostly slow-start ramp: 16 MiB/s at RTT 100
                    # for prefetch 4-16, where a 128 MiB download on the same demo moved 53.
                    for m, p in lengths:
                        lengths[(m, p)] = max(lengths[(mode, p)] for mode in MODES)
                    samples: dict[tuple[str, int], list[scenarios.StreamSample]] = {
                        k: [] for k in started
                    }
                    for _ in range(plan.stream_repeats):  # interleaved: p1 wire, p1 inproc, ...
                        for k, (server, url) in started.items():
                            samples[k].append(
                                scenarios.stream_sample(self.fetcher, server, url, lengths[k])
                            )
                for (m, p), s in samples.items():
                    r = scenarios.summarize(lengths[(m, p)], s)
                    r.update(rtt_ms=rtt, prefetch=p, telegram=m)
                    rows.append(r)
                    self.say(
                        f"{m} one stream, rtt {rtt:g} ms, prefetch {p}: {r['mib_per_s']} MiB/s"
                    )
        return rows

    def concurrency(self) -> list[dict[str, Any]]:
        """N concurrent streams per level on a wire and an in-process demo, loads interleaved.

        While one server's "RSS after" marks are read (in a thread), the other one is loaded.
        """
        plan = self.plan
        rtt = plan.concurrency_rtt_ms
        specs = {m: DemoSpec(f"wire-conc-{m}", m, rtt, self.p) for m in MODES}
        rows: list[dict[str, Any]] = []
        with self.servers(specs) as started:
            fresh = {}
            for m, (server, url) in started.items():
                scenarios.wait_idle(scenarios.base_of(url), timeout=60)
                fresh[m] = server.rss()
            for i, n in enumerate(plan.concurrency):
                last = i == len(plan.concurrency) - 1
                delays = plan.rss_after_last_s if last else plan.rss_after_s
                level: list[tuple[dict[str, Any], scenarios.RssAfter]] = []
                for m, (server, url) in started.items():
                    r = scenarios.stream_level(
                        server,
                        url,
                        self.big_bytes,
                        streams=n,
                        range_bytes=plan.concurrency_range_bytes,
                        seconds=plan.concurrency_seconds,
                        fresh=fresh[m],
                        simulator=m == "wire",
                    )
                    level.append((r, scenarios.RssAfter(server, delays)))
                    r.update(telegram=m, rtt_ms=rtt, prefetch=self.p)
                for r, after in level:
                    r["rss_after_mib"] = after.join()
                    rows.append(r)
                    self.say(
                        f"{r['telegram']} {n} streams: {r['aggregate_mib_per_s']} MiB/s, "
                        f"RSS fresh {r['start_rss_mib']} peak {r['peak_rss_mib']} after "
                        f"{r['rss_after_mib']} MiB, statuses {r['statuses']}, "
                        f"errors {r['client_errors']}"
                    )
        return rows
