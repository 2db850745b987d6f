"""``python -m bench [--quick] [--out DIR]``: measure StreamBot, print tables, write JSON (and PNG).

The full run takes a few minutes (about 12 with ``--telegram wire``); ``--quick`` runs every
measurement on small inputs, and ``--quick --telegram wire`` (what CI runs, never asserting a
figure) finishes in under two minutes. Results go to ``--out`` (default
``bench/results/``, ignored by git): ``results.json`` and, when matplotlib is installed,
``results.png``. Everything runs on loopback; load generators run one at a time; every process
started is stopped before the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import report, scale, scenarios, wire
from bench.procs import REPO, BenchError, Server, demo_server, read_links, static_server
from bench.wire import WirePlan

BIG = "big.bin"  # the 1 GiB file: single-stream, TTFB, concurrency and leak figures
CEILING = "ceiling.bin"  # the file compared with aiohttp's FileResponse
MIB = scenarios.MIB
GIB = scenarios.GIB


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes and repetitions of one run; ``--quick`` is the same measurements, smaller."""

    name: str
    rtts_ms: tuple[float, ...] = (0, 20, 50, 100)
    prefetches: tuple[int, ...] = (1, 2, 4, 8, 16)
    big_bytes: int = 1 << 30
    stream_seconds: float = 2.0
    stream_repeats: int = 3
    probe_bytes: int = 8 * MIB
    ttfb_repeats: int = 7
    concurrency: tuple[int, ...] = (1, 10, 100, 500)
    concurrency_rtt_ms: float = 50
    concurrency_seconds: float = 8.0
    concurrency_range_bytes: int = 8 * MIB
    wrk_check: bool = True  # when wrk is installed, repeat each concurrency level with it
    ceiling_bytes: int = 512 * MIB
    ceiling_repeats: int = 4
    aborts: int = 10_000
    abort_batches: int = 10
    abort_warmup: int = 1000
    abort_concurrency: int = 50
    leak_rtt_ms: float = 20
    wire: WirePlan = WirePlan()  # --telegram wire: every figure on the wire and in-process


FULL = Plan("full")
QUICK = Plan(
    "quick",
    rtts_ms=(0, 20),
    prefetches=(1,),  # plus the default, always added
    stream_seconds=0.3,
    stream_repeats=1,
    probe_bytes=2 * MIB,
    ttfb_repeats=2,
    concurrency=(1, 10),
    concurrency_rtt_ms=20,
    concurrency_seconds=1.0,
    concurrency_range_bytes=2 * MIB,
    wrk_check=False,
    ceiling_bytes=128 * MIB,
    ceiling_repeats=1,
    aborts=150,
    abort_batches=3,
    abort_warmup=50,
    abort_concurrency=20,
    wire=WirePlan(
        cpu_bytes=64 * MIB,
        cpu_repeats=1,
        ttfb_rtt_ms=20,
        ttfb_repeats=2,
        hangups=10,
        rtts_ms=(20,),
        prefetches=(1,),
        stream_seconds=0.3,
        stream_repeats=1,
        probe_bytes=2 * MIB,
        concurrency=(1, 10),
        concurrency_rtt_ms=20,
        concurrency_seconds=1.0,
        concurrency_range_bytes=2 * MIB,
        rss_after_s=(1,),
        rss_after_last_s=(1, 3),
    ),
)


def default_setting(name: str) -> Any:
    from streambot.config import Settings

    return Settings.__dataclass_fields__[name].default


class Run:
    """One benchmark run: a work directory, a start time and the results gathered so far."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.started = time.monotonic()
        self.fetcher = scenarios.RangeFetcher()
        self.default_prefetch = int(default_setting("stream_prefetch"))
        self.synthetic = [f"{plan.big_bytes}:{BIG}", f"{plan.ceiling_bytes}:{CEILING}"]
        self.results: dict[str, Any] = {
            "mode": plan.name,
            "plan": asdict(plan),
            "machine": report.machine(),
            "defaults": {
                name: default_setting(name)
                for name in (
                    "stream_prefetch",
                    "stream_memory_budget_mb",
                    "stream_block_size_kib",
                    "max_streams",
                )
            },
            "load_generators": {
                "single stream, TTFB, CPU/GiB": self.fetcher.name,
                "concurrency, aborts": "bench.loadclient (Python asyncio, raw HTTP/1.1)",
            },
        }

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=sys.stderr, flush=True)

    def demo(
        self, name: str, rtt_ms: float, prefetch: int, telegram: str = "inproc"
    ) -> tuple[Server, Path]:
        return demo_server(
            name,
            self.workdir,
            rtt_ms=rtt_ms,
            settings={"STREAM_PREFETCH": str(prefetch)},
            synthetic=self.synthetic,
            telegram=telegram,
        )

    # ------------------------------------------------------------------ sections
    def grid(self) -> None:
        """Single-stream throughput per (rtt, prefetch); TTFB and CPU/GiB at the default prefetch.

        For each round trip, one server per prefetch runs at the same time and the downloads are
        interleaved (p1, p2, ..., p1, p2, ...), so changing background load on the machine hits
        every prefetch alike and the ratios to prefetch 1 stay fair.
        """
        plan = self.plan
        prefetches = sorted({*plan.prefetches, self.default_prefetch})
        single: list[dict[str, Any]] = []
        ttfb: list[dict[str, Any]] = []
        for rtt in plan.rtts_ms:
            with contextlib.ExitStack() as stack:
                started = {p: self.demo(f"rtt{rtt:g}-p{p}", rtt, p) for p in prefetches}
                for server, _ in started.values():
                    stack.callback(server.stop)
                    server.launch()  # side by side: start-up is mostly imports
                for server, _ in started.values():
                    server.wait_ready()
                urls = {p: (server, read_links(links)) for p, (server, links) in started.items()}
                default_server, default_urls = urls[self.default_prefetch]
                # First request to this server, so the first TTFB really is cold.
                t = scenarios.time_to_first_byte(
                    self.fetcher, default_urls[BIG], plan.big_bytes, repeats=plan.ttfb_repeats
                )
                t.update(rtt_ms=rtt, prefetch=self.default_prefetch, file_gib=plan.big_bytes / GIB)
                ttfb.append(t)
                self.say(
                    f"TTFB rtt {rtt:g} ms: cold {t['cold_ms']} ms, warm {t['warm_ms_median']} ms"
                )
                lengths = {
                    p: scenarios.stream_length(
                        self.fetcher,
                        u[BIG],
                        plan.big_bytes,
                        seconds=plan.stream_seconds,
                        probe_bytes=plan.probe_bytes,
                    )
                    for p, (_, u) in urls.items()
                }
                samples: dict[int, list[scenarios.StreamSample]] = {p: [] for p in urls}
                for _ in range(plan.stream_repeats):
                    for p, (server, u) in urls.items():
                        samples[p].append(
                            scenarios.stream_sample(self.fetcher, server, u[BIG], lengths[p])
                        )
                for p in prefetches:
                    r = scenarios.summarize(lengths[p], samples[p])
                    r.update(rtt_ms=rtt, prefetch=p)
                    single.append(r)
                    self.say(f"one stream, rtt {rtt:g} ms, prefetch {p}: {r['mib_per_s']} MiB/s")
                if rtt == 0:
                    self.cpu_per_gib(default_server, default_urls[CEILING])
        for r in single:
            base = next(x for x in single if x["rtt_ms"] == r["rtt_ms"] and x["prefetch"] == 1)
            r["ratio_vs_prefetch_1"] = round(r["mib_per_s"] / base["mib_per_s"], 2)
        self.results["single_stream"] = single
        self.results["ttfb"] = ttfb

    def cpu_per_gib(self, demo: Server, demo_url: str) -> None:
        plan = self.plan
        local = self.workdir / CEILING
        from streambot.demo import SyntheticFile

        scenarios.write_same_bytes(
            local, plan.ceiling_bytes, SyntheticFile(plan.ceiling_bytes, CEILING).seed
        )
        measured = [
            (
                "streambot demo",
                scenarios.cpu_per_gib(
                    self.fetcher, demo, demo_url, plan.ceiling_bytes, repeats=plan.ceiling_repeats
                ),
            )
        ]
        same = True
        for label, sendfile in (
            ("aiohttp FileResponse (sendfile)", True),
            ("aiohttp FileResponse (no sendfile)", False),
        ):
            server, url = static_server(
                f"static-{'sendfile' if sendfile else 'copy'}",
                self.workdir,
                local,
                sendfile=sendfile,
            )
            with server:
                same = same and scenarios.same_bytes(demo_url, url, 5 * MIB // 2 + 17, 3 * MIB)
                measured.append(
                    (
                        label,
                        scenarios.cpu_per_gib(
                            self.fetcher,
                            server,
                            url,
                            plan.ceiling_bytes,
                            repeats=plan.ceiling_repeats,
                        ),
                    )
                )
        ceiling = measured[1][1]["cpu_s_per_gib"]
        rows = []
        for label, r in measured:
            r["server"] = label
            # How many times the ceiling's CPU cost per byte (the ceiling itself is 1).
            r["times_ceiling"] = round(r["cpu_s_per_gib"] / ceiling, 1) if ceiling else None
            rows.append(r)
            self.say(f"CPU/GiB {label}: {r['cpu_s_per_gib']} s ({r['mib_per_s']} MiB/s)")
        self.results["cpu_per_gib"] = {
            "file_mib": plan.ceiling_bytes / MIB,
            "repeats": plan.ceiling_repeats,
            "same_bytes": same,
            "servers": rows,
            "mtproto_decrypt_s_per_gib": scenarios.mtproto_decrypt_cost(),
        }

    def wire(self) -> None:
        """Issue 14's figures with Telegram on the wire, in-process beside them: bench/wire.py."""
        self.results["wire"] = wire.WireSection(
            self.plan.wire,
            workdir=self.workdir,
            fetcher=self.fetcher,
            big=BIG,
            big_bytes=self.plan.big_bytes,
            synthetic=self.synthetic,
            default_prefetch=self.default_prefetch,
            say=self.say,
        ).run()

    def concurrency(self) -> None:
        plan = self.plan
        p = self.default_prefetch
        wrk = shutil.which("wrk") if plan.wrk_check else None
        server, links = self.demo("concurrency", plan.concurrency_rtt_ms, p)
        with server:
            url = read_links(links)[BIG]
            rows = scenarios.concurrent_streams(
                server,
                url,
                plan.big_bytes,
                levels=plan.concurrency,
                range_bytes=plan.concurrency_range_bytes,
                seconds=plan.concurrency_seconds,
            )
            for r in rows:
                r.update(rtt_ms=plan.concurrency_rtt_ms, prefetch=p)
                self.say(
                    f"{r['streams']} streams: {r['aggregate_mib_per_s']} MiB/s, "
                    f"peak RSS {r['peak_rss_mib']} MiB"
                )
                if wrk is not None:
                    scenarios.wait_idle(scenarios.base_of(url), timeout=30)
                    r["wrk"] = scenarios.wrk_streams(
                        wrk,
                        server,
                        url,
                        streams=r["streams"],
                        range_bytes=plan.concurrency_range_bytes,
                        seconds=plan.concurrency_seconds,
                    )
                    self.say(f"  wrk cross-check: {r['wrk']['aggregate_mib_per_s']} MiB/s")
        if wrk is not None:
            self.results["load_generators"]["concurrency cross-check"] = report.machine()["wrk"]
        self.results["concurrency"] = rows

    def scale(self) -> None:
        """Bots, processes and a big fleet over the wire (bench/scale.py)."""
        plan = scale.QUICK_SCALE if self.plan.name == "quick" else scale.FULL_SCALE
        self.results["scale"] = scale.scale_section(plan, self.workdir, self.say)

    def leak(self) -> None:
        plan = self.plan
        server, links = self.demo("leak", plan.leak_rtt_ms, self.default_prefetch)
        with server:
            r = scenarios.aborted_downloads(
                server,
                read_links(links)[BIG],
                plan.big_bytes,
                count=plan.aborts,
                batches=plan.abort_batches,
                warmup=plan.abort_warmup,
                concurrency=plan.abort_concurrency,
            )
        r["rtt_ms"] = plan.leak_rtt_ms
        self.say(
            f"{r['aborted']} aborts: RSS {r['rss_before_mib']} -> {r['rss_after_mib']} MiB, "
            f"tasks {r['tasks_before']} -> {r['tasks_after']}"
        )
        self.results["leak"] = r


SECTIONS = ("grid", "concurrency", "leak")
EXTRA_SECTIONS = ("wire", "scale")  # run with --telegram wire (or --only NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small inputs, under a minute")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results", help="directory for the results"
    )
    parser.add_argument(
        "--only",
        choices=SECTIONS + EXTRA_SECTIONS,
        action="append",
        help="run only these sections (repeatable)",
    )
    parser.add_argument(
        "--telegram",
        choices=("inproc", "wire"),
        default="inproc",
        help="wire: also run the sections over MTProto on loopback with the simulator in its "
        "own process: wire (bench/wire.py: CPU/GiB against the MTProto floor, one stream per "
        "prefetch and RTT, concurrent streams, TTFB on the home and a foreign DC, GetFile per "
        "hang-up, in-process beside each) and scale (bench/scale.py)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    sections = list(args.only or SECTIONS)
    if args.telegram == "wire":
        sections += [s for s in EXTRA_SECTIONS if s not in sections]
    # 500 streams need 500 sockets on each side; children inherit the raised soft limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="streambot-bench-") as tmp:
        run = Run(plan, Path(tmp))
        run.say(f"{plan.name} run; load generators: {run.results['load_generators']}")
        run.results["load_average_before"] = os.getloadavg()
        try:
            for section in sections:
                getattr(run, section)()
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            run.results["seconds"] = round(time.monotonic() - run.started, 1)
            run.results["load_average_after"] = os.getloadavg()
            report.write_json(run.results, args.out / "results.json")
    print(report.render(run.results))
    chart = args.out / "results.png"
    drew = report.write_chart(run.results, chart)
    print(
        f"\nWrote {args.out / 'results.json'}"
        + (f" and {chart}" if drew else " (no matplotlib: no chart)")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
