"""Presenting a run: the machine it ran on, text tables, the JSON file and the optional PNG chart."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

MIB = 1 << 20


def _first_line(cmd: Sequence[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    out = subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=10)
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, CPU, memory, Python and the libraries on the path."""
    mem_kib = _proc_field("/proc/meminfo", "MemTotal")

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "nproc": os.cpu_count(),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "memory_gib": round(int(mem_kib.split()[0]) / (1 << 20), 1) if mem_kib else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": version("aiohttp"),
        "kurigram": version("kurigram"),
        "tgcrypto": version("TgCrypto"),
        "curl": _first_line(["curl", "--version"]),
        "wrk": _first_line(["wrk", "--version"]),
    }


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, dict):
        return " ".join(f"{k}:{n}" for k, n in v.items())
    return str(v)


def pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def render(results: dict[str, Any]) -> str:
    """Every table of a run, ready to print."""
    out = []
    single = results.get("single_stream", [])
    if single:
        rtts = sorted({r["rtt_ms"] for r in single})
        prefetches = sorted({r["prefetch"] for r in single})
        by = {(r["rtt_ms"], r["prefetch"]): r for r in single}
        rows = []
        for p in prefetches:
            row: list[Any] = [p]
            for rtt in rtts:
                r = by.get((rtt, p))
                row.append(
                    None if r is None else f"{r['mib_per_s']:.1f} (x{r['ratio_vs_prefetch_1']:.1f})"
                )
            rows.append(row)
        out.append(
            table(
                "Single-stream throughput, MiB/s (ratio to prefetch 1 = peers' sequential design)",
                ["prefetch", *(f"rtt {rtt:g} ms" for rtt in rtts)],
                rows,
            )
        )
        out.append(
            table(
                "Single-stream CPU: server and load generator, share of one core",
                ["rtt ms", "prefetch", "MiB/s", "server", "server waited", "client"],
                [
                    [
                        r["rtt_ms"],
                        r["prefetch"],
                        r["mib_per_s"],
                        pct(r["server_cpu_share"]),
                        pct(r["server_cpu_wait_share"]),
                        pct(r["client_cpu_share"]),
                    ]
                    for r in single
                ],
            )
        )
    ttfb = results.get("ttfb", [])
    if ttfb:
        out.append(
            table(
                f"Time to first byte of a 1 MiB range starting mid-file ({ttfb[0]['file_gib']:g} GiB), ms",
                ["rtt ms", "prefetch", "cold", "warm median", "warm min", "warm max"],
                [
                    [
                        r["rtt_ms"],
                        r["prefetch"],
                        r["cold_ms"],
                        r["warm_ms_median"],
                        r["warm_ms_min"],
                        r["warm_ms_max"],
                    ]
                    for r in ttfb
                ],
            )
        )
    conc = results.get("concurrency", [])
    if conc:
        out.append(
            table(
                f"Concurrent streams (rtt {conc[0]['rtt_ms']:g} ms, prefetch {conc[0]['prefetch']})",
                [
                    "streams",
                    "started",
                    "MiB/s total",
                    "MiB/s each",
                    "idle RSS",
                    "peak RSS",
                    "KiB/stream",
                    "server",
                    "waited",
                    "client",
                    "statuses",
                    "errors",
                    "wrk MiB/s",
                    "wrk CPU",
                ],
                [
                    [
                        r["streams"],
                        r["streams_started"],
                        r["aggregate_mib_per_s"],
                        r["per_stream_mib_per_s"],
                        r["idle_rss_mib"],
                        r["peak_rss_mib"],
                        r["rss_per_stream_kib"],
                        pct(r["server_cpu_share"]),
                        pct(r["server_cpu_wait_share"]),
                        pct(r["client_cpu_share"]),
                        r["statuses"],
                        r["client_errors"],
                        r["wrk"]["aggregate_mib_per_s"] if "wrk" in r else None,
                        pct(r["wrk"]["client_cpu_share"]) if "wrk" in r else None,
                    ]
                    for r in conc
                ],
            )
        )
    cpu = results.get("cpu_per_gib")
    if cpu:
        out.append(
            table(
                f"Server CPU seconds per GiB sent (rtt 0, {cpu['file_mib']:g} MiB file x{cpu['repeats']}, same bytes: {cpu['same_bytes']})",
                ["server", "CPU s/GiB", "x ceiling", "MiB/s", "client"],
                [
                    [
                        r["server"],
                        r["cpu_s_per_gib"],
                        r["times_ceiling"],
                        r["mib_per_s"],
                        pct(r["client_cpu_share"]),
                    ]
                    for r in cpu["servers"]
                ],
            )
        )
        if cpu.get("mtproto_decrypt_s_per_gib") is not None:
            out.append(
                "Not in the demo's figure: MTProto decryption (TgCrypto AES-256-IGE) costs "
                f"{cpu['mtproto_decrypt_s_per_gib']} CPU s/GiB more against real Telegram."
            )
    wire = results.get("wire")
    if wire:
        out.extend(_wire_tables(wire))
    scale = results.get("scale")
    if scale:
        out.extend(_scale_tables(scale))
    leak = results.get("leak")
    if leak:
        out.append(
            table(
                f"Leak check: {leak['aborted']:,} aborted downloads (rtt {leak['rtt_ms']:g} ms, after {leak['warmup']} warm-up)",
                ["aborted", "RSS MiB", "asyncio tasks", "active streams", "settled"],
                [
                    [
                        s["aborted"],
                        s["rss_mib"],
                        s["asyncio_tasks"],
                        s["active_streams"],
                        s["settled"],
                    ]
                    for s in leak["series"]
                ],
            )
        )
        out.append(
            f"RSS {leak['rss_before_mib']} -> {leak['rss_after_mib']} MiB "
            f"({leak['rss_growth_kib_per_1000']} KiB per 1000 aborts overall, "
            f"{leak['second_half_growth_kib_per_1000']} KiB per 1000 in the second half); asyncio tasks "
            f"{leak['tasks_before']} -> {leak['tasks_after']}; GetFile requests per abort "
            f"{leak['getfile_per_abort']}; answers {leak['statuses']}; "
            f"client errors {leak['client_errors']}; client CPU {pct(leak['client_cpu_share'])}"
        )
    gens = results.get("load_generators", {})
    if gens:
        out.append("Load generators: " + "; ".join(f"{k}: {v}" for k, v in gens.items()))
    m = results.get("machine", {})
    if m:
        load = results.get("load_average_before")
        out.append(
            f"Machine: {m['nproc']} x {m['cpu_model']}, {m['memory_gib']} GiB, Python {m['python']}, "
            f"aiohttp {m['aiohttp']}; load average at start {load[0] if load else '-'}"
        )
    return "\n\n".join(out)


def _wire_tables(wire: dict[str, Any]) -> list[str]:
    """The wire section (``--telegram wire``): each figure on the wire, in-process beside it."""
    out = []
    floor = wire["floor"]
    cpu = wire["cpu_per_gib"]
    out.append(
        table(
            f"CPU seconds per GiB, on the wire vs in-process (rtt 0, {cpu['bytes'] / MIB:g} MiB "
            f"x{cpu['repeats']}); floor = TgCrypto AES-256-IGE {floor['aes_ige_s_per_gib']} + "
            f"SHA-256 {floor['sha256_s_per_gib']} = {floor['floor_s_per_gib']} s/GiB, measured "
            "in the bench process; the simulator runs in its own process on the wire",
            [
                "telegram",
                "StreamBot CPU s/GiB",
                "x floor",
                "simulator CPU s/GiB",
                "MiB/s",
                "client",
            ],
            [
                [
                    _mode(r["telegram"]),
                    r["cpu_s_per_gib"],
                    r["times_floor"],
                    r["simulator_cpu_s_per_gib"],
                    r["mib_per_s"],
                    pct(r["client_cpu_share"]),
                ]
                for r in cpu["rows"]
            ],
        )
    )
    ttfb = {(r["telegram"], r["file_dc"]): r for r in wire["ttfb"]}
    dcs = sorted({r["file_dc"] for r in wire["ttfb"]}, key=lambda dc: (dc != wire_home(wire), dc))
    if ttfb:
        first = wire["ttfb"][0]
        rows = []
        for dc in dcs:
            w, i = ttfb.get(("wire", dc), {}), ttfb.get(("inproc", dc), {})
            rows.append(
                [
                    f"{dc} ({'home' if dc == first['home_dc'] else 'foreign'})",
                    w.get("cold_ms"),
                    w.get("warm_ms_median"),
                    w.get("warm_ms_max"),
                    i.get("cold_ms"),
                    i.get("warm_ms_median"),
                    i.get("warm_ms_max"),
                ]
            )
        out.append(
            table(
                f"Time to first byte of a 1 MiB mid-file range, ms (rtt {first['rtt_ms']:g} ms, "
                f"prefetch {first['prefetch']}, bots on DC {first['home_dc']}); cold = first "
                "request to a fresh server",
                [
                    "file on DC",
                    "wire cold",
                    "wire warm",
                    "wire warm max",
                    "in-process cold",
                    "in-process warm",
                    "in-process warm max",
                ],
                rows,
            )
        )
    if wire["hangups"]:
        h0 = wire["hangups"][0]
        out.append(
            table(
                f"GetFile requests per viewer who reads {h0['read_bytes'] // 1024} KiB from a "
                f"block boundary and hangs up (rtt {h0['rtt_ms']:g} ms, one viewer at a time; "
                "target <= 2.5)",
                ["telegram", "viewers", "GetFile", "per viewer", "statuses", "errors", "settled"],
                [
                    [
                        _mode(h["telegram"]),
                        h["viewers"],
                        h["getfile_requests"],
                        h["getfile_per_viewer"],
                        h["statuses"],
                        h["client_errors"],
                        h["settled"],
                    ]
                    for h in wire["hangups"]
                ],
            )
        )
    single = {(r["telegram"], r["rtt_ms"], r["prefetch"]): r for r in wire["single_stream"]}
    if single:
        rows = []
        for rtt, p in sorted({(k[1], k[2]) for k in single}):
            w, i = single.get(("wire", rtt, p)), single.get(("inproc", rtt, p))
            rows.append(
                [
                    rtt,
                    p,
                    w and w["mib_per_s"],
                    w and pct(w["server_cpu_share"]),
                    w and pct(w["server_cpu_wait_share"]),
                    i and i["mib_per_s"],
                    i and pct(i["server_cpu_share"]),
                    round(w["mib_per_s"] / i["mib_per_s"], 2)
                    if w and i and i["mib_per_s"]
                    else None,
                ]
            )
        out.append(
            table(
                f"One stream, MiB/s, on the wire vs in-process ({wire['file_gib']:g} GiB file; "
                "server = StreamBot's CPU share of one core)",
                [
                    "rtt ms",
                    "prefetch",
                    "wire MiB/s",
                    "wire server",
                    "wire waited",
                    "in-process MiB/s",
                    "in-process server",
                    "wire / in-process",
                ],
                rows,
            )
        )
    conc = wire["concurrency"]
    if conc:
        delays = sorted({d for r in conc for d in r["rss_after_mib"]}, key=float)
        out.append(
            table(
                f"Concurrent streams, on the wire vs in-process (rtt {conc[0]['rtt_ms']:g} ms, "
                f"prefetch {conc[0]['prefetch']}); RSS in MiB: fresh server, peak (VmHWM reset "
                "per level), N s after the load ended",
                [
                    "streams",
                    "telegram",
                    "started",
                    "MiB/s total",
                    "MiB/s each",
                    "fresh RSS",
                    "peak RSS",
                    *(f"RSS {d} s after" for d in delays),
                    "server",
                    "waited",
                    "simulator",
                    "client",
                    "statuses",
                    "errors",
                ],
                [
                    [
                        r["streams"],
                        _mode(r["telegram"]),
                        r["streams_started"],
                        r["aggregate_mib_per_s"],
                        r["per_stream_mib_per_s"],
                        r["start_rss_mib"],
                        r["peak_rss_mib"],
                        *(r["rss_after_mib"].get(d) for d in delays),
                        pct(r["server_cpu_share"]),
                        pct(r["server_cpu_wait_share"]),
                        pct(r["simulator_cpu_share"]),
                        pct(r["client_cpu_share"]),
                        r["statuses"],
                        r["client_errors"],
                    ]
                    for r in conc
                ],
            )
        )
    return out


def _scale_tables(scale: dict[str, Any]) -> list[str]:
    """bench/scale.py: bots x media connections, 2 processes against 1, the fleet's cost per bot."""
    out = []
    head = (
        f"{scale['streams']} streams of {scale['range_mib']:g} MiB ranges at rtt "
        f"{scale['rtt_ms']:g} ms over the wire, {scale['cpus']} cores"
    )
    rows = list(scale.get("bots", []))
    procs = scale.get("processes")
    if procs:
        rows.append(procs["two_processes"])
    out.append(
        table(
            f"Every core: {head} (CPU share: 100% = one core)",
            [
                "procs",
                "bots",
                "conns",
                "MiB/s",
                "x 1 bot",
                "CPU s/GiB",
                "StreamBot",
                "its event loop",
                "loop waited",
                "busy threads",
                "busiest",
                "simulator",
            ],
            [
                [
                    r["processes"],
                    r["bots"],
                    r.get("media_connections", 4),
                    r["aggregate_mib_per_s"],
                    r.get("ratio_vs_1_bot"),
                    r["streambot_cpu_s_per_gib"],
                    " + ".join(pct(c) for c in r["per_process_cpu_share"]),
                    " + ".join(pct(c) for c in r.get("event_loop_cpu_share", [])),
                    " + ".join(pct(c) for c in r.get("event_loop_waited_share", [])),
                    " + ".join(str(c) for c in r.get("busy_other_threads", [])),
                    " + ".join(pct(c) for c in r.get("busiest_other_thread_share", [])),
                    pct(r["simulator_cpu_share"]),
                ]
                for r in rows
            ],
        )
    )
    if procs:
        out.append(
            f"2 processes (one port, one SQLite file) / 1 process with the same "
            f"{procs['two_processes']['bots']} bots: {procs['ratio_2_vs_1']}"
        )
    fleet = scale.get("fleet")
    if fleet:
        out.append(
            table(
                f"A big fleet: one process with {fleet['workers']} worker bots (idle)",
                ["run", "stagger s", "ready s", "logins", "RSS MiB", "threads", "fds"],
                [
                    [
                        f"{r['workers']} workers"
                        + (", restart" if r["login_stagger_seconds"] else ""),
                        r["login_stagger_seconds"],
                        r["ready_seconds"],
                        r["logins"],
                        r["rss_mib"],
                        r["threads"],
                        r["fds"],
                    ]
                    for r in fleet["runs"]
                ],
            )
        )
        per = fleet["per_worker_bot"]
        out.append(
            f"Per worker bot: {per['rss_mib']} MiB RSS, {per['threads']} threads, "
            f"{per['fds']} file descriptors, {per['fresh_login_seconds']} s per fresh login"
        )
    return out


def wire_home(wire: dict[str, Any]) -> int:
    return int(wire["ttfb"][0]["home_dc"]) if wire["ttfb"] else 2


def _mode(telegram: str) -> str:
    return "in-process" if telegram == "inproc" else telegram


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")


def write_chart(results: dict[str, Any], path: Path) -> bool:
    """A PNG of throughput by prefetch and of the concurrency figures; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    single = results.get("single_stream", [])
    conc = results.get("concurrency", [])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for rtt in sorted({r["rtt_ms"] for r in single}):
        points = sorted((r["prefetch"], r["mib_per_s"]) for r in single if r["rtt_ms"] == rtt)
        left.plot(
            [p for p, _ in points], [v for _, v in points], marker="o", label=f"rtt {rtt:g} ms"
        )
    left.set_xscale("log", base=2)
    ticks = sorted({r["prefetch"] for r in single})
    left.set_xticks(ticks, labels=[str(t) for t in ticks])
    left.set_xlabel("STREAM_PREFETCH (GetFile requests in flight)")
    left.set_ylabel("MiB/s, one stream")
    left.set_title("Single-stream throughput")
    left.legend()
    if conc:
        xs = [r["streams"] for r in conc]
        right.plot(xs, [r["aggregate_mib_per_s"] for r in conc], marker="o", label="MiB/s total")
        right.set_xscale("log")
        right.set_xlabel("concurrent streams")
        right.set_ylabel("MiB/s")
        twin = right.twinx()
        twin.plot(
            xs, [r["peak_rss_mib"] for r in conc], marker="s", color="tab:red", label="peak RSS MiB"
        )
        twin.set_ylabel("peak RSS, MiB")
        right.set_title(f"Concurrency (rtt {conc[0]['rtt_ms']:g} ms)")
        right.legend(loc="upper left")
        twin.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
